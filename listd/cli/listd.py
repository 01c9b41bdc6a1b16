"""``listd``: the daemon.

Under systemd (``systemd/listd.service``) listd runs in the foreground as ``Type=notify``:
READY=1 once the configuration is valid and the database is open (never waiting for the
IMAP sign-in), STATUS= kept current, WATCHDOG=1 from the loop, RELOADING=1/READY=1 around
SIGHUP, STOPPING=1 on SIGTERM, logs on stderr for the journal.

Without systemd, ``--daemon --pidfile PATH --log-file PATH`` detaches (python-daemon): the
command returns once the configuration has been checked, the daemon writes its PID to the
locked pidfile and removes it when it stops (SIGTERM). Logs go to the file, with
timestamps; it is reopened when logrotate moves it. Under systemd ``--daemon`` is refused
(exit 78): the service manager supervises listd itself, and a listd that forks away would
only hide its main PID from it.

Every network wait ends well within the watchdog interval: ``imap.timeout`` and
``smtp.timeout`` are cut to a third of ``WatchdogSec=`` when longer (logged), so a server
that stops answering leads to a reconnect, and only a loop that is truly stuck to a
restart by the watchdog.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from listd import __version__, config
from listd.cli.common import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_OK,
    EX_SOFTWARE,
    EX_USAGE,
    setup_logging,
)
from listd.config import Config
from listd.credentials import AuthError
from listd.notify import Notifier, started_by_systemd
from listd.service import Service
from listd.store import Store, StoreError

log = logging.getLogger("listd")

# Network timeouts are cut to this share of the watchdog interval: the loop pings after
# every step, so a step that times out still leaves time for the ping.
WATCHDOG_TIMEOUT_SHARE = 1 / 3


class _Parser(argparse.ArgumentParser):
    """argparse, exiting 64 (EX_USAGE) on a wrong command line instead of 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="listd", description="Serve mailing lists from one IMAP mailbox, relaying "
        "posts over SMTP.")
    parser.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                        help=f"configuration file (default {config.DEFAULT_PATH})")
    parser.add_argument("--once", action="store_true",
                        help="drain the mailbox and the due deliveries, then exit")
    parser.add_argument("--daemon", action="store_true",
                        help="detach and run in the background, for systems without systemd "
                        "(needs --pidfile and --log-file; refused under systemd)")
    parser.add_argument("--pidfile", type=Path, metavar="PATH",
                        help="with --daemon: the daemon's PID, locked while it runs, removed "
                        "when it stops")
    parser.add_argument("--log-file", type=Path, metavar="PATH",
                        help="log to this file, with timestamps, instead of stderr; reopened "
                        "when rotated")
    parser.add_argument("--verbose", action="store_true", help="log debugging detail")
    parser.add_argument("--version", action="version", version=f"listd {__version__}")
    return parser


def _wakeup_pipe() -> int:
    """A pipe the signal machinery writes to, so a blocking wait ends at once."""
    read_fd, write_fd = os.pipe()
    for fd in (read_fd, write_fd):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    signal.set_wakeup_fd(write_fd)
    return read_fd


# --- configuration under a service manager ---------------------------------------------


def fit_timeouts(cfg: Config, watchdog_interval: float | None) -> Config:
    """``cfg`` with imap/smtp timeouts no longer than a third of the watchdog interval."""
    if not watchdog_interval:
        return cfg
    limit = watchdog_interval * WATCHDOG_TIMEOUT_SHARE
    imap, smtp = cfg.imap, cfg.smtp
    for name, timeout in (("imap", imap.timeout), ("smtp", smtp.timeout)):
        if timeout > limit:
            log.info("%s.timeout %g s is longer than a third of the watchdog interval "
                     "(%g s): using %.3g s, so that a server that stops answering leads to "
                     "a reconnect, not to a restart", name, timeout, watchdog_interval, limit)
    imap = dataclasses.replace(imap, timeout=min(imap.timeout, limit))
    smtp = dataclasses.replace(smtp, timeout=min(smtp.timeout, limit))
    return dataclasses.replace(cfg, imap=imap, smtp=smtp)


def check_state_directory(cfg: Config, environ: Mapping[str, str]) -> None:
    """Under ``StateDirectory=`` only that directory is writable (``ProtectSystem=strict``):
    refuse a ``state_dir`` outside it with a configuration error that says what to write,
    rather than fail later on a read-only file system."""
    allowed = [Path(p) for p in environ.get("STATE_DIRECTORY", "").split(":") if p]
    if not allowed:
        return
    state_dir = Path(os.path.abspath(cfg.state_dir))
    if any(state_dir == p or p in state_dir.parents for p in allowed):
        return
    raise config.ConfigError(cfg.path, None, "state_dir", (
        f"{state_dir} is outside the unit's StateDirectory= ({', '.join(map(str, allowed))}), "
        f"the only place listd may write; set state_dir: {allowed[0]}"))


def _loader(path: Path, notifier: Notifier) -> Callable[[], Config]:
    def load() -> Config:
        cfg = config.load(path)
        check_state_directory(cfg, os.environ)
        return fit_timeouts(cfg, notifier.watchdog_interval)
    return load


# --- without systemd: --daemon, --pidfile, --log-file -------------------------------------


class _FileFormatter(logging.Formatter):
    """A log file has no journal to stamp it: time, PID and level on every line."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = (f"{self.formatTime(record, '%Y-%m-%d %H:%M:%S')} listd[{record.process}]: "
                  f"{record.levelname.lower()}: ")
        return "\n".join(prefix + line for line in text.splitlines())


def _file_handler(path: Path) -> logging.handlers.WatchedFileHandler:
    handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(_FileFormatter())
    return handler


def _pidfile_problem(path: Path) -> str | None:
    """Why the daemon cannot take ``path``; a file left by a listd that was killed (its
    PID no longer runs) is removed."""
    if not os.access(path.parent, os.W_OK):
        return f"--pidfile {path}: cannot write in {path.parent}"
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"--pidfile {path}: {exc.strerror}"
    if text.isdigit():
        try:
            os.kill(int(text), 0)
        except ProcessLookupError:
            pass
        except PermissionError:
            return f"--pidfile {path}: PID {text} runs (as another user); is listd running?"
        else:
            return f"--pidfile {path}: listd already runs as PID {text}; stop it first"
    log.warning("removing the stale pidfile %s (PID %s is not running)", path, text or "?")
    path.unlink(missing_ok=True)
    return None


def _daemonize(pidfile: Path, handler: logging.handlers.WatchedFileHandler) -> Any:
    """Detach; only the daemon returns from here. Returns the open DaemonContext."""
    import daemon  # only needed here: keep it out of the systemd path
    import daemon.pidfile

    context = daemon.DaemonContext(
        pidfile=daemon.pidfile.TimeoutPIDLockFile(str(pidfile), acquire_timeout=0),
        files_preserve=[handler.stream], umask=0o077, detach_process=True,
        # SIGTERM is ours (finish the transaction in flight); python-daemon's default
        # handler would raise SystemExit in the middle of it.
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None})
    context.open()  # the command's process exits in here; the daemon carries on
    logging.getLogger().handlers[:] = [handler]  # stderr is /dev/null now
    return context


# --- main --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.daemon:
        if started_by_systemd():
            log.error("--daemon is for systems without systemd: under systemd listd runs "
                      "in the foreground (Type=notify, see systemd/listd.service); remove "
                      "--daemon and --pidfile from the unit")
            return EX_CONFIG
        if args.once or args.pidfile is None or args.log_file is None:
            log.error("--daemon needs --pidfile PATH and --log-file PATH, and not --once")
            return EX_USAGE
    elif args.pidfile is not None:
        log.error("--pidfile is only for --daemon")
        return EX_USAGE
    # python-daemon changes to / before it reloads anything: every path absolute.
    args.config = Path(os.path.abspath(args.config))
    notifier = Notifier()
    load = _loader(args.config, notifier)
    try:
        cfg = load()
    except config.ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    handler: logging.handlers.WatchedFileHandler | None = None
    if args.log_file is not None:
        try:
            handler = _file_handler(Path(os.path.abspath(args.log_file)))
        except OSError as exc:
            log.error("--log-file %s: %s", args.log_file, exc.strerror)
            return EX_CANTCREAT
        if not args.daemon:
            logging.getLogger().handlers[:] = [handler]
    context = None
    if args.daemon:
        assert handler is not None and args.pidfile is not None
        logging.getLogger().addHandler(handler)  # until detached: terminal and file
        pidfile = Path(os.path.abspath(args.pidfile))
        problem = _pidfile_problem(pidfile)
        if problem:
            log.error("%s", problem)
            return EX_CANTCREAT
        try:  # the database must open before the command returns "started"
            Store.open(cfg.state_dir).close()
        except StoreError as exc:
            log.error("%s", exc)
            return EX_CANTCREAT
        try:
            context = _daemonize(pidfile, handler)
        except Exception as exc:  # the terminal is gone: the log file is all there is
            log.error("cannot run as a daemon: %s", exc)
            return EX_CANTCREAT
    try:
        return _serve(args, cfg, load, notifier)
    finally:
        if context is not None:
            context.close()  # removes the pidfile


def _serve(args: argparse.Namespace, cfg: Config, load: Callable[[], Config],
           notifier: Notifier) -> int:
    try:
        store = Store.open(cfg.state_dir)
    except StoreError as exc:
        log.error("%s", exc)
        return EX_CANTCREAT
    try:
        service = Service(cfg, store, reload=load, notifier=notifier,
                          wakeup_fd=_wakeup_pipe())
    except AuthError as exc:
        log.error("%s", exc)
        store.close()
        return EX_CONFIG

    def on_stop(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: finishing what is in flight, then stopping",
                 signal.Signals(signum).name)
        notifier.stopping()
        service.request_stop()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        service.reload_requested.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    log.info("listd %s: %d list(s), state in %s%s%s", __version__, len(cfg.lists),
             cfg.state_dir, f", PID {os.getpid()}" if args.daemon else "",
             f", watchdog every {notifier.watchdog_interval:g} s"
             if notifier.watchdog_interval else "")
    # READY=1 is sent by service.run() once local setup is done: the configuration is
    # valid and the database open (above), the metrics endpoint bound (first thing in
    # run()); the IMAP sign-in comes after it, so a provider outage cannot fail the start.
    try:
        code = service.run(once=args.once)
    except Exception:
        log.exception("internal error; the journal is intact and listd can be restarted")
        return EX_SOFTWARE
    finally:
        store.close()
    if code == EX_OK and not args.once:
        log.info("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
