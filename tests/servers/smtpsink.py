"""Postfix's smtp-sink as a fast SMTP server for throughput benchmarks.

smtp-sink has no STARTTLS and answers AUTH with 250 instead of 235 (testbed
§3c), so it is only for load and plain-SMTP fault tests; use SmtpCapture for
TLS/AUTH.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .managed import Managed
from .ports import HOST, free_port, wait_for_port

SMTP_SINK = "/usr/sbin/smtp-sink"
_COUNTERS = re.compile(r"mesg=(\d+)")
_RCPT = re.compile(rb"^X-Rcpt-Args: <([^>]*)>", re.MULTILINE)


class SmtpSink(Managed):
    """``smtp-sink -c [-d DUMP] 127.0.0.1:PORT BACKLOG`` as our child process.

    ``-c`` prints running counters (``sess=N quit=N mesg=N``) on stdout after
    every message, which gives a cheap message count. With ``dump=True`` each
    transaction is also written to its own file (slower, disk bound), which
    lets tests count recipients from the ``X-Rcpt-Args`` headers.
    ``extra_args`` passes smtp-sink fault flags, e.g. ``["-r", "RCPT"]``.
    """

    host = HOST

    def __init__(
        self,
        *,
        dump: bool = False,
        extra_args: Sequence[str] = (),
        backlog: int = 256,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="listd-sink-"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.dump_dir: Path | None = self.dir / "dump" if dump else None
        self.log_path = self.dir / "smtp-sink.log"
        self._extra_args = list(extra_args)
        self._backlog = backlog
        self._proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        cmd = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:
            # required as root: it drops to this user after binding
            cmd += ["-u", "nobody"]
        if self.dump_dir is not None:
            # trailing "." + random hex suffix added by smtp-sink per message
            cmd += ["-d", f"{self.dump_dir}/msg."]
        return [*cmd, *self._extra_args, f"{HOST}:{self.port}", str(self._backlog)]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            raise RuntimeError("smtp-sink already running")
        if self.dump_dir is not None:
            self.dump_dir.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.dump_dir, "nobody")  # it writes after dropping to nobody
        # the child keeps its own copy of the log file descriptor
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.port, self._proc, timeout, log_path=self.log_path)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our own child by PID; SIGKILL only if it hangs."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ----------------------------------------------------------------- counts
    def messages_received(self) -> int:
        """Messages completed so far, from the last ``-c`` counter line."""
        counts = _COUNTERS.findall(self.log_text())
        return int(counts[-1]) if counts else 0

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> int:
        """Poll the counter until at least ``count`` messages; return the count."""
        deadline = time.monotonic() + timeout
        while (n := self.messages_received()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"smtp-sink got {n} of {count} messages in {timeout}s")
            time.sleep(0.01)  # polling interval, not a timing assertion
        return n

    def dump_files(self) -> list[Path]:
        if self.dump_dir is None:
            raise RuntimeError("SmtpSink(dump=True) needed for dump files")
        return sorted(self.dump_dir.iterdir())

    def recipients_count(self) -> collections.Counter[str]:
        """Copies per recipient, from the dump files' X-Rcpt-Args headers."""
        counter: collections.Counter[str] = collections.Counter()
        for path in self.dump_files():
            head = path.read_bytes().split(b"\nReceived: ", 1)[0]
            counter.update(r.decode("utf-8", "replace") for r in _RCPT.findall(head))
        return counter
