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
    FetchedMessage,
    NewOutgoing,
    Store,
    StoreError,
)


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
    changes = store.set_members("friends", [("Alice@Example.ORG", "Alice")],
                                MemberStatus.ACTIVE, 1.0)
    assert changes == [("Alice@Example.ORG", None)]
    again = store.set_members("friends", [("alice@example.org", "")], MemberStatus.ACTIVE, 2.0)
    assert again == [("alice@example.org", MemberStatus.ACTIVE)]
    (member,) = store.members("friends")
    assert member.address == "Alice@Example.ORG" and member.display_name == "Alice"
    assert store.member_status("friends", "ALICE@example.org") is MemberStatus.ACTIVE
    assert store.member_status("other", "alice@example.org") is None


def test_unsubscribing_an_unknown_address_adds_nobody(store: Store) -> None:
    changes = store.set_members("friends", [("x@example.org", "")],
                                MemberStatus.UNSUBSCRIBED, 1.0, only_existing=True)
    assert changes == [("x@example.org", None)]
    assert store.members("friends") == []


def _journal_one(store: Store, raw: bytes = b"Subject: x\r\n\r\nbody\r\n") -> int:
    store.journal_fetched("INBOX", 7, [FetchedMessage(1, raw, "<m@x>", "d")],
                          Checkpoint(7, 1), 10.0)
    (inbound,) = store.unprocessed()
    return inbound.id


def test_post_goes_to_active_members_except_the_author(store: Store) -> None:
    store.set_members("friends", [("a@x.org", ""), ("B@x.org", ""), ("c@x.org", "")],
                      MemberStatus.ACTIVE, 1.0)
    store.set_members("friends", [("d@x.org", "")], MemberStatus.DISABLED, 1.0)
    inbound_id = _journal_one(store)
    created = store.complete_inbound(
        inbound_id, "relayed", "", [NewOutgoing("friends", "post", "friends@x.org", b"data",
                                                exclude="b@X.org")], [], 20.0)
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
    store.set_members("friends", [("a@x.org", ""), ("b@x.org", "")], MemberStatus.ACTIVE, 1.0)
    inbound_id = _journal_one(store)
    store.complete_inbound(inbound_id, "relayed", "",
                           [NewOutgoing("friends", "post", "f@x.org", b"one")], [], 20.0)
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
