"""Writing header values we compose: RFC 2047 words and RFC 5322 phrases, folded.

Only for values listd itself writes (a rewritten From, a List-Id phrase, a new Subject);
fields we relay unchanged are never passed through here. Every line written here stays
within 78 columns, counting the field name on the first line.
"""

from __future__ import annotations

import email.header
import re

_ATOM_TEXT_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*$")
MAX_LINE = 78


def is_ascii(text: str) -> bool:
    return text.isascii()


def phrase(text: str, offset: int = len("From: ")) -> str:
    """A display name as an RFC 5322 phrase: atoms as they are, else a quoted string,
    else (non-ASCII, or a word too long to fold) RFC 2047 encoded words.

    ``offset`` is how much of the first line is taken before the phrase.
    """
    text = " ".join(text.split())
    if not text:
        return ""
    # A literal "=?...?=" would be decoded by readers, even inside quotes: encode it too.
    if not is_ascii(text) or "=?" in text:
        return encoded_words(text, offset)
    if _ATOM_TEXT_RE.match(text):
        shown = text
    else:
        shown = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _fold_or_encode(shown, text, offset)


def mailbox(name: str, address: str, field: str) -> str:
    """``Name <address>`` as the value of ``field``, folded before ``<`` if the line is full."""
    offset = len(field) + 2
    shown = phrase(name, offset)
    if not shown:
        return f"<{address}>"
    lines = shown.split("\r\n")
    used = len(lines[-1]) + (offset if len(lines) == 1 else 0)
    glue = " " if used + len(address) + 3 <= MAX_LINE else "\r\n "
    return f"{shown}{glue}<{address}>"


def encoded_words(text: str, prefix_length: int = 0) -> str:
    """``text`` as UTF-8 encoded words, folded with CRLF + space between them."""
    header = email.header.Header(text, "utf-8", header_name=None,
                                 maxlinelen=MAX_LINE - 2, continuation_ws=" ")
    return header.encode(linesep="\r\n", maxlinelen=MAX_LINE - prefix_length)


def unstructured(text: str, name: str) -> str:
    """An unstructured value (Subject): ASCII folded at spaces, otherwise encoded words."""
    offset = len(name) + 2
    if is_ascii(text) and "=?" not in text:
        return _fold_or_encode(text, text, offset)
    return encoded_words(text, prefix_length=offset)


def _fold_or_encode(shown: str, text: str, offset: int) -> str:
    """ASCII ``shown`` folded at spaces; if a word is too long for one line, ``text`` as
    encoded words instead, which can be split anywhere (one 1000-character word would
    otherwise break SMTP's line limit)."""
    folded = fold_ascii(shown, offset)
    lines = folded.split("\r\n")
    if len(lines[0]) + offset > MAX_LINE or any(len(line) > MAX_LINE for line in lines[1:]):
        return encoded_words(text, offset)
    return folded


def fold_ascii(text: str, first_offset: int) -> str:
    """Fold ASCII text at spaces so lines stay within 78 columns where possible."""
    words = text.split(" ")
    lines: list[str] = []
    current = ""
    limit = MAX_LINE - first_offset
    for word in words:
        candidate = f"{current} {word}" if current else word
        if current and len(candidate) > limit:
            lines.append(current)
            current = word
            limit = MAX_LINE - 1
        else:
            current = candidate
    lines.append(current)
    return "\r\n ".join(lines)
