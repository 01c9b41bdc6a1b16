"""Who may post to a list: a pure decision from the list's policy and the sender's standing."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from listd.config import ListConfig
from listd.mail.addresses import address_key


class MemberStatus(StrEnum):
    ACTIVE = "active"  # receives posts
    PENDING = "pending"  # asked to join, not confirmed yet
    DISABLED = "disabled"  # a member whose delivery is stopped (bounces); may still post
    UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True)
class PostDecision:
    accept: bool
    reason: str
    hold: bool = False  # not accepted yet: the owners decide (moderation)


def may_post(lst: ListConfig, sender: str | None, status: MemberStatus | None) -> PostDecision:
    """Decide a post to ``lst`` from ``sender`` whose membership status is ``status``."""
    if sender is None:
        return PostDecision(False, "the message has no sender address")
    is_owner = address_key(sender) in {address_key(o) for o in lst.owners}
    if lst.posting == "open":
        return PostDecision(True, "the list is open")
    if is_owner:
        return PostDecision(True, "sent by an owner")
    if lst.posting == "owners":
        return PostDecision(False, "only the list owners may post to this list")
    is_member = status in (MemberStatus.ACTIVE, MemberStatus.DISABLED)
    if lst.posting == "moderated":
        return PostDecision(False, "the list is moderated", hold=True)
    if is_member:
        return PostDecision(True, "sent by a member")
    if lst.non_member_posts == "hold":
        return PostDecision(False, "the sender is not a member", hold=True)
    return PostDecision(False, "only members may post to this list")
