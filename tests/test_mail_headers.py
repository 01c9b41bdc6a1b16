"""listd.mail.headers: a message kept as bytes, parsed and joined back without a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from listd.mail.headers import Field, RawMessage, decode_words

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "mail-samples"
SAMPLE_FILES = sorted(SAMPLES.glob("*/*.eml"))

CRLF_MESSAGE = (
    b"Return-Path: <alice@example.test>\r\n"
    b"Received: from mx.example.test (mx.example.test [192.0.2.1])\r\n"
    b"\tby imap.example.test with ESMTPS id 42\r\n"
    b"\tfor <friends@example.test>; Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    b"From: Alice Example <alice@example.test>\r\n"
    b"To: friends@example.test\r\n"
    b"Subject: Hello\r\n"
    b"X-Note: one\r\n"
    b"X-Note: two\r\n"
    b"\r\n"
    b"Body line 1\r\n"
    b"\r\n"
    b"From the body, not a field: really\r\n"
)


def test_the_shared_samples_are_there() -> None:
    # 41 real messages of every class; a missing checkout must not pass as "nothing to test".
    assert len(SAMPLE_FILES) == 41
    assert {p.parent.name for p in SAMPLE_FILES} == {"autoreplies", "bounces", "malformed",
                                                    "posts"}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_sample_serializes_to_its_own_bytes(path: Path) -> None:
    data = path.read_bytes()
    message = RawMessage.parse(data)
    assert message.serialize() == data
    assert b"".join(f.raw for f in message.fields) + message.separator + message.body == data


def test_crlf_message_parts() -> None:
    message = RawMessage.parse(CRLF_MESSAGE)
    assert message.serialize() == CRLF_MESSAGE
    assert message.newline == b"\r\n"
    assert message.separator == b"\r\n"
    assert message.body == b"Body line 1\r\n\r\nFrom the body, not a field: really\r\n"
    assert [f.name for f in message.fields] == [
        "Return-Path", "Received", "From", "To", "Subject", "X-Note", "X-Note"]
    received = message.fields[1]
    assert received.raw == (b"Received: from mx.example.test (mx.example.test [192.0.2.1])\r\n"
                            b"\tby imap.example.test with ESMTPS id 42\r\n"
                            b"\tfor <friends@example.test>; Fri, 04 Dec 2026 10:00:00 +0000\r\n")
    # Unfolding removes the line breaks only, the white space stays.
    assert received.value == ("from mx.example.test (mx.example.test [192.0.2.1])"
                              "\tby imap.example.test with ESMTPS id 42"
                              "\tfor <friends@example.test>; Fri, 04 Dec 2026 10:00:00 +0000")
    assert message.get("subject") == "Hello"
    assert [f.value for f in message.get_all("X-NOTE")] == ["one", "two"]
    assert message.get("Cc") is None


def test_lf_message_roundtrip_and_newline() -> None:
    data = CRLF_MESSAGE.replace(b"\r\n", b"\n")
    message = RawMessage.parse(data)
    assert message.serialize() == data
    assert message.newline == b"\n"
    assert message.separator == b"\n"
    assert message.get("From") == "Alice Example <alice@example.test>"


def test_mbox_from_line_is_kept_verbatim_and_matches_no_name() -> None:
    data = b"From alice@example.test Fri Dec  4 10:00:00 2026\n" + CRLF_MESSAGE
    message = RawMessage.parse(data)
    assert message.serialize() == data
    assert message.fields[0] == Field("", b"From alice@example.test Fri Dec  4 10:00:00 2026\n")
    assert [f.value for f in message.get_all("From")] == ["Alice Example <alice@example.test>"]


def test_folded_header_with_8bit_bytes() -> None:
    data = (b"From: J\xc3\xbcrgen M\xc3\xbcller <j@example.test>\r\n"
            b"Subject: caf\xe9 (latin-1, not UTF-8)\r\n"
            b"X-Long: first part,\r\n"
            b"  second part,\r\n"
            b"\tthird part\r\n"
            b"\r\n"
            b"\xff\xfe binary body\r\n")
    message = RawMessage.parse(data)
    assert message.serialize() == data
    assert message.get("From") == "Jürgen Müller <j@example.test>"
    assert message.get("Subject") == "café (latin-1, not UTF-8)"
    assert message.get("X-Long") == "first part,  second part,\tthird part"
    assert message.addresses("From") == [("Jürgen Müller", "j@example.test")]


@pytest.mark.parametrize("data", [
    b"From: a@example.test\r\nSubject: no body\r\n",
    b"From: a@example.test\r\nSubject: no line end",
    b"From: a@example.test\nSubject: folded\n and no line end",
    b"Subject: only one line",
])
def test_message_without_body_separator(data: bytes) -> None:
    message = RawMessage.parse(data)
    assert message.serialize() == data
    assert message.separator == b""
    assert message.body == b""
    assert message.get("From") in ("a@example.test", None)


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\n", b"\r\nbody only\r\n", b"\r", b" ",
                                  b"\r\r\r\n\r\n", b"no colon here\r\n\r\nbody"])
def test_degenerate_messages_roundtrip(data: bytes) -> None:
    assert RawMessage.parse(data).serialize() == data


def test_empty_message() -> None:
    message = RawMessage.parse(b"")
    assert message.fields == ()
    assert message.body == b""
    assert message.serialize() == b""
    assert message.get("From") is None
    assert message.addresses("From", "To") == []


def test_bare_cr_is_not_a_line_break() -> None:
    # Old Mac line ends: RFC 5322 lines end with CRLF, so this is one (long) line.
    data = b"From: a@example.test\rSubject: x\r\rbody\r"
    message = RawMessage.parse(data)
    assert message.serialize() == data
    assert len(message.fields) == 1
    assert message.get("Subject") is None
    # ... and a CR inside a field of a CRLF message stays inside that field.
    data = b"Subject: a\rb\r\nTo: t@example.test\r\n\r\nbody"
    message = RawMessage.parse(data)
    assert [f.raw for f in message.fields] == [b"Subject: a\rb\r\n", b"To: t@example.test\r\n"]
    assert message.serialize() == data


def test_continuation_before_any_field_and_garbage_lines() -> None:
    data = b" leading continuation\r\nnot a field\r\nFrom: a@example.test\r\n\r\nx"
    message = RawMessage.parse(data)
    assert message.serialize() == data
    assert [f.name for f in message.fields] == ["", "", "From"]
    assert message.get("From") == "a@example.test"


def test_field_name_with_space_before_colon() -> None:
    message = RawMessage.parse(b"Subject : obsolete syntax\r\n\r\n")
    assert message.get("Subject") == "obsolete syntax"


# --- edit ---------------------------------------------------------------------------------

def _raws(message: RawMessage) -> list[bytes]:
    return [f.raw for f in message.fields]


def test_edit_without_changes_is_identity() -> None:
    message = RawMessage.parse(CRLF_MESSAGE)
    assert message.edit().serialize() == CRLF_MESSAGE


def test_remove_keeps_every_other_field_and_the_body() -> None:
    message = RawMessage.parse(CRLF_MESSAGE)
    edited = message.edit(remove=["return-path", "X-Note", "Not-There"])
    assert _raws(edited) == [r for r in _raws(message)
                             if not r.startswith((b"Return-Path:", b"X-Note:"))]
    assert edited.body == message.body
    assert edited.serialize().endswith(b"\r\n\r\n" + message.body)


def test_replace_keeps_position_and_drops_other_fields_of_that_name() -> None:
    message = RawMessage.parse(CRLF_MESSAGE)
    edited = message.edit(replace={"x-note": b"three", "SUBJECT": b"New"})
    raws = _raws(message)
    assert _raws(edited) == [*raws[:4], b"Subject: New\r\n", b"X-Note: three\r\n"]
    assert edited.body == message.body


def test_replace_of_an_absent_field_appends_it_with_a_canonical_name() -> None:
    message = RawMessage.parse(CRLF_MESSAGE)
    edited = message.edit(replace={"x-original-from": b"a@example.test", "list-id": b"<l.x>",
                                   "message-id": b"<1@x>", "reply-to": b"r@example.test"})
    assert _raws(edited)[: len(message.fields)] == _raws(message)
    assert _raws(edited)[len(message.fields):] == [
        b"X-Original-From: a@example.test\r\n", b"List-Id: <l.x>\r\n",
        b"Message-ID: <1@x>\r\n", b"Reply-To: r@example.test\r\n"]


def test_append_adds_at_the_end_in_order_even_if_the_name_exists() -> None:
    message = RawMessage.parse(CRLF_MESSAGE)
    edited = message.edit(append=[("X-Note", b"three"), ("X-Loop", b"l@example.test")])
    assert _raws(edited) == [*_raws(message), b"X-Note: three\r\n", b"X-Loop: l@example.test\r\n"]
    assert [f.value for f in edited.get_all("x-note")] == ["one", "two", "three"]


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_new_fields_use_the_messages_own_line_end(newline: bytes) -> None:
    message = RawMessage.parse(CRLF_MESSAGE.replace(b"\r\n", newline))
    folded_crlf = b"first\r\n second"
    folded_lf = b"first\n second"
    edited = message.edit(replace={"Subject": folded_crlf}, append=[("X-A", folded_lf)])
    data = edited.serialize()
    assert edited.get_all("Subject")[0].raw == b"Subject: first" + newline + b" second" + newline
    assert edited.get_all("X-A")[0].raw == b"X-A: first" + newline + b" second" + newline
    assert edited.get("Subject") == "first second"
    if newline == b"\r\n":
        assert data.count(b"\n") == data.count(b"\r\n")  # no bare LF anywhere
    else:
        assert b"\r" not in data


def test_remove_then_append_the_same_name_moves_it_to_the_end() -> None:
    message = RawMessage.parse(CRLF_MESSAGE)
    edited = message.edit(remove=["To"], append=[("To", b"other@example.test")])
    assert [f.name for f in edited.fields][-1] == "To"
    assert [f.value for f in edited.get_all("To")] == ["other@example.test"]


def test_edit_of_a_message_whose_last_field_has_no_line_end() -> None:
    message = RawMessage.parse(b"From: a@example.test\r\nSubject: x")
    edited = message.edit(append=[("X-Loop", b"l@example.test")])
    assert edited.serialize() == b"From: a@example.test\r\nSubject: x\r\nX-Loop: l@example.test\r\n"
    assert RawMessage.parse(edited.serialize()).get("Subject") == "x"
    replaced = message.edit(replace={"Subject": b"y"})
    assert replaced.serialize() == b"From: a@example.test\r\nSubject: y\r\n"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_editing_a_sample_changes_only_the_named_fields(path: Path) -> None:
    message = RawMessage.parse(path.read_bytes())
    edited = message.edit(remove=["Received"], replace={"Subject": b"S"},
                          append=[("X-Test-Added", b"yes")])
    # Kept as they were; only a last line without line end (the CR-only file is one
    # line) gets one, as a field now follows it.
    kept = [f.raw if f.raw.endswith(b"\n") else f.raw + message.newline
            for f in message.fields if f.key not in ("received", "subject")]
    assert [f.raw for f in edited.fields if f.key not in ("subject", "x-test-added")] == kept
    assert edited.fields[-1].raw == b"X-Test-Added: yes" + message.newline
    assert edited.body == message.body
    assert edited.serialize().endswith(message.separator + message.body)


# --- reading values -----------------------------------------------------------------------

def test_addresses_from_several_fields_in_order() -> None:
    message = RawMessage.parse(
        b"To: \"Doe, John\" <john@example.test>, =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\n"
        b"Cc: undisclosed-recipients:;\r\n"
        b"Cc: carol@example.test (Carol)\r\n\r\n")
    assert message.addresses("To", "Cc") == [
        ("Doe, John", "john@example.test"), ("Jürgen", "j@example.test"),
        ("Carol", "carol@example.test")]


@pytest.mark.parametrize("value", [
    "=?utf\xff8?q?x?=", "=?iso-2\xf722-jp?b?GyRC?=", "=?unknown?q?x?=", "=?utf-8?b?###?=",
    "=?utf-8?q?a?= \xff raw", "=?utf-8?b?/w==?=",
])
def test_decode_words_never_raises(value: str) -> None:
    assert isinstance(decode_words(value), str)


def test_decode_words_decodes() -> None:
    assert decode_words("=?ISO-2022-JP?B?GyRCJEskYyRzJDMbKEI=?=") == "にゃんこ"
    assert decode_words("=?windows-1252?q?Caf=E9_=80?=") == "Café €"
    assert decode_words("plain") == "plain"
