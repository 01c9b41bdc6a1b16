"""Joining and leaving by email, owner approval, held posts and bounces.

Every function returns :class:`~listd.store.Effects`: nothing here writes to the store
or sends mail. Confirmations, welcomes and owner notices go into the same journaled outbox
as posts, so a crash cannot lose one, and the caller applies all effects of a decision in
one transaction.

Safety rules that hold everywhere:
- nothing changes for an address without a token that was mailed to that address (or
  to the owners, for approvals); subscribing someone else only sends *them* a question;
- answers to commands are limited per address and day (``membership.answers_per_day``),
  so listd cannot be used to flood anyone;
- automatic mail never reaches this module (the classifier drops it first).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from listd.config import Config, ListConfig
from listd.mail.addresses import ListAddress, address_key, is_valid_address
from listd.mail.bounces import scan_bounce
from listd.mail.classify import list_id_value, sender_address
from listd.mail.commands import Command, Verb, parse_command
from listd.mail.headers import RawMessage, decode_words
from listd.mail.listaddr import ListAddresses
from listd.mail.notices import compose
from listd.mail.policy import MemberStatus
from listd.mail.rewrite import rewrite_post
from listd.store import (
    Effects,
    HeldDecision,
    HeldPost,
    MemberChange,
    NewBounce,
    NewHeld,
    NewOutgoing,
    NewToken,
    Store,
    Token,
)
from listd.templates import Templates
from listd.tokens import member_token, new_token, token_hash

log = logging.getLogger(__name__)

DAY = 86400.0
PERMANENT_WEIGHT, TEMPORARY_WEIGHT = 1.0, 0.5
# The diagnostic part of a bounce is at its top; the returned original can be huge, and
# some detectors are slow on pathological input.
BOUNCE_SCAN_BYTES = 256 * 1024


@dataclass(frozen=True)
class Outcome:
    decision: str
    effects: Effects


class Membership:
    def __init__(self, store: Store, config: Config, clock: Callable[[], float],
                 secret: bytes) -> None:
        self._store = store
        self.config = config
        self._clock = clock
        self._secret = secret
        self._templates = Templates(config.templates_dir)

    # --- mail we write ----------------------------------------------------------------

    def _values(self, lst: ListConfig, **extra: object) -> dict[str, object]:
        addresses = ListAddresses.of(lst)
        values: dict[str, object] = {
            "list_name": lst.name, "list_address": lst.address, "list_id": lst.id,
            "owner_address": addresses.owner,
            "subscribe_how": addresses.how_to("subscribe"),
            "unsubscribe_how": addresses.how_to("unsubscribe"),
        }
        values.update(extra)
        return values

    def _mail(self, effects: Effects, lst: ListConfig, to: tuple[str, ...], template: str,
              in_reply_to: str | None = None, reply_to: str | None = None,
              **values: object) -> None:
        text = self._templates.render(template, **self._values(lst, **values))
        data = compose(lst, to, text.subject, text.body, in_reply_to, self._clock(),
                       reply_to=reply_to)
        effects.outgoing.append(NewOutgoing(lst.id, "notice", lst.address, data, to))

    def _answer(self, effects: Effects, lst: ListConfig, to: str, template: str,
                in_reply_to: str | None = None, reply_to: str | None = None,
                **values: object) -> bool:
        """Mail a person an answer, unless they had their share today. True if sent."""
        key = f"answers:{address_key(to)}"
        sent_today = self._store.count_today(key, self._clock()) + effects.counters.count(key)
        if sent_today >= self.config.membership.answers_per_day:
            log.warning("not answering %s: %d answers today already", to, sent_today)
            return False
        effects.counters.append(key)
        self._mail(effects, lst, (to,), template, in_reply_to, reply_to, **values)
        return True

    def _tell_owners(self, effects: Effects, lst: ListConfig, address: str, change: str,
                     reason: str) -> None:
        if lst.notify_owners and lst.owners:
            self._mail(effects, lst, lst.owners, "owner-change", address=address,
                       change=change, reason=reason)

    def _token(self, effects: Effects, lst: ListConfig, address: str, action: str,
               days: float, ref: int | None = None) -> str:
        token = new_token()
        effects.new_tokens.append(NewToken(token_hash(token), lst.id, address, action,
                                           self._clock() + days * DAY, ref))
        return token

    def _expires(self, days: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self._clock() + days * DAY))

    # --- commands by email --------------------------------------------------------------

    def command(self, message: RawMessage, lst: ListConfig, tag: str) -> Outcome:
        """Handle a message to a list's command address (-request@ or +command@)."""
        effects = Effects()
        sender = sender_address(message)
        if sender is None or not is_valid_address(sender):
            return Outcome("command without a usable sender: ignored", effects)
        command = parse_command(message, tag)
        reply = message.get("Message-ID")
        handler = {
            Verb.SUBSCRIBE: self._subscribe, Verb.UNSUBSCRIBE: self._unsubscribe,
            Verb.CONFIRM: self._use_token, Verb.APPROVE: self._use_token,
            Verb.DISCARD: self._use_token,
        }.get(command.verb)
        if handler is None:
            self._answer(effects, lst, sender, "help", reply)
            return Outcome(f"{command.verb}: help sent to {sender}", effects)
        decision = handler(effects, lst, sender, command, reply)
        return Outcome(decision, effects)

    def _subscribe(self, effects: Effects, lst: ListConfig, sender: str, command: Command,
                   reply: str | None) -> str:
        status = self._store.member_status(lst.id, sender)
        if lst.subscription == "closed":
            self._answer(effects, lst, sender, "closed", reply)
            return f"subscribe {sender}: refused, subscription is closed"
        if status in (MemberStatus.ACTIVE, MemberStatus.DISABLED):
            self._answer(effects, lst, sender, "already-member", reply, address=sender)
            return f"subscribe {sender}: already a member"
        return self._ask_to_confirm(effects, lst, sender, "subscribe", reply)

    def _ask_to_confirm(self, effects: Effects, lst: ListConfig, sender: str, action: str,
                        reply: str | None) -> str:
        """Mail ``sender`` a token for ``action``; nothing changes until it comes back."""
        days = self.config.membership.confirm_expiry_days
        token = self._token(effects, lst, sender, action, days)
        confirm_at = ListAddresses.of(lst).token_address("confirm", token)
        if not self._answer(effects, lst, sender, f"confirm-{action}", reply, confirm_at,
                            address=sender, token=token, expires=self._expires(days),
                            confirm_address=confirm_at):
            effects.new_tokens.pop()
            return f"{action} {sender}: not answered (daily limit)"
        return f"{action} {sender}: confirmation sent"

    def _unsubscribe(self, effects: Effects, lst: ListConfig, sender: str, command: Command,
                     reply: str | None) -> str:
        if command.token:
            return self._personal_unsubscribe(effects, lst, sender, command.token)
        status = self._store.member_status(lst.id, sender)
        if status not in (MemberStatus.ACTIVE, MemberStatus.DISABLED, MemberStatus.PENDING):
            self._answer(effects, lst, sender, "not-member", reply, address=sender)
            return f"unsubscribe {sender}: not a member"
        return self._ask_to_confirm(effects, lst, sender, "unsubscribe", reply)

    def _use_token(self, effects: Effects, lst: ListConfig, sender: str, command: Command,
                   reply: str | None) -> str:
        token = self._store.token(token_hash(command.token))
        problem = self._token_problem(token, lst)
        if problem or token is None:
            self._answer(effects, lst, sender, "bad-token", reply, problem=problem)
            return f"{command.verb} by {sender}: token {problem}"
        effects.used_tokens.append(token.hash)
        accept = command.verb is not Verb.DISCARD
        via = f"token from {sender}"
        if token.action == "subscribe":
            return self._confirmed_subscription(effects, lst, token.address, accept, via)
        if token.action == "unsubscribe":
            if not accept:
                return f"unsubscribe {token.address}: cancelled"
            return self._leave(effects, lst, token.address, via, "confirmed by email")
        if token.action == "approve-subscription":
            return self._decide_subscription(effects, lst, token.address, accept, sender)
        held = self._store.held_for(token.ref or 0, lst.id)
        if held is None or held.state != "held":
            self._answer(effects, lst, sender, "bad-token", reply, problem="already decided")
            return f"held post: already decided (by {sender})"
        effects.extend(self.release(held, accept, sender))
        return f"held post {held.id}: {'approved' if accept else 'discarded'} by {sender}"

    def _token_problem(self, token: Token | None, lst: ListConfig) -> str:
        if token is None:
            return "unknown (mistyped, or from an old message)"
        if token.used_at is not None:
            return "already used"
        if token.expires_at <= self._clock():
            return "expired"
        if token.list_id != lst.id:
            return "for another list"
        return ""

    def _confirmed_subscription(self, effects: Effects, lst: ListConfig, address: str,
                                accept: bool, via: str) -> str:
        if not accept:
            return f"subscribe {address}: cancelled"
        if lst.subscription == "moderate":
            effects.member_changes.append(MemberChange(
                lst.id, address, MemberStatus.PENDING, "email", via,
                reason="confirmed, waiting for the owners"))
            days = self.config.membership.confirm_expiry_days
            token = self._token(effects, lst, address, "approve-subscription", days)
            token_at = ListAddresses.of(lst).token_address("approve", token)
            if lst.owners:
                self._mail(effects, lst, lst.owners, "owner-approve-subscription",
                           reply_to=token_at, address=address, token=token,
                           token_address=token_at)
            self._mail(effects, lst, (address,), "awaiting-approval")
            return f"subscribe {address}: confirmed, waiting for the owners"
        return self._join(effects, lst, address, "email", via)

    def _decide_subscription(self, effects: Effects, lst: ListConfig, address: str,
                             accept: bool, by: str) -> str:
        if accept:
            return self._join(effects, lst, address, "owner", by)
        effects.member_changes.append(MemberChange(
            lst.id, address, MemberStatus.UNSUBSCRIBED, "owner", by, reason="rejected",
            only_existing=True))
        self._mail(effects, lst, (address,), "subscription-rejected", address=address)
        return f"subscribe {address}: rejected by {by}"

    def _join(self, effects: Effects, lst: ListConfig, address: str, via: str,
              actor: str) -> str:
        effects.member_changes.append(MemberChange(lst.id, address, MemberStatus.ACTIVE,
                                                   via, actor, reason="subscribed"))
        self._mail(effects, lst, (address,), "welcome", address=address)
        self._tell_owners(effects, lst, address, "joined", f"subscribed ({actor})")
        return f"subscribe {address}: active"

    def _leave(self, effects: Effects, lst: ListConfig, address: str, actor: str,
               reason: str) -> str:
        effects.member_changes.append(MemberChange(
            lst.id, address, MemberStatus.UNSUBSCRIBED, "email", actor, reason=reason,
            only_existing=True, new_unsubscribe_token=True))
        self._mail(effects, lst, (address,), "goodbye", address=address)
        self._tell_owners(effects, lst, address, "left", reason)
        return f"unsubscribe {address}: done ({reason})"

    # --- personal unsubscribe tokens (personalize: true) --------------------------------

    def unsubscribe_uri(self, lst: ListConfig, address: str) -> str:
        generation = self._store.unsubscribe_generation(lst.id, address) or 0
        token = member_token(self._secret, lst.id, address_key(address), generation)
        return ListAddresses.of(lst).command_uri("unsubscribe", token)

    def _personal_unsubscribe(self, effects: Effects, lst: ListConfig, sender: str,
                              token: str) -> str:
        if not lst.personalize:
            return f"unsubscribe by token from {sender}: the list is not personalized"
        # The sender is usually the member; otherwise try every member (a rare, small cost).
        candidates = [sender] + [m.address for m in self._store.members(lst.id)]
        for address in candidates:
            generation = self._store.unsubscribe_generation(lst.id, address)
            if generation is None:
                continue
            expected = member_token(self._secret, lst.id, address_key(address), generation)
            if hmac.compare_digest(expected, token):
                return self._leave(effects, lst, address, f"unsubscribe link ({sender})",
                                   "one-click unsubscribe")
        return f"unsubscribe by token from {sender}: token unknown or already used"

    # --- moderation -----------------------------------------------------------------------

    def hold(self, message: RawMessage, lst: ListConfig, inbound_id: int, sender: str,
             reason: str) -> Effects:
        effects = Effects()
        days = self.config.membership.hold_expiry_days
        subject = decode_words(message.get("Subject") or "") or "(no subject)"
        effects.held.append(NewHeld(inbound_id, lst.id, sender, subject, reason,
                                    self._clock() + days * DAY))
        token = self._token(effects, lst, sender, "held-post", days, ref=inbound_id)
        token_at = ListAddresses.of(lst).token_address("approve", token)
        if lst.owners:
            self._mail(effects, lst, lst.owners, "held-post-owner", reply_to=token_at,
                       sender=sender, subject=subject, reason=reason, token=token,
                       token_address=token_at, expires=self._expires(days))
        self._answer(effects, lst, sender, "held-post-sender", message.get("Message-ID"),
                     subject=subject, reason=reason)
        return effects

    def release(self, held: HeldPost, approve: bool, by: str) -> Effects:
        """Approve (relay once) or discard a held post."""
        effects = Effects()
        lst = self.config.lists.get(held.list_id)
        state = "approved" if approve else "discarded"
        effects.held_decisions.append(HeldDecision(held.inbound_id, held.list_id, state, by))
        effects.used_tokens.extend(
            token.hash for token in self._store.open_tokens(self._clock())
            if token.action == "held-post" and token.ref == held.inbound_id
            and token.list_id == held.list_id)
        if lst is None:
            return effects
        if approve:
            message = RawMessage.parse(self._store.inbound_raw(held.inbound_id))
            effects.outgoing.append(NewOutgoing(
                lst.id, "post", lst.address, rewrite_post(message, lst),
                exclude=None if lst.author_copy else held.sender,
                personalize=lst.personalize))
        else:
            self._answer(effects, lst, held.sender, "held-post-discarded",
                         subject=held.subject, outcome="discarded by the list owners")
        return effects

    def expire_held(self) -> Effects:
        effects = Effects()
        for held in self._store.expired_held(self._clock()):
            effects.held_decisions.append(HeldDecision(held.inbound_id, held.list_id,
                                                       "expired", "listd"))
            lst = self.config.lists.get(held.list_id)
            if lst is not None:
                self._answer(effects, lst, held.sender, "held-post-discarded",
                             subject=held.subject,
                             outcome="not approved in time by the list owners")
        return effects

    # --- administrator actions (listctl) --------------------------------------------------

    def approve_subscription(self, lst: ListConfig, address: str, accept: bool) -> Outcome:
        effects = Effects()
        status = self._store.member_status(lst.id, address)
        if status is not MemberStatus.PENDING:
            return Outcome(f"{address} is not waiting for approval ({status or 'not a member'})",
                           effects)
        token = self._store.open_token_for(lst.id, address, "approve-subscription",
                                           self._clock())
        if token is not None:
            effects.used_tokens.append(token.hash)
        decision = self._decide_subscription(effects, lst, address, accept, "admin")
        return Outcome(decision, effects)

    def enable(self, lst: ListConfig, address: str) -> Outcome:
        effects = Effects()
        status = self._store.member_status(lst.id, address)
        if status is not MemberStatus.DISABLED:
            return Outcome(f"{address} is not disabled ({status or 'not a member'})", effects)
        effects.member_changes.append(MemberChange(
            lst.id, address, MemberStatus.ACTIVE, "listctl", "admin",
            reason="delivery enabled again", only_existing=True))
        return Outcome(f"{address}: enabled", effects)

    # --- bounces ---------------------------------------------------------------------------

    def bounce(self, raw: bytes) -> Outcome:
        effects = Effects()
        report = scan_bounce(raw[:BOUNCE_SCAN_BYTES])
        ours = [ListAddress.parse(lst.address) for lst in self.config.lists.values()]
        addresses = {a for a in report.addresses
                     if not any(list_address.match(a) for list_address in ours)}
        named = {lst.id for lst in self.config.lists.values()
                 if list_id_value(lst) in report.list_ids}
        counted: list[str] = []
        for address in sorted(addresses):
            for lst in self.config.lists.values():
                if named and lst.id not in named:
                    continue
                status = self._store.member_status(lst.id, address)
                if status not in (MemberStatus.ACTIVE, MemberStatus.DISABLED):
                    continue
                permanent = address in report.permanent
                effects.bounces.append(NewBounce(lst.id, address, permanent))
                counted.append(f"{address} on {lst.id}")
                if status is MemberStatus.ACTIVE:
                    self._score(effects, lst, address, permanent)
        if not report.addresses:
            return Outcome("bounce: no failed address found", effects)
        if not counted:
            return Outcome("bounce for " + ", ".join(sorted(report.addresses)) +
                           ": not a member", effects)
        return Outcome("bounce counted for " + ", ".join(counted), effects)

    def _score(self, effects: Effects, lst: ListConfig, address: str, permanent: bool) -> None:
        """Disable the member once the decayed score of recent bounces reaches the limit."""
        settings = self.config.membership
        window = settings.bounce_window_days * DAY
        now = self._clock()
        events = [*self._store.bounce_events(lst.id, address, now - window), (now, permanent)]
        score = sum((PERMANENT_WEIGHT if hard else TEMPORARY_WEIGHT) * (1 - (now - at) / window)
                    for at, hard in events)
        if score + 1e-9 < settings.bounce_threshold:
            return
        reason = f"bounce score {score:.1f} reached {settings.bounce_threshold:g}"
        effects.member_changes.append(MemberChange(
            lst.id, address, MemberStatus.DISABLED, "bounces", "listd", reason=reason))
        self._tell_owners(effects, lst, address, "was disabled on", reason)
        self._mail(effects, lst, (address,), "disabled-by-bounces", address=address)
