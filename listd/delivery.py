"""Fan-out: send the due deliveries of the outbox over a few reused SMTP connections.

Journal before acknowledging: the delivery rows exist before the first RCPT, and each
transaction's outcomes are committed right after the server's reply to its DATA. A crash
can therefore re-send only what was in flight: one transaction per connection.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from listd.config import SmtpConfig
from listd.credentials import AuthError
from listd.mail.chunk import chunks
from listd.metrics import Metrics
from listd.net.smtp import ConnectionLost, Outcome, SmtpConnection, prepare_payload
from listd.retry import RetryPolicy, delivery_updates
from listd.store import Outgoing, Store

log = logging.getLogger(__name__)

ConnectionFactory = Callable[[], SmtpConnection]


@dataclass
class DeliveryReport:
    """What one pass did, by result, plus the problem that stopped it early if any."""

    results: Counter[str] = field(default_factory=Counter)
    auth_problem: str = ""
    connect_problem: str = ""


@dataclass(frozen=True)
class _Job:
    outgoing: Outgoing
    payload: bytes
    eight_bit: bool
    recipients: list[str]
    attempts: dict[str, int]


class Deliverer:
    def __init__(self, store: Store, config: SmtpConfig, connect: ConnectionFactory,
                 policy: RetryPolicy, clock: Callable[[], float], rng: random.Random,
                 stop: threading.Event,
                 personalizer: Callable[[Outgoing, str], bytes] | None = None,
                 metrics: Metrics | None = None,
                 progress: Callable[[], None] | None = None) -> None:
        self._store = store
        self._config = config
        self._connect = connect
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._stop = stop
        self._rng_lock = threading.Lock()
        self._personalizer = personalizer
        self._metrics = metrics or Metrics()
        # Called after every transaction's outcome is journaled (from the SMTP threads):
        # a long pass of deliveries is progress the watchdog must hear of.
        self._progress = progress or (lambda: None)

    def deliver_due(self) -> DeliveryReport:
        """Attempt every delivery that is due now, once. Returns what happened."""
        report = DeliveryReport()
        jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        count = 0
        for outgoing in self._store.due_outgoing(self._clock()):
            due = self._store.due_recipients(outgoing.id, self._clock())
            attempts = dict(due)
            eight_bit = not outgoing.data.isascii()
            if outgoing.personalize and self._personalizer is not None:
                # Each member's own copy (To, unsubscribe token): one transaction each.
                for recipient, _ in due:
                    payload = prepare_payload(self._personalizer(outgoing, recipient))
                    jobs.put(_Job(outgoing, payload, eight_bit, [recipient], attempts))
                    count += 1
                continue
            payload = prepare_payload(outgoing.data)
            for batch in chunks([r for r, _ in due], self._config.max_recipients):
                jobs.put(_Job(outgoing, payload, eight_bit, batch, attempts))
                count += 1
        if not count:
            return report
        workers = [threading.Thread(target=self._work, args=(jobs, report), daemon=True,
                                    name=f"smtp-{i}")
                   for i in range(min(self._config.connections, count))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        # Workers stop early when they cannot connect or sign in (or on shutdown); what
        # they left is deferred like any temporary failure, so it is retried with backoff.
        problem = report.auth_problem or report.connect_problem
        while problem:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            self._record(job, _deferred(job, problem), report)
        return report

    def _work(self, jobs: queue.SimpleQueue[_Job], report: DeliveryReport) -> None:
        connection: SmtpConnection | None = None
        try:
            while not self._stop.is_set():
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    outcomes, connection = self._send(job, connection, report)
                except Exception as exc:  # a thread must not die with its job
                    log.exception("unexpected error sending message %d", job.outgoing.id)
                    if connection is not None:
                        connection.close()
                    outcomes, connection = _deferred(job, f"{type(exc).__name__}: {exc}"), None
                self._record(job, outcomes, report)
                if connection is None:
                    return  # could not connect or sign in: the rest waits for a retry
        finally:
            if connection is not None:
                connection.close()

    def _send(self, job: _Job, connection: SmtpConnection | None,
              report: DeliveryReport) -> tuple[dict[str, Outcome], SmtpConnection | None]:
        # A connection dropped in a transaction is retried once on a fresh one: most drops
        # are an idle timeout on a reused connection. A second drop is a temporary failure.
        problem = ""
        for _ in range(2):
            if connection is None:
                connection = self._connect()
                try:
                    connection.open()
                except AuthError as exc:
                    report.auth_problem = str(exc)
                    self._metrics.smtp_failed()
                    return _deferred(job, report.auth_problem), None
                except ConnectionLost as exc:
                    report.connect_problem = str(exc)
                    self._metrics.smtp_failed()
                    return _deferred(job, report.connect_problem), None
                self._metrics.smtp_connected()
            try:
                return connection.send(job.outgoing.envelope_from, job.recipients,
                                       job.payload, job.eight_bit), connection
            except ConnectionLost as exc:
                problem = str(exc)
                connection = None
                self._metrics.smtp_dropped()
                log.warning("SMTP connection lost during a transaction: %s", problem)
        return _deferred(job, problem), None

    def _record(self, job: _Job, outcomes: dict[str, Outcome], report: DeliveryReport) -> None:
        with self._rng_lock:
            updates = delivery_updates(outcomes, job.attempts, job.outgoing.created_at,
                                       self._clock(), self._policy, self._rng)
        self._store.record_deliveries(job.outgoing.id, updates, self._clock())
        self._metrics.delivered(job.outgoing.list_id, updates)
        self._progress()
        for update in updates:
            result = {"pending": "deferred"}.get(update.state, update.state)
            report.results[result] += 1
            if update.state == "failed":
                log.warning("delivery of message %d to %s failed: %d %s", job.outgoing.id,
                            update.recipient, update.code, update.text)


def _deferred(job: _Job, problem: str) -> dict[str, Outcome]:
    return {r: (451, f"4.4.2 not sent: {problem}") for r in job.recipients}
