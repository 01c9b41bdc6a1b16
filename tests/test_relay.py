"""End to end: real Dovecot in, real SMTP server out, the real listd and listctl."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from tests.listd_env import LIST_USER, ListdEnv, make_message, stop, wait_until
from tests.servers.dovecot import Dovecot, normalise_message
from tests.servers.smtpcapture import SmtpCapture

# Real bounces and auto-replies of other MTAs, kept beside the checkout (not copied in).
SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "mail-samples"


@pytest.fixture
def env(tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> ListdEnv:
    listd = ListdEnv(tmp_path, dovecot, smtp.port)
    listd.subscribe("friends", "Alice Example <alice@example.test>", "bob@example.test",
                    "carol@example.test", "dave@example.test")
    result = listd.listctl("unsubscribe", "friends", "dave@example.test")
    assert result.returncode == 0, result.stderr
    return listd


def _body(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[2]


def test_post_reaches_every_active_member_once_with_list_headers(
        env: ListdEnv, smtp: SmtpCapture) -> None:
    body = b"Caf\xc3\xa9 at noon.\r\n.leading dot line\r\n\r\n-- \r\nAlice\r\n"
    raw = make_message(body=body, extra=["Delivered-To: list@example.test",
                                         "Disposition-Notification-To: alice@example.test"])
    env.post(raw)
    env.once()

    counts = smtp.recipients_count()
    # The author gets no copy of her own post; dave unsubscribed.
    assert counts == {"bob@example.test": 1, "carol@example.test": 1}
    (copy,) = smtp.messages
    assert copy.mail_from == "friends@example.test"
    assert _body(copy.data) == body  # byte-identical, dot line included
    parsed = email.message_from_bytes(copy.data, policy=email.policy.default)
    assert parsed["From"] == "Alice Example via Friends of the garden <friends@example.test>"
    assert parsed["X-Original-From"] == "Alice Example <alice@example.test>"
    assert parsed["Reply-To"] == "Friends of the garden <friends@example.test>"
    assert parsed["Subject"] == "[friends] Hello"
    assert parsed["List-Id"] == "Friends of the garden <friends.example.test>"
    assert parsed["List-Post"] == "<mailto:friends@example.test>"
    assert parsed["List-Unsubscribe"] == "<mailto:friends-request@example.test?subject=unsubscribe>"
    assert parsed["Precedence"] == "list"
    assert parsed["X-Loop"] == "friends@example.test"
    assert "Delivered-To" not in parsed and "Disposition-Notification-To" not in parsed
    # The message is flagged seen in the mailbox, and journaled as relayed.
    assert b"\\Seen" in env.dovecot.flags(LIST_USER, env.dovecot.uids(LIST_USER)[0])
    status = env.status()
    assert status["deliveries_sent"] == 2 and status["deliveries_pending"] == 0

    # A second run sends nothing again.
    env.once()
    assert len(smtp.messages) == 1


def test_message_read_by_someone_else_first_is_still_relayed(
        env: ListdEnv, smtp: SmtpCapture) -> None:
    env.post(make_message(), flags=[b"\\Seen"])
    env.once()
    assert smtp.recipients_count() == {"bob@example.test": 1, "carol@example.test": 1}


def test_non_member_post_is_refused_and_notified_once(env: ListdEnv, smtp: SmtpCapture) -> None:
    env.post(make_message(sender="Mallory <mallory@example.test>", subject="Buy now"))
    env.post(make_message(sender="Mallory <mallory@example.test>", subject="Buy again"))
    env.once()
    rcpts = smtp.recipients_count()
    assert rcpts == {"mallory@example.test": 1, "owner@example.test": 1}
    to_sender = next(m for m in smtp.messages if m.rcpts == ["mallory@example.test"])
    notice = email.message_from_bytes(to_sender.data, policy=email.policy.default)
    assert notice["Auto-Submitted"] == "auto-replied"
    assert "only members may post" in notice.get_content()
    assert "Buy now" in notice.get_content()


@pytest.mark.parametrize("extra", [
    ["Auto-Submitted: auto-replied"],
    ["Precedence: bulk"],
    ["X-Loop: friends@example.test"],
    ["List-Id: Friends <friends.example.test>"],
    ["Return-Path: <>"],
])
def test_auto_replies_and_loops_are_not_relayed(env: ListdEnv, smtp: SmtpCapture,
                                                extra: list[str]) -> None:
    env.post(make_message(extra=extra))
    env.post(make_message(sender="Friends <friends@example.test>"))
    env.once()
    assert smtp.messages == []


def test_real_auto_replies_and_bounces_are_never_fanned_out(
        env: ListdEnv, smtp: SmtpCapture) -> None:
    samples = sorted((SAMPLES / "autoreplies").glob("*.eml")) + sorted(
        (SAMPLES / "bounces").glob("*.eml"))
    assert len(samples) > 30, f"the mail samples are missing from {SAMPLES}"
    identities = set()
    for sample in samples:
        # As the receiving MTA would record it: addressed to the list.
        raw = normalise_message(sample.read_bytes())
        env.post(b"Delivered-To: friends@example.test\r\n" + raw)
        parsed = email.message_from_bytes(raw)
        identities.add((parsed["Message-ID"], parsed["Date"]))
    env.once()
    assert smtp.messages == []
    # Some samples are the same message with other line ends: journaled once.
    assert env.status()["messages_journaled"] == len(identities)


def test_uidvalidity_change_resends_nothing(env: ListdEnv, smtp: SmtpCapture) -> None:
    env.post(make_message(subject="first"))
    env.once()
    assert len(smtp.messages) == 1
    env.dovecot.set_uidvalidity(LIST_USER, 12345)
    env.once()
    assert len(smtp.messages) == 1
    assert env.status()["uidvalidity"] == 12345
    env.post(make_message(subject="second"))
    env.once()
    assert [m.data.count(b"second") > 0 for m in smtp.messages] == [False, True]


def test_same_message_delivered_twice_to_the_mailbox_is_relayed_once(
        env: ListdEnv, smtp: SmtpCapture) -> None:
    raw = make_message(message_id="<dup@example.test>")
    env.post(raw)
    env.post(raw)
    env.once()
    assert smtp.recipients_count() == {"bob@example.test": 1, "carol@example.test": 1}


def test_smtp_451_is_retried_until_accepted(env: ListdEnv, smtp: SmtpCapture) -> None:
    smtp.data_failures = [(451, "4.3.0 try again later")]
    env.post(make_message())
    env.once()
    assert smtp.messages == []
    status = env.status()
    assert status["deliveries_pending"] == 2
    env.once()  # retry_initial is 0 in tests: due again at once
    assert smtp.recipients_count() == {"bob@example.test": 1, "carol@example.test": 1}
    assert env.status()["deliveries_pending"] == 0


def test_smtp_550_for_one_recipient_does_not_stop_the_others(
        env: ListdEnv, smtp: SmtpCapture) -> None:
    smtp.rcpt_codes = {"carol@example.test": (550, "5.1.1 no such user")}
    env.post(make_message())
    env.once()
    assert smtp.recipients_count() == {"bob@example.test": 1}
    status = env.status()
    assert status["deliveries_failed"] == 1 and status["deliveries_pending"] == 0
    env.once()  # a permanent failure is not retried
    assert smtp.recipients_count() == {"bob@example.test": 1}
    text = env.listctl("status").stdout
    assert "carol@example.test" in text and "550" in text


def test_dropped_connection_continues_with_the_rest(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port, smtp_extra={"max_recipients": 2})
    env.subscribe("friends", *(f"m{i}@example.test" for i in range(10)))
    smtp.drop_after_data = 1
    env.post(make_message(sender="m0@example.test"))
    env.once()
    counts = smtp.recipients_count()
    assert set(counts) == {f"m{i}@example.test" for i in range(1, 10)}
    assert smtp.dropped == 1


def test_daemon_survives_an_imap_restart(env: ListdEnv, smtp: SmtpCapture) -> None:
    daemon = env.start()
    try:
        env.post(make_message(subject="before"))
        smtp.wait_for(lambda msgs: len(msgs) == 1, timeout=20)
        env.dovecot.restart()
        env.post(make_message(subject="after"))
        smtp.wait_for(lambda msgs: len(msgs) == 2, timeout=30)
    finally:
        code, stderr = stop(daemon)
    assert code == 0, stderr
    print(stderr)
    assert "failure 1 in a row" in stderr
    assert smtp.recipients_count() == {"bob@example.test": 2, "carol@example.test": 2}


def test_daemon_with_starttls_and_smtp_auth(tmp_path: Path, dovecot: Dovecot,
                                           smtp_auth: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp_auth.port,
                   imap_extra={"port": dovecot.imap_port, "tls": "starttls"},
                   smtp_extra={"tls": "starttls", "username": LIST_USER,
                               "ca_file": str(smtp_auth.cafile)})
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    env.post(make_message())
    env.once()
    (copy,) = smtp_auth.messages
    assert copy.rcpts == ["bob@example.test"] and copy.tls
    assert copy.auth_login == LIST_USER
    wait_until(lambda: env.status()["deliveries_sent"] == 1)
