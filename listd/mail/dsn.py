"""Fallback bounce readers, for the bounces flufl.bounce finds no address in.

Two readers, tried in turn by :func:`failures`:

* an RFC 3464 reader of message/delivery-status parts, wherever they sit in the message (an
  outer Content-Type without report-type, or in odd case, does not matter). It reads what
  flufl.bounce skips: a group with a Status but no Action, an address with "=" in it;
* for notices that carry no delivery-status part at all (Office 365, Mimecast, OpenSMTPD, Trend
  Micro, Yahoo, ...), a conservative reader of the plain text, used only when the notice is from
  a mailer daemon or postmaster. It reads only the notice's own text, never the copy of the
  original message below it, and never blames the notice's sender or addressee or the original
  message's sender (each would unsubscribe an innocent address).

:func:`original_senders` serves a filter of flufl.bounce's own results (see ``bounces``). All
functions are pure, read the parsed message only, and raise on no input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from email.message import Message
from email.parser import HeaderParser

from listd.mail.addresses import address_key, is_valid_address

Failures = tuple[frozenset[str], frozenset[str]]  # (permanent, temporary)
_NONE: Failures = (frozenset(), frozenset())

# The parts of a bounce that carry the original message or its header.
ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers")

# An address-like token, bounded so that a long run without "@" stays linear to scan, and never
# containing U+FFFD (a byte the declared charset could not decode). Checked by is_valid_address.
_ATEXT = "[^\\s<>()\\[\\]\"',;:@\ufffd]"
_ADDR = rf"{_ATEXT}{{1,64}}@{_ATEXT}{{1,253}}"
_TOKEN_RE = re.compile(rf"(?<!{_ATEXT})({_ADDR})")
_STATUS_RE = re.compile(r"\s*([245])\.\d{1,3}\.\d{1,3}")
_DAEMON_RE = re.compile(r"(?<![\w.+-])(?:mailer-daemon|mail-daemon|postmaster)(?:@|>|\s*\(|\s*$)",
                        re.I)

# Where the notice ends and the copy of the original message begins: a separator line, or the
# first header line of the original (at the start of the line, as MTAs copy it).
_STOP_RE = re.compile(
    r"^[\s-]*(?:original message|below (?:this line )?is a copy|this is a copy of the message"
    r"|bounced e-?mail:|content-type:\s*message/rfc822)"
    r"|^(?:received|return-path|message-id|dkim-signature|mime-version|from|date)[ \t]*:"
    r"|(?-i:^From \S+@\S+ )", re.I)
# Lines naming a failed recipient.
_ADDRESS_LINE_RE = re.compile(  # Postfix, qmail, OpenSMTPD: "<addr>: ...", "addr: 550 ..."
    rf"^\s*<?({_ADDR})>?(?:\s*\(expanded from [^)]*\))?\s*:(?:\s|$)")
_LABELLED_RE = re.compile(  # "Recipient address: addr", "Original-Recipient: rfc822;addr"
    r"^\s*(?:(?:original|final)[ -]recipient"
    r"|(?:failed|target|recipient)(?:[ -](?:e-?mail|mail))?[ -]address)"
    rf"\s*:\s*(?:rfc822\s*;\s*)?<?({_ADDR})>?\s*$", re.I)
_REPLY_RE = re.compile(  # an SMTP error reply naming the address: "550 5.1.1 <addr>... unknown"
    rf"\b[45]\d\d[ -](?:[45]\.\d{{1,3}}\.\d{{1,3}}\s+)?<({_ADDR})>")
# A heading of a list of addresses, one a line: "The following address(es) failed:".
_HEADING_RE = re.compile(
    r"\b(?:following|these)\s+(?:\w+\s+){0,2}?(?:address(?:es|\(es\))?|recipients?)\b", re.I)
_LISTED_RE = re.compile(rf"^\s*(?:(?:-+|\*)\s*)?<?({_ADDR})>?(?=\s|$|<mailto:|:)")
# Words of a failure notice; without one a listing may be a delivery or relay notice.
_FAILURE_RE = re.compile(
    r"fail|unable|could ?n[o']t|cannot|undeliver|not (?:yet )?(?:be(?:en)? )?delivered|reject"
    r"|error|delay|bounce|permanent|temporar", re.I)
_DELAY_RE = re.compile(
    r"\bdelay(?:ed)?\b|temporar|will retry|(?<![\d.])4\.\d{1,3}\.\d{1,3}(?![\d.])", re.I)


def failures(message: Message) -> Failures:
    """(permanent, temporary) failed recipients by the RFC 3464 reader, else the text reader."""
    groups = _recipient_groups(message)
    if groups:  # a delivery-status part is the MTA's own word: never second-guessed from text
        permanent = frozenset(address for address, kind in groups if kind == "permanent")
        temporary = frozenset(address for address, kind in groups if kind == "temporary")
        return permanent, temporary - permanent
    if not _DAEMON_RE.search(_header_text(message, "From")):
        return _NONE
    return _text_failures(message)


def named_recipients(message: Message) -> frozenset[str]:
    """Every recipient a delivery-status part of ``message`` names, whatever its Action."""
    return frozenset(address for address, _ in _recipient_groups(message))


def original_senders(message: Message) -> frozenset[str]:
    """The addresses in the From, Sender and Message-ID of the original returned in ``message``.

    From a message/rfc822 or text/rfc822-headers part, or from the header copied into the
    notice's text below its end.
    """
    headers: list[Message] = []
    for part in parts(message):
        if part is not message and part.get_content_type() in ORIGINAL_TYPES:
            # message/rfc822 is parsed (one Message); text/rfc822-headers is text
            headers.extend(subparts(part) or [_header(_text(part))])
        elif part.get_content_type() == "text/plain":
            headers.append(_header(_split_notice(_text(part))[1]))
    found = (_tokens(_header_text(header, name))
             for header in headers for name in ("From", "Sender", "Message-ID"))
    return frozenset(address for addresses in found for address in addresses)


def parts(message: Message) -> Iterator[Message]:
    """``message`` and its parts, depth first, not descending into an original message."""
    stack = [message]
    while stack:
        part = stack.pop()
        yield part
        if part is message or part.get_content_type() not in ORIGINAL_TYPES:
            stack.extend(reversed(subparts(part)))


def subparts(part: Message) -> list[Message]:
    """The parsed parts of a multipart or message/* ``part``; [] for a leaf.

    (``get_payload()`` decodes a leaf's text by its charset, and raises on some.)
    """
    if not part.is_multipart():
        return []
    return [item for item in part.get_payload() if isinstance(item, Message)]


def _recipient_groups(message: Message) -> list[tuple[str, str | None]]:
    """(address, "permanent" / "temporary" / None) for each recipient group of the DSN parts."""
    groups: list[tuple[str, str | None]] = []
    for block in _status_blocks(message):
        address = _recipient(block, "Original-Recipient") or _recipient(block, "Final-Recipient")
        if address:
            groups.append((address, _kind(block)))
    return groups


def _status_blocks(message: Message) -> Iterator[Message]:
    """The header blocks (per-message, then per-recipient) of every delivery-status part.

    The email package parses a delivery-status part into its blocks (a part encoded in base64,
    which RFC 3464 does not allow, gives a block of nonsense, so is not read).
    """
    for part in parts(message):
        if part.get_content_type() == "message/delivery-status":
            yield from subparts(part)


def _recipient(block: Message, name: str) -> str | None:
    """The address of an ``rfc822;`` recipient field (other address types are not mail)."""
    address_type, _, value = _header_text(block, name).partition(";")
    if address_type.strip().lower() != "rfc822" or not value.split():
        return None
    return _address(value.split()[0].removeprefix("<").removesuffix(">"))


def _kind(block: Message) -> str | None:
    """failed: permanent; delayed: temporary; relayed, delivered, expanded: None (no failure).

    Without an Action the Status class decides (5: permanent, 4: temporary).
    """
    action = _header_text(block, "Action").lower().split()
    if action:
        return {"failed": "permanent", "delayed": "temporary"}.get(action[0])
    status = _STATUS_RE.match(_header_text(block, "Status"))
    return {"5": "permanent", "4": "temporary"}.get(status.group(1)) if status else None


def _text_failures(message: Message) -> Failures:
    """The recipients a plain-text notice names in its own text, above the returned original."""
    notices = [_split_notice(_text(part))[0] for part in parts(message)
               if part.get_content_type() == "text/plain"]
    notice = "\n".join(notice for notice in notices if notice)
    found = set(_named_in_notice(notice))
    found -= original_senders(message)
    for name in ("From", "Sender", "Reply-To", "To", "Return-Path"):
        found -= _tokens(_header_text(message, name))
    if not found:
        return _NONE
    if _DELAY_RE.search(notice):
        return frozenset(), frozenset(found)
    return frozenset(found), frozenset()


def _named_in_notice(notice: str) -> Iterator[str]:
    """Addresses named as failed by a line of ``notice`` (see the patterns above)."""
    is_failure = _FAILURE_RE.search(notice) is not None
    listing = False  # in a list of addresses after a heading
    previous = ""
    for line in notice.split("\n"):
        if is_failure:
            yield from _addresses(_ADDRESS_LINE_RE.findall(line) + _LABELLED_RE.findall(line))
        yield from _addresses(_REPLY_RE.findall(line))
        listed = _LISTED_RE.findall(line)
        if listing and listed:
            yield from _addresses(listed)
        elif listing and line.strip() and not line[0].isspace():
            listing = False  # the list ends at the next unindented line of prose
        heading = _HEADING_RE.search(line)
        if heading and _FAILURE_RE.search(previous + " " + line):
            listing = True  # the addresses follow, on this line or one a line below it
            yield from _tokens(line[heading.end():].partition(":")[2])
        if line.strip():
            previous = line


def _split_notice(text: str) -> tuple[str, str]:
    """(the notice's own text, the copy of the original from its end marker on)."""
    lines = text.split("\n")
    for number, line in enumerate(lines):
        if _STOP_RE.search(line):
            rest = lines[number:]
            # The copy starts at the first header line (or mbox From line) from the marker on.
            for start, copied in enumerate(rest):
                if re.match(r"[!-9;-~]+:|From ", copied):
                    return "\n".join(lines[:number]), "\n".join(rest[start:])
            return "\n".join(lines[:number]), ""
    return text, ""


def _text(part: Message) -> str:
    """The decoded text of a leaf ``part`` with LF line ends; "" if it has none."""
    payload = part.get_payload(decode=True)  # None for a parsed multipart or message
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    except (LookupError, ValueError):  # an unknown or malformed charset (e.g. with a NUL)
        text = payload.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _header(text: str) -> Message:
    return HeaderParser().parsestr(text, headersonly=True)


def _header_text(header: Message, name: str) -> str:
    """All fields ``name`` of ``header`` as one string ("" if none)."""
    return " ".join(str(value) for value in header.get_all(name, []))


def _tokens(text: str) -> frozenset[str]:
    """The plausible addresses anywhere in ``text``."""
    return frozenset(_addresses(_TOKEN_RE.findall(text)))


def _addresses(candidates: Iterable[str]) -> Iterator[str]:
    for candidate in candidates:
        address = _address(candidate)
        if address:
            yield address


def _address(text: str) -> str | None:
    """``text`` as a bare lower-cased ``local@domain`` (trailing full stop dropped), or None."""
    address = address_key(text).rstrip(".")
    return address if is_valid_address(address) else None
