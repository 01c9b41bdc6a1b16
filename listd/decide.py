"""Inbound journal → decision → outbox: what one journaled message causes.

The decision is made from the message bytes, the configuration and what the store knows
about the sender; it is committed in one transaction together with every message it
queues, so a crash either leaves the message undecided (decided again on restart) or
fully decided with its fan-out queued, never half.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from listd.config import Config, ListConfig
from listd.mail.addresses import address_key
from listd.mail.classify import Kind, Role, Target, classify, sender_address
from listd.mail.headers import RawMessage, decode_words
from listd.mail.notices import refusal_notices
from listd.mail.policy import may_post
from listd.mail.rewrite import forward_to_owners, rewrite_post
from listd.membership import Membership
from listd.metrics import Metrics
from listd.store import Effects, Inbound, InboundDecision, NewOutgoing, StaleDecision, Store

log = logging.getLogger(__name__)

# One refusal notice per sender and list per day: a spammer (or a forged sender) must not
# turn the list into a source of backscatter.
NOTICE_INTERVAL_S = 86400.0


@dataclass(frozen=True)
class Outcome:
    decision: str
    reason: str
    deliveries: int
    posts: int


class Decider:
    def __init__(self, store: Store, config: Config, clock: Callable[[], float],
                 membership: Membership, metrics: Metrics | None = None) -> None:
        self._store = store
        self.config = config
        self._clock = clock
        self._membership = membership
        self._metrics = metrics or Metrics()

    def process(self, inbound: Inbound) -> Outcome:
        try:
            return self._process(inbound)
        except StaleDecision as exc:
            # listctl decided the same token or held post a moment ago: decide again on
            # the new state (which then says "already decided").
            log.info("UID %d: %s; deciding again", inbound.uid, exc)
            return self._process(inbound)

    def _process(self, inbound: Inbound) -> Outcome:
        message = RawMessage.parse(inbound.raw)
        found = classify(message, self.config.lists.values())
        effects = Effects()
        decisions: list[str] = []
        if found.kind is Kind.BOUNCE:
            result = self._membership.bounce(inbound.raw)
            effects.extend(result.effects)
            decisions.append(result.decision)
        for target in found.targets:
            lst = self.config.lists[target.list_id]
            decisions.append(self._target(message, lst, target, inbound.id, effects))
        decision = "; ".join(decisions) or str(found.kind)
        reason = found.reason
        created = self._store.apply(effects, self._clock(),
                                    InboundDecision(inbound.id, decision, reason))
        self._metrics.decided(message, found, effects)
        posts = sum(1 for o in effects.outgoing if o.kind == "post")
        log.info("UID %d: %s (%s); %d delivery(ies) queued", inbound.uid, decision, reason,
                 created)
        return Outcome(decision, reason, created, posts)

    def _target(self, message: RawMessage, lst: ListConfig, target: Target, inbound_id: int,
                effects: Effects) -> str:
        sender = sender_address(message)
        if target.role is Role.OWNER:
            if not lst.owners:
                return f"{lst.id}: owner mail dropped (the list has no owners)"
            effects.outgoing.append(NewOutgoing(lst.id, "forward", lst.address,
                                                forward_to_owners(message, lst), lst.owners))
            return f"{lst.id}: forwarded to the owners"
        if target.role is Role.COMMAND:
            result = self._membership.command(message, lst, target.command)
            effects.extend(result.effects)
            return f"{lst.id}: {result.decision}"
        status = self._store.member_status(lst.id, sender) if sender else None
        verdict = may_post(lst, sender, status)
        if verdict.accept:
            effects.outgoing.append(NewOutgoing(
                lst.id, "post", lst.address, rewrite_post(message, lst),
                exclude=None if lst.author_copy or sender is None else sender,
                personalize=lst.personalize))
            return f"{lst.id}: relayed ({verdict.reason})"
        if verdict.hold and sender is not None:
            effects.extend(self._membership.hold(message, lst, inbound_id, sender,
                                                 verdict.reason))
            return f"{lst.id}: held ({verdict.reason})"
        if sender is not None:
            key = f"refused:{lst.id}:{address_key(sender)}"
            last = self._store.last_notice(key)
            now = self._clock()
            if last is None or now - last >= NOTICE_INTERVAL_S:
                subject = decode_words(message.get("Subject") or "")
                for notice in refusal_notices(lst, sender, subject, verdict.reason,
                                              message.get("Message-ID"), now):
                    effects.outgoing.append(NewOutgoing(lst.id, "notice", lst.address,
                                                        notice.data, notice.recipients))
                effects.notice_keys.append(key)
        return f"{lst.id}: refused ({verdict.reason})"
