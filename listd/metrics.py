"""Prometheus metrics: what listd did (counters), and what it holds (read at scrape time).

Everything lives in one :class:`Metrics` object with its own ``CollectorRegistry`` (never
the global one), so a process may hold several, as the tests do. The loop, intake,
decider and deliverer call one-line hooks on it; counts that describe the database (the
delivery queue, subscribers, held posts, the last successful poll) are read when
Prometheus scrapes, over a read-only SQLite connection of the collector's own: a scrape
never waits on the loop's lock, and the loop never waits on a scrape.

No label carries an email address: ``list`` is the list id from the configuration,
the other labels take values from small fixed sets.

The endpoint is off unless ``metrics.listen`` is set. It is bound before READY=1; when it
cannot be (port taken, address not on this host), listd logs one line saying so and exits
with EX_UNAVAILABLE (69): the configuration is valid, the host is not ready for it, and
that may pass (the previous instance still holds the port), so systemd may retry, unlike
a configuration error (78), which it must not.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Concatenate, ParamSpec, Protocol, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from listd import __version__
from listd.config import Config
from listd.mail.classify import Classification, Kind, Role
from listd.mail.commands import Verb, parse_command
from listd.mail.headers import RawMessage
from listd.oauth.provider import TokenState
from listd.store import DeliveryUpdate, Effects
from listd.store.scrape import StoreCollector

log = logging.getLogger(__name__)

EX_UNAVAILABLE = 69  # sysexits.h: the metrics endpoint cannot listen

DELIVERY_RESULTS = ("sent", "deferred", "failed")
DECISION_KINDS = ("post", "command", "owner", *(str(k) for k in Kind if k is not Kind.LIST_MAIL),
                  "error")
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                    300.0)

# The "_created" series prometheus-client adds to every counter and histogram double the
# series and read like metrics of their own ("listd_deliveries_created"). Off (0.17+).
_disable_created = getattr(prometheus_client, "disable_created_metrics", None)
if _disable_created is not None:
    _disable_created()


class Metrics:
    """The registry and every metric listd updates; hooks are cheap and never raise."""

    def __init__(self, database: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._lists: tuple[str, ...] = ()
        self._token: TokenState | None = None
        self._imap_connected_before = False
        self._server: WSGIServer | None = None
        self._listen: tuple[str, int] | None = None

        Info("listd_build", "The running listd version.", registry=registry).info(
            {"version": __version__})
        self.fetched = Counter(
            "listd_messages_fetched", "Messages fetched from the mailbox (by UID, duplicates "
            "included).", registry=registry)
        self.duplicates = Counter(
            "listd_messages_duplicates", "Fetched messages skipped as already journaled "
            "(same Message-ID and Date).", registry=registry)
        self.decisions = Counter(
            "listd_decisions", "Decisions about fetched messages, by kind: post, command, owner "
            "(one per list a message is for), bounce, auto-reply, loop, no-list, malformed, "
            "error.", ["kind"], registry=registry)
        self.posts_relayed = Counter(
            "listd_posts_relayed", "Posts queued for fan-out to the list's members (held "
            "posts approved by email included).", ["list"], registry=registry)
        self.posts_held = Counter(
            "listd_posts_held", "Posts held for the owners' approval.", ["list"],
            registry=registry)
        self.posts_refused = Counter(
            "listd_posts_refused", "Posts refused by the list's posting policy.", ["list"],
            registry=registry)
        self.commands = Counter(
            "listd_commands", "Commands received by email (list-request@, list+verb@), by "
            "verb.", ["list", "verb"], registry=registry)
        self.bounces = Counter(
            "listd_bounces", "Bounces counted against a member of the list.", ["list"],
            registry=registry)
        self.deliveries = Counter(
            "listd_deliveries", "Delivery attempts by result: sent (2xx), deferred (4xx or "
            "no connection; retried), failed (5xx, or given up).", ["list", "result"],
            registry=registry)
        self.imap_up = Gauge(
            "listd_imap_up", "1 if the last attempt to connect, sign in and poll the IMAP "
            "server worked, 0 if it failed.", registry=registry)
        self.imap_reconnects = Counter(
            "listd_imap_reconnects", "IMAP connections opened after the first one (each "
            "follows a lost or failed one).", registry=registry)
        self.imap_errors = Counter(
            "listd_imap_errors", "Failed IMAP polls (connection, sign-in or protocol "
            "errors).", registry=registry)
        self.smtp_up = Gauge(
            "listd_smtp_up", "1 if the last attempt to connect and sign in to the SMTP server "
            "worked, 0 if it failed.", registry=registry)
        self.smtp_reconnects = Counter(
            "listd_smtp_reconnects", "SMTP connections lost during a transaction (the "
            "transaction is retried once on a new connection).", registry=registry)
        self.smtp_errors = Counter(
            "listd_smtp_errors", "Failed attempts to connect or sign in to the SMTP server.",
            registry=registry)
        self.poll_duration = Histogram(
            "listd_poll_duration_seconds", "One poll of the mailbox: connect if needed, fetch, "
            "journal and decide.", buckets=DURATION_BUCKETS, registry=registry)
        self.delivery_duration = Histogram(
            "listd_delivery_run_duration_seconds", "One pass over the due deliveries.",
            buckets=DURATION_BUCKETS, registry=registry)
        self._durations = {"poll": self.poll_duration, "deliver": self.delivery_duration}
        for kind in DECISION_KINDS:
            self.decisions.labels(kind=kind)
        registry.register(_TokenCollector(self))
        self._store: StoreCollector | None = None
        if database is not None:
            self._store = StoreCollector(database, clock, lambda: self._lists)
            registry.register(self._store)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

    # --- configuration and the endpoint -------------------------------------------------

    def configure(self, config: Config) -> None:
        """Take the (re)loaded configuration: its lists get series at 0 from the start."""
        self._lists = tuple(config.lists)
        for list_id in self._lists:
            for metric in (self.posts_relayed, self.posts_held, self.posts_refused,
                           self.bounces):
                metric.labels(list=list_id)
            for result in DELIVERY_RESULTS:
                self.deliveries.labels(list=list_id, result=result)
            for verb in Verb:
                self.commands.labels(list=list_id, verb=str(verb))
        if not config.auth.oauth:
            self._token = None
        if self._server is not None and config.metrics.listen != self._listen:
            log.warning("metrics.listen changed: the endpoint stays on %s until listd is "
                        "restarted", _address(self._listen))

    def serve(self, config: Config) -> bool:
        """Start the endpoint if ``metrics.listen`` asks for one. False (and the reason
        logged) if it cannot listen; the caller exits with :data:`EX_UNAVAILABLE`."""
        listen = config.metrics.listen
        if listen is None or self._server is not None:
            return True
        try:
            server = _server(listen, self.registry)
        except OSError as exc:
            log.error("cannot serve metrics on %s (metrics.listen in %s): %s; %s",
                      _address(listen), config.path, exc.strerror or exc, _advice(exc))
            return False
        self._server, self._listen = server, listen
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        log.info("metrics on http://%s/metrics", _address(listen))
        return True

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._store is not None:
            self._store.close()

    # --- hooks ----------------------------------------------------------------------------

    def fetched_batch(self, fetched: int, duplicates: int) -> None:
        self.fetched.inc(fetched)
        self.duplicates.inc(duplicates)

    def decided(self, message: RawMessage, found: Classification, effects: Effects) -> None:
        """A message's decision was committed with ``effects``."""
        try:
            self._count_decision(message, found, effects)
        except Exception:  # counting must never look like a failed (committed) decision
            log.exception("metrics: cannot count the decision")

    def _count_decision(self, message: RawMessage, found: Classification,
                        effects: Effects) -> None:
        if not found.targets:
            self.decisions.labels(kind=str(found.kind)).inc()
        relayed = Tally(o.list_id for o in effects.outgoing if o.kind == "post")
        held = Tally(h.list_id for h in effects.held)
        for target in found.targets:
            self.decisions.labels(kind=str(target.role)).inc()
            if target.role is Role.COMMAND:
                verb = parse_command(message, target.command).verb
                self.commands.labels(list=target.list_id, verb=str(verb)).inc()
            elif target.role is Role.POST and not (relayed[target.list_id]
                                                   or held[target.list_id]):
                self.posts_refused.labels(list=target.list_id).inc()
        for list_id, count in relayed.items():
            self.posts_relayed.labels(list=list_id).inc(count)
        for list_id, count in held.items():
            self.posts_held.labels(list=list_id).inc(count)
        for bounce in effects.bounces:
            self.bounces.labels(list=bounce.list_id).inc()

    def decision_failed(self) -> None:
        self.decisions.labels(kind="error").inc()

    def delivered(self, list_id: str, updates: Iterable[DeliveryUpdate]) -> None:
        results = Tally({"pending": "deferred"}.get(u.state, u.state) for u in updates)
        for result, count in results.items():
            self.deliveries.labels(list=list_id, result=result).inc(count)

    def imap_connected(self) -> None:
        self.imap_up.set(1)
        if self._imap_connected_before:
            self.imap_reconnects.inc()
        self._imap_connected_before = True

    def imap_failed(self) -> None:
        self.imap_up.set(0)
        self.imap_errors.inc()

    def smtp_connected(self) -> None:
        self.smtp_up.set(1)

    def smtp_failed(self) -> None:
        self.smtp_up.set(0)
        self.smtp_errors.inc()

    def smtp_dropped(self) -> None:
        self.smtp_reconnects.inc()

    def token(self, state: TokenState) -> None:
        """The OAuth2 token provider's state object: read again at every scrape."""
        self._token = state

    def observe(self, phase: str, seconds: float) -> None:
        self._durations[phase].observe(seconds)


class _Timed(Protocol):
    metrics: Metrics


S = TypeVar("S", bound=_Timed)
P = ParamSpec("P")
R = TypeVar("R")


def timed(phase: str) -> Callable[[Callable[Concatenate[S, P], R]],
                                  Callable[Concatenate[S, P], R]]:
    """Decorate a method of an object with a ``metrics`` attribute: its duration is
    observed in the histogram of ``phase`` (poll, deliver), exceptions included."""
    def decorate(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            start = time.monotonic()
            try:
                return method(self, *args, **kwargs)
            finally:
                self.metrics.observe(phase, time.monotonic() - start)
        return wrapper
    return decorate


# --- read at scrape time ------------------------------------------------------------------


class _TokenCollector:
    """Token expiry and refresh failures, only while OAuth2 is in use."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return _token_families()

    def collect(self) -> Iterable[Metric]:
        state = self._metrics._token
        if state is None:
            return []
        expiry, failures = _token_families()
        if state.expires_at is not None:
            expiry.add_metric([], state.expires_at)
        failures.add_metric([], state.refresh_failures)
        return [expiry, failures] if state.expires_at is not None else [failures]


def _token_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (GaugeMetricFamily(
                "listd_oauth_token_expiry_timestamp_seconds",
                "When the current OAuth2 access token expires (Unix time). listd refreshes it "
                "when it next signs in; an expired token is harmless while refreshing works."),
            GaugeMetricFamily(
                "listd_oauth_token_refresh_failures",
                "Failed OAuth2 token refreshes since the last one that worked (0: refreshing "
                "works)."))


# --- the HTTP endpoint ----------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up a stop


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per scrape would drown the log


def _server(listen: tuple[str, int], registry: CollectorRegistry) -> WSGIServer:
    host, port = listen
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    server_class = _Server6 if family == socket.AF_INET6 else _Server
    return make_server(str(address[0]), port, make_wsgi_app(registry), server_class,
                       handler_class=_QuietHandler)


def _advice(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "write an IP address or a host name this machine can resolve"
    return {
        errno.EADDRINUSE: "another program (another listd?) listens there: stop it or choose "
                          "another port",
        errno.EADDRNOTAVAIL: "that address is not one of this machine's",
        errno.EACCES: "ports below 1024 need privileges listd does not have: choose another",
    }.get(exc.errno or 0, "choose another address or port")


def _address(listen: tuple[str, int] | None) -> str:
    if listen is None:
        return "(nothing)"
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
