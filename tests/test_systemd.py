"""listd as systemd runs it: readiness, the watchdog, the unit files, their hardening, and
``--daemon`` for systems without systemd.

PID 1 is not systemd on the test hosts, so what systemd does is reproduced: the notify
protocol with a real NOTIFY_SOCKET (tests/servers/notifysocket.py), the units checked by
``systemd-analyze`` offline, and the unit's seccomp filters (SystemCallFilter=,
MemoryDenyWriteExecute=, RestrictAddressFamilies=) installed with libseccomp, as systemd
does, around a real listd.

Run as ``python -m tests.test_systemd SPEC -- PROGRAM ARGS...`` this module is that
wrapper: it installs the filters described in the JSON file SPEC, then execs PROGRAM.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import itertools
import json
import mmap
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from listd.authconfig import AuthConfig
from listd.cli.listd import fit_timeouts
from listd.config import Config, ImapConfig, SmtpConfig
from listd.store import DB_NAME
from tests.listd_env import ROOT, ListdEnv, make_message, stop, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.idp import FakeIdp
from tests.servers.notifysocket import Notification, NotifySocket
from tests.servers.smtpcapture import SmtpCapture
from tests.servers.smtpsink import SmtpSink
from tests.test_oauth import OAuthEnv, microsoft

UNITS = ROOT / "systemd"
INTERVAL_S = 2.0
WATCHDOG = {"WATCHDOG_USEC": str(int(INTERVAL_S * 1_000_000))}
# Inherited by everything a service starts; never means "listd is the service" by itself.
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID",
                     "SYSTEMD_EXEC_PID", "JOURNAL_STREAM", "STATE_DIRECTORY",
                     "CREDENTIALS_DIRECTORY")


def pings(notify: NotifySocket, since: float = 0.0, until: float = float("inf")
          ) -> list[Notification]:
    return [n for n in notify.received
            if n.fields.get("WATCHDOG") == "1" and since <= n.at <= until]


def gaps(notifications: Sequence[Notification]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(notifications)]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 may reap late)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


class SilentServer:
    """Accepts TCP connections and never says a word: a server that hangs."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while self._running:
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._held.append(connection)

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._held)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._running = False
        self._thread.join(2)
        self._listener.close()
        with self._lock:
            for connection in self._held:
                connection.close()


# --- the notify protocol and the watchdog, with the real daemon ----------------------------


def test_ready_comes_before_the_imap_sign_in(tmp_path: Path, dovecot: Dovecot,
                                             smtp: SmtpCapture) -> None:
    """An IMAP outage must not fail ``systemctl start``: READY=1 once the configuration
    and the database are fine; the outage shows in STATUS=, and listd recovers."""
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    dovecot.stop()  # the fixture starts it again for the next test
    with NotifySocket() as notify:
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path)})
        try:
            (ready,) = notify.wait_for("READY", "1")
            assert ready.pid == daemon.pid
            assert ready.fields["STATUS"] == "starting · 1 list(s)"
            wait_until(lambda: any("Connection refused" in n.fields.get("STATUS", "")
                                   for n in notify.received))
            assert daemon.poll() is None
            dovecot.start()
            env.post(make_message(subject="after the outage"))
            smtp.wait_for(lambda msgs: any(m.rcpts == ["bob@example.test"] for m in msgs),
                          timeout=30)
            wait_until(lambda: notify.received[-1].fields.get("STATUS", "").startswith(
                "idle · 1 list(s) · last poll"))
        finally:
            code, stderr = stop(daemon)
    assert code == 0, stderr
    assert stderr.index("Connection refused") < stderr.index("connected to 127.0.0.1")


def test_watchdog_pings_at_about_half_the_interval_while_mail_flows(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    with NotifySocket() as notify:
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path), **WATCHDOG})
        try:
            notify.wait_for("READY", "1")
            flowing_since = time.monotonic()
            for number in range(1, 7):
                env.post(make_message(subject=f"post {number}"))
                smtp.wait_for_messages(number, timeout=20)
            flowed_until = time.monotonic()
            seen = len(pings(notify))
            notify.wait_for("WATCHDOG", "1", count=seen + 2, timeout=4 * INTERVAL_S)
        finally:
            code, stderr = stop(daemon)
    assert code == 0, stderr
    during = pings(notify, flowing_since - INTERVAL_S, flowed_until + INTERVAL_S)
    assert all(n.pid == daemon.pid for n in during)  # NotifyAccess=main
    assert len(during) >= (flowed_until - flowing_since) / INTERVAL_S + 2
    assert max(gaps(during)) < INTERVAL_S, gaps(during)
    assert statistics.median(gaps(during)) <= INTERVAL_S / 2 * 1.2, gaps(during)


def test_watchdog_pings_during_a_fan_out_longer_than_the_interval(
        tmp_path: Path, dovecot: Dovecot) -> None:
    """One pass of deliveries may take longer than the watchdog interval (a big list, a
    slow server): the loop must ping after each transaction, not only after the pass."""
    interval = 4.0  # smtp.timeout becomes 1.33 s: longer than the server's 1 s pause
    members = [f"member{n}@example.test" for n in range(6)]
    with SmtpSink(extra_args=["-w", "1"]) as sink:  # 1 s before each reply to DATA
        env = ListdEnv(tmp_path, dovecot, sink.port,
                       smtp_extra={"max_recipients": 1, "connections": 1})
        env.subscribe("friends", "alice@example.test", *members)
        with NotifySocket() as notify:
            daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path),
                                        "WATCHDOG_USEC": str(int(interval * 1_000_000))})
            try:
                notify.wait_for("READY", "1")
                posted = time.monotonic()
                env.post(make_message())
                sink.wait_for_messages(len(members), timeout=30)
                done = time.monotonic()
                notify.wait_for("WATCHDOG", "1", count=len(pings(notify)) + 1)
            finally:
                code, stderr = stop(daemon)
    assert code == 0, stderr
    assert "deliveries: 6 sent" in stderr
    during = pings(notify, posted - interval, done + interval)
    assert max(gaps(during)) < interval, gaps(during)


def test_a_server_that_never_answers_is_timed_out_and_reconnected_between_pings(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    """imap.timeout is longer than the watchdog interval: listd cuts it to a third of the
    interval, so each attempt times out, the loop goes on pinging and reconnects."""
    with SilentServer() as silent, NotifySocket() as notify:
        env = ListdEnv(tmp_path, dovecot, smtp.port,
                       imap_extra={"port": silent.port, "timeout": 30})
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path), **WATCHDOG})
        try:
            (ready,) = notify.wait_for("READY", "1")
            wait_until(lambda: silent.accepted >= 3, timeout=30)
            ended = time.monotonic()
        finally:
            code, stderr = stop(daemon)
    assert code == 0, stderr
    assert ("imap.timeout 30 s is longer than a third of the watchdog interval (2 s): using "
            "0.667 s") in stderr
    assert "The handshake operation timed out (failure 2 in a row)" in stderr, stderr
    during = [ready, *pings(notify, ready.at, ended)]
    assert len(during) >= 4 and max(gaps(during)) < INTERVAL_S, gaps(during)


def test_watchdog_pings_stop_while_the_loop_is_blocked(tmp_path: Path, dovecot: Dovecot,
                                                       smtp: SmtpCapture) -> None:
    """Pings come from the loop only: blocked (here on the database, locked by another
    process for three intervals) it stops pinging, so systemd would restart it."""
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    with NotifySocket() as notify:
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path), **WATCHDOG})
        try:
            notify.wait_for("READY", "1")
            notify.wait_for("WATCHDOG", "1", count=3)
            database = sqlite3.connect(env.state_dir / DB_NAME, timeout=30,
                                       isolation_level=None)
            database.execute("BEGIN IMMEDIATE")
            locked_at = time.monotonic()
            time.sleep(3 * INTERVAL_S)  # a listctl transaction that takes its time
            released_at = time.monotonic()
            database.execute("ROLLBACK")
            database.close()
            notify.wait_for("WATCHDOG", "1", count=len(pings(notify)) + 1)
            env.post(make_message(subject="after the lock"))
            smtp.wait_for(lambda msgs: any(m.rcpts == ["bob@example.test"] for m in msgs))
        finally:
            code, stderr = stop(daemon)
    assert code == 0, stderr
    # The step under way when the lock was taken may still end with a ping; after that,
    # nothing until the lock is gone.
    assert pings(notify, locked_at + INTERVAL_S, released_at) == []
    assert pings(notify, released_at)


def test_sigterm_says_stopping_at_once_and_stops_cleanly(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    with NotifySocket() as notify:
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path), **WATCHDOG})
        try:
            notify.wait_for("READY", "1")
        finally:
            code, stderr = stop(daemon)
        (stopping,) = notify.wait_for("STOPPING", "1")
    assert code == 0, stderr
    assert stopping.pid == daemon.pid
    assert stopping.fields["STATUS"] == "stopping: finishing what is in flight"
    assert "SIGTERM received" in stderr and stderr.rstrip().endswith("stopped")


def test_state_dir_outside_the_units_state_directory_is_a_configuration_error(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    instance = tmp_path / "lib" / "listd" / "main"
    result = subprocess.run(env.command("listd", "--once"), capture_output=True, text=True,
                            timeout=60, check=False,
                            env={**_without_systemd(env), "STATE_DIRECTORY": str(instance)})
    assert result.returncode == 78
    assert (f"{env.config_path}: state_dir: {env.state_dir} is outside the unit's "
            f"StateDirectory= ({instance}), the only place listd may write; set "
            f"state_dir: {instance}") in result.stderr
    inside = subprocess.run(env.command("listd", "--once"), capture_output=True, text=True,
                            timeout=60, check=False,
                            env={**_without_systemd(env), "STATE_DIRECTORY": str(tmp_path)})
    assert inside.returncode == 0, inside.stderr


def test_timeouts_are_cut_to_a_third_of_the_watchdog_interval() -> None:
    base = Config(path=Path("listd.yml"), state_dir=Path("/var/lib/listd"),
                  imap=ImapConfig(host="imap.example.org", username="u", timeout=60.0),
                  smtp=SmtpConfig(host="smtp.example.org", timeout=10.0),
                  auth=AuthConfig(), lists={})
    assert fit_timeouts(base, None) is base
    assert fit_timeouts(base, 180.0) == base  # the unit's WatchdogSec=3min: kept whole
    cut = fit_timeouts(base, 60.0)
    assert (cut.imap.timeout, cut.smtp.timeout) == (20.0, 10.0)
    assert dataclasses.replace(cut, imap=base.imap) == base


# --- the unit files --------------------------------------------------------------------------


def _settings(unit: Path) -> list[tuple[str, str]]:
    """(key, value) of every setting, in order; comments and sections left out."""
    lines = [line.strip() for line in unit.read_text().splitlines()]
    return [(key, value) for key, _, value in (line.partition("=") for line in lines
                                               if line and line[0] not in "#;[")]


def _analyzable(unit: str, directory: Path) -> Path:
    """A copy of ``unit`` in ``directory`` whose ExecStart= names an executable that exists
    here (verify checks it; /usr/bin/listd is where the package installs listd)."""
    stand_in = directory / "listd"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = (UNITS / unit).read_text()
    assert text.count("/usr/bin/listd") == 1 and "\nExecStart=/usr/bin/listd " in text
    copy = directory / unit
    copy.write_text(text.replace("/usr/bin/listd", str(stand_in)))
    return copy


def _systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    _analyzable("listd.service", tmp_path)
    _analyzable("listd@.service", tmp_path)
    for name in ("listd.service", "listd@main.service"):
        # Unknown keys and bad values are only warnings (rc 0): stderr must be empty.
        result = _systemd_analyze("verify", "--man=no", f"./{name}", cwd=tmp_path)
        assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_hardening_scores_at_most_1_5(tmp_path: Path) -> None:
    _analyzable("listd@.service", tmp_path)
    for path, name in ((UNITS / "listd.service", "listd.service"),
                       (tmp_path / "listd@main.service", "listd@main.service")):
        result = _systemd_analyze("security", "--offline=true", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        found = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)",
                          result.stdout)
        assert found, result.stdout
        assert float(found.group(1)) <= 1.5, result.stdout


def test_units_say_what_listd_needs_and_stay_in_step() -> None:
    single = _settings(UNITS / "listd.service")
    template = _settings(UNITS / "listd@.service")
    settings = dict(single)
    assert {k: settings[k] for k in ("Type", "NotifyAccess", "User", "Group", "StateDirectory",
                                     "StateDirectoryMode", "RestartPreventExitStatus",
                                     "Restart", "MemoryDenyWriteExecute")} == {
        "Type": "notify", "NotifyAccess": "main", "User": "listd", "Group": "listd",
        "StateDirectory": "listd", "StateDirectoryMode": "0750",
        "RestartPreventExitStatus": "78", "Restart": "on-failure",
        "MemoryDenyWriteExecute": "yes"}
    assert "DynamicUser" not in settings
    # The default network timeouts fit in a third of the interval: nothing is cut.
    assert settings["WatchdogSec"] == "3min"
    assert max(ImapConfig.timeout, SmtpConfig.timeout) <= 180 / 3
    differing = {"Description", "ExecStart", "StateDirectory"}
    assert [s for s in single if s[0] not in differing] == \
        [s for s in template if s[0] not in differing]
    assert dict(template)["ExecStart"] == "/usr/bin/listd --config /etc/listd/%i.yml"
    assert dict(template)["StateDirectory"] == "listd/%i"


# --- the unit's seccomp filters around the real listd ------------------------------------------


def _syscall_groups() -> dict[str, list[str]]:
    listing = _systemd_analyze("syscall-filter", cwd=ROOT).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def confinement(unit: Path) -> dict[str, Any]:
    """The allowed system calls and address families ``unit`` sets, for the wrapper."""
    groups = _syscall_groups()

    def expand(names: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for name in names:
            found |= expand(groups[name]) if name.startswith("@") else {name}
        return found

    allowed: set[str] = set()
    families: list[int] = []
    refusal = 0  # without SystemCallErrorNumber=, systemd kills the process
    for key, value in _settings(unit):
        if key == "SystemCallFilter":
            if value.startswith("~"):
                allowed -= expand(value[1:].split())
            else:
                assert allowed or value == "@system-service", "an allow-list comes first"
                allowed |= expand(value.split())
        elif key == "RestrictAddressFamilies":
            families = [int(getattr(socket, name)) for name in value.split()]
        elif key == "SystemCallErrorNumber":
            refusal = int(getattr(errno, value))
    assert allowed and families
    return {"allow": sorted(allowed), "families": families, "errno": refusal}


def confined(spec: Path, command: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "tests.test_systemd", str(spec), "--", *command]


def test_listd_works_under_the_units_seccomp_filters(
        tmp_path: Path, dovecot_oauth: Dovecot, smtp_oauth: SmtpCapture, idp: FakeIdp) -> None:
    """MemoryDenyWriteExecute=, SystemCallFilter= and RestrictAddressFamilies= of
    listd.service around ``listd --once`` signing in with msal (https to the token
    endpoint), IMAP over TLS, SMTP with STARTTLS, SQLite, sd_notify. A system call outside
    the allow-list fails with EPERM, as SystemCallErrorNumber= says. (With the process
    killed instead, the one refused call is SQLite's fchown() of its journal, made only
    when running as root; under User=listd it never happens.)"""
    spec = tmp_path / "confinement.json"
    spec.write_text(json.dumps(confinement(UNITS / "listd.service")))
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "app-only"))
    environ = env._env()

    probe = ("import mmap, os, socket\n"
             "try:\n"
             "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
             "except PermissionError:\n"
             "    print('no W+X memory')\n"
             "try:\n"
             "    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\n"
             "except OSError as exc:\n"
             "    print('no netlink', exc.errno)\n"
             "try:\n"
             "    os.setuid(os.getuid())\n"
             "except PermissionError:\n"
             "    print('no setuid')\n"
             # What msal does with a certificate credential, and the Google stack.
             "import google.auth.transport.requests, jwt\n"
             "from cryptography.hazmat.primitives.asymmetric import rsa\n"
             "key = rsa.generate_private_key(public_exponent=65537, key_size=2048)\n"
             "jwt.decode(jwt.encode({'a': 1}, key, 'RS256'), key.public_key(), ['RS256'])\n"
             "print('signed')\n")
    result = subprocess.run(confined(spec, [sys.executable, "-c", probe]), env=environ,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.split("\n") == [
        "no W+X memory", f"no netlink {errno.EAFNOSUPPORT}", "no setuid", "signed", ""], \
        result.stderr

    env.subscribe("friends", "alice@example.test", "bob@example.test")
    env.post(make_message())
    with NotifySocket() as notify:
        run = subprocess.run(confined(spec, env.command("listd", "--once")),
                             env={**environ, "NOTIFY_SOCKET": str(notify.path)},
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        notify.wait_for("READY", "1")
    assert [(m.rcpts, m.tls, m.auth_mechanism) for m in smtp_oauth.messages] == [
        (["bob@example.test"], True, "XOAUTH2")]
    assert idp.token_requests("client_credentials")


# --- --daemon, for systems without systemd ----------------------------------------------------


def _without_systemd(env: ListdEnv) -> dict[str, str]:
    environ = env._env()
    for name in SYSTEMD_VARIABLES:
        environ.pop(name, None)
    return environ


def test_daemon_mode_with_a_pidfile(tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    pidfile, log_file = tmp_path / "run" / "listd.pid", tmp_path / "listd.log"
    pidfile.parent.mkdir()
    daemonize = env.command("listd", "--daemon", "--pidfile", str(pidfile),
                            "--log-file", str(log_file))
    # Started from a shell that itself runs under a service (a CI runner, a terminal that
    # is a user service): INVOCATION_ID is inherited, but listd is not the service.
    environ = {**_without_systemd(env), "INVOCATION_ID": "0" * 32,
               "SYSTEMD_EXEC_PID": str(os.getpid())}
    started = subprocess.run(daemonize, env=environ, capture_output=True, text=True,
                             timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    wait_until(lambda: pidfile.is_file() and pidfile.read_text().strip().isdigit())
    pid = int(pidfile.read_text())
    try:
        assert alive(pid)
        again = subprocess.run(daemonize, env=environ, capture_output=True, text=True,
                               timeout=60, check=False)
        assert again.returncode == 73
        assert f"listd already runs as PID {pid}; stop it first" in again.stderr
        env.post(make_message())
        smtp.wait_for(lambda msgs: any(m.rcpts == ["bob@example.test"] for m in msgs))
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists() and not alive(pid))
    log = log_file.read_text()
    assert f"listd[{pid}]: info: listd " in log, log
    assert f", PID {pid}" in log and "deliveries: 1 sent" in log
    assert log.rstrip().endswith(f"listd[{pid}]: info: stopped"), log


def test_daemon_mode_is_refused_under_systemd(tmp_path: Path, dovecot: Dovecot,
                                              smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    pidfile = tmp_path / "listd.pid"
    for systemd in ({"NOTIFY_SOCKET": str(tmp_path / "notify")},
                    {"INVOCATION_ID": "0" * 32, "SYSTEMD_EXEC_PID": "self"}):
        command = env.command("listd", "--daemon", "--pidfile", str(pidfile),
                              "--log-file", str(tmp_path / "listd.log"))
        if systemd.get("SYSTEMD_EXEC_PID") == "self":  # the PID systemd would have exec'd
            command = ["/bin/sh", "-c", 'SYSTEMD_EXEC_PID=$$ exec "$@"', "sh", *command]
            systemd = {"INVOCATION_ID": systemd["INVOCATION_ID"]}
        result = subprocess.run(command, env={**_without_systemd(env), **systemd},
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 78, result.stderr
        assert "--daemon is for systems without systemd" in result.stderr
        assert not pidfile.exists()


def _confine(spec_path: str, argv: list[str]) -> None:
    """Install the filters of ``spec_path`` (see :func:`confinement`), then exec ``argv``.

    As systemd does it: separate filters, the kernel applying the strictest answer;
    MemoryDenyWriteExecute= refuses mmap() asking for write and execute together, any
    mprotect() or pkey_mprotect() adding execute, and shmat() with SHM_EXEC.
    """
    class ArgCmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    allow, kill_process = 0x7FFF0000, 0x80000000
    cmp_eq, cmp_gt, cmp_masked_eq = 4, 6, 7
    shm_exec, af_max = 0o100000, 46

    def refuse(code: int) -> int:
        return 0x00050000 | code

    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]

    def install(default: int, rules: list[tuple[int, str, list[ArgCmp]]]) -> None:
        context = lib.seccomp_init(default)
        for action, name, comparisons in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a system call on this architecture
                continue
            array = (ArgCmp * max(1, len(comparisons)))(*comparisons)
            if lib.seccomp_rule_add_array(context, action, number, len(comparisons),
                                          array) < 0:
                raise OSError(f"seccomp_rule_add_array {name} failed")
        loaded = lib.seccomp_load(context)
        lib.seccomp_release(context)
        if loaded < 0:
            raise OSError(-loaded, "seccomp_load")

    spec = json.loads(Path(spec_path).read_text())
    write_exec = mmap.PROT_WRITE | mmap.PROT_EXEC
    install(allow, [
        (refuse(errno.EPERM), "mmap", [ArgCmp(2, cmp_masked_eq, write_exec, write_exec)]),
        *((refuse(errno.EPERM), name, [ArgCmp(2, cmp_masked_eq, mmap.PROT_EXEC,
                                              mmap.PROT_EXEC)])
          for name in ("mprotect", "pkey_mprotect")),
        (refuse(errno.EPERM), "shmat", [ArgCmp(2, cmp_masked_eq, shm_exec, shm_exec)])])
    install(allow, [
        *((refuse(errno.EAFNOSUPPORT), "socket", [ArgCmp(0, cmp_eq, family, 0)])
          for family in range(af_max) if family not in spec["families"]),
        (refuse(errno.EAFNOSUPPORT), "socket", [ArgCmp(0, cmp_gt, af_max - 1, 0)])])
    # Last: loading another filter is not among the allowed calls.
    refusal = refuse(spec["errno"]) if spec["errno"] else kill_process
    install(refusal, [(allow, name, []) for name in spec["allow"]])
    os.execv(argv[0], argv)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python -m tests.test_systemd SPEC -- PROGRAM [ARGS...]")
    _confine(sys.argv[1], sys.argv[3:])
