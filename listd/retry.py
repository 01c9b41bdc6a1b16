"""Retry timing and what an SMTP reply means for a delivery. Pure: clock and randomness
are passed in.

SMTP outcomes are data, ``{recipient: (code, text)}``: 2xx sent, 4xx try again later,
5xx permanent. A dropped connection is reported by the transport as a synthetic 4xx.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from listd.store import DeliveryUpdate

Outcome = tuple[int, str]


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter (±20 %, so retries of many do not align)."""

    initial: float
    maximum: float
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random) -> float:
        if failures <= 0 or self.initial <= 0:
            return 0.0
        base = min(self.maximum, self.initial * float(2 ** min(failures - 1, 32)))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True)
class RetryPolicy:
    backoff: Backoff
    give_up_after: float  # seconds since the message was queued


def delivery_updates(outcomes: Mapping[str, Outcome], attempts: Mapping[str, int],
                     queued_at: float, now: float, policy: RetryPolicy,
                     rng: random.Random) -> list[DeliveryUpdate]:
    """The journal updates for one transaction's per-recipient outcomes."""
    updates: list[DeliveryUpdate] = []
    for recipient, (code, text) in outcomes.items():
        tries = attempts.get(recipient, 0) + 1
        if 200 <= code < 300:
            state, next_at = "sent", now
        elif 400 <= code < 500 and now - queued_at < policy.give_up_after:
            state, next_at = "pending", now + policy.backoff.delay(tries, rng)
        elif 400 <= code < 500:
            state, next_at = "failed", now
            text = f"gave up after {tries} attempts: {text}"
        else:
            state, next_at = "failed", now
        updates.append(DeliveryUpdate(recipient, state, tries, code, text[:500], next_at))
    return updates

