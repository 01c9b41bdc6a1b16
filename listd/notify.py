"""Telling systemd how we are: READY, STATUS, WATCHDOG, RELOADING, STOPPING (sd_notify).

A no-op when not started by systemd (no ``NOTIFY_SOCKET``). The watchdog interval is read
from ``WATCHDOG_USEC`` here (sdnotify does not), and only honoured when
``WATCHDOG_PID`` is absent or ours.
"""

from __future__ import annotations

import logging
import os
import time

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
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
        """Call only when the main loop made progress: a stuck loop must stop pinging."""
        if self.watchdog_interval is not None:
            self._send("WATCHDOG=1")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self._send("STOPPING=1")
