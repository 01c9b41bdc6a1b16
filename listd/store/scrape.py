"""What Prometheus reads from the database at scrape time: the delivery queue,
subscribers, held posts and the last successful poll.

A read-only connection of its own, one snapshot per scrape, so a scrape never waits for the
daemon's lock and never writes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from listd.mail.policy import MemberStatus

log = logging.getLogger(__name__)


# Indexed: the pending deliveries come from the partial index on state = 'pending' (named:
# without ANALYZE statistics SQLite prefers to scan every delivery ever made, 80 ms per
# million rows instead of 1), and only their outbox rows are read. Members and held posts
# are small tables.
_PENDING_SQL = (
    "SELECT o.list_id, sum(p.n), min(o.created_at) FROM (SELECT outgoing_id, count(*) AS n "
    "FROM deliveries INDEXED BY deliveries_due WHERE state = 'pending' GROUP BY outgoing_id) "
    "AS p "
    "JOIN outgoing AS o ON o.id = p.outgoing_id GROUP BY o.list_id")
_MEMBERS_SQL = "SELECT list_id, status, count(*) FROM members GROUP BY list_id, status"
_HELD_SQL = "SELECT list_id, count(*) FROM held WHERE state = 'held' GROUP BY list_id"
_LAST_POLL_SQL = "SELECT value FROM status WHERE key = 'last_poll'"


class StoreCollector:
    """The delivery queue, subscribers, held posts and the last successful poll, read from
    the database when Prometheus scrapes (a prometheus_client Collector)."""

    def __init__(self, database: Path, clock: Callable[[], float],
                 lists: Callable[[], Iterable[str]]) -> None:
        self._database = database
        self._clock = clock
        self._lists = lists
        self._lock = threading.Lock()  # the endpoint serves scrapes on several threads
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            uri = f"file:{quote(str(self._database))}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False,
                                       isolation_level=None)
        return self._db

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    def describe(self) -> Iterable[Metric]:
        return _store_families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                db = self._connection()
                db.execute("BEGIN")  # one snapshot for all the queries
                try:
                    pending = db.execute(_PENDING_SQL).fetchall()
                    members = db.execute(_MEMBERS_SQL).fetchall()
                    held = db.execute(_HELD_SQL).fetchall()
                    last_poll = db.execute(_LAST_POLL_SQL).fetchone()
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as exc:
                log.warning("metrics: cannot read %s: %s", self._database, exc)
                return
        now = self._clock()
        lists = sorted({*self._lists(), *(r[0] for r in pending), *(r[0] for r in members),
                        *(r[0] for r in held)})
        depth, age, subscribers, held_posts, polled = _store_families()
        queued = {r[0]: (int(r[1]), float(r[2])) for r in pending}
        counts = {(r[0], r[1]): int(r[2]) for r in members}
        waiting = {r[0]: int(r[1]) for r in held}
        for list_id in lists:
            count, oldest = queued.get(list_id, (0, now))
            depth.add_metric([list_id], count)
            age.add_metric([list_id], max(0.0, now - oldest))
            for status in MemberStatus:
                subscribers.add_metric([list_id, str(status)], counts.get((list_id, status), 0))
            held_posts.add_metric([list_id], waiting.get(list_id, 0))
        yield from (depth, age, subscribers, held_posts)
        if last_poll is not None and last_poll[0]:
            polled.add_metric([], float(last_poll[0]))
            yield polled


def _store_families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily("listd_deliveries_pending", "Deliveries waiting to be sent (queued "
                          "or deferred for a retry).", labels=["list"]),
        GaugeMetricFamily("listd_deliveries_oldest_pending_age_seconds", "Age of the oldest "
                          "message with a pending delivery (0 when none is pending).",
                          labels=["list"]),
        GaugeMetricFamily("listd_subscribers", "Members of the list by status (active, "
                          "pending, disabled, unsubscribed).", labels=["list", "status"]),
        GaugeMetricFamily("listd_held_posts", "Posts waiting for the owners' approval.",
                          labels=["list"]),
        GaugeMetricFamily("listd_last_successful_poll_timestamp_seconds", "When the mailbox "
                          "was last polled successfully (Unix time)."),
    )
