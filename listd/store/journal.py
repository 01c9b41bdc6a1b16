"""The mailbox checkpoint, the inbound journal and status values."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from listd.store.database import Database
from listd.store.records import Checkpoint, FetchedMessage, Inbound


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class JournalStore(Database):

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

    def last_notice(self, key: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT sent_at FROM notice_log WHERE key = ?",
                                   (key,)).fetchone()
        return float(row[0]) if row else None

    def prune(self, before: float) -> tuple[int, int]:
        """Forget what is only history: message bytes and finished deliveries older than
        ``before``. Message-ID, Date and digest of inbound mail stay, for de-duplication.

        Returns (messages emptied, outbox entries removed).
        """
        with self._transaction() as db:
            emptied = db.execute(
                "UPDATE inbound SET raw = x'' WHERE state = 'done' AND processed_at < ? AND "
                "length(raw) > 0 AND id NOT IN (SELECT inbound_id FROM held WHERE "
                "state = 'held')", (before,)).rowcount
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
