"""A message as raw bytes: its header fields exactly as written, and the untouched body.

Python's ``email`` package re-folds and re-encodes headers when it serialises a message,
which breaks DKIM signatures, long address lists and unusual charsets. listd therefore
never round-trips relayed mail through it: this module splits a message into header
fields (each kept byte-for-byte, folding included) and the body bytes, lets a caller drop,
replace or add whole fields, and joins it back. Reading a value for a decision decodes a
copy; writing never touches the fields it was not asked to change.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass

_FIELD_NAME_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_FOLD_RE = re.compile(rb"\r?\n(?=[ \t])")


@dataclass(frozen=True)
class Field:
    """One header field; ``raw`` is its exact bytes including folding and line end."""

    name: str
    raw: bytes

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def raw_value(self) -> bytes:
        """The bytes after the colon, folding kept, the final line end removed."""
        _, _, value = self.raw.partition(b":")
        return value.rstrip(b"\r\n")

    @property
    def value(self) -> str:
        """The unfolded value as one line of text (RFC 2047 words left as they are)."""
        return _one_line(_text(_FOLD_RE.sub(b"", self.raw_value))).strip()


def _text(data: bytes) -> str:
    # Raw 8-bit headers are usually UTF-8 (RFC 6532); anything else must not crash us.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _one_line(text: str) -> str:
    # A bare CR (or VT, NEL, U+2028...) left inside a value is no line break in mail, but
    # it is one to Python: the email package refuses such a value in a header we compose.
    return " ".join(text.splitlines())


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words for display and matching; never raises.

    The result is one line of text that can be encoded as UTF-8: an encoded word may
    declare any Python codec, "unicode-escape" too, and so decode to lone surrogates.
    """
    try:
        decoded = str(email.header.make_header(email.header.decode_header(value)))
        return _one_line(decoded.encode("utf-8", "replace").decode("utf-8"))
    # MessageError covers CharsetError: an encoded word naming a charset like "utf\xff8".
    except (ValueError, LookupError, UnicodeError, email.errors.MessageError):
        return value


@dataclass(frozen=True)
class RawMessage:
    """A parsed-but-untouched message: ``serialize()`` gives back the original bytes."""

    fields: tuple[Field, ...]
    separator: bytes  # the empty line between header and body (b"" if there was none)
    body: bytes
    newline: bytes  # the line ending the message uses, for fields we add

    @classmethod
    def parse(cls, data: bytes) -> RawMessage:
        fields: list[Field] = []
        # Lines end at LF only: a bare CR is no line break in RFC 5322 (bytes.splitlines
        # would split there, and a CR-only message could then not be joined back).
        lines = io.BytesIO(data).readlines()
        newline = b"\r\n" if lines and lines[0].endswith(b"\r\n") else b"\n"
        index = 0
        while index < len(lines):
            line = lines[index]
            if line in (b"\r\n", b"\n"):
                body = b"".join(lines[index + 1 :])
                return cls(tuple(fields), line, body, newline)
            if line[:1] in (b" ", b"\t") and fields:
                last = fields[-1]
                fields[-1] = Field(last.name, last.raw + line)
            else:
                match = _FIELD_NAME_RE.match(line)
                # A line that is no field (an mbox "From " line, garbage) is kept verbatim
                # under an empty name: relayed as it came, never matched by any lookup.
                name = match.group(1).decode("ascii") if match else ""
                fields.append(Field(name, line))
            index += 1
        return cls(tuple(fields), b"", b"", newline)

    def serialize(self) -> bytes:
        return b"".join(field.raw for field in self.fields) + self.separator + self.body

    def get_all(self, name: str) -> list[Field]:
        key = name.lower()
        return [f for f in self.fields if f.key == key]

    def get(self, name: str) -> str | None:
        """The first field of this name as unfolded text, or None."""
        found = self.get_all(name)
        return found[0].value if found else None

    def addresses(self, *names: str) -> list[tuple[str, str]]:
        """(display name, address) pairs from the named address fields, in order."""
        values = [f.value for name in names for f in self.get_all(name)]
        try:
            pairs = email.utils.getaddresses(values)
        except RecursionError:  # the parser recurses once per nested "(": hostile input
            return []
        return [(decode_words(n), a) for n, a in pairs if a]

    def edit(self, *, remove: Iterable[str] = (), replace: dict[str, bytes] | None = None,
             append: Iterable[tuple[str, bytes]] = ()) -> RawMessage:
        """A copy with fields removed, replaced in place, or appended.

        ``replace`` maps a field name to its new value bytes; the first field of that name is
        rewritten where it stands (others of that name dropped), or the field is appended if
        absent. Values are raw bytes without the name, folding already applied.
        """
        replace = {k.lower(): v for k, v in (replace or {}).items()}
        dropped = {n.lower() for n in remove}
        out: list[Field] = []
        done: set[str] = set()
        for field in self.fields:
            if field.key in dropped:
                continue
            if field.key in replace:
                if field.key not in done:
                    out.append(self._field(field.name, replace[field.key]))
                    done.add(field.key)
                continue
            out.append(field)
        for key, value in replace.items():
            if key not in done:
                out.append(self._field(_canonical(key), value))
        out.extend(self._field(name, value) for name, value in append)
        # The last field of a message without body may lack its line end; a field after it
        # must not be glued onto it.
        out = [f if f.raw.endswith(b"\n") or i == len(out) - 1
               else Field(f.name, f.raw + self.newline) for i, f in enumerate(out)]
        return RawMessage(tuple(out), self.separator, self.body, self.newline)

    def _field(self, name: str, value: bytes) -> Field:
        value = value.replace(b"\r\n", b"\n").replace(b"\n", self.newline)
        return Field(name, name.encode("ascii") + b": " + value + self.newline)


def _canonical(key: str) -> str:
    special = {"list-id": "List-Id", "message-id": "Message-ID", "x-loop": "X-Loop"}
    return special.get(key) or "-".join(part.capitalize() for part in key.split("-"))
