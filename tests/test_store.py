"""The SQLite store: schema and migrations, membership keys, outbox, pruning."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from listd.mail.policy import MemberStatus
from listd.store import (
    DB_NAME,
    SCHEMA_VERSION,
    Checkpoint,
    DeliveryUpdate,
    Effects,
    FetchedMessage,
    InboundDecision,
    MemberChange,
    NewOutgoing,
    Store,
    StoreError,
)


def _set(store: Store, list_id: str, entries: list[tuple[str, str]], status: MemberStatus,
         now: float, only_existing: bool = False) -> None:
    store.apply(Effects(member_changes=[
        MemberChange(list_id, a, status, "test", "admin", name=n, only_existing=only_existing)
        for a, n in entries]), now)


def _complete(store: Store, inbound_id: int, outgoing: list[NewOutgoing], now: float) -> int:
    return store.apply(Effects(outgoing=outgoing), now,
                       InboundDecision(inbound_id, "relayed", ""))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "state")


def test_new_database_is_migrated_private_and_in_wal_mode(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state")
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    path = tmp_path / "state" / DB_NAME
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    Store.open(tmp_path / "state").close()  # reopening migrates nothing and keeps data


def test_database_of_a_newer_listd_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer listd"):
        Store.open(tmp_path)


def test_members_are_keyed_case_insensitively(store: Store) -> None:
    _set(store, "friends", [("Alice@Example.ORG", "Alice")], MemberStatus.ACTIVE, 1.0)
    _set(store, "friends", [("alice@example.org", "")], MemberStatus.ACTIVE, 2.0)
    (member,) = store.members("friends")
    assert member.address == "Alice@Example.ORG" and member.display_name == "Alice"
    assert store.member_status("friends", "ALICE@example.org") is MemberStatus.ACTIVE
    assert store.member_status("other", "alice@example.org") is None
    # One log entry: the second change kept the status.
    assert [entry[1:4] for entry in store.membership_log("friends")] == [
        ("Alice@Example.ORG", None, "active")]


def test_unsubscribing_an_unknown_address_adds_nobody(store: Store) -> None:
    _set(store, "friends", [("x@example.org", "")], MemberStatus.UNSUBSCRIBED, 1.0,
         only_existing=True)
    assert store.members("friends") == []
    assert store.membership_log("friends") == []


def _journal_one(store: Store, raw: bytes = b"Subject: x\r\n\r\nbody\r\n") -> int:
    store.journal_fetched("INBOX", 7, [FetchedMessage(1, raw, "<m@x>", "d")],
                          Checkpoint(7, 1), 10.0)
    (inbound,) = store.unprocessed()
    return inbound.id


def test_post_goes_to_active_members_except_the_author(store: Store) -> None:
    _set(store, "friends", [("a@x.org", ""), ("B@x.org", ""), ("c@x.org", "")],
         MemberStatus.ACTIVE, 1.0)
    _set(store, "friends", [("d@x.org", "")], MemberStatus.DISABLED, 1.0)
    inbound_id = _journal_one(store)
    created = _complete(store, inbound_id, [
        NewOutgoing("friends", "post", "friends@x.org", b"data", exclude="b@X.org")], 20.0)
    assert created == 2
    (outgoing,) = store.due_outgoing(20.0)
    assert [r for r, _ in store.due_recipients(outgoing.id, 20.0)] == ["a@x.org", "c@x.org"]
    assert store.unprocessed() == []
    assert store.checkpoint("INBOX") == Checkpoint(7, 1)


def test_seen_before_matches_message_id_and_date_or_bytes(store: Store) -> None:
    _journal_one(store)
    assert store.seen_before("<m@x>", "d")
    assert not store.seen_before("<m@x>", "other date")
    assert not store.seen_before(None, None, "0" * 64)


def test_prune_forgets_old_bytes_and_finished_deliveries_only(store: Store) -> None:
    _set(store, "friends", [("a@x.org", ""), ("b@x.org", "")], MemberStatus.ACTIVE, 1.0)
    inbound_id = _journal_one(store)
    _complete(store, inbound_id, [NewOutgoing("friends", "post", "f@x.org", b"one")], 20.0)
    (outgoing,) = store.due_outgoing(20.0)
    store.record_deliveries(outgoing.id, [
        DeliveryUpdate("a@x.org", "sent", 1, 250, "ok", 20.0),
        DeliveryUpdate("b@x.org", "pending", 1, 451, "later", 99.0)], 20.0)
    assert store.prune(before=50.0) == (1, 0)  # b is still pending: the post stays
    store.record_deliveries(outgoing.id, [
        DeliveryUpdate("b@x.org", "sent", 2, 250, "ok", 30.0)], 30.0)
    assert store.prune(before=50.0) == (0, 1)
    assert store.delivery_counts() == {"pending": 0, "sent": 0, "failed": 0}
    assert store.seen_before("<m@x>", "d")  # still recognised after pruning


def test_version_1_database_is_migrated_forward_keeping_its_data(tmp_path: Path) -> None:
    from listd.store.schema import MIGRATIONS

    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as db:  # what listd 0.1 (schema 1) wrote
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO members VALUES ('friends', 'a@x.org', 'a@x.org', '', "
                   "'active', 1, 1)")
        db.execute("PRAGMA user_version = 1")
    store = Store.open(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.member_status("friends", "a@x.org") is MemberStatus.ACTIVE
    assert store.unsubscribe_generation("friends", "a@x.org") == 0
