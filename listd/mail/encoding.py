"""Writing header values we compose: RFC 2047 words and RFC 5322 phrases, folded.

Only for values listd itself writes (a rewritten From, a List-Id phrase, a new Subject);
fields we relay unchanged are never passed through here.
"""

from __future__ import annotations

import email.header
import re

_ATOM_TEXT_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*$")
MAX_LINE = 78


def is_ascii(text: str) -> bool:
    return text.isascii()


def phrase(text: str) -> str:
    """A display name as an RFC 5322 phrase: atoms as they are, else a quoted string,
    else (non-ASCII) RFC 2047 encoded words, folded to fit within 78 columns."""
    text = " ".join(text.split())
    if not text:
        return ""
    if is_ascii(text):
        if _ATOM_TEXT_RE.match(text):
            return text
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return encoded_words(text, prefix_length=len("From: "))


def encoded_words(text: str, prefix_length: int = 0) -> str:
    """``text`` as UTF-8 encoded words, folded with CRLF + space between them."""
    header = email.header.Header(text, "utf-8", header_name=None,
                                 maxlinelen=MAX_LINE - 2, continuation_ws=" ")
    folded = header.encode(linesep="\r\n", maxlinelen=MAX_LINE - prefix_length)
    return folded


def unstructured(text: str, name: str) -> str:
    """An unstructured value (Subject): ASCII folded at spaces, otherwise encoded words."""
    if is_ascii(text) and "=?" not in text:
        return fold_ascii(text, len(name) + 2)
    return encoded_words(text, prefix_length=len(name) + 2)


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
