"""What the store hands out and takes in: plain frozen records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class NewOutgoing:
    """An outbox entry to create. ``recipients`` None means: the list's active members."""

    list_id: str
    kind: str
    envelope_from: str
    data: bytes
    recipients: Sequence[str] | None = None
    exclude: str | None = None  # a member address not to send to (the author)


@dataclass(frozen=True)
class DeliveryUpdate:
    recipient: str
    state: str
    attempts: int
    code: int
    text: str
    next_attempt_at: float
