"""The outbox and its deliveries: what is due, what was sent, what failed."""

from __future__ import annotations

from collections.abc import Sequence

from listd.store.database import Database
from listd.store.records import DeliveryUpdate, Outgoing


class OutboxStore(Database):

    def due_outgoing(self, now: float) -> list[Outgoing]:
        """Outbox entries with deliveries due, oldest first (a resumed post goes first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, list_id, kind, envelope_from, data, created_at, personalize "
                "FROM outgoing "
                "WHERE id IN (SELECT DISTINCT outgoing_id FROM deliveries WHERE state = 'pending' "
                "AND next_attempt_at <= ?) ORDER BY id", (now,)).fetchall()
        return [Outgoing(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

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

    def pending_count(self) -> int:
        """Deliveries waiting, counted from the small partial index (cheap on every loop)."""
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM deliveries INDEXED BY deliveries_due "
                                   "WHERE state = 'pending' AND next_attempt_at > -1").fetchone()
        return int(row[0])
