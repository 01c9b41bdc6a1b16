"""The SQLite state: members, mailbox checkpoint, inbound journal, outbox and deliveries.

The only module that writes SQL. Every method that changes state is one transaction, so a
crash between two calls leaves the database at one of them, never between. WAL mode lets
``listctl`` read and write while the daemon runs; the busy timeout makes them wait for
each other instead of failing.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from listd.mail.addresses import address_key
from listd.mail.policy import MemberStatus

DB_NAME = "listd.sqlite3"
BUSY_TIMEOUT_S = 30.0

# Forward migrations: index i brings the schema from version i to i + 1. Never edit one
# that has shipped; append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE members (
            list_id TEXT NOT NULL,
            address_key TEXT NOT NULL,
            address TEXT NOT NULL,
            display_name TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL
                CHECK (status IN ('active', 'pending', 'disabled', 'unsubscribed')),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (list_id, address_key)
        ) WITHOUT ROWID""",
        "CREATE INDEX members_by_address ON members (address_key)",
        """CREATE TABLE checkpoint (
            folder TEXT PRIMARY KEY,
            uidvalidity INTEGER NOT NULL,
            last_uid INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE inbound (
            id INTEGER PRIMARY KEY,
            folder TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            message_id TEXT,
            date_header TEXT,
            sha256 TEXT NOT NULL,
            raw BLOB NOT NULL,
            received_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'done')),
            decision TEXT,
            reason TEXT,
            processed_at REAL,
            UNIQUE (folder, uidvalidity, uid)
        )""",
        "CREATE INDEX inbound_by_message_id ON inbound (message_id, date_header)",
        "CREATE INDEX inbound_by_sha256 ON inbound (sha256)",
        "CREATE INDEX inbound_new ON inbound (id) WHERE state = 'new'",
        """CREATE TABLE outgoing (
            id INTEGER PRIMARY KEY,
            inbound_id INTEGER REFERENCES inbound (id),
            list_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('post', 'notice', 'forward')),
            envelope_from TEXT NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE deliveries (
            outgoing_id INTEGER NOT NULL REFERENCES outgoing (id),
            recipient TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_code INTEGER,
            last_text TEXT,
            next_attempt_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (outgoing_id, recipient)
        ) WITHOUT ROWID""",
        "CREATE INDEX deliveries_due ON deliveries (next_attempt_at, outgoing_id) "
        "WHERE state = 'pending'",
        "CREATE TABLE notice_log (key TEXT PRIMARY KEY, sent_at REAL NOT NULL) WITHOUT ROWID",
        "CREATE TABLE status (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The database cannot be used (unreadable, from a newer listd, ...)."""


@dataclass(frozen=True)
class Member:
    list_id: str
    address: str
    display_name: str
    status: MemberStatus
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw: bytes
    message_id: str | None
    date_header: str | None


@dataclass(frozen=True)
class Inbound:
    id: int
    uid: int
    raw: bytes


@dataclass(frozen=True)
class Outgoing:
    id: int
    list_id: str
    kind: str
    envelope_from: str
    data: bytes
    created_at: float


@dataclass(frozen=True)
class NewOutgoing:
    """An outbox entry to create. ``recipients`` None means: the list's active members."""

    list_id: str
    kind: str
    envelope_from: str
    data: bytes
    recipients: Sequence[str] | None = None
    exclude: str | None = None  # a member address not to send to (the author)


@dataclass(frozen=True)
class DeliveryUpdate:
    recipient: str
    state: str
    attempts: int
    code: int
    text: str
    next_attempt_at: float


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class Store:
    """One SQLite connection, safe to share between the daemon's threads."""

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives any process crash (kill -9); only a power loss can
            # roll back the last commits, which at worst re-sends a batch. listctl asks for
            # FULL: an admin's change must survive a power cut too.
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from exc

    @classmethod
    def open(cls, state_dir: Path, *, durable: bool = False) -> Store:
        try:
            state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {state_dir}: "
                             f"{exc.strerror}") from exc
        old_umask = os.umask(0o027)  # the database holds mail: not for other users
        try:
            return cls(state_dir / DB_NAME, durable=durable)
        finally:
            os.umask(old_umask)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer listd (schema "
                                 f"{version} > {SCHEMA_VERSION}); upgrade listd")
            for steps in MIGRATIONS[version:]:
                for statement in steps:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # --- members ------------------------------------------------------------------------

    def set_members(self, list_id: str, entries: Iterable[tuple[str, str]],
                    status: MemberStatus, now: float, *, only_existing: bool = False
                    ) -> list[tuple[str, MemberStatus | None]]:
        """Give each (address, display name) ``status`` on a list, in one transaction.

        Returns each address with its previous status (None when it was not on the list;
        with ``only_existing`` such addresses are left out of the list, not added).
        """
        changes: list[tuple[str, MemberStatus | None]] = []
        with self._transaction() as db:
            for address, name in entries:
                key = address_key(address)
                row = db.execute("SELECT status FROM members WHERE list_id = ? AND "
                                 "address_key = ?", (list_id, key)).fetchone()
                previous = MemberStatus(row[0]) if row else None
                if row is None and only_existing:
                    pass
                elif row is None:
                    db.execute("INSERT INTO members (list_id, address_key, address, "
                               "display_name, status, created_at, updated_at) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (list_id, key, address, name, status, now, now))
                elif previous != status or name:
                    db.execute("UPDATE members SET status = ?, updated_at = ?, display_name = "
                               "CASE WHEN ? <> '' THEN ? ELSE display_name END "
                               "WHERE list_id = ? AND address_key = ?",
                               (status, now, name, name, list_id, key))
                changes.append((address, previous))
        return changes

    def members(self, list_id: str, status: MemberStatus | None = None) -> list[Member]:
        query = ("SELECT list_id, address, display_name, status, created_at, updated_at "
                 "FROM members WHERE list_id = ?")
        params: tuple[str, ...] = (list_id,)
        if status is not None:
            query += " AND status = ?"
            params += (status,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY address_key", params).fetchall()
        return [Member(r[0], r[1], r[2], MemberStatus(r[3]), r[4], r[5]) for r in rows]

    def member_status(self, list_id: str, address: str) -> MemberStatus | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM members WHERE list_id = ? AND "
                                   "address_key = ?", (list_id, address_key(address))).fetchone()
        return MemberStatus(row[0]) if row else None

    def member_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            rows = self._db.execute("SELECT list_id, status, count(*) FROM members "
                                    "GROUP BY list_id, status").fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    # --- mailbox checkpoint and inbound journal -----------------------------------------

    def checkpoint(self, folder: str) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute("SELECT uidvalidity, last_uid FROM checkpoint "
                                   "WHERE folder = ?", (folder,)).fetchone()
        return Checkpoint(row[0], row[1]) if row else None

    def journal_fetched(self, folder: str, uidvalidity: int, messages: Sequence[FetchedMessage],
                        checkpoint: Checkpoint, now: float) -> None:
        """Record messages fetched under ``uidvalidity`` and set the checkpoint, atomically."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO inbound (folder, uidvalidity, uid, message_id, "
                "date_header, sha256, raw, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(folder, uidvalidity, m.uid, m.message_id, m.date_header, sha256(m.raw),
                  m.raw, now) for m in messages])
            db.execute("INSERT INTO checkpoint (folder, uidvalidity, last_uid, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (folder) DO UPDATE SET "
                       "uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, "
                       "updated_at = excluded.updated_at",
                       (folder, checkpoint.uidvalidity, checkpoint.last_uid, now))

    def seen_before(self, message_id: str | None, date_header: str | None,
                    raw_sha256: str | None = None) -> bool:
        """Whether a message was journaled already (used after a UIDVALIDITY change)."""
        with self._lock:
            if message_id:
                row = self._db.execute(
                    "SELECT 1 FROM inbound WHERE message_id = ? AND date_header IS ?",
                    (message_id, date_header)).fetchone()
            elif raw_sha256:
                row = self._db.execute("SELECT 1 FROM inbound WHERE sha256 = ?",
                                       (raw_sha256,)).fetchone()
            else:
                return False
        return row is not None

    def unprocessed(self) -> list[Inbound]:
        with self._lock:
            rows = self._db.execute("SELECT id, uid, raw FROM inbound WHERE state = 'new' "
                                    "ORDER BY id").fetchall()
        return [Inbound(r[0], r[1], r[2]) for r in rows]

    def complete_inbound(self, inbound_id: int, decision: str, reason: str,
                         outgoing: Sequence[NewOutgoing], notice_keys: Sequence[str],
                         now: float) -> int:
        """Mark a message decided and queue what it causes, in one transaction.

        Returns the number of deliveries created.
        """
        created = 0
        with self._transaction() as db:
            for item in outgoing:
                cursor = db.execute(
                    "INSERT INTO outgoing (inbound_id, list_id, kind, envelope_from, data, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (inbound_id, item.list_id, item.kind, item.envelope_from, item.data, now))
                outgoing_id = cursor.lastrowid
                if item.recipients is None:
                    cursor = db.execute(
                        "INSERT INTO deliveries (outgoing_id, recipient, next_attempt_at, "
                        "updated_at) SELECT ?, address, ?, ? FROM members WHERE list_id = ? "
                        "AND status = 'active' AND address_key IS NOT ?",
                        (outgoing_id, now, now, item.list_id,
                         address_key(item.exclude) if item.exclude else None))
                else:
                    cursor = db.executemany(
                        "INSERT OR IGNORE INTO deliveries (outgoing_id, recipient, "
                        "next_attempt_at, updated_at) VALUES (?, ?, ?, ?)",
                        [(outgoing_id, r, now, now) for r in item.recipients])
                created += cursor.rowcount
            db.executemany("INSERT OR REPLACE INTO notice_log (key, sent_at) VALUES (?, ?)",
                           [(key, now) for key in notice_keys])
            db.execute("UPDATE inbound SET state = 'done', decision = ?, reason = ?, "
                       "processed_at = ? WHERE id = ?", (decision, reason, now, inbound_id))
        return created

    def last_notice(self, key: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT sent_at FROM notice_log WHERE key = ?",
                                   (key,)).fetchone()
        return float(row[0]) if row else None

    # --- deliveries ---------------------------------------------------------------------

    def due_outgoing(self, now: float) -> list[Outgoing]:
        """Outbox entries with deliveries due, oldest first (a resumed post goes first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, list_id, kind, envelope_from, data, created_at FROM outgoing "
                "WHERE id IN (SELECT DISTINCT outgoing_id FROM deliveries WHERE state = 'pending' "
                "AND next_attempt_at <= ?) ORDER BY id", (now,)).fetchall()
        return [Outgoing(*r) for r in rows]

    def due_recipients(self, outgoing_id: int, now: float) -> list[tuple[str, int]]:
        """(recipient, attempts so far) of the due deliveries of one outbox entry."""
        with self._lock:
            rows = self._db.execute(
                "SELECT recipient, attempts FROM deliveries WHERE outgoing_id = ? AND "
                "state = 'pending' AND next_attempt_at <= ? ORDER BY recipient",
                (outgoing_id, now)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def record_deliveries(self, outgoing_id: int, updates: Sequence[DeliveryUpdate],
                          now: float) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE deliveries SET state = ?, attempts = ?, last_code = ?, last_text = ?, "
                "next_attempt_at = ?, updated_at = ? WHERE outgoing_id = ? AND recipient = ?",
                [(u.state, u.attempts, u.code, u.text, u.next_attempt_at, now, outgoing_id,
                  u.recipient) for u in updates])

    def next_due(self) -> float | None:
        """When the earliest pending delivery is due, or None if none is pending."""
        with self._lock:
            row = self._db.execute("SELECT min(next_attempt_at) FROM deliveries "
                                   "WHERE state = 'pending'").fetchone()
        return None if row[0] is None else float(row[0])

    def delivery_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM deliveries "
                                    "GROUP BY state").fetchall()
        counts = {"pending": 0, "sent": 0, "failed": 0}
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def oldest_pending_created(self) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT min(o.created_at) FROM outgoing o WHERE EXISTS (SELECT 1 FROM "
                "deliveries d WHERE d.outgoing_id = o.id AND d.state = 'pending')").fetchone()
        return None if row[0] is None else float(row[0])

    def failed_deliveries(self, limit: int = 100) -> list[tuple[int, str, int, str, float]]:
        """(outgoing id, recipient, code, text, when) of the most recent permanent failures."""
        with self._lock:
            rows = self._db.execute(
                "SELECT outgoing_id, recipient, last_code, last_text, updated_at FROM "
                "deliveries WHERE state = 'failed' ORDER BY updated_at DESC LIMIT ?",
                (limit,)).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def prune(self, before: float) -> tuple[int, int]:
        """Forget what is only history: message bytes and finished deliveries older than
        ``before``. Message-ID, Date and digest of inbound mail stay, for de-duplication.

        Returns (messages emptied, outbox entries removed).
        """
        with self._transaction() as db:
            emptied = db.execute("UPDATE inbound SET raw = x'' WHERE state = 'done' AND "
                                 "processed_at < ? AND length(raw) > 0", (before,)).rowcount
            finished = ("SELECT id FROM outgoing o WHERE created_at < ? AND NOT EXISTS "
                        "(SELECT 1 FROM deliveries d WHERE d.outgoing_id = o.id AND "
                        "(d.state = 'pending' OR d.updated_at >= ?))")
            db.execute(f"DELETE FROM deliveries WHERE outgoing_id IN ({finished})",
                       (before, before))
            removed = db.execute(f"DELETE FROM outgoing WHERE id IN ({finished})",
                                 (before, before)).rowcount
        return emptied, removed

    # --- status values --------------------------------------------------------------------

    def set_status(self, **values: str) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO status (key, value) VALUES (?, ?)",
                           list(values.items()))

    def status_values(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM status").fetchall())

    def inbound_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM inbound").fetchone()[0])
