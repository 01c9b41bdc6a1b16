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

from listd.config import ListConfig
from listd.mail.classify import list_id_value
from listd.mail.encoding import MAX_LINE, is_ascii, mailbox, unstructured
from listd.mail.headers import RawMessage, decode_words
from listd.mail.listaddr import ListAddresses

REMOVED_FIELDS = (
    "Return-Path", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To",
    "Bcc", "Sender", "Return-Receipt-To", "Disposition-Notification-To",
    "X-Confirm-Reading-To", "Precedence",
    "List-Id", "List-Post", "List-Help", "List-Subscribe", "List-Unsubscribe",
    "List-Unsubscribe-Post", "List-Owner", "List-Archive",
)

SMTP_MAX_LINE = 998  # octets, without CRLF (RFC 5321 4.5.3.1.6)

# Leading markers of replies and forwards in many languages, "Re[2]:" and "Re(2):" too.
# A list prefix is looked for among them, so that "Fwd: [x] t" does not get a second one.
_REPLY_MARKER_RE = re.compile(
    r"(?:re|aw|sv|vs|antw|odp|res|ref|r|rif)(?:\[\d+\]|\(\d+\))?\s*:\s*", re.IGNORECASE)
_FORWARD_MARKER_RE = re.compile(
    r"((?:fwd?|wg|tr|enc|rv|pd|vb|vl)(?:\[\d+\]|\(\d+\))?)\s*:\s*", re.IGNORECASE)


def list_fields(lst: ListConfig) -> list[tuple[str, bytes]]:
    """The RFC 2369/2919 fields for a list, as (name, value bytes)."""
    addresses = ListAddresses.of(lst)
    fields = [
        ("List-Id", mailbox(lst.name, list_id_value(lst), "List-Id")),
        ("List-Help", f"<{addresses.command_uri('help')}>"),
        ("List-Subscribe", f"<{addresses.command_uri('subscribe')}>"),
        ("List-Unsubscribe", f"<{addresses.command_uri('unsubscribe')}>"),
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
    replace["From"] = mailbox(f"{shown} {via}", lst.address, "From").encode()
    if original_from:
        replace["X-Original-From"] = _moved(original_from[0].raw_value, "X-Original-From")
    if reply_to_list:
        replace["Reply-To"] = mailbox(lst.name, lst.address, "Reply-To").encode()
    elif not message.get_all("Reply-To") and original_from:
        replace["Reply-To"] = _moved(original_from[0].raw_value, "Reply-To")
    return replace


def _moved(raw_value: bytes, field: str) -> bytes:
    """The author's From bytes as the value of ``field``; a longer name than "From" could
    push a full first line past SMTP's 998 octets, so the value then starts on the next."""
    value = raw_value.lstrip(b" \t")
    first_line = value.split(b"\n", 1)[0].rstrip(b"\r")
    if len(field) + 2 + len(first_line) > SMTP_MAX_LINE:
        return b"\r\n " + value
    return value


def prefixed_subject(message: RawMessage, prefix: str) -> bytes | None:
    """The new Subject value, or None when the existing one is already right.

    The prefix is written once, followed by one space, in front of the reply and forward
    markers: "Re: [x] Re: [x] t" and "[x] Re: Re: t" become "[x] Re: t".
    """
    tag = prefix.strip()
    if not tag:
        return None
    fields = message.get_all("Subject")
    text = " ".join(decode_words(fields[0].value).split()) if fields else ""
    if not text:
        return unstructured(f"{tag} (no subject)", "Subject").encode()
    markers, rest, saw_prefix = _leading_markers(text, tag)
    if not saw_prefix:
        if is_ascii(tag):
            # Prepending keeps the original bytes (odd charsets, encoded words) intact.
            return _prepend(tag, fields[0].raw_value.lstrip(b" \t\r\n"))
        return unstructured(f"{tag} {text}", "Subject").encode()
    wanted = " ".join(part for part in (tag, *markers, rest) if part)
    if wanted == text:
        return None
    return unstructured(wanted, "Subject").encode()


def _leading_markers(text: str, tag: str) -> tuple[list[str], str, bool]:
    """Split the run of prefixes and reply/forward markers off the front of ``text``.

    Returns the markers to keep (a run of reply markers becomes one "Re:"), the rest of
    the text, and whether ``tag`` was among them.
    """
    markers: list[str] = []
    rest, saw_prefix = text, False
    while rest:
        head = rest[: len(tag)]
        # "[x]" may be followed by anything; a word-like tag "Friends" not by "hip".
        whole = not (tag[-1].isalnum() and rest[len(tag) : len(tag) + 1].isalnum())
        if head.casefold() == tag.casefold() and whole:
            rest, saw_prefix = rest[len(tag) :].lstrip(), True
            continue
        reply = _REPLY_MARKER_RE.match(rest)
        if reply:
            if markers[-1:] != ["Re:"]:
                markers.append("Re:")
            rest = rest[reply.end() :]
            continue
        forward = _FORWARD_MARKER_RE.match(rest)
        if forward:
            markers.append(forward.group(1) + ":")
            rest = rest[forward.end() :]
            continue
        break
    return markers, rest, saw_prefix


def _prepend(tag: str, raw: bytes) -> bytes:
    """``tag`` in front of the Subject bytes ``raw``, folding after it if the line is full."""
    first_line = raw.split(b"\n", 1)[0].rstrip(b"\r")
    fits = len("Subject: ") + len(tag) + 1 + len(first_line) <= MAX_LINE
    return tag.encode("ascii") + (b" " if fits else b"\r\n ") + raw


def personalize(data: bytes, recipient: str, unsubscribe_uri: str) -> bytes:
    """One member's copy of a post on a ``personalize: true`` list: its own To and its own
    one-shot List-Unsubscribe. Only those two fields change."""
    message = RawMessage.parse(data)
    return message.edit(replace={"To": recipient.encode("utf-8"),
                                 "List-Unsubscribe": f"<{unsubscribe_uri}>".encode()}
                        ).serialize()
