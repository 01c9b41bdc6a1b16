"""Members of lists."""

from __future__ import annotations

from collections.abc import Iterable

from listd.mail.addresses import address_key
from listd.mail.policy import MemberStatus
from listd.store.database import Database
from listd.store.records import Member


class MemberStore(Database):

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
