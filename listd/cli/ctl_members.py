"""Changing members: subscribe, unsubscribe, import, export, sync, enable.

Every command that changes members does it in one transaction: all or nothing. A bad
line in the input changes nothing and is reported as ``SOURCE:LINE: problem``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time

from listd import config
from listd.cli.common import EX_DATAERR, EX_OK
from listd.cli.ctl_base import Commands, DataError, find_list, iso, membership, warn
from listd.cli.ctl_input import AddressReader
from listd.mail.addresses import address_key
from listd.mail.policy import MemberStatus
from listd.store import Effects, MemberChange, Store

_FORMATS = ("One address per line ('Name <addr>' allowed, '#' comments), or CSV rows "
            "'address,name' with an optional header row (address,name or email,name).")


def register(commands: Commands) -> None:
    for name, verb, handler in (("subscribe", "add", _subscribe),
                                ("unsubscribe", "remove", _unsubscribe)):
        sub = commands.add(
            name, f"{verb} members at once, without confirmation", handler,
            description=f"{verb.capitalize()} members (admin action, no confirmation). "
            "ADDRESS may be 'Name <addr>'; '-' reads a file from stdin (as import does). "
            "All or nothing: a bad line changes nothing.")
        sub.add_argument("list", help="list id")
        sub.add_argument("addresses", nargs="+", metavar="ADDRESS")
    sub = commands.add("import", "subscribe every address of a file, in one transaction",
                       _import, description="Subscribe every address of FILE ('-': stdin) "
                       f"as active, without confirmation. {_FORMATS} All or nothing.")
    sub.add_argument("list", help="list id")
    sub.add_argument("file", metavar="FILE", help="the file, or - for stdin")
    sub = commands.add("export", "write the members as CSV (address,name,status,since)",
                       _export, description="Write the list's members as CSV to stdout: "
                       "address,name,status,since (UTC). import reads it back (members whose "
                       "status is not active are skipped there).")
    sub.add_argument("list", help="list id")
    sub.add_argument("--status", choices=[s.value for s in MemberStatus],
                     help="only members with this status")
    sub = commands.add("sync", "make the active members exactly those of a file", _sync,
                       description="Make the list's active members exactly the addresses "
                       f"of FILE ('-': stdin): add the missing ones, unsubscribe the others. "
                       f"{_FORMATS} Prints '+ addr' and '- addr'; one transaction.")
    sub.add_argument("list", help="list id")
    sub.add_argument("file", metavar="FILE", help="the file, or - for stdin")
    sub.add_argument("--dry-run", action="store_true", help="show the changes, make none")
    sub = commands.add("enable", "deliver to a member disabled by bounces again", _enable)
    sub.add_argument("list", help="list id")
    sub.add_argument("address", metavar="ADDRESS")


def _refuse(reader: AddressReader) -> int | None:
    """Print warnings; with errors, print them and return the exit code (nothing changed)."""
    for warning in reader.warnings:
        warn(warning)
    if not reader.errors:
        return None
    for error in reader.errors:
        warn(error)
    warn(f"listctl: nothing changed ({len(reader.errors)} bad line(s))")
    return EX_DATAERR


def _change(cfg: config.Config, store: Store, args: argparse.Namespace,
            status: MemberStatus, verb: str) -> int:
    lst = find_list(cfg, args.list)
    reader = AddressReader()
    reader.read_arguments(args.addresses)
    refused = _refuse(reader)
    if refused is not None:
        return refused
    only_existing = status is MemberStatus.UNSUBSCRIBED
    previous = {e.address: store.member_status(lst.id, e.address) for e in reader.entries}
    store.apply(Effects(member_changes=[
        MemberChange(lst.id, e.address, status, "listctl", "admin", name=e.name,
                     only_existing=only_existing) for e in reader.entries]), time.time())
    for entry in reader.entries:
        before = previous[entry.address]
        if before is None and only_existing:
            warn(f"listctl: {entry.address} is not a member of {lst.id}")
            continue
        print(f"{entry.address}\t{f'already {status.value}' if before == status else verb}")
    return EX_OK


def _subscribe(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    return _change(cfg, store, args, MemberStatus.ACTIVE, "subscribed")


def _unsubscribe(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    return _change(cfg, store, args, MemberStatus.UNSUBSCRIBED, "unsubscribed")


def _read_file(args: argparse.Namespace) -> tuple[AddressReader, str]:
    """The entries of ``args.file`` (or stdin); bad lines raise, nothing changed."""
    reader = AddressReader()
    label = reader.read_source(args.file)
    if _refuse(reader) is not None:
        raise DataError(f"{label}: fix the lines above and run again")
    return reader, label


def _import(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    lst = find_list(cfg, args.list)
    reader, label = _read_file(args)
    if not reader.entries:
        warn(f"listctl: {label}: no addresses; nothing to import")
        return EX_OK
    previous = {e.address: store.member_status(lst.id, e.address) for e in reader.entries}
    store.apply(Effects(member_changes=[
        MemberChange(lst.id, e.address, MemberStatus.ACTIVE, "import", "admin", name=e.name,
                     reason=f"imported from {label}") for e in reader.entries]), time.time())
    added = 0
    for entry in reader.entries:
        already = previous[entry.address] is MemberStatus.ACTIVE
        added += not already
        print(f"{entry.address}\t{'already active' if already else 'subscribed'}")
    warn(f"{lst.id}: {added} subscribed, {len(reader.entries) - added} already active")
    return EX_OK


def _export(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    lst = find_list(cfg, args.list)
    status = MemberStatus(args.status) if args.status else None
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["address", "name", "status", "since"])
    for member in store.members(lst.id, status):
        writer.writerow([member.address, member.display_name, member.status.value,
                         iso(member.created_at)])
    return EX_OK


def _sync(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    lst = find_list(cfg, args.list)
    reader, label = _read_file(args)
    if not reader.entries:
        raise DataError(f"{label}: no addresses; sync would unsubscribe every member "
                        "(use unsubscribe for that)")
    current = {address_key(m.address): m for m in store.members(lst.id)}
    wanted = {address_key(e.address) for e in reader.entries}
    added = [e for e in reader.entries
             if (m := current.get(address_key(e.address))) is None
             or m.status is not MemberStatus.ACTIVE]
    removed = [m for key, m in current.items()
               if m.status is MemberStatus.ACTIVE and key not in wanted]
    reason = f"sync from {label}"
    changes = [MemberChange(lst.id, e.address, MemberStatus.ACTIVE, "sync", "admin",
                            name=e.name, reason=reason) for e in added]
    changes += [MemberChange(lst.id, m.address, MemberStatus.UNSUBSCRIBED, "sync", "admin",
                             reason=reason, only_existing=True) for m in removed]
    if changes and not args.dry_run:
        store.apply(Effects(member_changes=changes), time.time())
    for entry in added:
        print(f"+ {entry.address}")
    for member in removed:
        print(f"- {member.address}")
    unchanged = len(reader.entries) - len(added)
    warn(f"{lst.id}: {len(added)} added, {len(removed)} removed, {unchanged} unchanged"
         + (" (dry run: nothing changed)" if args.dry_run else ""))
    return EX_OK


def _enable(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    lst = find_list(cfg, args.list)
    status = store.member_status(lst.id, args.address)
    if status is not MemberStatus.DISABLED:
        raise DataError(f"{args.address} is not disabled on {lst.id} "
                        f"({status.value if status else 'not a member'})")
    outcome = membership(cfg, store).enable(lst, args.address)
    store.apply(outcome.effects, time.time())
    print(outcome.decision)
    return EX_OK
