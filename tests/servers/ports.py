"""Free loopback ports and waiting for a server to listen on one.

Other programs may hold well-known test ports on the same machine (testbed
§0b), so every server gets a port chosen by the OS.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"
_POLL = 0.01  # poll interval, not a timing assertion


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that the OS reports as free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _accepts(port: int, host: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def log_tail(path: Path | str | None, lines: int = 30) -> str:
    """Last ``lines`` lines of a log file, or "" if there is none."""
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 10.0,
    *,
    host: str = HOST,
    log_path: Path | str | None = None,
) -> float:
    """Poll connect() until ``port`` accepts; return the seconds it took.

    Fails fast with RuntimeError when ``proc`` has already exited (a server
    that died on a config error would otherwise cost the full timeout), and
    with TimeoutError after ``timeout`` seconds. Both include the log tail.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with status {proc.returncode} before "
                f"listening on {host}:{port}\n{log_tail(log_path)}"
            )
        if _accepts(port, host):
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"nothing listening on {host}:{port} after {timeout}s\n{log_tail(log_path)}"
            )
        time.sleep(_POLL)


def wait_for_port_closed(port: int, timeout: float = 10.0, *, host: str = HOST) -> None:
    """Poll until ``port`` refuses connections.

    Used after stopping a server that will be restarted on the same port, so
    that the new instance is not mistaken for a lingering child of the old one.
    """
    deadline = time.monotonic() + timeout
    while _accepts(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} still accepting after {timeout}s")
        time.sleep(_POLL)
