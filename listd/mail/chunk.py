"""Recipients into SMTP transactions."""

from __future__ import annotations

from collections.abc import Sequence


def chunks(recipients: Sequence[str], size: int) -> list[list[str]]:
    """Recipients in transactions of at most ``size``, grouped by domain so that one
    transaction tends to go to one destination when the server relays onwards."""
    ordered = sorted(recipients, key=lambda r: (r.rpartition("@")[2].lower(), r.lower()))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]
