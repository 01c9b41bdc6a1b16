"""Bounces: which addresses a delivery status notification reports as failing, and for which list.

A pure function of the message bytes. The detection is flufl.bounce's first (the DSN parser and
its heuristics for MTAs that send plain-text bounces); only when it finds no address are the
fallback readers of :mod:`listd.mail.dsn` tried (flufl.bounce 6.0.0 finds nothing in bounces
from Office 365, Mimecast, OpenSMTPD, Trend Micro, Yahoo, ...). This module normalises what is
found to bare, lower-cased ``local@domain`` addresses and looks for our RFC 2919 List-Id in the
copy of the original message that most bounces carry. Scoring is done elsewhere.

The raw bytes are parsed with the ``email`` package for reading only; nothing here is ever
re-serialised. No input makes :func:`scan_bounce` raise: a message that no reader can cope with
is reported as an empty :class:`BounceReport`.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from flufl.bounce import all_failures

from listd.mail import dsn
from listd.mail.addresses import address_key, is_valid_address

# A List-Id field at the start of a line, with its folded continuation lines.
_LIST_ID_LINE_RE = re.compile(r"^List-Id[ \t]*:(?P<value>.*(?:\n[ \t].*)*)",
                              re.IGNORECASE | re.MULTILINE)
# The list identifier in angle brackets (RFC 2919: list-label "." list-id-namespace).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LIST_ID_RE = re.compile(rf"<\s*({_ATOM}(?:\.{_ATOM})+)\s*>")
_LINE_END_RE = re.compile(rb"\r\n|\n|\r")


@dataclass(frozen=True)
class BounceReport:
    """What one bounce says.

    ``permanent``: addresses that failed permanently; ``temporary``: addresses with a delay
    or temporary-failure notice (never also in ``permanent``). Both hold bare, lower-cased
    ``local@domain`` addresses. ``list_ids``: the RFC 2919 list identifiers (``"friends.
    example.org"``, lower-cased) in the List-Id of the returned original message, if the
    bounce includes its header; empty otherwise, and always empty when no address was found.
    """

    permanent: frozenset[str] = frozenset()
    temporary: frozenset[str] = frozenset()
    list_ids: frozenset[str] = frozenset()

    @property
    def addresses(self) -> frozenset[str]:
        """Every address the bounce reports, permanent or temporary."""
        return self.permanent | self.temporary


_EMPTY = BounceReport()


def scan_bounce(raw: bytes) -> BounceReport:
    """The failing recipients and our list ids in the bounce ``raw``; never raises.

    ``raw`` may start with an mbox ``From `` line and use any line ends. A message that is
    not a bounce (a post, an auto-reply) gives an empty report.
    """
    try:
        message = email.message_from_bytes(_normalise_message(raw))
    except Exception:  # the email package is meant not to raise; hostile input may still
        return _EMPTY
    permanent, temporary = _flufl_failures(message)
    try:
        if permanent or temporary:
            # flufl.bounce's text heuristics also take addresses from the returned original's
            # header (Zoho: its sender and Message-ID); those would blame the poster.
            blamed_wrongly = dsn.original_senders(message) - dsn.named_recipients(message)
            permanent, temporary = permanent - blamed_wrongly, temporary - blamed_wrongly
        else:
            permanent, temporary = dsn.failures(message)
    except Exception:  # not expected (the dsn readers are fuzzed), but never raise
        return _EMPTY
    temporary -= permanent
    if not permanent and not temporary:
        return _EMPTY
    try:
        list_ids = _list_ids(message)
    except Exception:  # the addresses stand even when the list id cannot be found
        list_ids = frozenset()
    return BounceReport(permanent=permanent, temporary=temporary, list_ids=list_ids)


def _flufl_failures(message: Message) -> tuple[frozenset[str], frozenset[str]]:
    """(permanent, temporary) as flufl.bounce finds them; nothing if it raises."""
    try:
        temporary_found, permanent_found = all_failures(message)
        return _normalise_all(permanent_found), _normalise_all(temporary_found)
    except Exception:  # flufl.bounce raises all sorts on hostile input
        return frozenset(), frozenset()


def _normalise_message(raw: bytes) -> bytes:
    """``raw`` without a leading mbox ``From `` line, with LF line ends.

    The same bounce must give the same answer however it was stored: flufl.bounce's text
    heuristics find nothing in some bounces with bare CR line ends (qmail, sendmail).
    """
    if raw.startswith(b"From "):  # an mbox separator line, never a header field
        line_end = _LINE_END_RE.search(raw)
        raw = raw[line_end.end():] if line_end else b""
    return _LINE_END_RE.sub(b"\n", raw)


def _normalise_all(found: frozenset[bytes]) -> frozenset[str]:
    addresses = (_normalise(address) for address in found)
    return frozenset(address for address in addresses if address is not None)


def _normalise(address: bytes) -> str | None:
    """``address`` as a bare lower-cased ``local@domain``, or None if it is not plausible."""
    try:
        text = address.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = address_key(text.strip().removeprefix("<").removesuffix(">"))
    return text if is_valid_address(text) else None


def _list_ids(message: Message) -> frozenset[str]:
    """The List-Ids of the original message returned in the bounce ``message``.

    Looked for in message/rfc822 and text/rfc822-headers parts; failing those, in a
    ``List-Id:`` line of any text part (plain-text bounces quote the original below the
    notice). Never in the bounce's own header (a bounce relayed by another list carries that
    list's List-Id), nor in messages attached to the original (a forwarded post's).
    """
    found: set[str] = set()
    parts = list(dsn.parts(message))
    for part in parts:
        if part is not message and part.get_content_type() in dsn.ORIGINAL_TYPES:
            for header in _original_headers(part):
                for value in header.get_all("List-Id", []):
                    found.update(_ids_in(str(value)))
    if found:
        return frozenset(found)
    for part in parts:
        text = _leaf_text(part)
        if text:
            for match in _LIST_ID_LINE_RE.finditer(text):
                found.update(_ids_in(match.group("value")))
    return frozenset(found)


def _original_headers(part: Message) -> list[Message]:
    """The original header(s) in a message/rfc822 or text/rfc822-headers ``part``."""
    if part.is_multipart():  # message/rfc822, parsed: one Message
        return dsn.subparts(part)
    text = _leaf_text(part)  # text/rfc822-headers, or message/rfc822 left unparsed
    return [HeaderParser().parsestr(text, headersonly=True)] if text else []


def _leaf_text(part: Message) -> str:
    """The decoded body of a non-multipart ``part`` (a defective multipart's too), else ""."""
    if part.get_content_maintype() not in ("text", "multipart", "message"):
        return ""
    payload = part.get_payload(decode=True)  # None for a parsed multipart or message
    if not isinstance(payload, bytes):
        return ""
    # A List-Id is ASCII; latin-1 decodes any bytes, whatever the declared charset.
    return payload.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n")


def _ids_in(value: str) -> set[str]:
    """The list identifiers in one List-Id field value (the last bracketed one counts)."""
    matches = _LIST_ID_RE.findall(value)
    return {matches[-1].lower()} if matches else set()
