"""Fast checks that the real-server harness itself behaves as listd tests expect."""

from __future__ import annotations

import smtplib
import ssl
import time
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.servers.dovecot import Dovecot
from tests.servers.smtpcapture import SmtpCapture
from tests.servers.smtpsink import SmtpSink

LIST = "list@example.test"
SENDER = "sender@example.test"
MSG = b"From: a@example.test\r\nTo: list@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


def client_context(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


# ------------------------------------------------------------------ Dovecot
def test_append_returns_increasing_uids_and_fetch_is_byte_identical(dovecot: Dovecot) -> None:
    uids = [dovecot.append(LIST, MSG.replace(b"hi", b"hi %d" % i)) for i in range(3)]
    assert uids == sorted(uids) and len(set(uids)) == 3
    assert dovecot.uids(LIST) == uids
    assert dovecot.fetch(LIST, uids[1]) == MSG.replace(b"hi", b"hi 1")


def test_append_normalises_mbox_line_and_bare_lf(dovecot: Dovecot) -> None:
    uid = dovecot.append(LIST, b"From someone Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n")
    assert dovecot.fetch(LIST, uid) == b"Subject: x\r\n\r\nbody\r\n"


def test_flags_on_append_and_add_flags(dovecot: Dovecot) -> None:
    uid = dovecot.append(LIST, MSG, flags=[b"\\Flagged"])
    assert dovecot.flags(LIST, uid) == {b"\\Flagged"}
    dovecot.fetch(LIST, uid)  # BODY.PEEK: reading must not mark it seen
    assert b"\\Seen" not in dovecot.flags(LIST, uid)
    dovecot.add_flags(LIST, [uid], [b"\\Seen"])
    assert dovecot.flags(LIST, uid) == {b"\\Flagged", b"\\Seen"}


def test_append_to_other_folder(dovecot: Dovecot) -> None:
    uid = dovecot.append(LIST, MSG, folder="Archive")
    assert dovecot.uids(LIST, "Archive") == [uid]
    assert dovecot.uids(LIST) == []


def test_lmtp_delivery_and_unknown_user(dovecot: Dovecot) -> None:
    dovecot.deliver_lmtp(["alice@example.test", "bob@example.test"], MSG)
    assert len(dovecot.uids("alice@example.test")) == 1
    assert len(dovecot.uids("bob@example.test")) == 1
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        dovecot.deliver_lmtp("nosuchuser@example.test", MSG)
    assert exc.value.recipients["nosuchuser@example.test"][0] == 550


def test_mailboxes_start_empty(dovecot: Dovecot) -> None:
    dovecot.append(LIST, MSG)
    dovecot.reset([LIST])
    assert dovecot.uids(LIST) == []
    assert dovecot.mailbox_status(LIST).uidnext == 1


def test_restart_keeps_ports_and_mail(dovecot: Dovecot) -> None:
    ports = (dovecot.imap_port, dovecot.imaps_port, dovecot.lmtp_port)
    uid = dovecot.append(LIST, MSG)
    old_pid = dovecot.pid
    dovecot.restart()
    assert dovecot.pid != old_pid
    assert (dovecot.imap_port, dovecot.imaps_port, dovecot.lmtp_port) == ports
    assert dovecot.uids(LIST) == [uid]
    assert dovecot.fetch(LIST, uid) == MSG


def test_set_uidvalidity(dovecot: Dovecot) -> None:
    dovecot.append(LIST, MSG)
    before = dovecot.mailbox_status(LIST)
    dovecot.set_uidvalidity(LIST, before.uidvalidity + 1000)
    after = dovecot.mailbox_status(LIST)
    assert after == (before.uidvalidity + 1000, before.uidnext)
    with dovecot.imap(LIST) as c:
        assert c.select_folder("INBOX")[b"UIDVALIDITY"] == before.uidvalidity + 1000


def test_imaps_and_starttls_verify_with_cafile(dovecot: Dovecot) -> None:
    ctx = client_context(dovecot.cafile)
    with IMAPClient(dovecot.host, port=dovecot.imaps_port, ssl=True, ssl_context=ctx) as c:
        c.login(LIST, "listpw")
        assert c.select_folder("INBOX")[b"EXISTS"] == 0
    with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as c:
        c.starttls(ctx)
        c.login(LIST, "listpw")


# --------------------------------------------------------------- SmtpCapture
def test_starttls_delivery_is_captured(smtp: SmtpCapture) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
        s.starttls(context=client_context(smtp.cafile))
        s.ehlo()  # smtplib does not re-EHLO after STARTTLS by itself
        s.sendmail(SENDER, ["a@example.test", "b@example.test"], MSG)
    (m,) = smtp.wait_for_messages(1)
    assert (m.mail_from, m.rcpts, m.data, m.auth_login, m.tls) == (
        SENDER,
        ["a@example.test", "b@example.test"],
        MSG,
        None,
        True,
    )


def test_plain_and_implicit_tls(smtp: SmtpCapture) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
        s.sendmail(SENDER, ["a@example.test"], MSG)
    with smtplib.SMTP_SSL(
        smtp.host, smtp.tls_port, timeout=10, context=client_context(smtp.cafile)
    ) as s:
        s.sendmail(SENDER, ["b@example.test"], MSG)
    assert [m.tls for m in smtp.wait_for_messages(2)] == [False, True]


def test_require_starttls_can_be_switched_on(smtp: SmtpCapture) -> None:
    smtp.require_starttls = True  # applies to new connections
    with (
        smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s,
        pytest.raises(smtplib.SMTPSenderRefused) as exc,
    ):
        s.sendmail(SENDER, ["a@example.test"], MSG)
    assert exc.value.smtp_code == 530


def test_auth_plain_good_and_bad(smtp_auth: SmtpCapture) -> None:
    ctx = client_context(smtp_auth.cafile)
    with smtplib.SMTP(smtp_auth.host, smtp_auth.port, timeout=10) as s:
        s.starttls(context=ctx)
        s.ehlo()
        # smtplib's auth_plain/auth_login read the credentials from the object
        s.user, s.password = "list@example.test", "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            s.auth("PLAIN", s.auth_plain)
        assert exc.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused):  # unauthenticated: 530
            s.sendmail(SENDER, ["a@example.test"], MSG)
    with smtplib.SMTP(smtp_auth.host, smtp_auth.port, timeout=10) as s:
        s.starttls(context=ctx)
        s.ehlo()
        s.user, s.password = "list@example.test", "listpw"
        s.auth("PLAIN", s.auth_plain)
        s.sendmail(SENDER, ["a@example.test"], MSG)
    assert smtp_auth.wait_for_messages(1)[0].auth_login == "list@example.test"
    assert smtp_auth.auth_failures == 1


def test_auth_login_over_implicit_tls(smtp_auth: SmtpCapture) -> None:
    ctx = client_context(smtp_auth.cafile)
    with smtplib.SMTP_SSL(smtp_auth.host, smtp_auth.tls_port, timeout=10, context=ctx) as s:
        # auth() sends no EHLO itself; without it the server's 503 "send EHLO
        # first" counts as success in smtplib and MAIL then fails with 530
        s.ehlo()
        s.user, s.password = "list@example.test", "listpw"
        s.auth("LOGIN", s.auth_login)
        s.sendmail(SENDER, ["b@example.test"], MSG)
    (m,) = smtp_auth.wait_for_messages(1)
    assert (m.auth_login, m.tls) == ("list@example.test", True)


def test_rcpt_codes_reject_single_recipients(smtp: SmtpCapture) -> None:
    smtp.rcpt_codes = {
        "gone@example.test": (550, "5.1.1 no such user"),
        "Busy@example.test": (451, "4.2.0 try later"),
    }
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
        refused = s.sendmail(
            SENDER, ["ok@example.test", "gone@example.test", "busy@example.test"], MSG
        )
    assert {r: code for r, (code, _) in refused.items()} == {
        "gone@example.test": 550,
        "busy@example.test": 451,
    }
    assert smtp.wait_for_messages(1)[0].rcpts == ["ok@example.test"]


def test_data_failures_then_success(smtp: SmtpCapture) -> None:
    smtp.data_failures = [(451, "4.3.0 try again later")]
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
        with pytest.raises(smtplib.SMTPDataError) as exc:
            s.sendmail(SENDER, ["a@example.test"], MSG)
        assert exc.value.smtp_code == 451
        assert smtp.messages == []
        s.sendmail(SENDER, ["a@example.test"], MSG)  # same connection: 250 now
    assert len(smtp.wait_for_messages(1)) == 1
    assert smtp.data_failures == []


def test_drop_after_data_fires_once(smtp: SmtpCapture) -> None:
    smtp.drop_after_data = 1
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
        s.sendmail(SENDER, ["a@example.test"], MSG)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.sendmail(SENDER, ["b@example.test"], MSG)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:  # reconnect: works
        s.sendmail(SENDER, ["b@example.test"], MSG)
    assert [m.rcpts for m in smtp.wait_for_messages(2)] == [["a@example.test"], ["b@example.test"]]
    assert smtp.dropped == 1 and smtp.drop_after_data is None


def test_drop_after_data_over_tls(smtp: SmtpCapture) -> None:
    smtp.drop_after_data = 0
    ctx = client_context(smtp.cafile)
    with (
        smtplib.SMTP_SSL(smtp.host, smtp.tls_port, timeout=10, context=ctx) as s,
        pytest.raises(smtplib.SMTPServerDisconnected),
    ):
        s.sendmail(SENDER, ["a@example.test"], MSG)
    assert smtp.dropped == 1 and smtp.messages == []


def test_data_delay_holds_the_reply(smtp: SmtpCapture) -> None:
    smtp.data_delay = 0.3
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
        start = time.monotonic()
        s.sendmail(SENDER, ["a@example.test"], MSG)
        # a lower bound only: the server cannot reply before its delay is over
        assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize("count", [500, 3000])
def test_large_fanout_in_one_transaction(smtp: SmtpCapture, count: int) -> None:
    rcpts = [f"member{i}@example.test" for i in range(count)]
    with smtplib.SMTP(smtp.host, smtp.port, timeout=30) as s:
        assert s.sendmail(SENDER, rcpts, MSG) == {}
    smtp.wait_for_messages(1)
    counts = smtp.recipients_count()
    assert len(counts) == count and set(counts.values()) == {1}


def test_wait_for_times_out_with_description(smtp: SmtpCapture) -> None:
    with pytest.raises(TimeoutError, match="0 messages"):
        smtp.wait_for(lambda msgs: len(msgs) > 0, timeout=0.05)


# ----------------------------------------------------------------- smtp-sink
def test_smtp_sink_accepts_messages(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as s:
        for _ in range(3):
            s.sendmail(SENDER, ["a@example.test"], MSG)
    assert smtp_sink.wait_for_messages(3) >= 3


def test_smtp_sink_dump_counts_recipients() -> None:
    with SmtpSink(dump=True) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as s:
            s.sendmail(SENDER, ["a@example.test", "b@example.test"], MSG)
            s.sendmail(SENDER, ["a@example.test"], MSG)
        sink.wait_for_messages(2)
        assert sink.recipients_count() == {"a@example.test": 2, "b@example.test": 1}
