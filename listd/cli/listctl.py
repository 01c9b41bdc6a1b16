"""``listctl``: administer listd's lists and members, and see how it is doing.

Works while the daemon runs (SQLite WAL; writes wait for each other). Read commands take
``--json`` (one JSON document per line); records go to stdout, warnings to stderr.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from listd import __version__, config
from listd.cli.common import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_OK,
    EX_USAGE,
)
from listd.mail.addresses import is_valid_address
from listd.mail.policy import MemberStatus
from listd.store import Store, StoreError


class UsageError(Exception):
    """A wrong argument: exit 64 with the message."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="listctl", description="Administer listd.")
    parser.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                        help=f"configuration file (default {config.DEFAULT_PATH})")
    parser.add_argument("--version", action="version", version=f"listctl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def read_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="one JSON record per line")
        return sub

    read_command("lists", "show the configured lists with their member counts")
    members = read_command("members", "show the members of a list")
    members.add_argument("list", help="list id")
    members.add_argument("--status", choices=[s.value for s in MemberStatus],
                         help="only members with this status")
    read_command("status", "show the mailbox checkpoint, last poll and delivery queue")
    read_command("check-config", "validate the configuration file and say so")
    for name, verb in (("subscribe", "add"), ("unsubscribe", "remove")):
        sub = commands.add_parser(
            name, help=f"{verb} members at once, without confirmation",
            description=f"{verb.capitalize()} members (admin action, no confirmation). "
            "ADDRESS may be 'Name <addr>'; '-' reads one per line from stdin. All or "
            "nothing: a bad line changes nothing.")
        sub.add_argument("list", help="list id")
        sub.add_argument("addresses", nargs="+", metavar="ADDRESS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "check-config":
        return _check_config(cfg, args.json)
    try:
        store = Store.open(cfg.state_dir, durable=True)
    except StoreError as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    handlers: dict[str, Callable[[config.Config, Store, argparse.Namespace], int]] = {
        "lists": _lists, "members": _members, "status": _status,
        "subscribe": _subscribe, "unsubscribe": _unsubscribe,
    }
    try:
        return handlers[args.command](cfg, store, args)
    except UsageError as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return EX_USAGE
    finally:
        store.close()


def _emit(records: Iterable[dict[str, Any]], as_json: bool,
          text: Callable[[dict[str, Any]], str], out: TextIO = sys.stdout) -> None:
    for record in records:
        print(json.dumps(record, sort_keys=True) if as_json else text(record), file=out)


def _list(cfg: config.Config, list_id: str) -> config.ListConfig:
    found = cfg.list_by_id(list_id)
    if found is None:
        known = ", ".join(cfg.lists) or "none configured"
        raise UsageError(f"no list '{list_id}' in {cfg.path} (lists: {known})")
    return found


def _check_config(cfg: config.Config, as_json: bool) -> int:
    _emit([{"config": str(cfg.path), "ok": True, "lists": len(cfg.lists)}], as_json,
          lambda r: f"{r['config']}: ok, {r['lists']} list(s)")
    return EX_OK


def _lists(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    counts = store.member_counts()
    _emit(({"list": lst.id, "address": lst.address, "name": lst.name, "posting": lst.posting,
            "active": counts.get((lst.id, "active"), 0),
            "pending": counts.get((lst.id, "pending"), 0),
            "disabled": counts.get((lst.id, "disabled"), 0)}
           for lst in cfg.lists.values()), args.json,
          lambda r: f"{r['list']}\t{r['address']}\t{r['active']} active\t{r['name']}")
    return EX_OK


def _members(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    lst = _list(cfg, args.list)
    status = MemberStatus(args.status) if args.status else None
    _emit(({"list": m.list_id, "address": m.address, "name": m.display_name,
            "status": m.status.value, "since": _iso(m.created_at),
            "updated": _iso(m.updated_at)} for m in store.members(lst.id, status)),
          args.json, lambda r: f"{r['address']}\t{r['status']}\t{r['name']}".rstrip())
    return EX_OK


def _status(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    checkpoint = store.checkpoint(cfg.imap.folder)
    values = store.status_values()
    counts = store.delivery_counts()
    oldest = store.oldest_pending_created()
    last_poll = float(values["last_poll"]) if values.get("last_poll") else None
    record = {
        "folder": cfg.imap.folder,
        "uidvalidity": checkpoint.uidvalidity if checkpoint else None,
        "last_uid": checkpoint.last_uid if checkpoint else None,
        "last_poll": _iso(last_poll) if last_poll else None,
        "imap_problem": values.get("imap_problem") or None,
        "smtp_problem": values.get("smtp_problem") or None,
        "deliveries_pending": counts["pending"],
        "deliveries_sent": counts["sent"],
        "deliveries_failed": counts["failed"],
        "oldest_pending_age_s": round(time.time() - oldest, 1) if oldest else None,
        "messages_journaled": store.inbound_count(),
        "schema_version": store.schema_version(),
    }
    _emit([record], args.json, lambda r: "\n".join(
        f"{k}: {'-' if v is None else v}" for k, v in r.items()))
    if not args.json:
        for outgoing_id, recipient, code, text, when in store.failed_deliveries(10):
            print(f"failed: message {outgoing_id} to {recipient} at {_iso(when)}: "
                  f"{code} {text}")
    return EX_OK


def _read_addresses(arguments: Sequence[str], stdin: TextIO
                    ) -> tuple[list[tuple[str, str]], list[str]]:
    """(address, name) entries and error lines from arguments, '-' meaning stdin."""
    entries: list[tuple[str, str]] = []
    errors: list[str] = []
    for argument in arguments:
        lines = ([(f"stdin:{n}", line) for n, line in enumerate(stdin, 1)]
                 if argument == "-" else [("argument", argument)])
        for where, line in lines:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            name, address = email.utils.parseaddr(text)
            if not address or not is_valid_address(address):
                errors.append(f"{where}: {text!r} is not an email address")
                continue
            entries.append((address, name))
    return entries, errors


def _change(cfg: config.Config, store: Store, args: argparse.Namespace,
            status: MemberStatus, verb: str) -> int:
    lst = _list(cfg, args.list)
    entries, errors = _read_addresses(args.addresses, sys.stdin)
    if errors:
        for error in errors:
            print(f"listctl: {error}", file=sys.stderr)
        print(f"listctl: nothing changed ({len(errors)} bad line(s))", file=sys.stderr)
        return EX_DATAERR
    only_existing = status is MemberStatus.UNSUBSCRIBED
    changes = store.set_members(lst.id, entries, status, time.time(),
                                only_existing=only_existing)
    for address, previous in changes:
        if previous is None and only_existing:
            print(f"listctl: {address} is not a member of {lst.id}", file=sys.stderr)
            continue
        print(f"{address}\t{f'already {status.value}' if previous == status else verb}")
    return EX_OK


def _subscribe(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    return _change(cfg, store, args, MemberStatus.ACTIVE, "subscribed")


def _unsubscribe(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    return _change(cfg, store, args, MemberStatus.UNSUBSCRIBED, "unsubscribed")


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


if __name__ == "__main__":
    sys.exit(main())
