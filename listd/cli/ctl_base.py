"""What every ``listctl`` command shares: failures with their exit codes, output, lookups."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from listd import config
from listd.cli.common import EX_DATAERR, EX_NOINPUT, EX_USAGE
from listd.membership import Membership
from listd.store import Store
from listd.tokens import load_secret

Handler = Callable[[config.Config, Store, argparse.Namespace], int]


class Failure(Exception):
    """A command that cannot be done: ``listctl: MESSAGE`` on stderr, exit ``code``."""

    code = 1

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(Failure):
    """A wrong argument (unknown list, bad id): exit 64."""

    code = EX_USAGE


class DataError(Failure):
    """The input or the state does not allow it (not pending, bad lines): exit 65."""

    code = EX_DATAERR


class NoInputError(Failure):
    """An input file that cannot be opened: exit 66."""

    code = EX_NOINPUT


class Commands:
    """Adds subcommands to the parser; each one knows its handler (``args.handler``)."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers

    def add(self, name: str, help_text: str, handler: Handler | None, *,
            read: bool = False, description: str | None = None) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=help_text, description=description or help_text)
        if read:
            sub.add_argument("--json", action="store_true", help="one JSON record per line")
        sub.set_defaults(handler=handler)
        return sub


def emit(records: Iterable[dict[str, Any]], as_json: bool,
         text: Callable[[dict[str, Any]], str], out: TextIO | None = None) -> None:
    """Records on stdout: one JSON object per line, or ``text(record)``."""
    out = out or sys.stdout
    for record in records:
        print(json.dumps(record, sort_keys=True) if as_json
              else text(record), file=out)


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def find_list(cfg: config.Config, list_id: str) -> config.ListConfig:
    found = cfg.list_by_id(list_id)
    if found is None:
        known = ", ".join(cfg.lists) or "none configured"
        raise UsageError(f"no list '{list_id}' in {cfg.path} (lists: {known})")
    return found


def membership(cfg: config.Config, store: Store) -> Membership:
    return Membership(store, cfg, time.time, load_secret(cfg.state_dir))


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
