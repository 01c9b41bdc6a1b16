"""listd.mail.policy: who may post, for every policy, status and kind of sender; and the
notices listd.mail.notices writes when a post is refused."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import EmailMessage

import pytest

from listd.config import ListConfig
from listd.mail.notices import refusal_notices
from listd.mail.policy import MemberStatus, PostDecision, may_post

LIST = ListConfig(id="friends", address="friends@example.test", name="Friends",
                  owners=("Owner@Example.test", "second@example.test"))
OWNER = "owner@example.test"
OTHER = "stranger@example.test"

# (policy, status, sender is an owner) -> accepted?
EXPECTED = {
    "open": lambda status, owner: True,
    "members": lambda status, owner: owner or status in (MemberStatus.ACTIVE,
                                                         MemberStatus.DISABLED),
    "owners": lambda status, owner: owner,
}
STATUSES = [None, *MemberStatus]


@pytest.mark.parametrize("posting", ["members", "open", "owners"])
@pytest.mark.parametrize("status", STATUSES, ids=lambda s: str(s))
@pytest.mark.parametrize("owner", [True, False], ids=["owner", "not-owner"])
def test_the_whole_matrix(posting: str, status: MemberStatus | None, owner: bool) -> None:
    lst = dataclasses.replace(LIST, posting=posting)
    decision = may_post(lst, OWNER if owner else OTHER, status)
    assert decision.accept is EXPECTED[posting](status, owner)
    assert decision.reason


def test_reasons_say_why() -> None:
    members = dataclasses.replace(LIST, posting="members")
    owners = dataclasses.replace(LIST, posting="owners")
    opened = dataclasses.replace(LIST, posting="open")
    assert may_post(opened, OTHER, None) == PostDecision(True, "the list is open")
    assert may_post(members, OWNER, None) == PostDecision(True, "sent by an owner")
    assert may_post(members, OTHER, MemberStatus.ACTIVE) == PostDecision(True, "sent by a member")
    assert may_post(members, OTHER, MemberStatus.PENDING) == PostDecision(
        False, "only members may post to this list")
    assert may_post(owners, OTHER, MemberStatus.ACTIVE) == PostDecision(
        False, "only the list owners may post to this list")


@pytest.mark.parametrize("posting", ["members", "open", "owners"])
def test_no_sender_is_always_refused(posting: str) -> None:
    for status in STATUSES:
        decision = may_post(dataclasses.replace(LIST, posting=posting), None, status)
        assert decision == PostDecision(False, "the message has no sender address")


@pytest.mark.parametrize("sender", ["OWNER@EXAMPLE.TEST", " owner@example.test ",
                                    "Second@Example.Test"])
def test_owners_are_compared_without_case(sender: str) -> None:
    lst = dataclasses.replace(LIST, posting="owners")
    assert may_post(lst, sender, None).accept


@pytest.mark.parametrize("sender", ["owner@example.test.evil", "xowner@example.test",
                                    "owner+tag@example.test", "owner@example", ""])
def test_look_alikes_of_owners_are_not_owners(sender: str) -> None:
    lst = dataclasses.replace(LIST, posting="owners")
    assert not may_post(lst, sender, MemberStatus.ACTIVE).accept


def test_a_list_without_owners() -> None:
    lst = dataclasses.replace(LIST, owners=(), posting="members")
    assert not may_post(lst, OWNER, None).accept
    assert may_post(lst, OWNER, MemberStatus.ACTIVE).accept


# --- the notices of a refused post (listd.mail.notices) ------------------------------------

def _notices(sender: str, subject: str = "Hi", message_id: str | None = "<1@example.test>"
             ) -> list[EmailMessage]:
    result = []
    for notice in refusal_notices(LIST, sender, subject, "only members may post to this list",
                                  message_id, 1_800_000_000.0):
        message = email.message_from_bytes(notice.data, policy=email.policy.SMTPUTF8)
        assert isinstance(message, EmailMessage)
        # One To address per envelope recipient (a quoted local part reads as the same).
        assert [a.addr_spec.replace('"', "") for a in message["To"].addresses] == list(
            notice.recipients)
        result.append(message)
    return result


def test_refusal_notices_to_the_sender_and_the_owners() -> None:
    to_sender, to_owners = _notices("stranger@example.test")
    assert to_sender["Subject"] == "Your message to friends@example.test was not distributed"
    assert to_sender["In-Reply-To"] == "<1@example.test>"
    assert to_sender["Auto-Submitted"] == "auto-replied"
    assert to_sender["X-Loop"] == "friends@example.test"
    assert "only members may post" in to_sender.get_content()
    assert to_owners["Subject"] == (
        "Refused post to friends@example.test from stranger@example.test")
    assert "The sender was told." in to_owners.get_content()


@pytest.mark.parametrize("sender", ["a,b@example.test", "a:;@example.test"])
def test_a_local_part_that_needs_quotes_stays_one_address(sender: str) -> None:
    to_sender, _ = _notices(sender)
    local = sender.partition("@")[0]
    assert to_sender["To"] == f'"{local}"@example.test'


def test_an_internationalised_sender_gets_utf8_headers() -> None:
    data = refusal_notices(LIST, "jürgen@bücher.example", "Grüße", "refused", None, 0.0)[0].data
    assert b"To: j\xc3\xbcrgen@b\xc3\xbccher.example\r\n" in data


@pytest.mark.parametrize("sender", [
    "not an address", "a\x0bb@example.test", "",
    # An "encoded word" that the email package would decode, then fail to fold.
    "=?utf-8?b? friends@example.test?=Auto-Submitted", "=?utf-8?b?utf-8?=x@example.test",
])
def test_an_unusable_sender_gets_no_notice_but_the_owners_do(sender: str) -> None:
    (to_owners,) = _notices(sender, subject="x\x85y")
    assert to_owners["Subject"] == (
        "Refused post to friends@example.test from an unusable address")
    assert "The sender address is unusable." in to_owners.get_content()
    assert f"From:    {sender}\r\n" in to_owners.get_content()


@pytest.mark.parametrize("message_id", [
    "<1@x>\u2028", "no angle brackets", "<a b@x>", "<" + "x" * 80 + "=?utf-8?b?/w==?=@x>",
    "<" + "x" * 80 + " =?utf-8?b?/w==?= " + "y" * 80 + ">", "",
])
def test_a_broken_message_id_is_left_out(message_id: str) -> None:
    for notice in _notices("stranger@example.test", message_id=message_id):
        assert "In-Reply-To" not in notice and "References" not in notice
