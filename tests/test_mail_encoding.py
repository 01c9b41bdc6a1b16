"""listd.mail.encoding: the phrases and values listd writes itself."""

from __future__ import annotations

import email.header
import email.utils

import pytest

from listd.mail.encoding import MAX_LINE, encoded_words, mailbox, phrase, unstructured


def _decoded(value: str) -> str:
    """What a mail reader shows for a phrase or unstructured value we wrote."""
    unfolded = value.replace("\r\n", "")
    return str(email.header.make_header(email.header.decode_header(unfolded)))


def _display_name(value: str) -> str:
    """The display name a reader sees in "phrase <addr>" (quotes and encoded words undone)."""
    ((name, address),) = email.utils.getaddresses([value.replace("\r\n", "")])
    assert address == "x@example.test"
    return _decoded(name)


def _line_lengths(value: str, offset: int) -> list[int]:
    lines = value.split("\r\n")
    return [len(lines[0]) + offset, *(len(line) for line in lines[1:])]


@pytest.mark.parametrize("name", ["Alice", "Alice Example", "O'Brien", "a+b=c",
                                  "x!#$%&*/?^_`{|}~-y"])
def test_atoms_stay_as_they_are(name: str) -> None:
    assert phrase(name) == name


@pytest.mark.parametrize(("name", "expected"), [
    ("Doe, John", '"Doe, John"'),
    ("alice@example.test", '"alice@example.test"'),
    ("A. Example", '"A. Example"'),
    ("Team (Ops)", '"Team (Ops)"'),
    ("<admin>", '"<admin>"'),
    ("semi;colon:", '"semi;colon:"'),
    ('Say "hi"', '"Say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ('end\\', '"end\\\\"'),
    ("[x]", '"[x]"'),
])
def test_specials_are_quoted(name: str, expected: str) -> None:
    assert phrase(name) == expected
    assert _display_name(f"{phrase(name)} <x@example.test>") == name


def test_a_literal_encoded_word_is_shown_literally() -> None:
    # Readers decode "=?...?=" even inside quotes, so only encoding it keeps it literal.
    value = phrase("=?utf-8?q?evil?=")
    assert value != "=?utf-8?q?evil?=" and value.startswith("=?utf-8?")
    assert _display_name(f"{value} <x@example.test>") == "=?utf-8?q?evil?="


def test_white_space_is_collapsed_and_empty_gives_nothing() -> None:
    assert phrase("  Alice \t  Example \r\n ") == "Alice Example"
    assert phrase("") == ""
    assert phrase(" \t ") == ""


@pytest.mark.parametrize("name", [
    "Jürgen Müller", "Zoë", "山田 太郎", "Ελένη", "Ж" * 80, "Müller, Hans \"Hansi\"",
    "café \\ (ok)", "emoji 🎉 party", "=?utf-8?q?not-a-word?= ü",
])
def test_non_ascii_becomes_encoded_words_that_decode_back(name: str) -> None:
    value = phrase(name)
    assert value.isascii()
    assert "=?utf-8?" in value
    assert _decoded(value) == name
    assert _display_name(f"{value} <x@example.test>") == name
    assert all(n <= MAX_LINE for n in _line_lengths(value, len("From: ")))


def test_long_ascii_names_fold_within_78_columns() -> None:
    name = " ".join(["Bartholomew"] * 20)
    value = phrase(name)
    assert "\r\n " in value
    assert all(n <= MAX_LINE for n in _line_lengths(value, len("From: ")))
    assert value.replace("\r\n", "") == name  # folding only at spaces, nothing lost
    quoted = phrase(", ".join(["Bartholomew"] * 20))
    assert all(n <= MAX_LINE for n in _line_lengths(quoted, len("From: ")))
    assert _display_name(f"{quoted} <x@example.test>") == ", ".join(["Bartholomew"] * 20)


def test_a_word_too_long_to_fold_is_encoded() -> None:
    name = "x" * 1000
    value = phrase(name)
    assert all(n <= MAX_LINE for n in _line_lengths(value, len("From: ")))
    assert _decoded(value) == name


def test_phrase_honours_the_offset_of_its_field() -> None:
    name = "Friends of the garden and of everything else that grows in it"
    offset = len("Disposition-Notification-To: ")
    assert all(n <= MAX_LINE for n in _line_lengths(phrase(name, offset), offset))


@pytest.mark.parametrize("name", ["Friends", "Friends, and more", "Grüße",
                                  " ".join(["Bartholomew"] * 6), "Ж" * 60])
def test_mailbox_folds_before_the_address_when_the_line_is_full(name: str) -> None:
    value = mailbox(name, "x@example.test", "From")
    assert all(n <= MAX_LINE for n in _line_lengths(value, len("From: ")))
    assert _display_name(value) == name
    assert value.endswith("<x@example.test>")


def test_mailbox_without_a_name() -> None:
    assert mailbox("", "x@example.test", "Reply-To") == "<x@example.test>"


@pytest.mark.parametrize("text", [
    "Hello", "[friends] Re: a subject", " ".join(["word"] * 60), "naïve café",
    "日本語の件名" * 10, "literal =?utf-8?q?x?= in text", "y" * 200,
])
def test_unstructured_round_trip_and_line_length(text: str) -> None:
    value = unstructured(text, "Subject")
    assert value.isascii()
    assert all(n <= MAX_LINE for n in _line_lengths(value, len("Subject: ")))
    assert _decoded(value) == text


def test_unstructured_ascii_is_left_readable() -> None:
    assert unstructured("[friends] Re: hi", "Subject") == "[friends] Re: hi"


def test_encoded_words_are_valid_rfc2047() -> None:
    value = encoded_words("Grüße aus Köln " * 10, prefix_length=len("Subject: "))
    for word in value.split("\r\n "):
        assert word.startswith("=?utf-8?") and word.endswith("?=")
        assert len(word) <= 75  # RFC 2047: an encoded word is at most 75 characters
