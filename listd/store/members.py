"""Members of lists."""

from __future__ import annotations

from listd.mail.addresses import address_key
from listd.mail.policy import MemberStatus
from listd.store.database import Database
from listd.store.records import Member


class MemberStore(Database):
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

    def unsubscribe_generation(self, list_id: str, address: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT unsubscribe_generation FROM members WHERE "
                                   "list_id = ? AND address_key = ?",
                                   (list_id, address_key(address))).fetchone()
        return int(row[0]) if row else None

    def membership_log(self, list_id: str, limit: int = 100
                       ) -> list[tuple[float, str, str | None, str, str, str, str]]:
        """(when, address, old, new status, actor, via, reason), newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT at, address, old_status, new_status, actor, via, reason FROM "
                "membership_log WHERE list_id = ? ORDER BY id DESC LIMIT ?",
                (list_id, limit)).fetchall()
        return [tuple(r) for r in rows]
