"""A systemd-style NOTIFY_SOCKET: a datagram socket recording what a daemon reports."""

from __future__ import annotations

import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic() when received
    pid: int  # sender's PID, from SCM_CREDENTIALS
    fields: dict[str, str]


class NotifySocket:
    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="listd-notify-"))
        self.path = self._dir / "notify"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._socket.bind(str(self.path))
        self._socket.settimeout(0.2)
        self._received: list[Notification] = []
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._running:
            try:
                data, ancillary, _, _ = self._socket.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines()
                          if "=" in line)
            with self._cond:
                self._received.append(Notification(time.monotonic(), pid, fields))
                self._cond.notify_all()

    @property
    def received(self) -> list[Notification]:
        with self._cond:
            return list(self._received)

    def wait_for(self, key: str, value: str | None = None, count: int = 1,
                 timeout: float = 20.0) -> list[Notification]:
        """Wait until ``count`` notifications carry ``key`` (=``value``); return them."""
        def matching() -> list[Notification]:
            return [n for n in self._received
                    if key in n.fields and (value is None or n.fields[key] == value)]
        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"no {count}x {key}={value} within {timeout} s; got "
                                   f"{[n.fields for n in self._received]}")
            return matching()

    def close(self) -> None:
        self._running = False
        self._socket.close()
        self._thread.join(2)
        self.path.unlink(missing_ok=True)
        self._dir.rmdir()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
