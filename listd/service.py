"""The loop: fetch → journal → classify → decide → rewrite → enqueue → deliver → wait.

Only this module orchestrates. It never dies of a network problem: IMAP errors lead to a
reconnect with capped exponential backoff and jitter, a refused sign-in to a long pause
that is reported in the status, SMTP trouble to deferred deliveries. After a crash, the
journal tells it what was left: undecided messages are decided, pending deliveries go
out before anything new is fetched.
"""

from __future__ import annotations

import logging
import os
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from listd.config import Config, ConfigError
from listd.credentials import AuthError
from listd.decide import Decider
from listd.delivery import Deliverer, DeliveryReport
from listd.intake import Intake
from listd.mail.rewrite import personalize
from listd.membership import Membership
from listd.metrics import EX_UNAVAILABLE, Metrics, timed
from listd.net.imap import ImapError, ImapMailbox
from listd.notify import Notifier
from listd.oauth.provider import TokenProvider
from listd.oauth.xoauth2 import OAuthAuth
from listd.retry import Backoff, RetryPolicy
from listd.store import Effects, InboundDecision, Outgoing, Store
from listd.tokens import load_secret
from listd.transports import Transports

log = logging.getLogger(__name__)

IDLE_REISSUE_S = 600.0  # RFC 2177: re-issue IDLE at least every 29 minutes; we do 10
RECONNECT = Backoff(initial=1.0, maximum=300.0)
AUTH_FAILURE_PAUSE_S = 900.0  # a refused password does not get better by retrying fast
# Message bytes and finished deliveries are kept this long for inspection, then pruned.
RETENTION_S = 30 * 86400.0
PRUNE_EVERY_S = 3600.0

EX_OK = 0
EX_TEMPFAIL = 75


@dataclass
class Health:
    """What the status line, listctl and metrics report about the loop."""

    imap_failures: int = 0
    problem: str = ""
    last_poll: float | None = None


class Service:
    def __init__(self, config: Config, store: Store, *,
                 transports_for: Callable[[Config], Transports] = Transports,
                 reload: Callable[[], Config] | None = None,
                 notifier: Notifier | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, wakeup_fd: int | None = None,
                 metrics: Metrics | None = None) -> None:
        self._store = store
        self.metrics = metrics or Metrics(store.path, clock)
        self._transports_for = transports_for
        self._reload = reload
        self._notifier = notifier or Notifier({})
        self._clock = clock
        self._rng = rng or random.Random()
        self._wakeup_fd = wakeup_fd
        self.stop = threading.Event()
        self.reload_requested = threading.Event()
        self.health = Health()
        self._written_status: dict[str, str] = {}
        self._mailbox: ImapMailbox | None = None
        self._next_prune = 0.0
        self._apply(config)

    def _apply(self, config: Config) -> None:
        self.config = config
        self.metrics.configure(config)
        self._transports = self._transports_for(config)
        self._intake = Intake(self._store, config.imap, self._clock, self.metrics,
                              progress=self._notifier.watchdog)
        self.membership = Membership(self._store, config, self._clock,
                                     load_secret(config.state_dir))
        self._decider = Decider(self._store, config, self._clock, self.membership, self.metrics)
        smtp = config.smtp
        self._deliverer = Deliverer(
            self._store, smtp, self._transports.smtp,
            RetryPolicy(Backoff(smtp.retry_initial, smtp.retry_max), smtp.give_up_after),
            self._clock, self._rng, self.stop, personalizer=self._personal_copy,
            metrics=self.metrics, progress=self._notifier.watchdog)

    def _personal_copy(self, outgoing: Outgoing, recipient: str) -> bytes:
        lst = self.config.lists.get(outgoing.list_id)
        if lst is None:
            return outgoing.data
        return personalize(outgoing.data, recipient,
                           self.membership.unsubscribe_uri(lst, recipient))

    # --- the loop -------------------------------------------------------------------------

    def run(self, once: bool = False) -> int:
        """Serve until stopped; with ``once``, drain the mailbox and due deliveries."""
        if not once and not self.metrics.serve(self.config):
            return EX_UNAVAILABLE  # before READY: systemd sees the start fail
        self._notifier.ready(f"starting · {len(self.config.lists)} list(s)")
        self._decide_journaled()
        self._notifier.watchdog()
        self._deliver()
        self._notifier.watchdog()
        while not self.stop.is_set():
            if self.reload_requested.is_set():
                self._do_reload()
            polled = self._poll_mailbox()
            self._notifier.watchdog()  # a step that ended, even in failure, is progress
            self._expire_held()
            report = self._deliver()
            self._record_token_state()
            self._prune()
            self._notifier.watchdog()
            self._notifier.status(self.status_line())
            if once:
                self._close_mailbox()
                trouble = not polled or report.auth_problem or report.connect_problem
                return EX_TEMPFAIL if trouble else EX_OK
            self._wait(polled)
        self._notifier.stopping()
        self._close_mailbox()
        return EX_OK

    @timed("poll")
    def _poll_mailbox(self) -> bool:
        """Bring the journal up to date with the mailbox and decide what is new."""
        try:
            if self._mailbox is None:
                mailbox = self._transports.mailbox()
                mailbox.connect()
                self._mailbox = mailbox
                self.metrics.imap_connected()
                self._intake.start_position(mailbox)
                log.info("connected to %s:%d, folder %s", self.config.imap.host,
                         self.config.imap.port, self.config.imap.folder)
            result = self._intake.poll(self._mailbox)
            if result.fetched or result.duplicates:
                log.info("fetched %d new message(s), %d duplicate(s)", result.fetched,
                         result.duplicates)
        except AuthError as exc:
            self._imap_failed(f"signing in failed: {exc}")
            return False
        except ImapError as exc:
            self._imap_failed(str(exc))
            return False
        finally:
            self._decide_journaled()
        self.health.imap_failures = 0
        self.health.problem = ""
        self.health.last_poll = self._clock()
        self._set_status(last_poll=f"{self.health.last_poll:.3f}", imap_problem="")
        return True

    def _imap_failed(self, problem: str) -> None:
        self._close_mailbox()
        self.metrics.imap_failed()
        self.health.imap_failures += 1
        self.health.problem = problem
        log.warning("%s (failure %d in a row)", problem, self.health.imap_failures)
        self._set_status(imap_problem=problem)

    def _decide_journaled(self) -> None:
        for inbound in self._store.unprocessed():
            if self.stop.is_set():
                return
            try:
                self._decider.process(inbound)
            except Exception as exc:  # one bad message must not stop the list
                # Deciding again after a restart would fail the same way, and a daemon
                # that crashes on one message would crash-loop: set it aside, journaled.
                log.exception("UID %d could not be processed; it is kept in the journal "
                              "and skipped", inbound.uid)
                self.metrics.decision_failed()
                self._store.apply(Effects(), self._clock(), InboundDecision(
                    inbound.id, "error", f"{type(exc).__name__}: {exc}"[:500]))

    @timed("deliver")
    def _deliver(self) -> DeliveryReport:
        report = self._deliverer.deliver_due()
        if report.results:
            log.info("deliveries: %s", ", ".join(f"{n} {k}" for k, n in
                                                  sorted(report.results.items())))
        problem = report.auth_problem or report.connect_problem
        if problem:
            log.warning("SMTP: %s", problem)
        self._set_status(smtp_problem=problem)
        return report

    def _expire_held(self) -> None:
        effects = self.membership.expire_held()
        if effects.held_decisions:
            self._store.apply(effects, self._clock())
            log.info("%d held post(s) expired", len(effects.held_decisions))

    def _prune(self) -> None:
        now = self._clock()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        emptied, removed = self._store.prune(now - RETENTION_S)
        if emptied or removed:
            log.info("pruned history older than %d days: %d message(s), %d outbox entries",
                     RETENTION_S // 86400, emptied, removed)

    # --- waiting ----------------------------------------------------------------------------

    def _wait(self, polled: bool) -> None:
        now = self._clock()
        timeout = IDLE_REISSUE_S
        if not polled:
            pause = (AUTH_FAILURE_PAUSE_S if self.health.problem.startswith("signing in")
                     else RECONNECT.delay(self.health.imap_failures, self._rng))
            timeout = pause
        next_due = self._store.next_due()
        if next_due is not None:
            timeout = min(timeout, max(0.0, next_due - now))
        if not polled:
            self._pause(timeout)
            return
        if self._notifier.watchdog_interval:
            timeout = min(timeout, self._notifier.watchdog_interval / 2)
        mailbox = self._mailbox
        try:
            if mailbox is not None and self.config.imap.idle and mailbox.supports_idle():
                mailbox.idle_wait(timeout, self._wakeup_fd)
            else:
                if mailbox is not None:
                    timeout = min(timeout, self.config.imap.poll_interval)
                self._sleep(timeout)
        except ImapError as exc:
            self._imap_failed(str(exc))
        self._notifier.watchdog()
        self._drain_wakeup()

    def _pause(self, timeout: float) -> None:
        """Wait out a refused sign-in or a reconnect backoff without touching the network,
        but resume at once when an administrator signs in again (the saved token changes)
        or a signal arrives. Pings the watchdog on the way: the whole backoff is waited,
        however short the watchdog interval."""
        provider = self._token_provider()
        deadline = self._clock() + timeout
        step = min(self.config.imap.poll_interval, 60.0)
        if self._notifier.watchdog_interval:
            step = min(step, self._notifier.watchdog_interval / 2)
        while not self.stop.is_set() and not self.reload_requested.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0 or (provider is not None and provider.login_changed()):
                break
            self._sleep(min(step, remaining))
            self._notifier.watchdog()  # waiting on purpose is the loop working as meant
        self._drain_wakeup()

    def _token_provider(self) -> TokenProvider | None:
        authenticator = self._transports.authenticator
        return authenticator.provider if isinstance(authenticator, OAuthAuth) else None

    def _set_status(self, **values: str) -> None:
        """Write status values for listctl, only those that changed: the loop calls this on
        every turn, and an unchanged value is not worth a database transaction."""
        changed = {k: v for k, v in values.items() if self._written_status.get(k) != v}
        if changed:
            self._store.set_status(**changed)
            self._written_status.update(changed)

    def _record_token_state(self) -> None:
        provider = self._token_provider()
        if provider is None:
            return
        state = provider.state
        self.metrics.token(state)
        self._set_status(
            token_expires_at=f"{state.expires_at:.0f}" if state.expires_at else "",
            token_refresh_failures=str(state.refresh_failures), token_problem=state.problem)

    def _sleep(self, timeout: float) -> None:
        if self._wakeup_fd is not None:
            select.select([self._wakeup_fd], [], [], timeout)
        else:
            self.stop.wait(timeout)

    def _drain_wakeup(self) -> None:
        if self._wakeup_fd is None:
            return
        try:
            while os.read(self._wakeup_fd, 512):
                pass
        except BlockingIOError:
            pass

    # --- control ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop.set()

    def _do_reload(self) -> None:
        self.reload_requested.clear()
        if self._reload is None:
            return
        self._notifier.reloading()
        try:
            config = self._reload()
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the running one: %s", exc)
        else:
            reconnect = (config.imap, config.auth) != (self.config.imap, self.config.auth)
            self._apply(config)
            if reconnect:
                self._close_mailbox()
            log.info("configuration reloaded: %d list(s)", len(config.lists))
        self._notifier.ready(self.status_line())

    def _close_mailbox(self) -> None:
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is not None:
            mailbox.close()

    def status_line(self) -> str:
        if self.health.problem:
            return self.health.problem
        since = ""
        if self.health.last_poll is not None:
            since = f" · last poll {int(self._clock() - self.health.last_poll)} s ago"
        # Counted from the partial index: this runs on every turn of the loop.
        return (f"idle · {len(self.config.lists)} list(s){since} · "
                f"{self._store.pending_count()} pending")
