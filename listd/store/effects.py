"""Applying a decision: everything it changes, in one transaction.

A decision about a message (or an administrator's command) may queue mail, change
members, hand out and use up tokens, hold or release posts and count bounces. Doing all of
it in one transaction, together with marking the message decided, is what makes a crash
harmless: either none of it happened (and the message is decided again) or all of it did.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from listd.mail.addresses import address_key
from listd.store.database import Database
from listd.store.records import Effects, MemberChange, NewOutgoing


class StaleDecision(Exception):
    """The decision was made on state that changed meanwhile (a token used, a held post
    decided by someone else): nothing was applied; decide again."""


@dataclass(frozen=True)
class InboundDecision:
    inbound_id: int
    decision: str
    reason: str


def day_of(timestamp: float) -> int:
    return int(timestamp // 86400)


class EffectsStore(Database):
    def apply(self, effects: Effects, now: float,
              inbound: InboundDecision | None = None) -> int:
        """Apply ``effects`` (and mark ``inbound`` decided). Returns deliveries created."""
        inbound_id = inbound.inbound_id if inbound else None
        with self._transaction() as db:
            # Tokens and held posts first: if another process used or decided them since
            # the decision was made, nothing of it may happen (no post relayed twice).
            for token in dict.fromkeys(effects.used_tokens):
                if not db.execute("UPDATE tokens SET used_at = ? WHERE hash = ? AND used_at "
                                  "IS NULL", (now, token)).rowcount:
                    raise StaleDecision("a token was used meanwhile")
            for decision in effects.held_decisions:
                if not db.execute(
                        "UPDATE held SET state = ?, decided_by = ?, decided_at = ? WHERE "
                        "inbound_id = ? AND list_id = ? AND state = 'held'",
                        (decision.state, decision.by, now, decision.inbound_id,
                         decision.list_id)).rowcount:
                    raise StaleDecision("a held post was decided meanwhile")
            # Member changes next: a welcome queued below must reach the new member.
            for change in effects.member_changes:
                _change_member(db, change, inbound_id, now)
            created = sum(_queue(db, item, inbound_id, now) for item in effects.outgoing)
            db.executemany("INSERT OR REPLACE INTO notice_log (key, sent_at) VALUES (?, ?)",
                           [(key, now) for key in effects.notice_keys])
            db.executemany(
                "INSERT INTO tokens (hash, list_id, address, action, ref, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(t.hash, t.list_id, t.address, t.action, t.ref, now, t.expires_at)
                 for t in effects.new_tokens])
            db.executemany(
                "INSERT OR IGNORE INTO held (inbound_id, list_id, sender, subject, reason, "
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(h.inbound_id, h.list_id, h.sender, h.subject, h.reason, now, h.expires_at)
                 for h in effects.held])
            db.executemany(
                "INSERT INTO bounces (list_id, address_key, permanent, inbound_id, at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(b.list_id, address_key(b.address), int(b.permanent), inbound_id, now)
                 for b in effects.bounces])
            db.executemany(
                "INSERT INTO counters (key, day, count) VALUES (?, ?, 1) ON CONFLICT "
                "(key, day) DO UPDATE SET count = count + 1",
                [(key, day_of(now)) for key in effects.counters])
            if inbound is not None:
                db.execute("UPDATE inbound SET state = 'done', decision = ?, reason = ?, "
                           "processed_at = ? WHERE id = ?",
                           (inbound.decision, inbound.reason, now, inbound.inbound_id))
        return created


def _queue(db: sqlite3.Connection, item: NewOutgoing, inbound_id: int | None,
           now: float) -> int:
    cursor = db.execute(
        "INSERT INTO outgoing (inbound_id, list_id, kind, envelope_from, data, created_at, "
        "personalize) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (inbound_id, item.list_id, item.kind, item.envelope_from, item.data, now,
         int(item.personalize)))
    outgoing_id = cursor.lastrowid
    if item.recipients is None:
        cursor = db.execute(
            "INSERT INTO deliveries (outgoing_id, recipient, next_attempt_at, updated_at) "
            "SELECT ?, address, ?, ? FROM members WHERE list_id = ? AND status = 'active' "
            "AND address_key IS NOT ?",
            (outgoing_id, now, now, item.list_id,
             address_key(item.exclude) if item.exclude else None))
    else:
        cursor = db.executemany(
            "INSERT OR IGNORE INTO deliveries (outgoing_id, recipient, next_attempt_at, "
            "updated_at) VALUES (?, ?, ?, ?)",
            [(outgoing_id, r, now, now) for r in item.recipients])
    return cursor.rowcount


def _change_member(db: sqlite3.Connection, change: MemberChange, inbound_id: int | None,
                   now: float) -> None:
    key = address_key(change.address)
    row = db.execute("SELECT status FROM members WHERE list_id = ? AND address_key = ?",
                     (change.list_id, key)).fetchone()
    previous = row[0] if row else None
    if row is None and change.only_existing:
        return
    if row is None:
        db.execute("INSERT INTO members (list_id, address_key, address, display_name, status, "
                   "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (change.list_id, key, change.address, change.name, change.status, now, now))
    else:
        db.execute("UPDATE members SET status = ?, updated_at = ?, display_name = CASE WHEN "
                   "? <> '' THEN ? ELSE display_name END, unsubscribe_generation = "
                   "unsubscribe_generation + ? WHERE list_id = ? AND address_key = ?",
                   (change.status, now, change.name, change.name,
                    int(change.new_unsubscribe_token), change.list_id, key))
    if previous != change.status:
        db.execute("INSERT INTO membership_log (list_id, address, old_status, new_status, "
                   "actor, via, inbound_id, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (change.list_id, change.address, previous, change.status, change.actor,
                    change.via, inbound_id, change.reason, now))
