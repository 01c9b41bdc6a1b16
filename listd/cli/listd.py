"""``listd``: the daemon, in the foreground (systemd is the supervisor)."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from listd import __version__, config
from listd.cli.common import EX_CANTCREAT, EX_CONFIG, EX_SOFTWARE, setup_logging
from listd.credentials import AuthError
from listd.notify import Notifier
from listd.service import Service
from listd.store import Store, StoreError

log = logging.getLogger("listd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="listd", description="Serve mailing lists from one IMAP mailbox, relaying "
        "posts over SMTP.")
    parser.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                        help=f"configuration file (default {config.DEFAULT_PATH})")
    parser.add_argument("--once", action="store_true",
                        help="drain the mailbox and the due deliveries, then exit")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    try:
        store = Store.open(cfg.state_dir)
    except StoreError as exc:
        log.error("%s", exc)
        return EX_CANTCREAT
    try:
        service = Service(cfg, store, reload=lambda: config.load(args.config),
                          notifier=Notifier(), wakeup_fd=_wakeup_pipe())
    except AuthError as exc:
        log.error("%s", exc)
        return EX_CONFIG

    def on_stop(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: finishing what is in flight, then stopping",
                 signal.Signals(signum).name)
        service.request_stop()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        service.reload_requested.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    log.info("listd %s: %d list(s), state in %s", __version__, len(cfg.lists), cfg.state_dir)
    try:
        return service.run(once=args.once)
    except Exception:
        log.exception("internal error; the journal is intact and listd can be restarted")
        return EX_SOFTWARE
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
