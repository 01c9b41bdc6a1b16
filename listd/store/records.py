"""What the store hands out and takes in: plain frozen records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from listd.mail.policy import MemberStatus


@dataclass(frozen=True)
class Member:
    list_id: str
    address: str
    display_name: str
    status: MemberStatus
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw: bytes
    message_id: str | None
    date_header: str | None


@dataclass(frozen=True)
class Inbound:
    id: int
    uid: int
    raw: bytes


@dataclass(frozen=True)
class Outgoing:
    id: int
    list_id: str
    kind: str
    envelope_from: str
    data: bytes
    created_at: float
    personalize: bool = False


@dataclass(frozen=True)
class NewOutgoing:
    """An outbox entry to create. ``recipients`` None means: the list's active members."""

    list_id: str
    kind: str
    envelope_from: str
    data: bytes
    recipients: Sequence[str] | None = None
    exclude: str | None = None  # a member address not to send to (the author)
    personalize: bool = False  # one transaction per member, with its own To and token


@dataclass(frozen=True)
class DeliveryUpdate:
    recipient: str
    state: str
    attempts: int
    code: int
    text: str
    next_attempt_at: float


@dataclass(frozen=True)
class MemberChange:
    """A member's new status, and who asked for it through what (for the membership log)."""

    list_id: str
    address: str
    status: MemberStatus
    via: str  # email | listctl | token | bounces | import | sync
    actor: str  # the address or "admin" that asked
    name: str = ""
    reason: str = ""
    only_existing: bool = False  # do not add the address if it is not on the list
    new_unsubscribe_token: bool = False  # invalidate the member's personal token


@dataclass(frozen=True)
class NewToken:
    hash: str
    list_id: str
    address: str
    action: str  # subscribe | unsubscribe | approve-subscription | held-post
    expires_at: float
    ref: int | None = None  # the held post's inbound id, for held-post


@dataclass(frozen=True)
class Token:
    hash: str
    list_id: str
    address: str
    action: str
    ref: int | None
    created_at: float
    expires_at: float
    used_at: float | None


@dataclass(frozen=True)
class NewHeld:
    inbound_id: int
    list_id: str
    sender: str
    subject: str
    reason: str
    expires_at: float


@dataclass(frozen=True)
class HeldPost:
    id: int
    inbound_id: int
    list_id: str
    sender: str
    subject: str
    reason: str
    created_at: float
    expires_at: float
    state: str


@dataclass(frozen=True)
class HeldDecision:
    inbound_id: int
    list_id: str
    state: str  # approved | discarded | expired
    by: str


@dataclass(frozen=True)
class NewBounce:
    list_id: str
    address: str
    permanent: bool


@dataclass
class Effects:
    """Everything one decision changes, applied in one transaction by ``Store.apply``."""

    outgoing: list[NewOutgoing] = field(default_factory=list)
    notice_keys: list[str] = field(default_factory=list)
    member_changes: list[MemberChange] = field(default_factory=list)
    new_tokens: list[NewToken] = field(default_factory=list)
    used_tokens: list[str] = field(default_factory=list)
    held: list[NewHeld] = field(default_factory=list)
    held_decisions: list[HeldDecision] = field(default_factory=list)
    bounces: list[NewBounce] = field(default_factory=list)
    counters: list[str] = field(default_factory=list)  # today's counts to increment

    def extend(self, other: Effects) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))
