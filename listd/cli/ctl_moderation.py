"""What waits for someone: confirmations, owner approvals and held posts."""

from __future__ import annotations

import argparse
import time
from typing import Any

from listd import config
from listd.cli.common import EX_OK
from listd.cli.ctl_base import (
    Commands,
    DataError,
    UsageError,
    emit,
    find_list,
    iso,
    membership,
    warn,
)
from listd.mail.addresses import address_key
from listd.mail.policy import MemberStatus
from listd.store import StaleDecision, Store


def register(commands: Commands) -> None:
    sub = commands.add("pending", "show confirmations and owner approvals waiting", _pending,
                       read=True, description="Show what waits: confirmations mailed to an "
                       "address (subscribe, unsubscribe) and subscriptions waiting for the "
                       "owners' approval (members with status pending).")
    sub.add_argument("list", nargs="?", help="only this list")
    for name, verb, handler in (("approve-subscription", "accept", _approve_subscription),
                                ("reject-subscription", "reject", _reject_subscription)):
        sub = commands.add(name, f"{verb} a subscription waiting for the owners", handler,
                           description=f"{verb.capitalize()} a subscription waiting for "
                           "the owners (see listctl pending); the address is told.")
        sub.add_argument("list", help="list id")
        sub.add_argument("address", metavar="ADDRESS")
    sub = commands.add("held", "show the posts held for moderation", _held, read=True)
    sub.add_argument("list", nargs="?", help="only this list")
    for name, verb, handler in (("approve", "relay", _approve), ("discard", "drop", _discard)):
        sub = commands.add(name, f"{verb} a held post (ID from listctl held)", handler)
        sub.add_argument("id", metavar="ID", help="the held post's id (listctl held)")


def _list_ids(cfg: config.Config, list_id: str | None) -> set[str] | None:
    return {find_list(cfg, list_id).id} if list_id else None


def _pending(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    only = _list_ids(cfg, args.list)
    tokens = [t for t in store.open_tokens(time.time()) if only is None or t.list_id in only]
    records: list[dict[str, Any]] = [
        {"waiting": "confirmation", "list": t.list_id, "address": t.address,
         "action": t.action, "created": iso(t.created_at), "expires": iso(t.expires_at)}
        for t in tokens if t.action in ("subscribe", "unsubscribe")]
    approvals = {(t.list_id, address_key(t.address)): t for t in tokens
                 if t.action == "approve-subscription"}
    for list_id in sorted(only if only is not None else set(cfg.lists)):
        for member in store.members(list_id, MemberStatus.PENDING):
            token = approvals.get((list_id, address_key(member.address)))
            records.append({
                "waiting": "approval", "list": list_id, "address": member.address,
                "name": member.display_name, "action": "approve-subscription",
                "created": iso(member.updated_at),
                "expires": iso(token.expires_at) if token else None})
    emit(records, args.json, lambda r: (
        f"{r['list']}\t{r['address']}\t{r['action']}\t"
        f"{'the address to confirm' if r['waiting'] == 'confirmation' else 'the owners'}"
        f"\tsince {r['created']}\texpires {r['expires'] or '-'}"))
    return EX_OK


def _decide_subscription(cfg: config.Config, store: Store, args: argparse.Namespace,
                         accept: bool) -> int:
    lst = find_list(cfg, args.list)
    key = address_key(args.address)
    member = next((m for m in store.members(lst.id) if address_key(m.address) == key), None)
    if member is None or member.status is not MemberStatus.PENDING:
        state = member.status.value if member else "not a member"
        raise DataError(f"{args.address} is not waiting for approval on {lst.id} ({state}); "
                        "see listctl pending")
    outcome = membership(cfg, store).approve_subscription(lst, member.address, accept)
    store.apply(outcome.effects, time.time())
    print(outcome.decision)
    return EX_OK


def _approve_subscription(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    return _decide_subscription(cfg, store, args, accept=True)


def _reject_subscription(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    return _decide_subscription(cfg, store, args, accept=False)


def _held(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    only = _list_ids(cfg, args.list)
    emit(({"id": h.id, "list": h.list_id, "sender": h.sender, "subject": h.subject,
           "reason": h.reason, "since": iso(h.created_at), "expires": iso(h.expires_at)}
          for h in store.held_posts() if only is None or h.list_id in only), args.json,
         lambda r: (f"{r['id']}\t{r['list']}\t{r['sender']}\t{r['subject']}\t{r['reason']}"
                    f"\texpires {r['expires']}"))
    return EX_OK


def _release(cfg: config.Config, store: Store, args: argparse.Namespace,
             approve: bool) -> int:
    text = args.id.strip()
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise UsageError(f"bad id {args.id!r}: a held post's id is a number (listctl held)")
    held = store.held_post(int(text))
    if held is None:
        raise DataError(f"no held post {text} (see listctl held)")
    if held.state != "held":
        raise DataError(f"held post {held.id} was already {held.state}")
    # release() spends the owners' mailed token too; if an owner's emailed decision won
    # the race, apply() refuses and nothing is sent twice.
    effects = membership(cfg, store).release(held, approve, by="admin")
    try:
        store.apply(effects, time.time())
    except StaleDecision:
        raise DataError(f"held post {held.id} was decided meanwhile (see listctl held)"
                        ) from None
    state = "approved" if approve else "discarded"
    print(f"held post {held.id} ({held.list_id}, from {held.sender}): {state}")
    if held.list_id not in cfg.lists:
        warn(f"listctl: list '{held.list_id}' is no longer configured: nothing was sent")
    return EX_OK


def _approve(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    return _release(cfg, store, args, approve=True)


def _discard(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    return _release(cfg, store, args, approve=False)
