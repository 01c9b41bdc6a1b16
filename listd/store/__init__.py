"""The SQLite state: members, mailbox checkpoint, inbound journal, outbox and deliveries.

The only package that writes SQL. Every method that changes state is one transaction, so
a crash between two calls leaves the database at one of them, never between. WAL mode
lets ``listctl`` read and write while the daemon runs; the busy timeout makes them wait
for each other instead of failing.
"""

from __future__ import annotations

from listd.store.database import DB_NAME, SCHEMA_VERSION, StoreError
from listd.store.journal import JournalStore, sha256
from listd.store.members import MemberStore
from listd.store.outbox import OutboxStore
from listd.store.records import (
    Checkpoint,
    DeliveryUpdate,
    FetchedMessage,
    Inbound,
    Member,
    NewOutgoing,
    Outgoing,
)


class Store(JournalStore, OutboxStore, MemberStore):
    """The whole state, over one connection."""


__all__ = [
    "DB_NAME", "SCHEMA_VERSION", "Checkpoint", "DeliveryUpdate", "FetchedMessage", "Inbound",
    "Member", "NewOutgoing", "Outgoing", "Store", "StoreError", "sha256",
]
