"""Email addresses: validation, comparison keys and the parts lists care about.

Pure functions. A member's address is stored as written; all comparisons go through
:func:`address_key`, which lower-cases the whole address. RFC 5321 lets the local part be
case-sensitive, but no mailbox provider in use treats it so, and a key that differs only in
case would let one person hold two subscriptions and receive every post twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Deliberately practical, not the full RFC 5322 grammar: a dot-atom or quoted local part,
# and a domain of letters/digits/hyphens with at least one dot (or an address literal).
_LOCAL = r'(?:[A-Za-z0-9!#$%&\'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&\'*+/=?^_`{|}~-]+)*|"[^"\r\n]+")'
_LABEL = r"(?:[A-Za-z0-9\u0080-\uffff](?:[A-Za-z0-9\u0080-\uffff-]{0,61}[A-Za-z0-9\u0080-\uffff])?)"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})+|\[[0-9A-Fa-f:.]+\])"
_ADDRESS_RE = re.compile(rf"^(?P<local>{_LOCAL}|[^\s@\"<>()]+)@(?P<domain>{_DOMAIN})$")


def is_valid_address(text: str) -> bool:
    """True for a bare ``local@domain`` that we are willing to send mail to."""
    return len(text) <= 254 and _ADDRESS_RE.match(text) is not None


def address_key(address: str) -> str:
    """The comparison key of an address: stripped and lower-cased."""
    return address.strip().lower()


@dataclass(frozen=True)
class ListAddress:
    """How a recipient address relates to a list address.

    ``suffix`` is what followed the list's local part: ``""`` for the list itself,
    ``"request"`` for ``list-request@``, ``"owner"`` for ``list-owner@``, or the tag of
    ``list+tag@``.
    """

    local: str
    domain: str

    @classmethod
    def parse(cls, address: str) -> ListAddress:
        local, _, domain = address_key(address).rpartition("@")
        return cls(local, domain)

    def match(self, recipient: str) -> tuple[str, str] | None:
        """Return ``(separator, suffix)`` if ``recipient`` belongs to this list, else None.

        ``separator`` is ``""`` (the list address), ``"-"`` or ``"+"``.
        """
        local, _, domain = address_key(recipient).rpartition("@")
        if domain != self.domain or not local.startswith(self.local):
            return None
        rest = local[len(self.local) :]
        if not rest:
            return ("", "")
        separator, suffix = rest[0], rest[1:]
        if separator == "+" and suffix:
            return ("+", suffix)
        if separator == "-" and suffix in ("request", "owner"):
            return ("-", suffix)
        return None
