"""The SQLite state: members, mailbox checkpoint, inbound journal, outbox and deliveries.

The only package that writes SQL. Every method that changes state is one transaction, so
a crash between two calls leaves the database at one of them, never between. WAL mode
lets ``listctl`` read and write while the daemon runs; the busy timeout makes them wait
for each other instead of failing.
"""

from __future__ import annotations

from listd.store.database import DB_NAME, SCHEMA_VERSION, StoreError
from listd.store.effects import EffectsStore, InboundDecision, StaleDecision
from listd.store.journal import JournalStore, sha256
from listd.store.members import MemberStore
from listd.store.moderation import ModerationStore
from listd.store.outbox import OutboxStore
from listd.store.records import (
    Checkpoint,
    DeliveryUpdate,
    Effects,
    FetchedMessage,
    HeldDecision,
    HeldPost,
    Inbound,
    Member,
    MemberChange,
    NewBounce,
    NewHeld,
    NewOutgoing,
    NewToken,
    Outgoing,
    Token,
)


class Store(JournalStore, OutboxStore, MemberStore, ModerationStore, EffectsStore):
    """The whole state, over one connection."""


__all__ = [
    "DB_NAME", "SCHEMA_VERSION", "Checkpoint", "DeliveryUpdate", "Effects", "FetchedMessage",
    "HeldDecision", "HeldPost", "Inbound", "InboundDecision", "Member", "MemberChange",
    "NewBounce", "NewHeld", "NewOutgoing", "NewToken", "Outgoing", "StaleDecision", "Store",
    "StoreError",
    "Token", "sha256",
]
