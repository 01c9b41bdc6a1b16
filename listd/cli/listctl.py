"""``listctl``: administer listd's lists and members, and see how it is doing.

Works while the daemon runs (SQLite WAL; writes wait for each other). Read commands take
``--json`` (one JSON document per line); records go to stdout, warnings and errors to
stderr. Exit codes follow sysexits: 64 usage (unknown list, bad id), 65 bad input data,
66 an input file that cannot be opened, 73 the database cannot be opened, 77 not as root
here, 78 configuration.

The commands live in modules by subject: ``ctl_show`` (lists, members, status, log),
``ctl_members`` (subscribe, unsubscribe, import, export, sync, enable) and
``ctl_moderation`` (pending, approve-subscription, reject-subscription, held, approve,
discard) and ``ctl_auth`` (auth login, auth status).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from listd import __version__, config
from listd.cli import ctl_auth, ctl_members, ctl_moderation, ctl_show
from listd.cli.common import EX_CANTCREAT, EX_CONFIG, EX_USAGE
from listd.cli.ctl_base import Commands, Failure, UsageError
from listd.cli.ctl_privileges import become_state_owner
from listd.store import Store, StoreError

__all__ = ["UsageError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, exiting 64 (EX_USAGE) on a wrong command line instead of 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="listctl", description="Administer listd.")
    parser.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                        help=f"configuration file (default {config.DEFAULT_PATH})")
    parser.add_argument("--version", action="version", version=f"listctl {__version__}")
    commands = Commands(parser.add_subparsers(dest="command", required=True,
                                              metavar="COMMAND"))
    ctl_show.register(commands)
    ctl_members.register(commands)
    ctl_moderation.register(commands)
    ctl_auth.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args.config, service=args.command == "auth")
    except config.ConfigError as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "check-config":
        return ctl_show.check_config(cfg, args.json)
    try:
        become_state_owner(cfg.state_dir)
    except Failure as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return exc.code
    try:
        store = Store.open(cfg.state_dir, durable=True)
    except StoreError as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    try:
        code: int = args.handler(cfg, store, args)
        return code
    except Failure as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return exc.code
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
