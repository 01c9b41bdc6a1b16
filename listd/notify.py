"""Telling systemd how we are: READY, STATUS, WATCHDOG, RELOADING, STOPPING (sd_notify).

A no-op when not started by systemd (no ``NOTIFY_SOCKET``). The watchdog interval is read
from ``WATCHDOG_USEC`` here (sdnotify does not), and only honoured when
``WATCHDOG_PID`` is absent or ours.

The watchdog is pinged only by the loop, after a step that finished (a poll, a pass of
deliveries, a wait): a loop that hangs stops pinging, and systemd restarts it. Pings are
spaced at least a tenth of the interval apart, so a caller may report progress as often as
it likes (after every SMTP transaction, say) without flooding the service manager.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

import sdnotify

log = logging.getLogger(__name__)

# Pings closer together than this share of the interval are dropped (see the docstring).
MIN_PING_SPACING = 0.1


def started_by_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a systemd service's main process.

    ``NOTIFY_SOCKET`` is only given to a service; ``INVOCATION_ID`` alone is not enough,
    because it is inherited by everything a service starts (a shell in a terminal that
    runs as a user service, a CI runner's jobs). ``SYSTEMD_EXEC_PID`` (systemd 248+) names
    the very process systemd started.
    """
    env = os.environ if environ is None else environ
    if env.get("NOTIFY_SOCKET"):
        return True
    return bool(env.get("INVOCATION_ID")) and env.get("SYSTEMD_EXEC_PID") == str(os.getpid())


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._enabled = bool(env.get("NOTIFY_SOCKET"))
        # debug=True: sdnotify otherwise swallows every error, a lost READY included.
        self._notifier = sdnotify.SystemdNotifier(debug=True) if self._enabled else None
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000
        self._last_status = ""
        self._last_ping = float("-inf")
        self._stopping = False
        self._lock = threading.Lock()

    def _send(self, text: str) -> None:
        if self._notifier is None:
            return
        try:
            # sdnotify encodes as Latin-1; systemd reads UTF-8. Hand it UTF-8 bytes
            # disguised as Latin-1 text so a "·" or a non-ASCII list name survives.
            self._notifier.notify(text.encode("utf-8").decode("latin-1"))
        except OSError as exc:
            log.warning("cannot notify the service manager: %s", exc)

    def ready(self, status: str) -> None:
        self._last_status = status
        self._send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        """Call only when the loop made progress: a stuck loop must stop pinging."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last_ping < self.watchdog_interval * MIN_PING_SPACING:
                return
            self._last_ping = now
        self._send("WATCHDOG=1")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")

    def stopping(self, status: str = "stopping: finishing what is in flight") -> None:
        """Sent once, as soon as the stop is asked for (the loop may still finish a
        transaction before it exits)."""
        if self._stopping:
            return
        self._stopping = True
        self._last_status = status
        self._send(f"STOPPING=1\nSTATUS={status}")
