"""listd.mail.classify: what a message is, from its bytes; real samples and hostile input."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from listd.config import ListConfig
from listd.mail.classify import (
    Classification,
    Kind,
    Role,
    Target,
    classify,
    envelope_sender,
    find_targets,
    list_id_value,
    sender_address,
)
from listd.mail.headers import RawMessage, decode_words
from listd.mail.notices import refusal_notices
from listd.mail.rewrite import forward_to_owners, rewrite_post
from tests.servers.dovecot import normalise_message

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "mail-samples"
MANIFEST = {entry["file"]: entry
            for entry in json.loads((SAMPLES / "MANIFEST.json").read_text())}

FRIENDS = ListConfig(id="friends", address="friends@example.test", name="Friends of the garden",
                     owners=("owner@example.test",), subject_prefix="[friends] ")
CHESS = ListConfig(id="chess", address="Chess@Lists.Example.TEST", name="Chess")
LISTS = (FRIENDS, CHESS)


def sample(cls: str) -> list[Path]:
    return sorted((SAMPLES / cls).glob("*.eml"))


def delivered(path: Path) -> RawMessage:
    """A sample as the list's mailbox would hold it: CRLF, no mbox line, Delivered-To."""
    return RawMessage.parse(b"Delivered-To: friends@example.test\r\n"
                            + normalise_message(path.read_bytes()))


def message(*fields: str, body: bytes = b"Hello.\r\n") -> RawMessage:
    return RawMessage.parse("".join(f + "\r\n" for f in fields).encode() + b"\r\n" + body)


def post(*extra: str, sender: str = "Alice <alice@example.test>",
         to: str = "friends@example.test", subject: str = "Hello") -> RawMessage:
    return message(f"From: {sender}", f"To: {to}", f"Subject: {subject}",
                   "Message-ID: <1@example.test>", *extra)


def kind(msg: RawMessage) -> Kind:
    return classify(msg, LISTS).kind


# --- real samples -------------------------------------------------------------------------

def test_the_manifest_names_every_sample_and_its_class() -> None:
    files = {f"{p.parent.name}/{p.name}" for p in SAMPLES.glob("*/*.eml")}
    assert files == set(MANIFEST)
    assert all(MANIFEST[f]["class"] == f.split("/")[0] for f in files)


@pytest.mark.parametrize("path", sample("bounces"), ids=lambda p: p.name)
def test_every_bounce_sample_is_a_bounce(path: Path) -> None:
    result = classify(delivered(path), LISTS)
    assert result.kind is Kind.BOUNCE, result.reason
    assert result.targets == ()
    # As stored, mbox line and LF line ends included, it is a bounce as well.
    assert kind(RawMessage.parse(path.read_bytes())) is Kind.BOUNCE


@pytest.mark.parametrize("path", sample("autoreplies"), ids=lambda p: p.name)
def test_every_autoreply_sample_is_an_auto_reply_never_a_bounce(path: Path) -> None:
    assert MANIFEST[f"autoreplies/{path.name}"]["subtype"] == "vacation"
    result = classify(delivered(path), LISTS)
    assert result.kind is Kind.AUTO_REPLY, result.reason
    assert kind(RawMessage.parse(path.read_bytes())) is Kind.AUTO_REPLY


@pytest.mark.parametrize("path", sample("posts"), ids=lambda p: p.name)
def test_sample_posts_to_the_list_are_list_mail(path: Path) -> None:
    result = classify(delivered(path), LISTS)
    assert result == Classification(Kind.LIST_MAIL, "addressed to friends (post)",
                                    (Target("friends", Role.POST),))
    # Not addressed to any list without the Delivered-To line.
    assert kind(RawMessage.parse(normalise_message(path.read_bytes()))) is Kind.NO_LIST


@pytest.mark.parametrize("path", sample("malformed"), ids=lambda p: p.name)
def test_malformed_sample_does_not_raise(path: Path) -> None:
    data = path.read_bytes()
    for variant in (data, normalise_message(data), data.replace(b"\r", b"\r\n"),
                    b"Delivered-To: friends@example.test\r\n" + data):
        result = classify(RawMessage.parse(variant), LISTS)
        assert isinstance(result.kind, Kind)
    # With its CR line ends made CRLF, it is the Cox bounce that it is.
    assert kind(RawMessage.parse(data.replace(b"\r", b"\r\n"))) is Kind.BOUNCE


# --- recipients ---------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "address", "expected"), [
    ("To", "friends@example.test", Target("friends", Role.POST)),
    ("Cc", "friends@example.test", Target("friends", Role.POST)),
    ("Delivered-To", "friends@example.test", Target("friends", Role.POST)),
    ("X-Original-To", "friends@example.test", Target("friends", Role.POST)),
    ("Envelope-To", "friends@example.test", Target("friends", Role.POST)),
    ("To", "FRIENDS@Example.Test", Target("friends", Role.POST)),
    ("To", "Friends List <friends@example.test>", Target("friends", Role.POST)),
    ("To", "friends+garden@example.test", Target("friends", Role.POST)),
    ("To", "friends+subscribe@example.test", Target("friends", Role.COMMAND, "subscribe")),
    ("To", "friends+Unsubscribe@example.test", Target("friends", Role.COMMAND, "unsubscribe")),
    ("To", "friends+confirm-abc123@example.test",
     Target("friends", Role.COMMAND, "confirm-abc123")),
    ("To", "friends-request@example.test", Target("friends", Role.COMMAND)),
    ("To", "friends-owner@example.test", Target("friends", Role.OWNER)),
    ("Cc", "chess@lists.example.test", Target("chess", Role.POST)),
    ("To", "CHESS-REQUEST@LISTS.EXAMPLE.TEST", Target("chess", Role.COMMAND)),
])
def test_recipient_matching(field: str, address: str, expected: Target) -> None:
    msg = message("From: Alice <alice@example.test>", "To: someone@example.test",
                  f"{field}: {address}")
    result = classify(msg, LISTS)
    assert result.kind is Kind.LIST_MAIL
    assert result.targets == (expected,)


@pytest.mark.parametrize("address", [
    "friendsXYZ@example.test", "friends-requests@example.test", "friends-owners@example.test",
    "friends-@example.test", "friends+@example.test", "xfriends@example.test",
    "friends@example.org", "friends@sub.example.test", "friends@example.test.evil",
    "friends.example.test@other.test", "chess@example.test", "friends-chess@example.test",
    "\"friends@example.test\" <bob@example.org>", "friends@example.test@evil.test",
])
def test_similar_addresses_are_not_ours(address: str) -> None:
    msg = message("From: Alice <alice@example.test>", f"To: {address}")
    assert classify(msg, LISTS) == Classification(Kind.NO_LIST, "not addressed to any list")


def test_a_message_to_two_lists_targets_both() -> None:
    msg = post(to="friends@example.test, Chess <chess@lists.example.test>")
    assert classify(msg, LISTS).targets == (Target("friends", Role.POST),
                                            Target("chess", Role.POST))


def test_the_most_specific_address_of_a_list_wins() -> None:
    msg = post("Cc: friends-owner@example.test")
    assert find_targets(msg, LISTS) == (Target("friends", Role.OWNER),)
    msg = post("Cc: friends+help@example.test", to="friends-request@example.test")
    assert find_targets(msg, LISTS) == (Target("friends", Role.COMMAND),)


def test_folded_recipient_fields_with_many_addresses() -> None:
    to = ",\r\n ".join(f"p{i}@example.org" for i in range(50)) + ",\r\n friends@example.test"
    assert find_targets(post(to=to), LISTS) == (Target("friends", Role.POST),)


# --- loops --------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    "X-Loop: friends@example.test",
    "X-Loop: <FRIENDS@example.test>",
    "X-Loop: chess@lists.example.test",
    "List-Id: Friends of the garden <friends.example.test>",
    "List-Id: <FRIENDS.EXAMPLE.TEST>",
])
def test_our_marks_coming_back_are_a_loop(extra: str) -> None:
    assert kind(post(extra)) is Kind.LOOP


@pytest.mark.parametrize("sender", ["friends@example.test", "Friends <FRIENDS@example.test>",
                                    "friends-owner@example.test", "friends+x@example.test",
                                    "chess-request@lists.example.test"])
def test_mail_from_a_list_address_is_a_loop(sender: str) -> None:
    assert kind(post(sender=sender)) is Kind.LOOP


def test_other_lists_marks_are_not_a_loop() -> None:
    msg = post("X-Loop: other@example.org", "List-Id: <other.example.org>",
               "List-Id: <friends.example.test.other>")
    assert kind(msg) is Kind.LIST_MAIL


def test_our_own_output_coming_back_is_recognised() -> None:
    assert kind(RawMessage.parse(rewrite_post(post(), FRIENDS))) is Kind.LOOP
    assert kind(RawMessage.parse(forward_to_owners(post(to="friends-owner@example.test"),
                                                   FRIENDS))) is Kind.LOOP
    for notice in refusal_notices(FRIENDS, "alice@example.test", "Hi", "not a member",
                                  "<1@example.test>", 0.0):
        assert kind(RawMessage.parse(notice.data)) is Kind.LOOP


# --- bounces and auto-replies -------------------------------------------------------------

@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.example.org",
                                    "Mail Delivery System <mailer-daemon@mx.example.org>",
                                    "postmaster@example.org", "MAILER-DAEMON"])
def test_mail_from_a_mailer_daemon_is_a_bounce(sender: str) -> None:
    assert kind(post(sender=sender)) is Kind.BOUNCE


def test_delivery_status_report_is_a_bounce() -> None:
    msg = post('Content-Type: multipart/report; report-type="delivery-status";\r\n'
               ' boundary="b"', sender="mx@example.org")
    assert classify(msg, LISTS).reason == "multipart/report (delivery-status)"
    assert kind(post("Content-Type: multipart/report; boundary=b")) is Kind.BOUNCE


def test_read_receipt_is_an_auto_reply_not_a_bounce() -> None:
    msg = post("Content-Type: multipart/report; report-type=disposition-notification;"
               " boundary=b")
    assert kind(msg) is Kind.AUTO_REPLY


@pytest.mark.parametrize("extra", [
    "Auto-Submitted: auto-replied", "Auto-Submitted: auto-generated",
    "Auto-Submitted: Auto-Notified", "Auto-Submitted: auto-replied; owner-email=x@example.org",
    "Precedence: bulk", "Precedence: JUNK", "Precedence: list", "X-Autoreply: yes",
    "X-Autorespond: yes", "X-Mail-Autoreply: yes", "X-FC-MachineGenerated: true",
    "Return-Path: <>", "X-Apple-Action: vacation",
])
def test_auto_reply_markers(extra: str) -> None:
    assert kind(post(extra)) is Kind.AUTO_REPLY


@pytest.mark.parametrize("subject", [
    "Out of Office: Hello", "Automatic reply: Hello", "Auto-Reply: Hello", "AutoReply: x",
    "Abwesenheitsnotiz: Hallo", "=?utf-8?q?R=C3=A9ponse_automatique=3A_Hello?=",
])
def test_vacation_subjects_without_any_header_mark(subject: str) -> None:
    assert kind(post(subject=subject)) is Kind.AUTO_REPLY


@pytest.mark.parametrize("extra", [
    "Auto-Submitted: no", "Auto-Submitted: No", "Auto-Submitted: no (a person wrote this)",
    "Auto-Submitted: no; reason=test", "Precedence: first-class", "Return-Path: <a@example.test>",
])
def test_not_auto_replies(extra: str) -> None:
    assert kind(post(extra)) is Kind.LIST_MAIL


@pytest.mark.parametrize("subject", ["Re: out of office hours",
                                     "automatic transmissions for sale", "Re: Auto reply: x"])
def test_ordinary_subjects_are_not_auto_replies(subject: str) -> None:
    assert kind(post(subject=subject)) is Kind.LIST_MAIL


def test_bounce_beats_loop_and_loop_beats_auto_reply() -> None:
    assert kind(post("X-Loop: friends@example.test", sender="MAILER-DAEMON@x.example")) is (
        Kind.BOUNCE)
    assert kind(post("X-Loop: friends@example.test", "Auto-Submitted: auto-replied")) is (
        Kind.LOOP)


# --- the odd ones -------------------------------------------------------------------------

def test_no_author_is_malformed() -> None:
    assert classify(message("To: friends@example.test"), LISTS) == Classification(
        Kind.MALFORMED, "no From header")
    assert kind(RawMessage.parse(b"")) is Kind.MALFORMED
    assert kind(message("Sender: bot@example.test", "To: friends@example.test")) is (
        Kind.LIST_MAIL)


def test_sender_and_envelope_sender() -> None:
    assert sender_address(post(sender="=?utf-8?q?J=C3=BCrgen?= <J@Example.test>")) == (
        "J@Example.test")
    assert sender_address(message("Sender: bot@example.test")) == "bot@example.test"
    assert sender_address(message("From: undisclosed-recipients:;")) is None
    assert envelope_sender(post()) is None
    assert envelope_sender(post("Return-Path: <>")) == ""
    assert envelope_sender(post("Return-Path: < a@example.test >")) == "a@example.test"


def test_list_id_value() -> None:
    assert list_id_value(FRIENDS) == "friends.example.test"
    assert list_id_value(CHESS) == "chess.lists.example.test"


def test_no_lists_configured() -> None:
    assert classify(post(), []).kind is Kind.NO_LIST


# --- hostile input ------------------------------------------------------------------------

_PIECES = [
    b"From: ", b"To: ", b"Cc: ", b"Subject: ", b"Sender: ", b"Reply-To: ", b"X-Loop: ",
    b"List-Id: ", b"Return-Path: <>", b"Auto-Submitted: ", b"Precedence: ",
    b"Content-Type: multipart/report; report-type=", b"friends@example.test",
    b"friends-owner@example.test", b"friends+x@example.test", b"=?", b"?=", b"?q?", b"?b?",
    b"utf-8", b"utf\xff8", b"iso-2022-jp", b"=?unknown?q?x?=", b"=?utf-8?b?###?=",
    b"=?utf-8?b?", b"<", b">", b'"', b"\\", b",", b"@", b":", b";", b"(", b")", b"[", b"]",
    b"\r\n", b"\n", b"\r", b"\r\n ", b" ", b"\t", b"\xff", b"\xc3", b"\x00", b"a", b"Re: ",
    b"[friends] ", b"From x Thu Jan  1 00:00:00 2026\n",
]
_SAMPLE_BYTES = [p.read_bytes() for p in sorted(SAMPLES.glob("*/*.eml"))]


def _hostile(rng: random.Random) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:
        data = rng.choice(_SAMPLE_BYTES)
        return data[: rng.randrange(len(data) + 1)]
    if choice == 1:
        return b"".join(rng.choice(_PIECES) for _ in range(rng.randrange(80)))
    if choice == 2:
        return rng.randbytes(rng.randrange(400))
    data = bytearray(rng.choice(_SAMPLE_BYTES))
    for _ in range(rng.randrange(1, 20)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    if choice == 3:
        return bytes(data)
    cut = rng.randrange(len(data))
    return bytes(data[:cut]) + b"".join(rng.choice(_PIECES) for _ in range(20)) + data[cut:]


def _survives(data: bytes, notices: bool = True) -> None:
    parsed = RawMessage.parse(data)
    assert parsed.serialize() == data
    result = classify(parsed, LISTS)
    assert isinstance(result.kind, Kind)
    # What the decision step does with a refused post: notices quoting the subject.
    sender = sender_address(parsed)
    if notices and sender is not None:
        for notice in refusal_notices(FRIENDS, sender, decode_words(parsed.get("Subject") or ""),
                                      "refused", parsed.get("Message-ID"), 0.0):
            assert notice.data
    for lst in (FRIENDS, dataclasses.replace(FRIENDS, reply_to="author", name="Grüße",
                                             subject_prefix="[ü]")):
        out = rewrite_post(parsed, lst)
        assert out.endswith(parsed.body)
        assert RawMessage.parse(out).serialize() == out
        forward_to_owners(parsed, lst)


def test_hostile_input_never_raises() -> None:
    rng = random.Random(20261204)
    for i in range(2000):
        _survives(_hostile(rng), notices=i % 5 == 0)  # the email package is slow


# Twice the header size most MTAs accept at all (Postfix: header_size_limit = 102400).
HUGE = 100_000


@pytest.mark.parametrize("data", [
    b"Subject: " + b"x" * HUGE + b"\r\nFrom: a@example.test\r\n\r\nbody",
    b"From: " + b"a" * HUGE + b"@example.test\r\n\r\n",
    b"From: " + b"a " * (HUGE // 2) + b"<a@example.test>\r\n\r\n",
    b"From: a@example.test\r\nTo: " + b"friends@example.test, " * (HUGE // 22) + b"\r\n\r\n",
    b"From: a@example.test\r\nX-Deep: x" + b"\r\n x" * (HUGE // 4) + b"\r\n\r\n",
    b"From: a@example.test\r\n" + b"X-Many: y\r\n" * (HUGE // 10) + b"\r\n",
    b"From: a@example.test\r\nSubject: " + b"Re: [friends] " * (HUGE // 14) + b"\r\n\r\n",
    b"From: a@example.test\r\nSubject: =?utf-8?q?" + b"=C3=BC" * (HUGE // 6) + b"?=\r\n\r\n",
    b"From: " + b"\"" * HUGE + b"\r\n\r\n",
    b"From: " + b"(" * HUGE + b"a@example.test\r\n\r\n",  # nested comments: recursion
    b"From: " + b"<" * HUGE + b"\r\n\r\n",
    b"From: a@example.test\r\nSubject: a\rb\x0bc\x85d\r\nMessage-ID: <x\r@y>\r\n\r\n",
    b"From: =?unicode-escape?q?=5Cudcff?= <a@example.test>\r\n"
    b"Subject: =?raw-unicode-escape?q?=5Cud800_x?=\r\n\r\n",
])
def test_huge_and_odd_header_lines_do_not_raise(data: bytes) -> None:
    _survives(data)


def test_line_breaks_inside_a_field_are_no_line_breaks_in_its_value() -> None:
    msg = RawMessage.parse(b"From: a@example.test\r\nSubject: a\rb\x0cc\r\n"
                           b"X-Word: =?utf-8?q?x=0By=E2=80=A8z?=\r\n\r\n")
    assert msg.get("Subject") == "a b c"
    assert decode_words(msg.get("X-Word") or "") == "x y z"
    assert decode_words("=?unicode-escape?q?=5Cudcff?=") == "?"
