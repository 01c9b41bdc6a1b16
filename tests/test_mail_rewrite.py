"""listd.mail.rewrite: the copy a list sends out, on literal bytes."""

from __future__ import annotations

import dataclasses
import email
import email.header
import email.policy
import email.utils
from email.message import EmailMessage
from pathlib import Path

import pytest

from listd.config import ListConfig
from listd.mail.headers import RawMessage
from listd.mail.listaddr import ListAddresses
from listd.mail.rewrite import (
    REMOVED_FIELDS,
    forward_to_owners,
    list_fields,
    prefixed_subject,
    rewrite_post,
)

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "mail-samples"

FRIENDS = ListConfig(id="friends", address="friends@example.test", name="Friends of the garden",
                     owners=("owner@example.test",), posting="members",
                     subject_prefix="[friends] ", reply_to="list")

DKIM = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=s1;\r\n"
        b"\th=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
        b"\tb=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR\r\n")
TWENTY = b"To: " + b",\r\n ".join(
    f"Person {i} <person{i}@example.test>".encode() for i in range(20)) + b"\r\n"

BODY = (b"Hello list.\r\n"
        b".\r\n"
        b"..two dots\r\n"
        b".leading dot\r\n"
        b"From the start of a line\r\n"
        b">From quoted\r\n"
        b"\xe2\x82\xac raw 8-bit \xff\r\n"
        b"\r\n"
        b"-- \r\n"
        b"Alice\r\n"
        b"\r\n")


def make(*fields: bytes, body: bytes = BODY, newline: bytes = b"\r\n") -> RawMessage:
    head = b"".join(f if f.endswith(b"\n") else f + b"\r\n" for f in fields)
    return RawMessage.parse((head + b"\r\n").replace(b"\r\n", newline) + body)


def standard(*extra: bytes, sender: bytes = b"From: Alice Example <alice@example.test>",
             subject: bytes = b"Subject: Hello") -> RawMessage:
    return make(b"Return-Path: <alice@example.test>",
                b"Delivered-To: list@example.test",
                sender, b"To: friends@example.test", subject,
                b"Date: Fri, 04 Dec 2026 10:00:00 +0000",
                b"Message-ID: <1@example.test>", *extra)


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def lines(data: bytes) -> list[bytes]:
    head = data.partition(b"\r\n\r\n")[0]
    return head.split(b"\r\n")


# --- body and untouched fields ------------------------------------------------------------

def test_body_bytes_are_identical() -> None:
    out = rewrite_post(standard(), FRIENDS)
    assert out.endswith(b"\r\n\r\n" + BODY)
    assert RawMessage.parse(out).body == BODY


@pytest.mark.parametrize("body", [b"", b"no line end", b"\r\n\r\n\r\n", b".", b"From x\r\n"])
def test_odd_bodies_are_identical(body: bytes) -> None:
    assert RawMessage.parse(rewrite_post(make(b"From: a@example.test", body=body),
                                         FRIENDS)).body == body


UNTOUCHED = [
    DKIM,
    TWENTY,
    b"Cc: =?ISO-2022-JP?B?GyRCJEskYyRzJDMbKEI=?= <neko@example.test>",
    b"X-Subject-Copy: =?windows-1252?q?Caf=E9_=80_tomorrow?=",
    b"X-Raw: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln",
    b"Comments: latin-1 caf\xe9",
    b"Received: from mx.example.test by imap.example.test;\r\n"
    b" Fri, 04 Dec 2026 10:00:00 +0000",
    b"MIME-Version: 1.0",
    b"Content-Type: text/plain; charset=utf-8",
    b"In-Reply-To: <0@example.test>",
    b"X-Loop: other-list@example.org",
    b"Keywords:   odd  spacing\t",
]


def test_fields_not_ours_to_change_are_byte_identical_and_in_order() -> None:
    message = standard(*UNTOUCHED)
    out = RawMessage.parse(rewrite_post(message, FRIENDS))
    changed = {"from", "subject", "reply-to", "x-original-from"}
    removed = {n.lower() for n in REMOVED_FIELDS}
    expected = [f.raw for f in message.fields if f.key not in changed | removed]
    appended = len(list_fields(FRIENDS))
    assert [f.raw for f in out.fields[:-appended] if f.key not in changed] == expected
    # Our X-Loop is appended; the other list's X-Loop stays where it was.
    assert [f.raw for f in out.get_all("X-Loop")] == [b"X-Loop: other-list@example.org\r\n",
                                                      b"X-Loop: friends@example.test\r\n"]


def test_subject_bytes_in_odd_charsets_are_kept_after_the_prefix() -> None:
    for raw in (b"=?ISO-2022-JP?B?GyRCJEskYyRzJDMbKEI=?=", b"=?windows-1252?q?Caf=E9_=80?=",
                b"Gr\xc3\xbc\xc3\x9fe (raw UTF-8)", b"caf\xe9 (raw latin-1)"):
        out = RawMessage.parse(rewrite_post(standard(subject=b"Subject: " + raw), FRIENDS))
        assert out.get_all("Subject")[0].raw == b"Subject: [friends] " + raw + b"\r\n"
    out = rewrite_post(standard(subject=b"Subject: =?ISO-2022-JP?B?GyRCJEskYyRzJDMbKEI=?="),
                       FRIENDS)
    assert parsed(out)["Subject"] == "[friends] にゃんこ"


# --- From, X-Original-From, Reply-To ------------------------------------------------------

@pytest.mark.parametrize(("sender", "shown"), [
    (b"Alice Example <alice@example.test>", "Alice Example"),
    (b"\"Doe, John\" <john@example.test>", "Doe, John"),
    (b"\"Say \\\"hi\\\"\" <hi@example.test>", 'Say "hi"'),
    (b"\"bob@example.test\" <bob@example.test>", "bob@example.test"),
    (b"J\xc3\xbcrgen M\xc3\xbcller <j@example.test>", "Jürgen Müller"),
    (b"=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@example.test>", "Jürgen Müller"),
    (b"=?ISO-2022-JP?B?GyRCJEskYyRzJDMbKEI=?= <neko@example.test>", "にゃんこ"),
    (b"=?windows-1252?q?Ren=E9e_=80?= <renee@example.test>", "Renée €"),
    (b"carol@example.test", "carol@example.test"),
    (b"<carol@example.test>", "carol@example.test"),
    (b"carol@example.test (Carol C.)", "Carol C."),
    (b"\"Dr. A. \xe5\xb1\xb1\xe7\x94\xb0, PhD\" <y@example.test>", "Dr. A. 山田, PhD"),
])
def test_from_becomes_author_via_list(sender: bytes, shown: str) -> None:
    out = rewrite_post(standard(sender=b"From: " + sender), FRIENDS)
    (from_field,) = RawMessage.parse(out).get_all("From")
    value = from_field.value
    ((name, address),) = email.utils.getaddresses([value])
    assert address == "friends@example.test"
    assert str(email.header.make_header(email.header.decode_header(name))) == (
        f"{shown} via Friends of the garden")
    assert from_field.raw.isascii()
    message = parsed(out)
    assert message["From"].addresses[0].display_name == f"{shown} via Friends of the garden"
    assert message["From"].addresses[0].addr_spec == "friends@example.test"
    assert message["X-Original-From"] == str(parsed(b"F: " + sender + b"\r\n\r\n")["F"])
    assert RawMessage.parse(out).get_all("X-Original-From")[0].raw == (
        b"X-Original-From: " + sender + b"\r\n")


def test_non_ascii_list_name_is_encoded() -> None:
    lst = dataclasses.replace(FRIENDS, name="Gartenfreunde Köln")
    message = parsed(rewrite_post(standard(), lst))
    assert message["From"].addresses[0].display_name == "Alice Example via Gartenfreunde Köln"
    assert message["Reply-To"].addresses[0].display_name == "Gartenfreunde Köln"
    assert message["List-Id"] == "Gartenfreunde Köln <friends.example.test>"


def test_folded_from_is_kept_in_x_original_from() -> None:
    out = rewrite_post(standard(sender=b"From: Alice Example\r\n <alice@example.test>"), FRIENDS)
    assert RawMessage.parse(out).get_all("X-Original-From")[0].raw == (
        b"X-Original-From: Alice Example\r\n <alice@example.test>\r\n")


def test_message_with_sender_only() -> None:
    message = make(b"Sender: Bot <bot@example.test>", b"To: friends@example.test")
    out = parsed(rewrite_post(message, dataclasses.replace(FRIENDS, reply_to="author")))
    assert out["From"] == "someone via Friends of the garden <friends@example.test>"
    assert "Sender" not in out and "X-Original-From" not in out and "Reply-To" not in out


def test_reply_to_list_replaces_the_authors() -> None:
    out = rewrite_post(standard(b"Reply-To: Alice Private <alice@home.example>"), FRIENDS)
    message = parsed(out)
    assert message.get_all("Reply-To") == ["Friends of the garden <friends@example.test>"]
    # In the place of the old one, not appended.
    names = [f.key for f in RawMessage.parse(out).fields]
    assert names.index("reply-to") < names.index("list-id")


def test_reply_to_author_keeps_an_existing_reply_to() -> None:
    lst = dataclasses.replace(FRIENDS, reply_to="author")
    original = b"Reply-To: Alice Private\r\n <alice@home.example>"
    out = RawMessage.parse(rewrite_post(standard(original), lst))
    assert [f.raw for f in out.get_all("Reply-To")] == [original + b"\r\n"]


def test_reply_to_author_without_reply_to_points_at_the_author() -> None:
    lst = dataclasses.replace(FRIENDS, reply_to="author")
    out = RawMessage.parse(rewrite_post(standard(), lst))
    assert [f.raw for f in out.get_all("Reply-To")] == [
        b"Reply-To: Alice Example <alice@example.test>\r\n"]


# --- Subject ------------------------------------------------------------------------------

def _subject(value: bytes | None, prefix: str = "[friends] ") -> bytes | None:
    fields = [b"From: a@example.test"] + ([b"Subject: " + value] if value is not None else [])
    return prefixed_subject(make(*fields), prefix)


@pytest.mark.parametrize(("subject", "expected"), [
    (b"x", b"[friends] x"),
    (b"[friends] x", None),
    (b"[friends] Re: x", None),
    (b"[friends] Fwd: x", None),
    (b"[friends] Re: Fwd: x", None),
    (b"Re: [friends] Re: [friends] x", b"[friends] Re: x"),
    (b"Re: [friends] x", b"[friends] Re: x"),
    (b"RE: [friends] x", b"[friends] Re: x"),
    (b"AW: [friends] AW: x", b"[friends] Re: x"),
    (b"Re[2]: [friends] x", b"[friends] Re: x"),
    (b"[friends] Re: Re: x", b"[friends] Re: x"),
    (b"Re:[friends]x", b"[friends] Re: x"),
    (b"Fwd: [friends] x", b"[friends] Fwd: x"),
    (b"WG: [friends] x", b"[friends] WG: x"),
    (b"Re: Fwd: [friends] x", b"[friends] Re: Fwd: x"),
    (b"[FRIENDS] x", b"[friends] x"),
    (b"[friends]  x  y", None),  # same once white space is collapsed
    (b"AW: x", b"[friends] AW: x"),
    (b"RE: x", b"[friends] RE: x"),
    (b"Fwd: x", b"[friends] Fwd: x"),
    (b"Re: Re: x", b"[friends] Re: Re: x"),  # no prefix yet: the bytes are only prepended
    (b"[friends-announce] x", b"[friends] [friends-announce] x"),
    (b"=?utf-8?q?=5Bfriends=5D_x?=", None),
    (b"=?utf-8?q?Re=3A_=5Bfriends=5D_x?=", b"[friends] Re: x"),
    (b"", b"[friends] (no subject)"),
    (b"   ", b"[friends] (no subject)"),
    (None, b"[friends] (no subject)"),
])
def test_prefix_never_stacks(subject: bytes | None, expected: bytes | None) -> None:
    assert _subject(subject) == expected
    # The same with the prefix written without its trailing space.
    assert _subject(subject, "[friends]") == expected


def test_a_word_prefix_is_only_recognised_as_a_whole_word() -> None:
    assert _subject(b"Friendship", "Friends") == b"Friends Friendship"
    assert _subject(b"Friends: hi", "Friends:") is None
    assert _subject(b"Re: Friends hi", "Friends") == b"Friends Re: hi"


def test_no_prefix_configured_means_no_change() -> None:
    assert _subject(b"x", "") is None
    assert _subject(None, "  ") is None
    message = standard(subject=b"Subject: as it was")
    out = RawMessage.parse(rewrite_post(message, dataclasses.replace(FRIENDS, subject_prefix="")))
    assert out.get_all("Subject")[0].raw == b"Subject: as it was\r\n"


def test_non_ascii_prefix() -> None:
    prefix = "[Grüße] "
    value = _subject(b"Hallo", prefix)
    assert value is not None
    assert str(email.header.make_header(email.header.decode_header(value.decode()))) == (
        "[Grüße] Hallo")
    assert _subject(b"=?utf-8?q?=5BGr=C3=BC=C3=9Fe=5D_Hallo?=", prefix) is None
    value = _subject(b"Re: =?utf-8?q?=5BGr=C3=BC=C3=9Fe=5D_Hallo?=", prefix)
    assert value is not None
    assert str(email.header.make_header(email.header.decode_header(value.decode()))) == (
        "[Grüße] Re: Hallo")
    value = _subject(None, prefix)
    assert value is not None
    assert str(email.header.make_header(email.header.decode_header(value.decode()))) == (
        "[Grüße] (no subject)")


def test_missing_subject_is_added() -> None:
    out = RawMessage.parse(rewrite_post(make(b"From: a@example.test"), FRIENDS))
    assert out.get("Subject") == "[friends] (no subject)"


def test_a_long_subject_is_folded_after_the_prefix() -> None:
    long = b"word " * 30 + b"end"
    out = rewrite_post(standard(subject=b"Subject: " + long), FRIENDS)
    (field,) = RawMessage.parse(out).get_all("Subject")
    assert field.raw == b"Subject: [friends]\r\n " + long + b"\r\n"
    assert parsed(out)["Subject"] == "[friends] " + long.decode()


def test_a_folded_subject_keeps_its_folding() -> None:
    out = rewrite_post(standard(subject=b"Subject: first\r\n second"), FRIENDS)
    assert RawMessage.parse(out).get_all("Subject")[0].raw == (
        b"Subject: [friends] first\r\n second\r\n")


# --- removed and added fields -------------------------------------------------------------

FOREIGN = [
    b"Envelope-To: list@example.test",
    b"X-Original-To: friends@example.test",
    b"X-Envelope-To: list@example.test",
    b"Bcc: hidden@example.test",
    b"Sender: someone-else@example.org",
    b"Disposition-Notification-To: alice@example.test",
    b"Return-Receipt-To: alice@example.test",
    b"X-Confirm-Reading-To: alice@example.test",
    b"Precedence: bulk",
    b"List-Id: Other list <other.example.org>",
    b"List-Post: <mailto:other@example.org>",
    b"List-Help: <mailto:other-request@example.org?subject=help>",
    b"List-Subscribe: <mailto:other-request@example.org?subject=subscribe>",
    b"List-Unsubscribe: <https://example.org/u>,\r\n <mailto:other-request@example.org>",
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    b"List-Owner: <mailto:other-owner@example.org>",
    b"List-Archive: <https://example.org/archive>",
]


def test_fields_of_our_mailbox_and_other_lists_are_removed_and_ours_added() -> None:
    out = rewrite_post(standard(*FOREIGN), FRIENDS)
    message = parsed(out)
    for name in ("Return-Path", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To",
                 "Bcc", "Sender", "Disposition-Notification-To", "Return-Receipt-To",
                 "X-Confirm-Reading-To", "List-Unsubscribe-Post", "List-Archive"):
        assert name not in message, name
    assert b"other.example.org" not in out and b"hidden@" not in out
    assert message.get_all("List-Id") == ["Friends of the garden <friends.example.test>"]
    assert message.get_all("List-Post") == ["<mailto:friends@example.test>"]
    assert message.get_all("List-Help") == [
        "<mailto:friends-request@example.test?subject=help>"]
    assert message.get_all("List-Subscribe") == [
        "<mailto:friends-request@example.test?subject=subscribe>"]
    assert message.get_all("List-Unsubscribe") == [
        "<mailto:friends-request@example.test?subject=unsubscribe>"]
    assert message.get_all("List-Owner") == ["<mailto:friends-owner@example.test>"]
    assert message.get_all("Precedence") == ["list"]
    assert message.get_all("X-Loop") == ["friends@example.test"]


def test_list_fields_exactly() -> None:
    assert list_fields(FRIENDS) == [
        ("List-Id", b"Friends of the garden <friends.example.test>"),
        ("List-Help", b"<mailto:friends-request@example.test?subject=help>"),
        ("List-Subscribe", b"<mailto:friends-request@example.test?subject=subscribe>"),
        ("List-Unsubscribe", b"<mailto:friends-request@example.test?subject=unsubscribe>"),
        ("List-Post", b"<mailto:friends@example.test>"),
        ("List-Owner", b"<mailto:friends-owner@example.test>"),
        ("Precedence", b"list"),
        ("X-Loop", b"friends@example.test"),
    ]


def test_list_post_is_no_for_an_announce_only_list() -> None:
    lst = dataclasses.replace(FRIENDS, posting="owners")
    assert dict(list_fields(lst))["List-Post"] == b"NO"
    assert parsed(rewrite_post(standard(), lst))["List-Post"] == "NO"
    assert dict(list_fields(dataclasses.replace(FRIENDS, posting="open")))["List-Post"] == (
        b"<mailto:friends@example.test>")


def test_list_id_of_a_name_with_specials_and_mixed_case_address() -> None:
    lst = dataclasses.replace(FRIENDS, address="Friends@Example.TEST", name="Friends, Inc.")
    fields = dict(list_fields(lst))
    assert fields["List-Id"] == b'"Friends, Inc." <friends.example.test>'
    assert fields["List-Help"] == b"<mailto:Friends-request@Example.TEST?subject=help>"
    assert ListAddresses.of(lst) == ListAddresses(
        "Friends@Example.TEST", "Friends-request@Example.TEST", "Friends-owner@Example.TEST",
        plus_style=False)


# --- line ends and lengths ----------------------------------------------------------------

LONG_NAME = b"Bartholomew Aloysius Fitzgerald-Montgomery " * 5


@pytest.mark.parametrize("lst", [
    FRIENDS,
    dataclasses.replace(FRIENDS, name="Die Freundinnen und Freunde des Gartens " * 4),
    dataclasses.replace(FRIENDS, name="Ж" * 100, subject_prefix="[Ж] "),
])
@pytest.mark.parametrize("sender", [
    b"From: " + LONG_NAME + b"<alice@example.test>",
    # A From line of exactly 998 octets: as X-Original-From it must be folded.
    b"From: \"" + b"x" * 969 + b"\" <alice@example.test>",
    b"From: " + "Ünïcödé ".encode() * 40 + b"<alice@example.test>",
])
def test_lines_we_write_are_short_and_end_in_crlf(lst: ListConfig, sender: bytes) -> None:
    subject = b"Subject: " + b"long subject words " * 20
    out = rewrite_post(standard(sender=sender, subject=subject), lst)
    head = out[: out.index(b"\r\n\r\n") + 2]
    assert b"\n" not in head.replace(b"\r\n", b"")  # no bare LF
    assert b"\r" not in head.replace(b"\r\n", b"")  # no bare CR
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    for field in RawMessage.parse(out).fields:
        written = field.raw.split(b"\r\n")[:-1]
        if field.key == "subject" and lst.subject_prefix.isascii():
            written = written[:1]  # the prefix goes before the author's own bytes
        if field.key in ("from", "reply-to", "list-id", "subject"):
            assert all(len(line) <= 78 for line in written), field.raw
    message = parsed(out)
    assert message["From"].addresses[0].addr_spec == "friends@example.test"
    assert message["Subject"].startswith(lst.subject_prefix.strip() + " long subject")


def test_lf_message_stays_lf() -> None:
    message = make(b"From: J\xc3\xbcrgen <j@example.test>", b"To: friends@example.test",
                   b"Subject: " + b"word " * 30, b"Reply-To: x@example.test", newline=b"\n",
                   body=b"body\n")
    out = rewrite_post(message, dataclasses.replace(FRIENDS, name="Ж" * 40))
    assert b"\r" not in out
    assert out.endswith(b"\n\nbody\n")
    assert parsed(out)["List-Id"] == "Ж" * 40 + " <friends.example.test>"


def test_a_message_without_body_gets_valid_headers() -> None:
    out = rewrite_post(RawMessage.parse(b"From: a@example.test\r\nSubject: x"), FRIENDS)
    assert out.endswith(b"X-Loop: friends@example.test\r\n")
    assert b"Subject: [friends] x\r\n" in out


@pytest.mark.parametrize("path", sorted((SAMPLES / "posts").glob("*.eml")), ids=lambda p: p.name)
def test_sample_posts_keep_their_body(path: Path) -> None:
    message = RawMessage.parse(path.read_bytes())
    out = rewrite_post(message, FRIENDS)
    assert out.endswith(message.separator + message.body)
    assert parsed(out)["From"].addresses[0].addr_spec == "friends@example.test"
    dkim = [f.raw for f in message.get_all("Received")]
    assert [f.raw for f in RawMessage.parse(out).get_all("Received")] == dkim


# --- forward to the owners ----------------------------------------------------------------

def test_forward_to_owners() -> None:
    message = standard(b"List-Id: <other.example.org>", b"Bcc: x@example.test", DKIM)
    out = forward_to_owners(message, FRIENDS)
    result = parsed(out)
    assert result["From"] == "Alice Example via Friends of the garden owners <friends@example.test>"
    assert result["Reply-To"] == "Alice Example <alice@example.test>"
    assert result["X-Original-From"] == "Alice Example <alice@example.test>"
    assert result["Subject"] == "Hello"  # no list prefix on mail for the owners
    assert result.get_all("X-Loop") == ["friends@example.test"]
    for name in ("List-Id", "Bcc", "Return-Path", "Delivered-To", "List-Post", "Precedence"):
        assert name not in result, name
    assert DKIM in out
    assert out.endswith(b"\r\n\r\n" + BODY)


def test_forward_to_owners_keeps_the_authors_reply_to() -> None:
    message = standard(b"Reply-To: <alice@home.example>")
    out = RawMessage.parse(forward_to_owners(message, FRIENDS))
    assert [f.raw for f in out.get_all("Reply-To")] == [b"Reply-To: <alice@home.example>\r\n"]


def test_author_reply_to_from_a_998_octet_from_line_stays_within_998() -> None:
    sender = b"From: \"" + b"x" * 969 + b"\" <alice@example.test>"
    assert len(sender) == 998
    lst = dataclasses.replace(FRIENDS, reply_to="author")
    out = rewrite_post(standard(sender=sender), lst)
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))
    message = parsed(out)
    assert message["Reply-To"].addresses[0].addr_spec == "alice@example.test"
    assert email.utils.getaddresses([message["X-Original-From"]]) == [
        ("x" * 969, "alice@example.test")]
