"""Running the real ``listd`` and ``listctl`` against the loopback servers of a test."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import yaml

from tests.servers.dovecot import Dovecot
from tests.servers.smtpcapture import SmtpCapture

LIST_USER = "list@example.test"
LIST_PASSWORD = "listpw"
ROOT = Path(__file__).resolve().parent.parent


def make_message(*, sender: str = "Alice Example <alice@example.test>",
                 to: str = "friends@example.test", subject: str = "Hello",
                 body: bytes = b"Hello list.\r\n", extra: Sequence[str] = (),
                 message_id: str | None = None) -> bytes:
    """A plain RFC 5322 message as bytes, CRLF line ends."""
    message_id = message_id or f"<{time.monotonic_ns()}.{os.getpid()}@example.test>"
    headers = [f"From: {sender}", f"To: {to}", f"Subject: {subject}",
               "Date: Fri, 04 Dec 2026 10:00:00 +0000", f"Message-ID: {message_id}",
               "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", *extra]
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + body


def default_lists() -> dict[str, Any]:
    return {"friends": {"address": "friends@example.test", "name": "Friends of the garden",
                        "owners": ["owner@example.test"], "posting": "members",
                        "subject_prefix": "[friends] ", "reply_to": "list"}}


class ListdEnv:
    """A config file, a state dir and a password file for one listd under test."""

    def __init__(self, directory: Path, dovecot: Dovecot, smtp_port: int, *,
                 smtp_extra: dict[str, Any] | None = None,
                 imap_extra: dict[str, Any] | None = None,
                 lists: dict[str, Any] | None = None) -> None:
        self.directory = directory
        self.dovecot = dovecot
        self.config_path = directory / "listd.yml"
        self.state_dir = directory / "state"
        password = directory / "password"
        password.write_text(LIST_PASSWORD + "\n")
        password.chmod(0o600)
        self.document: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port, "tls": "implicit",
                     "username": LIST_USER, "ca_file": str(dovecot.cafile),
                     "initial_sync": "all", "timeout": 10, **(imap_extra or {})},
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none",
                     "max_recipients": 50, "timeout": 10, "retry_initial": 0,
                     **(smtp_extra or {})},
            "auth": {"method": "password", "password_file": str(password)},
            "lists": lists if lists is not None else default_lists(),
        }
        self.write()

    def write(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.document, sort_keys=False))

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        env.update(extra)
        return env

    def command(self, program: str, *args: str) -> list[str]:
        return [sys.executable, "-c", f"import sys; from listd.cli.{program} import main; "
                "sys.exit(main())", "--config", str(self.config_path), *args]

    def listd(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("listd", *args), capture_output=True, text=True,
                              timeout=timeout, env=self._env(), check=False)

    def once(self) -> subprocess.CompletedProcess[str]:
        """``listd --once``, asserting it succeeded."""
        result = self.listd("--once")
        assert result.returncode == 0, result.stderr
        return result

    def start(self, *extra: str, environ: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
        """The daemon in the background (the caller stops it by its PID)."""
        return subprocess.Popen(self.command("listd", *extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=self._env(**(environ or {})))

    def listctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("listctl", *args), capture_output=True, text=True,
                              input=stdin, timeout=60, env=self._env(), check=False)

    def subscribe(self, list_id: str, *addresses: str) -> None:
        result = self.listctl("subscribe", list_id, *addresses)
        assert result.returncode == 0, result.stderr

    def status(self) -> dict[str, Any]:
        result = self.listctl("status", "--json")
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def post(self, raw: bytes, flags: Sequence[bytes] = ()) -> int:
        return self.dovecot.append(LIST_USER, raw, flags=flags)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0,
               interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def stop(process: subprocess.Popen[str], timeout: float = 20.0) -> tuple[int, str]:
    """SIGTERM our own daemon and return (exit code, its stderr)."""
    process.terminate()
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr


def mails_to(smtp: SmtpCapture, address: str) -> list[EmailMessage]:
    """The messages the capture server took for ``address``, parsed for reading."""
    found = []
    for captured in smtp.messages:
        if address in captured.rcpts:
            parsed = email.message_from_bytes(captured.data, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
    return found
