"""The copy of a post that a list sends out: bytes in, bytes out, body untouched.

What changes, and why (everything else is relayed byte for byte):

- ``From`` becomes "Author via List <list@>": a provider mailbox (Gmail, Microsoft 365)
  replaces or refuses a foreign From, and DMARC of the author's domain would fail anyway.
  The original goes to ``X-Original-From``; ``Reply-To`` follows the list's ``reply_to``.
- ``Subject`` gets the list's prefix, once: "Re: [x] Re: [x] t" becomes "[x] Re: t".
- ``List-Id`` (RFC 2919), ``List-Post/-Help/-Subscribe/-Unsubscribe/-Owner`` (RFC 2369),
  ``Precedence: list`` and ``X-Loop`` (so our own mail coming back is recognised).
- Removed: fields the receiving MTA added for *our* mailbox (``Return-Path``,
  ``Delivered-To``, ``X-Original-To``...: relayed, they make the next MTA see a loop), a
  stray ``Bcc``, a foreign ``Sender``, other lists' ``List-*`` fields, and read-receipt
  requests (every member's client would answer the author).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from listd.config import ListConfig
from listd.mail.classify import list_id_value
from listd.mail.encoding import is_ascii, phrase, unstructured
from listd.mail.headers import RawMessage, decode_words

REMOVED_FIELDS = (
    "Return-Path", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To",
    "Bcc", "Sender", "Return-Receipt-To", "Disposition-Notification-To",
    "X-Confirm-Reading-To", "Precedence",
    "List-Id", "List-Post", "List-Help", "List-Subscribe", "List-Unsubscribe",
    "List-Unsubscribe-Post", "List-Owner", "List-Archive",
)

_REPLY_MARKER_RE = re.compile(
    r"^(?:re|aw|sv|vs|antw|odp|res|ref|r|rif|wg)(?:\[\d+\]|\(\d+\))?\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ListAddresses:
    """The addresses a list answers at, as the List-* fields announce them."""

    post: str
    request: str
    owner: str

    @classmethod
    def of(cls, lst: ListConfig) -> ListAddresses:
        local, _, domain = lst.address.rpartition("@")
        return cls(post=lst.address, request=f"{local}-request@{domain}",
                   owner=f"{local}-owner@{domain}")


def list_fields(lst: ListConfig) -> list[tuple[str, bytes]]:
    """The RFC 2369/2919 fields for a list, as (name, value bytes)."""
    addresses = ListAddresses.of(lst)
    name = phrase(lst.name)
    request = addresses.request
    fields = [
        ("List-Id", f"{name} <{list_id_value(lst)}>" if name else f"<{list_id_value(lst)}>"),
        ("List-Help", f"<mailto:{request}?subject=help>"),
        ("List-Subscribe", f"<mailto:{request}?subject=subscribe>"),
        ("List-Unsubscribe", f"<mailto:{request}?subject=unsubscribe>"),
        ("List-Post", "NO" if lst.posting == "owners" else f"<mailto:{addresses.post}>"),
        ("List-Owner", f"<mailto:{addresses.owner}>"),
        ("Precedence", "list"),
        ("X-Loop", addresses.post),
    ]
    return [(n, v.encode("utf-8")) for n, v in fields]


def rewrite_post(message: RawMessage, lst: ListConfig) -> bytes:
    """The bytes to send to the list's members for ``message``."""
    replace = _from_fields(message, lst, f"via {lst.name}", reply_to_list=lst.reply_to == "list")
    subject = prefixed_subject(message, lst.subject_prefix)
    if subject is not None:
        replace["Subject"] = subject
    edited = message.edit(remove=REMOVED_FIELDS,
                          replace=replace, append=list_fields(lst))
    return edited.serialize()


def forward_to_owners(message: RawMessage, lst: ListConfig) -> bytes:
    """The copy of a message to ``list-owner@`` that the owners receive.

    From changes for the same reason as for posts; replies go to the author.
    """
    replace = _from_fields(message, lst, f"via {lst.name} owners", reply_to_list=False)
    return message.edit(remove=REMOVED_FIELDS,
                        replace=replace, append=[("X-Loop", lst.address.encode())]).serialize()


def _from_fields(message: RawMessage, lst: ListConfig, via: str,
                 reply_to_list: bool) -> dict[str, bytes]:
    """From as "Author via List <list@>", X-Original-From, and Reply-To per policy."""
    replace: dict[str, bytes] = {}
    original_from = message.get_all("From")
    authors = message.addresses("From")
    shown = (authors[0][0] or authors[0][1]) if authors else "someone"
    replace["From"] = f"{phrase(f'{shown} {via}')} <{lst.address}>".encode()
    if original_from:
        replace["X-Original-From"] = original_from[0].raw_value.lstrip(b" \t")
    if reply_to_list:
        replace["Reply-To"] = _mailbox(lst.name, lst.address)
    elif not message.get_all("Reply-To") and original_from:
        replace["Reply-To"] = original_from[0].raw_value.lstrip(b" \t")
    return replace


def _mailbox(name: str, address: str) -> bytes:
    shown = phrase(name)
    return (f"{shown} <{address}>" if shown else address).encode()


def prefixed_subject(message: RawMessage, prefix: str) -> bytes | None:
    """The new Subject value, or None when the existing one is already right."""
    if not prefix.strip():
        return None
    fields = message.get_all("Subject")
    if not fields:
        return unstructured(f"{prefix}(no subject)", "Subject").encode()
    raw = fields[0].raw_value.lstrip(b" \t")
    text = " ".join(decode_words(fields[0].value).split())
    tag = prefix.strip().lower()
    rest, saw_prefix, saw_reply = text, False, False
    while True:
        stripped = rest.lstrip()
        if tag and stripped.lower().startswith(tag):
            rest, saw_prefix = stripped[len(tag):], True
            continue
        marker = _REPLY_MARKER_RE.match(stripped)
        if marker:
            rest, saw_reply = stripped[marker.end():], True
            continue
        rest = stripped
        break
    if not saw_prefix:
        if is_ascii(prefix):
            # Prepending keeps the original bytes (odd charsets, encoded words) intact.
            return prefix.encode("ascii") + raw
        return unstructured(prefix + text, "Subject").encode()
    wanted = prefix + ("Re: " if saw_reply else "") + rest
    if wanted == text:
        return None
    return unstructured(wanted, "Subject").encode()
