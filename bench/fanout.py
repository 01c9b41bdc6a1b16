#!/usr/bin/env python3
"""Fan-out benchmark: one post to N subscribers, listd against two references, one run.

Everything runs on 127.0.0.1 on ports chosen by the OS, against Postfix's ``smtp-sink``
and a throwaway Dovecot, both children of this script and stopped by their own PIDs:

1. subscribe N members with ``listctl subscribe bench -`` (timed on its own);
2. append one post of about ``--size`` bytes to list@example.test's INBOX;
3. run ``python -m listd --once`` and time the whole process (start-up, IMAP, journal,
   fan-out), its peak RSS (``wait4`` in a small wrapper process, so neither this
   script nor the servers are counted), and from its log the time from "fetched" to
   the last delivery recorded;
4. verify with ``listctl status --json`` and the sink's counter that every recipient
   was sent exactly once, in ceil(N / max_recipients) transactions;
5. references against the same sink, each measured half before and half after listd's
   run (the machine's speed drifts): a naive smtplib client (one connection, one
   transaction per recipient) and ``smtp-source`` (100 RCPT per transaction, one
   connection).

The machine is noisy: compare the ratios within one run, not absolute rates between runs.
Usage (from the repository root, with the project's venv python)::

    python3 bench/fanout.py [--recipients 50000] [--max-recipients 100] \
        [--connections 4] [--size 4096]

Prints a table, then one JSON line with every figure. Exit status 0 when every
verification passed (the goals are reported, not enforced), 1 when one failed, 2 on a
usage error, 124 on the global timeout (``--timeout``), 143 on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers.dovecot import Dovecot  # noqa: E402
from tests.servers.smtpsink import SmtpSink  # noqa: E402

HOST = "127.0.0.1"
LIST_USER = "list@example.test"
LIST_PASSWORD = "listpw"
LIST_ID = "bench"
LIST_ADDRESS = "bench@example.test"
AUTHOR = "alice@example.test"
DOMAINS = 50
SMTP_SOURCE = "/usr/sbin/smtp-source"
SOURCE_RCPT_PER_TXN = 100  # the reference of shared/performance.md
GOAL_VS_NAIVE = 5.0  # listd whole --once run at least this many times the naive rate
GOAL_RSS_MB = 80.0

_SINK_COUNTERS = re.compile(r"sess=(\d+) quit=(\d+) mesg=(\d+)")
_SENT = re.compile(r"deliveries: .*?(\d+) sent")


class BenchTimeout(Exception):
    """The global time limit was reached."""


class VerificationError(Exception):
    """listd did not do what it should: the figures of this run are meaningless."""


# --- measuring one child process ---------------------------------------------------------

# Peak RSS cannot be read for a child of this (large) process: Linux carries the parent's
# RSS high-water mark over the fork and the exec into the child's ru_maxrss (/bin/true
# spawned from a 200 MB Python reports 211 MB). So every measured command is started by
# this small wrapper, whose own RSS (~10 MB) is the floor of what can be seen; it waits
# for its one child with wait4 and writes what the kernel says about it to argv[1].
# SIGTERM/SIGINT to the wrapper SIGKILL that child (its own, not yet reaped: no PID race).
_WRAPPER = r"""
import json, os, signal, sys, time
result, cmd = sys.argv[1], sys.argv[2:]
stops = {signal.SIGTERM, signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, stops)
start = time.monotonic()
pid = os.posix_spawnp(cmd[0], cmd, os.environ, setsigmask=(), setsigdef=stops)
for s in stops:
    signal.signal(s, lambda *_: os.kill(pid, signal.SIGKILL))
signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - start
for s in stops:  # the PID is reaped now and may be reused: never signal it again
    signal.signal(s, signal.SIG_DFL)
# the wrapper's own peak; not its ru_maxrss, which holds its parent's (see above)
with open("/proc/self/status") as f:
    hwm = next((line for line in f if line.startswith("VmHWM:")), "")
with open(result, "w") as f:
    json.dump({"start": start, "wall": wall, "status": os.waitstatus_to_exitcode(status),
               "maxrss_kb": usage.ru_maxrss, "user": usage.ru_utime, "sys": usage.ru_stime,
               "floor_kb": int(hwm.split()[1]) if hwm else 0}, f)
"""


@dataclass
class Measured:
    """One child process: exit code, wall time, resources, output."""

    returncode: int
    wall_s: float
    max_rss_mb: float
    rss_floor_mb: float  # the wrapper's own RSS: no smaller peak can be measured
    user_s: float
    sys_s: float
    stdout: bytes
    stderr: list[tuple[float, str]]  # (seconds since the child started, line) on arrival

    def stderr_text(self) -> str:
        return "".join(line for _, line in self.stderr)

    def first(self, needle: str) -> tuple[float, str] | None:
        """The first stderr line containing ``needle``, with its arrival time."""
        return next(((t, line) for t, line in self.stderr if needle in line), None)


def run_measured(cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
                 stdin: bytes | None = None) -> Measured:
    """Run ``cmd`` under the wrapper, reading stdout and timestamped stderr lines.

    Wall time, peak RSS and CPU time are the child's own, from ``wait4`` in the wrapper
    (the wrapper's ~20 ms start-up is not included). Kills the child after ``timeout``.
    """
    with tempfile.NamedTemporaryFile(prefix="listd-bench-rusage-", suffix=".json") as result:
        wrapper = [sys.executable, "-I", "-S", "-c", _WRAPPER, result.name, *cmd]
        proc = subprocess.Popen(wrapper, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE)
        out = bytearray()
        lines: list[tuple[float, str]] = []  # (time.monotonic(), line)

        def read_stdout() -> None:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(65536):
                out.extend(chunk)

        def read_stderr() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                lines.append((time.monotonic(), raw.decode("utf-8", "replace")))

        def write_stdin() -> None:
            assert proc.stdin is not None and stdin is not None
            with contextlib.suppress(BrokenPipeError), proc.stdin:
                proc.stdin.write(stdin)

        threads = [threading.Thread(target=read_stdout, daemon=True),
                   threading.Thread(target=read_stderr, daemon=True)]
        if stdin is not None:
            threads.append(threading.Thread(target=write_stdin, daemon=True))
        try:
            for thread in threads:
                thread.start()
            proc.wait(timeout)
            for thread in threads:
                thread.join(10.0)
        except BaseException:
            _stop(proc)
            raise
        finally:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        text = Path(result.name).read_text()
    if proc.returncode != 0 or not text:
        raise VerificationError(f"measuring wrapper for {cmd[0]} exited {proc.returncode}: "
                                f"{''.join(line for _, line in lines)[-2000:]}")
    usage = json.loads(text)
    start = float(usage["start"])  # CLOCK_MONOTONIC is one clock for all processes
    return Measured(int(usage["status"]), float(usage["wall"]), usage["maxrss_kb"] / 1024.0,
                    usage["floor_kb"] / 1024.0, float(usage["user"]), float(usage["sys"]),
                    bytes(out), [(t - start, line) for t, line in lines])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM our wrapper by its PID (it SIGKILLs its child), SIGKILL it if it hangs."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10.0)


# --- the pieces of the run --------------------------------------------------------------


def recipient_addresses(count: int) -> list[str]:
    """m00001@d01.example.test ... spread round-robin over DOMAINS domains."""
    width = max(5, len(str(count)))
    return [f"m{i:0{width}d}@d{i % DOMAINS:02d}.example.test" for i in range(1, count + 1)]


def make_post(size: int) -> bytes:
    """A plain-text post of about ``size`` bytes (headers included), CRLF line ends."""
    head = (f"From: Alice Example <{AUTHOR}>\r\nTo: {LIST_ADDRESS}\r\n"
            "Subject: fan-out benchmark\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{time.time_ns()}.{os.getpid()}@example.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog; fan-out benchmark filler.\r\n"
    body = bytearray()
    while len(head) + len(body) < size:
        body += line
    return head + bytes(body[: max(2, size - len(head) - 2)]).rstrip(b"\r\n") + b"\r\n"


def write_config(directory: Path, dovecot: Dovecot, sink: SmtpSink,
                 max_recipients: int, connections: int) -> Path:
    password = directory / "password"
    password.write_text(LIST_PASSWORD + "\n")
    password.chmod(0o600)
    document = {
        "state_dir": str(directory / "state"),
        "imap": {"host": HOST, "port": dovecot.imaps_port, "tls": "implicit",
                 "username": LIST_USER, "ca_file": str(dovecot.cafile),
                 "initial_sync": "all", "timeout": 30},
        "smtp": {"host": HOST, "port": sink.port, "tls": "none",
                 "max_recipients": max_recipients, "connections": connections,
                 "timeout": 30},
        "auth": {"method": "password", "password_file": str(password)},
        "lists": {LIST_ID: {"address": LIST_ADDRESS, "name": "Fan-out benchmark",
                            "posting": "open"}},
    }
    path = directory / "listd.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(name, None)
    return env


def listctl(config: Path, *args: str, stdin: bytes | None = None,
            timeout: float = 120.0) -> Measured:
    cmd = [sys.executable, "-m", "listd.cli.listctl", "--config", str(config), *args]
    result = run_measured(cmd, timeout=timeout, env=child_env(), stdin=stdin)
    if result.returncode != 0:
        raise VerificationError(f"listctl {' '.join(args)} -> exit {result.returncode}:\n"
                                f"{result.stderr_text()[-2000:]}")
    return result


@dataclass(frozen=True)
class SinkCounters:
    sessions: int
    messages: int

    @classmethod
    def read(cls, sink: SmtpSink) -> SinkCounters:
        found = _SINK_COUNTERS.findall(sink.log_text())
        return cls(int(found[-1][0]), int(found[-1][2])) if found else cls(0, 0)


def wait_sink(sink: SmtpSink, before: SinkCounters, expected: int,
              settle_s: float = 0.3) -> SinkCounters:
    """The sink's counters once ``expected`` more messages arrived (and nothing more)."""
    with contextlib.suppress(TimeoutError):
        sink.wait_for_messages(before.messages + expected, timeout=10.0)
    time.sleep(settle_s)  # lets a surplus show, and the session counter catch up
    return SinkCounters.read(sink)


def naive_smtplib(port: int, recipients: Sequence[str], message: bytes,
                  budget_s: float) -> tuple[int, float]:
    """One connection, one transaction (MAIL, RCPT, DATA) per recipient.

    Stops after ``budget_s`` seconds; returns (recipients sent, seconds).
    """
    sent = 0
    start = time.monotonic()
    with smtplib.SMTP(HOST, port, timeout=30) as smtp:
        smtp.ehlo()
        for recipient in recipients:
            refused = smtp.sendmail(LIST_ADDRESS, [recipient], message)
            if refused:
                raise VerificationError(f"sink refused {refused}")
            sent += 1
            if time.monotonic() - start > budget_s:
                break
    return sent, time.monotonic() - start


def smtp_source(port: int, messages: int, size: int, timeout: float) -> Measured:
    """``smtp-source`` on one connection (``-d``), 100 RCPT per transaction."""
    cmd = [SMTP_SOURCE, "-d", "-s", "1", "-r", str(SOURCE_RCPT_PER_TXN), "-m", str(messages),
           "-l", str(size), "-M", "localhost", "-f", LIST_ADDRESS, "-t", "member@example.test",
           f"{HOST}:{port}"]
    result = run_measured(cmd, timeout=timeout)
    if result.returncode != 0:
        raise VerificationError(f"smtp-source -> exit {result.returncode}: "
                                f"{result.stderr_text()[-2000:]}")
    return result


# --- the run -----------------------------------------------------------------------------


@dataclass
class Report:
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, problem: str) -> None:
        self.checks[name] = ok
        if not ok:
            self.problems.append(problem)


@dataclass
class Rate:
    """A reference measured in parts: half before listd's run, half after it, so that a
    drift of the machine's speed during the run biases neither side of the ratio."""

    parts: list[tuple[int, float]] = field(default_factory=list)  # (recipients, seconds)
    peak_rss_mb: float = 0.0

    @property
    def recipients(self) -> int:
        return sum(r for r, _ in self.parts)

    @property
    def seconds(self) -> float:
        return sum(t for _, t in self.parts)

    @property
    def per_s(self) -> int:
        return round(self.recipients / self.seconds)

    def part_rates(self) -> list[int]:
        return [round(r / t) for r, t in self.parts]

    def drift(self) -> float:
        """Fastest part's rate over the slowest's: 1.0 is a quiet machine."""
        rates = self.part_rates()
        return round(max(rates) / min(rates), 2)


def halves(total: int) -> list[int]:
    """``total`` split for before and after listd (one part when it cannot be split)."""
    return [total] if total < 2 else [total // 2, total - total // 2]


def _phase(result: Measured, needle: str) -> float | None:
    found = result.first(needle)
    return round(found[0], 4) if found else None


def run_listd(config: Path, timeout: float) -> Measured:
    cmd = [sys.executable, "-m", "listd", "--config", str(config), "--once"]
    return run_measured(cmd, timeout=timeout, env=child_env())


def benchmark(args: argparse.Namespace, cleanup: contextlib.ExitStack,
              progress: Callable[[str], None]) -> Report:
    report = Report()
    n, batch = args.recipients, args.max_recipients
    fig = report.figures
    fig.update(recipients=n, max_recipients=batch, connections=args.connections,
               size=args.size, domains=DOMAINS, python=sys.version.split()[0])

    progress("starting smtp-sink and Dovecot")
    sink = SmtpSink()
    cleanup.callback(sink.cleanup)
    sink.start()
    dovecot = Dovecot()
    cleanup.callback(dovecot.cleanup)
    dovecot.start()
    work = Path(tempfile.mkdtemp(prefix="listd-bench-"))
    cleanup.callback(shutil.rmtree, work, True)
    config = write_config(work, dovecot, sink, batch, args.connections)

    progress(f"subscribing {n} members")
    recipients = recipient_addresses(n)
    subscribed = listctl(config, "subscribe", LIST_ID, "-",
                         stdin="".join(r + "\n" for r in recipients).encode(),
                         timeout=args.timeout)
    fig["subscribe_s"] = round(subscribed.wall_s, 3)
    fig["subscribe_per_s"] = round(n / subscribed.wall_s)
    fig["subscribe_peak_rss_mb"] = round(subscribed.max_rss_mb, 1)
    lists = [json.loads(line) for line in listctl(config, "lists", "--json").stdout.splitlines()]
    active = next((r["active"] for r in lists if r["list"] == LIST_ID), 0)
    report.check("members_active", active == n, f"{active} active members, expected {n}")

    post = make_post(args.size)
    fig["post_bytes"] = len(post)
    dovecot.append(LIST_USER, post)

    naive, source = Rate(), Rate()
    naive_parts = halves(min(n, args.naive_max))
    source_parts = halves(math.ceil(n / SOURCE_RCPT_PER_TXN))

    def references(part: int) -> None:
        if part >= len(naive_parts):
            return
        count = naive_parts[part]
        progress(f"naive smtplib reference, part {part + 1}: {count} recipients")
        before = SinkCounters.read(sink)
        sent, seconds = naive_smtplib(sink.port, recipients[:count], post,
                                      args.naive_budget / len(naive_parts))
        got = wait_sink(sink, before, sent).messages - before.messages
        report.check(f"sink_naive_{part + 1}", got == sent,
                     f"smtp-sink counted {got} naive messages, expected {sent}")
        naive.parts.append((sent, seconds))
        messages = source_parts[part] if part < len(source_parts) else 0
        if not messages:
            return
        progress(f"smtp-source reference, part {part + 1}: "
                 f"{messages * SOURCE_RCPT_PER_TXN} recipients")
        before = SinkCounters.read(sink)
        result = smtp_source(sink.port, messages, args.size, args.timeout)
        got = wait_sink(sink, before, messages).messages - before.messages
        report.check(f"sink_source_{part + 1}", got == messages,
                     f"smtp-sink counted {got} smtp-source messages, expected {messages}")
        source.parts.append((messages * SOURCE_RCPT_PER_TXN, result.wall_s))
        source.peak_rss_mb = max(source.peak_rss_mb, result.max_rss_mb)

    references(0)
    progress("running listd --once")
    measure_listd(args, config, sink, report)
    references(1)

    fig.update(naive_recipients=naive.recipients, naive_s=round(naive.seconds, 3),
               naive_per_s=naive.per_s, naive_part_per_s=naive.part_rates(),
               naive_drift=naive.drift(),
               source_recipients=source.recipients, source_s=round(source.seconds, 3),
               source_per_s=source.per_s, source_part_per_s=source.part_rates(),
               source_drift=source.drift(), source_peak_rss_mb=round(source.peak_rss_mb, 1))
    fig["ratio_listd_vs_naive"] = round(fig["listd_per_s"] / naive.per_s, 2)
    fig["ratio_listd_vs_source"] = round(fig["listd_per_s"] / source.per_s, 3)
    fanout_rate = fig.get("listd_fetch_to_last_250_per_s")
    if fanout_rate:
        fig["ratio_fanout_vs_naive"] = round(fanout_rate / naive.per_s, 2)
        fig["ratio_fanout_vs_source"] = round(fanout_rate / source.per_s, 3)
    fig["goal_listd_5x_naive"] = fig["ratio_listd_vs_naive"] >= GOAL_VS_NAIVE
    fig["goal_rss_below_80mb"] = fig["listd_peak_rss_mb"] < GOAL_RSS_MB
    return report


def measure_listd(args: argparse.Namespace, config: Path, sink: SmtpSink,
                  report: Report) -> None:
    """Run ``listd --once`` once, record its figures and verify what it did."""
    n, fig = args.recipients, report.figures
    before = SinkCounters.read(sink)
    listd = run_listd(config, args.timeout)
    log_tail = listd.stderr_text()[-3000:]
    report.check("listd_exit_0", listd.returncode == 0,
                 f"listd --once exited {listd.returncode}:\n{log_tail}")
    fig["listd_s"] = round(listd.wall_s, 3)
    fig["listd_per_s"] = round(n / listd.wall_s)
    fig["listd_peak_rss_mb"] = round(listd.max_rss_mb, 1)
    fig["rss_floor_mb"] = round(listd.rss_floor_mb, 1)
    fig["listd_cpu_user_s"] = round(listd.user_s, 3)
    fig["listd_cpu_sys_s"] = round(listd.sys_s, 3)
    marks = {"connected": _phase(listd, "connected to "),
             "fetched": _phase(listd, " new message(s)"),
             "queued": _phase(listd, "delivery(ies) queued"),
             "sent": _phase(listd, "deliveries: ")}
    fig["listd_log_s"] = marks
    if marks["fetched"] is not None and marks["sent"] is not None:
        fanout = marks["sent"] - marks["fetched"]
        fig["listd_fetch_to_last_250_s"] = round(fanout, 3)
        fig["listd_fetch_to_last_250_per_s"] = round(n / fanout) if fanout > 0 else None
    else:
        report.check("listd_log_marks", False,
                     f"'fetched' or 'deliveries:' missing in listd's log:\n{log_tail}")
    sent_line = listd.first("deliveries: ")
    logged = int(m.group(1)) if sent_line and (m := _SENT.search(sent_line[1])) else 0
    report.check("listd_logged_sent", logged == n, f"listd logged {logged} sent, expected {n}")

    status = json.loads(listctl(config, "status", "--json").stdout)
    fig["status"] = {k: status.get(k) for k in ("deliveries_sent", "deliveries_pending",
                                                "deliveries_failed", "messages_journaled")}
    report.check("status_sent", status["deliveries_sent"] == n,
                 f"deliveries_sent {status['deliveries_sent']}, expected {n}")
    report.check("status_pending_0", status["deliveries_pending"] == 0,
                 f"deliveries_pending {status['deliveries_pending']}, expected 0")
    report.check("status_failed_0", status["deliveries_failed"] == 0,
                 f"deliveries_failed {status['deliveries_failed']}, expected 0")
    expected_txn = math.ceil(n / args.max_recipients)
    after = wait_sink(sink, before, expected_txn)
    fig["sink_listd_transactions"] = after.messages - before.messages
    fig["sink_listd_sessions"] = after.sessions - before.sessions
    report.check("sink_transactions", after.messages - before.messages == expected_txn,
                 f"smtp-sink counted {after.messages - before.messages} messages, "
                 f"expected {expected_txn}")


# --- output and main --------------------------------------------------------------------


def table(fig: dict[str, Any]) -> str:
    def num(key: str, unit: str = "", digits: int = 0) -> str:
        value = fig.get(key)
        if value is None:
            return "-"
        return f"{value:,.{digits}f}{unit}" if isinstance(value, int | float) else str(value)

    rows = [
        ("what", "recipients", "seconds", "recipients/s", "peak RSS"),
        ("listd --once, whole process", num("recipients"), num("listd_s", digits=2),
         num("listd_per_s"), num("listd_peak_rss_mb", " MB", 1)),
        ("listd fetched -> last 250", num("recipients"),
         num("listd_fetch_to_last_250_s", digits=2), num("listd_fetch_to_last_250_per_s"),
         ""),
        ("naive smtplib, 1 RCPT/txn, 1 conn", num("naive_recipients"), num("naive_s", digits=2),
         num("naive_per_s"), ""),
        (f"smtp-source, {SOURCE_RCPT_PER_TXN} RCPT/txn, 1 conn", num("source_recipients"),
         num("source_s", digits=2), num("source_per_s"), num("source_peak_rss_mb", " MB", 1)),
        ("listctl subscribe (not in the above)", num("recipients"), num("subscribe_s", digits=2),
         num("subscribe_per_s"), num("subscribe_peak_rss_mb", " MB", 1)),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))

    def verdict(key: str) -> str:
        return "met" if fig.get(key) else "NOT met"

    lines += [
        "",
        f"listd whole run / naive:       {num('ratio_listd_vs_naive', 'x', 2)}"
        f"   (goal >= {GOAL_VS_NAIVE:g}x: {verdict('goal_listd_5x_naive')})",
        f"listd fetch->250 / naive:      {num('ratio_fanout_vs_naive', 'x', 2)}",
        f"listd whole run / smtp-source: {num('ratio_listd_vs_source', 'x', 3)}",
        f"listd fetch->250 / smtp-source: {num('ratio_fanout_vs_source', 'x', 3)}",
        f"listd peak RSS: {num('listd_peak_rss_mb', ' MB', 1)}"
        f"   (goal < {GOAL_RSS_MB:g} MB: {verdict('goal_rss_below_80mb')})",
        f"references measured half before, half after listd; rates of the parts: naive "
        f"{fig.get('naive_part_per_s')}, smtp-source {fig.get('source_part_per_s')}"
        f" (drift x{fig.get('naive_drift')} / x{fig.get('source_drift')})",
        f"listd log marks (s after start): {fig.get('listd_log_s')}",
        f"smtp-sink: {num('sink_listd_transactions')} listd transactions in "
        f"{num('sink_listd_sessions')} sessions; listctl status: {fig.get('status')}",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)

    def bounded(low: int, high: int) -> Callable[[str], int]:
        def convert(text: str) -> int:
            value = int(text)
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
            return value
        return convert

    parser.add_argument("--recipients", type=bounded(1, 1_000_000), default=50_000)
    parser.add_argument("--max-recipients", type=bounded(1, 1000), default=100,
                        help="listd smtp.max_recipients (RCPT per transaction)")
    parser.add_argument("--connections", type=bounded(1, 64), default=4,
                        help="listd smtp.connections")
    parser.add_argument("--size", type=bounded(300, 10_000_000), default=4096,
                        help="approximate size of the post in bytes")
    parser.add_argument("--naive-max", type=bounded(1, 1_000_000), default=10_000,
                        help="at most this many recipients for the naive client")
    parser.add_argument("--naive-budget", type=float, default=60.0,
                        help="stop the naive client after this many seconds")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="global time limit in seconds; everything stops after it")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


@contextlib.contextmanager
def global_timeout(seconds: float) -> Iterator[None]:
    """SIGALRM after ``seconds`` raises BenchTimeout in the main thread; SIGTERM raises
    SystemExit there. Either unwinds through the clean-up."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise BenchTimeout(f"global time limit of {seconds:g} s reached")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    old_term = signal.signal(signal.SIGTERM, on_term)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"[fanout] {text}", file=sys.stderr, flush=True)

    report: Report | None = None
    try:
        # the servers are stopped after the timer is disarmed, so clean-up always completes
        with contextlib.ExitStack() as cleanup, global_timeout(args.timeout):
            report = benchmark(args, cleanup, progress)
            progress("stopping the servers")
    except (BenchTimeout, subprocess.TimeoutExpired) as exc:
        print(f"fanout: {exc}; everything stopped", file=sys.stderr)
        return 124
    except VerificationError as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return 1
    print(table(report.figures))
    for problem in report.problems:
        print(f"FAILED CHECK: {problem}", file=sys.stderr)
    print(json.dumps({**report.figures, "checks": report.checks,
                      "ok": not report.problems}, sort_keys=True))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
