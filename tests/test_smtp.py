"""The SMTP adapter against real servers: outcomes per recipient, pipelining or not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from listd.config import SmtpConfig
from listd.net.smtp import SmtpConnection, prepare_payload
from tests.servers.smtpcapture import SmtpCapture
from tests.servers.smtpsink import SmtpSink

MESSAGE = b"Subject: t\r\n\r\n.starts with a dot\r\n..two dots\r\nend\r\n"


@contextmanager
def _connection(port: int) -> Iterator[SmtpConnection]:
    connection = SmtpConnection(SmtpConfig(host="127.0.0.1", port=port, tls="none",
                                           timeout=10), None)
    connection.open()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def to_capture(smtp: SmtpCapture) -> Iterator[SmtpConnection]:
    with _connection(smtp.port) as connection:
        yield connection


def test_prepare_payload_dot_stuffs_and_uses_crlf() -> None:
    assert prepare_payload(b"a\n.b\r\n..c\rd") == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"


def test_message_arrives_byte_identical_after_dot_stuffing(
        smtp: SmtpCapture, to_capture: SmtpConnection) -> None:
    outcomes = to_capture.send("list@example.test", ["a@example.test", "b@example.test"],
                               prepare_payload(MESSAGE))
    assert {r: code for r, (code, _) in outcomes.items()} == {"a@example.test": 250,
                                                             "b@example.test": 250}
    (captured,) = smtp.messages
    assert captured.data == MESSAGE


def test_each_recipient_gets_its_own_outcome(smtp: SmtpCapture,
                                             to_capture: SmtpConnection) -> None:
    smtp.rcpt_codes = {"gone@example.test": (550, "5.1.1 gone"),
                       "full@example.test": (452, "4.2.2 mailbox full")}
    outcomes = to_capture.send("list@example.test",
                               ["ok@example.test", "gone@example.test", "full@example.test"],
                               prepare_payload(MESSAGE))
    assert outcomes["ok@example.test"][0] == 250
    assert outcomes["gone@example.test"] == (550, "5.1.1 gone")
    assert outcomes["full@example.test"] == (452, "4.2.2 mailbox full")
    assert [m.rcpts for m in smtp.messages] == [["ok@example.test"]]


def test_all_recipients_refused_sends_no_data_and_the_connection_stays_usable(
        smtp: SmtpCapture, to_capture: SmtpConnection) -> None:
    smtp.rcpt_codes = {"gone@example.test": (550, "5.1.1 gone")}
    outcomes = to_capture.send("list@example.test", ["gone@example.test"],
                               prepare_payload(MESSAGE))
    assert outcomes == {"gone@example.test": (550, "5.1.1 gone")}
    assert smtp.messages == []
    again = to_capture.send("list@example.test", ["ok@example.test"], prepare_payload(MESSAGE))
    assert again["ok@example.test"][0] == 250


def test_data_refusal_applies_to_every_accepted_recipient(
        smtp: SmtpCapture, to_capture: SmtpConnection) -> None:
    smtp.data_failures = [(451, "4.3.0 later")]
    outcomes = to_capture.send("list@example.test", ["a@example.test", "b@example.test"],
                               prepare_payload(MESSAGE))
    assert outcomes == {"a@example.test": (451, "4.3.0 later"),
                        "b@example.test": (451, "4.3.0 later")}


def test_non_ascii_address_goes_with_smtputf8(smtp: SmtpCapture,
                                              to_capture: SmtpConnection) -> None:
    outcomes = to_capture.send("list@example.test", ["zoë@example.test"],
                               prepare_payload(MESSAGE))
    assert outcomes["zoë@example.test"][0] == 250
    assert smtp.messages[0].rcpts == ["zoë@example.test"]


def test_pipelining_server_gets_the_same_outcomes() -> None:
    # smtp-sink offers PIPELINING (MAIL, RCPTs and DATA go out in one write) and no
    # SMTPUTF8: the internationalised address fails alone.
    with SmtpSink(dump=True) as sink, _connection(sink.port) as connection:
        recipients = [f"m{i}@example.test" for i in range(100)]
        outcomes = connection.send("list@example.test", [*recipients, "zoë@example.test"],
                                   prepare_payload(MESSAGE))
        assert outcomes.pop("zoë@example.test")[0] == 553
        assert {code for code, _ in outcomes.values()} == {250}
        sink.wait_for_messages(1)
        assert sink.recipients_count() == dict.fromkeys(recipients, 1)
