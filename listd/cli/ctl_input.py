"""Addresses from files, stdin and arguments: what subscribe, import and sync read.

Two formats, told apart line by line:

- plain: one address per line, ``Name <addr>`` allowed;
- CSV: ``address,name`` rows (the csv module's quoting), with an optional header row
  naming the columns (``address,name``, ``email,name``; ``listctl export`` writes
  ``address,name,status,since``). Under a header, rows whose ``status`` is not ``active``
  are skipped with a warning, so an export read back never re-subscribes anyone who left.

Blank lines and lines starting with ``#`` are ignored. Problems are collected as
``SOURCE:LINE: problem`` lines, so a caller can report all of them and change nothing.
An address given twice (compared case-insensitively) counts once, with one warning.
"""

from __future__ import annotations

import csv
import email.utils
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from listd.cli.ctl_base import NoInputError
from listd.mail.addresses import address_key, is_valid_address
from listd.mail.policy import MemberStatus

_ADDRESS_COLUMNS = ("address", "email", "e-mail", "mail")


@dataclass(frozen=True)
class Entry:
    address: str
    name: str
    where: str  # SOURCE:LINE, for messages


@dataclass(frozen=True)
class _Columns:
    address: int
    name: int | None
    status: int | None


@dataclass
class AddressReader:
    entries: list[Entry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _first: dict[str, Entry] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set)

    def read_arguments(self, arguments: list[str], stdin: BinaryIO | None = None) -> None:
        """Command-line arguments: each one address, or '-' for a file on stdin."""
        for number, argument in enumerate(arguments, 1):
            if argument == "-":
                self.read_source("-", stdin)
            else:
                self._line(argument.strip(), f"argument {number}")

    def read_source(self, source: str, stdin: BinaryIO | None = None) -> str:
        """Read a file, or stdin for '-'. Returns the name used in messages."""
        label = "stdin" if source == "-" else source
        if source == "-":
            data = (stdin or sys.stdin.buffer).read()
        else:
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise NoInputError(f"{source}: cannot open: {exc.strerror or exc}") from None
        self.read_bytes(data, label)
        return label

    def read_bytes(self, data: bytes, label: str) -> None:
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            bad = data.count(b"\n", 0, exc.start) + 1
            self.errors.append(f"{label}:{bad}: not UTF-8 text; nothing read from {label}")
            return
        columns: _Columns | None = None
        first = True
        # Not str.splitlines(): it also breaks at form feeds and U+2028, and the line
        # numbers would no longer be an editor's.
        for number, raw_line in enumerate(text.split("\n"), 1):
            line = raw_line.rstrip("\r").strip()
            if not line or line.startswith("#"):
                continue
            where = f"{label}:{number}"
            if first:
                first = False
                columns = _header(line)
                if columns is not None:
                    continue
            if columns is not None:
                self._csv_row(line, columns, where)
            else:
                self._line(line, where)

    # --- one line -------------------------------------------------------------------------

    def _line(self, text: str, where: str) -> None:
        if not text or text.startswith("#"):
            return
        fields = _csv_fields(text) if "," in text else None
        if fields and len(fields) >= 2 and is_valid_address(fields[0].strip()):
            if len(fields) > 2:
                self.errors.append(f"{where}: {len(fields)} columns; a row is address,name "
                                   "(or start the file with a header row naming them)")
                return
            if "@" in fields[1]:
                self.errors.append(f"{where}: more than one address; write one per line")
                return
            self._add(fields[0].strip(), fields[1].strip(), where)
            return
        pairs = email.utils.getaddresses([text])
        if len(pairs) != 1 or not is_valid_address(pairs[0][1]):
            hint = (' (a name with a comma needs quotes: "Last, First" <addr>)'
                    if "," in text and "@" in text else "")
            self.errors.append(f"{where}: {text!r} is not an email address{hint}")
            return
        name, address = pairs[0]
        self._add(address, name, where)

    def _csv_row(self, text: str, columns: _Columns, where: str) -> None:
        fields = _csv_fields(text)
        if fields is None:
            self.errors.append(f"{where}: not a CSV row (unbalanced quotes?)")
            return

        def column(index: int | None) -> str:
            return fields[index].strip() if index is not None and index < len(fields) else ""

        address, name, status = (column(columns.address), column(columns.name),
                                 column(columns.status).lower())
        if not is_valid_address(address):
            self.errors.append(f"{where}: {address!r} is not an email address")
            return
        if status and status != MemberStatus.ACTIVE:
            if status not in set(MemberStatus):
                self.errors.append(f"{where}: unknown status {status!r} (one of "
                                   f"{', '.join(MemberStatus)})")
            else:
                self.warnings.append(f"{where}: warning: skipped {address}: status {status}")
            return
        self._add(address, name, where)

    def _add(self, address: str, name: str, where: str) -> None:
        if any(unicodedata.category(c) == "Cc" for c in name):
            self.errors.append(f"{where}: the name of {address} has control characters")
            return
        key = address_key(address)
        first = self._first.get(key)
        if first is not None:
            if key not in self._warned:
                self._warned.add(key)
                self.warnings.append(f"{where}: warning: {address} is listed again (first at "
                                     f"{first.where}); counted once")
            return
        entry = Entry(address, name, where)
        self._first[key] = entry
        self.entries.append(entry)


def _csv_fields(text: str) -> list[str] | None:
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error:
        return None


def _header(line: str) -> _Columns | None:
    """The columns named by a header row, or None if ``line`` is no header."""
    fields = _csv_fields(line)
    if not fields or any("@" in f for f in fields):
        return None
    names = [f.strip().lower() for f in fields]
    address = next((i for i, n in enumerate(names) if n in _ADDRESS_COLUMNS), None)
    if address is None:
        return None
    return _Columns(address, names.index("name") if "name" in names else None,
                    names.index("status") if "status" in names else None)
