"""Read-only commands: lists, members, status, the membership log, check-config."""

from __future__ import annotations

import argparse
import time

from listd import config
from listd.cli.common import EX_OK
from listd.cli.ctl_base import Commands, emit, find_list, iso
from listd.mail.policy import MemberStatus
from listd.store import Store


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def register(commands: Commands) -> None:
    commands.add("lists", "show the configured lists with their member counts", _lists,
                 read=True)
    sub = commands.add("members", "show the members of a list", _members, read=True)
    sub.add_argument("list", help="list id")
    sub.add_argument("--status", choices=[s.value for s in MemberStatus],
                     help="only members with this status")
    commands.add("status", "show the mailbox checkpoint, last poll and delivery queue",
                 _status, read=True)
    # Handled before the store is opened (see listctl.main).
    commands.add("check-config", "validate the configuration file and say so", None,
                 read=True)
    sub = commands.add("log", "show a list's membership history, newest first", _log,
                       read=True)
    sub.add_argument("list", help="list id")
    sub.add_argument("--limit", type=_positive, default=100, metavar="N",
                     help="at most N entries (default 100)")


def check_config(cfg: config.Config, as_json: bool) -> int:
    emit([{"config": str(cfg.path), "ok": True, "lists": len(cfg.lists)}], as_json,
         lambda r: f"{r['config']}: ok, {r['lists']} list(s)")
    return EX_OK


def _lists(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    counts = store.member_counts()
    emit(({"list": lst.id, "address": lst.address, "name": lst.name, "posting": lst.posting,
           "active": counts.get((lst.id, "active"), 0),
           "pending": counts.get((lst.id, "pending"), 0),
           "disabled": counts.get((lst.id, "disabled"), 0)}
          for lst in cfg.lists.values()), args.json,
         lambda r: f"{r['list']}\t{r['address']}\t{r['active']} active\t{r['name']}")
    return EX_OK


def _members(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    lst = find_list(cfg, args.list)
    status = MemberStatus(args.status) if args.status else None
    emit(({"list": m.list_id, "address": m.address, "name": m.display_name,
           "status": m.status.value, "since": iso(m.created_at),
           "updated": iso(m.updated_at)} for m in store.members(lst.id, status)),
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
        "last_poll": iso(last_poll) if last_poll else None,
        "imap_problem": values.get("imap_problem") or None,
        "smtp_problem": values.get("smtp_problem") or None,
        "auth_method": cfg.auth.method,
        "token_expires_at": (iso(float(values["token_expires_at"]))
                             if values.get("token_expires_at") else None),
        "token_refresh_failures": int(values.get("token_refresh_failures") or 0),
        "token_problem": values.get("token_problem") or None,
        "deliveries_pending": counts["pending"],
        "deliveries_sent": counts["sent"],
        "deliveries_failed": counts["failed"],
        "oldest_pending_age_s": round(time.time() - oldest, 1) if oldest else None,
        "messages_journaled": store.inbound_count(),
        "schema_version": store.schema_version(),
    }
    emit([record], args.json, lambda r: "\n".join(
        f"{k}: {'-' if v is None else v}" for k, v in r.items()))
    if not args.json:
        for outgoing_id, recipient, code, text, when in store.failed_deliveries(10):
            print(f"failed: message {outgoing_id} to {recipient} at {iso(when)}: "
                  f"{code} {text}")
    return EX_OK


def _log(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    lst = find_list(cfg, args.list)
    emit(({"list": lst.id, "when": iso(when), "address": address, "old": old, "new": new,
           "by": actor, "via": via, "reason": reason}
          for when, address, old, new, actor, via, reason
          in store.membership_log(lst.id, args.limit)), args.json,
         lambda r: (f"{r['when']}\t{r['address']}\t{r['old'] or '-'} -> {r['new']}\t"
                    f"{r['by']}\t{r['via']}\t{r['reason']}").rstrip())
    return EX_OK
