"""Tokens, held posts, bounce events and daily counters: what membership decisions read."""

from __future__ import annotations

from listd.mail.addresses import address_key
from listd.store.database import Database
from listd.store.effects import day_of
from listd.store.records import HeldPost, Token

_HELD_COLUMNS = ("id, inbound_id, list_id, sender, subject, reason, created_at, expires_at, "
                 "state")
_TOKEN_COLUMNS = "hash, list_id, address, action, ref, created_at, expires_at, used_at"


class ModerationStore(Database):
    def token(self, token_hash: str) -> Token | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE hash = ?",
                                   (token_hash,)).fetchone()
        return Token(*row) if row else None

    def open_tokens(self, now: float) -> list[Token]:
        """Tokens given out and neither used nor expired (confirmations waiting)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE used_at IS "
                                    "NULL AND expires_at > ? ORDER BY created_at",
                                    (now,)).fetchall()
        return [Token(*r) for r in rows]

    def open_token_for(self, list_id: str, address: str, action: str,
                       now: float) -> Token | None:
        for token in self.open_tokens(now):
            if (token.list_id, address_key(token.address), token.action) == (
                    list_id, address_key(address), action):
                return token
        return None

    def held_posts(self, state: str = "held") -> list[HeldPost]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_HELD_COLUMNS} FROM held WHERE state = ? "
                                    "ORDER BY id", (state,)).fetchall()
        return [HeldPost(*r) for r in rows]

    def held_post(self, held_id: int) -> HeldPost | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_HELD_COLUMNS} FROM held WHERE id = ?",
                                   (held_id,)).fetchone()
        return HeldPost(*row) if row else None

    def held_for(self, inbound_id: int, list_id: str) -> HeldPost | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_HELD_COLUMNS} FROM held WHERE inbound_id = ? "
                                   "AND list_id = ?", (inbound_id, list_id)).fetchone()
        return HeldPost(*row) if row else None

    def expired_held(self, now: float) -> list[HeldPost]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_HELD_COLUMNS} FROM held WHERE state = 'held' "
                                    "AND expires_at <= ? ORDER BY id", (now,)).fetchall()
        return [HeldPost(*r) for r in rows]

    def inbound_raw(self, inbound_id: int) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT raw FROM inbound WHERE id = ?",
                                   (inbound_id,)).fetchone()
        return bytes(row[0]) if row else b""

    def bounce_events(self, list_id: str, address: str, since: float
                      ) -> list[tuple[float, bool]]:
        """(when, permanent) of a member's bounces since ``since``."""
        with self._lock:
            rows = self._db.execute("SELECT at, permanent FROM bounces WHERE list_id = ? AND "
                                    "address_key = ? AND at >= ? ORDER BY at",
                                    (list_id, address_key(address), since)).fetchall()
        return [(float(r[0]), bool(r[1])) for r in rows]

    def count_today(self, key: str, now: float) -> int:
        with self._lock:
            row = self._db.execute("SELECT count FROM counters WHERE key = ? AND day = ?",
                                   (key, day_of(now))).fetchone()
        return int(row[0]) if row else 0
