"""listd.mail.bounces: who bounced and for which list; real bounces, our DSNs, hostile input."""

from __future__ import annotations

import email
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from listd.mail import dsn
from listd.mail.addresses import is_valid_address
from listd.mail.bounces import BounceReport, _normalise, _normalise_message, scan_bounce

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "mail-samples"
MANIFEST: list[dict[str, Any]] = json.loads((SAMPLES / "MANIFEST.json").read_text())
BY_FILE = {entry["file"]: entry for entry in MANIFEST}


def load(file: str) -> bytes:
    """A sample without its mbox ``From `` line (the rest as stored: LF, CRLF or CR ends)."""
    raw = (SAMPLES / file).read_bytes()
    if raw.startswith(b"From "):
        line_end = re.search(rb"\r\n|\n|\r", raw)
        raw = raw[line_end.end():] if line_end else b""
    return raw


def entries(*classes: str) -> list[str]:
    return [entry["file"] for entry in MANIFEST if entry["class"] in classes]


# ------------------------------------------------------------------ real samples
# Who really bounced, read from each sample by hand: the MANIFEST's expected_bounced_addresses
# and expected_bounce_kind are null for every sample, so they cannot be the reference (they are
# used instead as soon as they are filled in). FALLBACK marks the bounces flufl.bounce 6.0.0
# finds no address in, where the answer comes from listd.mail.dsn.
FALLBACK = "found by listd.mail.dsn"
P, T = "permanent", "temporary"
VERIFIED: dict[str, tuple[str, frozenset[str], str]] = {
    # file: (kind, the failed recipients, FALLBACK or "")
    "bounces/sisimai-bsd-lhost-amazonses-01.eml":
        (P, frozenset({"shironeko@example.co.jp"}), ""),
    "bounces/sisimai-bsd-lhost-courier-01.eml":
        (P, frozenset({"kijitora@example.co.jp"}), ""),
    "bounces/sisimai-bsd-lhost-exchange2007-01.eml":
        (P, frozenset({"mikeneko@example.co.jp"}), ""),
    "bounces/sisimai-bsd-lhost-exim-01.eml":
        (P, frozenset({"kijitora@example.ed.jp"}), ""),
    "bounces/sisimai-bsd-lhost-gmail-01.eml":
        (P, frozenset({"userunknown@example.jp"}), ""),
    "bounces/sisimai-bsd-lhost-googlegroups-01.eml":
        (P, frozenset({"libsisimai@googlegroups.com"}), ""),
    "bounces/sisimai-bsd-lhost-googleworkspace-01.eml":
        (P, frozenset({"neko-nyaan-cat-meeting@google-groups.example.com"}), ""),
    "bounces/sisimai-bsd-lhost-mailru-01.eml":
        (P, frozenset({"kijitora@example.jp"}), ""),
    "bounces/sisimai-bsd-lhost-mimecast-01.eml":
        (P, frozenset({"sabineko@neko.ef.example.org"}), FALLBACK),
    "bounces/sisimai-bsd-lhost-office365-01.eml":
        (P, frozenset({"kijitora@example.com"}), FALLBACK),
    "bounces/sisimai-bsd-lhost-opensmtpd-01.eml":
        (P, frozenset({"apdugoaidugoaidugoaeiudggadi@gmail.com"}), FALLBACK),
    "bounces/sisimai-bsd-lhost-outlook-01.eml":
        (P, frozenset({"kijitora@example.jp"}), ""),
    # Original-Recipient (what was sent); Final-Recipient r@p351355.pool.example.ne.jp is where
    # the recipient's own forwarding led.
    "bounces/sisimai-bsd-lhost-postfix-01.eml":
        (P, frozenset({"kijitora@example.org"}), ""),
    "bounces/sisimai-bsd-lhost-powermta-01.eml":
        (P, frozenset({"kijitora@example.jp"}), ""),
    "bounces/sisimai-bsd-lhost-qmail-01.eml":
        (P, frozenset({"kijitora@example.ne.jp"}), ""),
    "bounces/sisimai-bsd-lhost-sendgrid-01.eml":
        (P, frozenset({"kijitora@example.jp"}), ""),
    "bounces/sisimai-bsd-lhost-sendmail-01.eml":
        (P, frozenset({"userunknown@bouncehammer.jp"}), ""),
    "bounces/sisimai-bsd-lhost-trendmicro-01.eml":
        (P, frozenset({"kijitora@example.co.jp"}), FALLBACK),
    "bounces/sisimai-bsd-lhost-yahoo-01.eml":
        (P, frozenset({"kijitora@example.org"}), FALLBACK),
    "bounces/sisimai-bsd-lhost-yandex-01.eml":
        (P, frozenset({"kijitora@example.jp"}), ""),
    "bounces/sisimai-bsd-lhost-zoho-01.eml":
        (P, frozenset({"kijitora@example.co.jp"}), ""),
    "bounces/sisimai-bsd-rfc3464-04.eml":
        (P, frozenset({"kijitora@neko.example.edu"}), ""),
    "bounces/sisimai-bsd-rfc3464-07.eml":
        (T, frozenset({"kijitora@example.net"}), ""),
    "bounces/sisimai-bsd-rhost-aol-01.eml":
        (P, frozenset({"kijitora@example.jp"}), ""),
    "bounces/sisimai-bsd-rhost-apple-01.eml":
        (P, frozenset({"kijitora@example.jp"}), ""),
    "bounces/sisimai-bsd-rhost-tencent-01.eml":
        (P, frozenset({"nekochan@qq.example.cn"}), ""),
    "bounces/sisimai-dos-lhost-googleworkspace-01.eml":
        (P, frozenset({"neko-nyaan-cat-meeting@google-groups.example.com"}), ""),
    "bounces/sisimai-err-make-test-01.eml":
        (P, frozenset({"domain-does-not-exist@example.gov"}), ""),
    "bounces/sisimai-not-rb-issue-368-bug.eml":
        (P, frozenset({"xxxx@yyyyyy.net"}), FALLBACK),
    "malformed/sisimai-mac-rhost-cox-01.eml":
        (P, frozenset({"recipient55@cox.net"}), ""),
}
# Feedback reports (ARF) are in bounces/ but report no delivery failure.
NOT_BOUNCES = [*entries("autoreplies", "posts"), "bounces/sisimai-bsd-arf-01.eml",
               "bounces/sisimai-bsd-arf-02.eml"]
# The MTAs whose bounces listd must understand at the least.
REQUIRED = [
    "bounces/sisimai-bsd-lhost-postfix-01.eml",
    "bounces/sisimai-bsd-rhost-apple-01.eml",  # Postfix at iCloud
    "bounces/sisimai-bsd-lhost-exim-01.eml",
    "bounces/sisimai-bsd-lhost-mailru-01.eml",  # Exim at Mail.ru
    "bounces/sisimai-bsd-lhost-exchange2007-01.eml",
    "bounces/sisimai-bsd-lhost-office365-01.eml",
    "bounces/sisimai-bsd-lhost-outlook-01.eml",
    "bounces/sisimai-bsd-lhost-gmail-01.eml",
    "bounces/sisimai-bsd-lhost-qmail-01.eml",
    "bounces/sisimai-bsd-lhost-sendmail-01.eml",
    "bounces/sisimai-err-make-test-01.eml",  # sendmail, postmaster notify
    "bounces/sisimai-bsd-rfc3464-04.eml",  # sendmail 8.8.8
]
LIST_IDS = {
    "bounces/sisimai-bsd-lhost-sendgrid-01.eml": {"shironeko.example.jp"},  # message/rfc822
    # text/rfc822-headers; the DSN was relayed by Mailman, so its own header has a List-Id too
    "bounces/sisimai-bsd-rfc3464-07.eml": {"neko-list.example.org"},
}


def expected(file: str) -> tuple[str, frozenset[str]]:
    """(kind, addresses): the MANIFEST's, if it has them, else ours."""
    entry = BY_FILE[file]
    kind, addresses, _ = VERIFIED[file]
    if entry["expected_bounced_addresses"] is not None:
        addresses = frozenset(a.lower() for a in entry["expected_bounced_addresses"])
    if entry["expected_bounce_kind"] in (P, T):
        kind = entry["expected_bounce_kind"]
    return kind, addresses


# What flufl.bounce 6.0.0 blames wrongly in Zoho's notice, which copies the original's header
# into its text: the original's sender and Message-ID. scan_bounce drops exactly these.
FLUFL_WRONG = {
    "bounces/sisimai-bsd-lhost-zoho-01.eml": frozenset({
        "shironeko@zoho.example.com",
        "14a3e1b4b5a.10b1a4c5610175.8588386083425091336@zoho.example.com"}),
}


def test_samples_are_there() -> None:
    assert len(MANIFEST) == 41, f"the mail samples are missing from {SAMPLES}"
    assert all((SAMPLES / entry["file"]).is_file() for entry in MANIFEST)
    # every sample is either a bounce we know the answer for or not a bounce at all
    assert set(VERIFIED) | set(NOT_BOUNCES) == set(BY_FILE)
    assert not set(VERIFIED) & set(NOT_BOUNCES)
    assert set(REQUIRED) <= set(VERIFIED)


@pytest.mark.parametrize("file", list(BY_FILE))
def test_flufl_bounces_answer_stands_where_it_has_one(file: str) -> None:
    reference = BY_FILE[file]["reference_flufl_bounce_6_0_0_computed"]
    permanent = frozenset(a.lower() for a in reference["permanent"])
    temporary = frozenset(a.lower() for a in reference["temporary"]) - permanent
    wrong = FLUFL_WRONG.get(file, frozenset())
    assert wrong <= permanent | temporary  # the documented difference is all there is
    report = scan_bounce(load(file))
    if permanent or temporary:
        assert (report.permanent, report.temporary) == (permanent - wrong, temporary - wrong)
    else:  # the fallback answers for the bounces marked FALLBACK, and for nothing else
        assert bool(report.addresses) == (file in VERIFIED and VERIFIED[file][2] == FALLBACK)


def _assert_found(file: str) -> None:
    kind, addresses = expected(file)
    report = scan_bounce(load(file))
    assert report.addresses == addresses  # all of them, and no one else
    assert (report.temporary if kind == T else report.permanent) == addresses


@pytest.mark.parametrize("file", REQUIRED)
def test_the_bounced_recipient_is_found_postfix_exim_exchange_gmail_qmail_sendmail(
        file: str) -> None:
    _assert_found(file)


@pytest.mark.parametrize("file", [f for f in VERIFIED if f not in REQUIRED])
def test_the_bounced_recipient_is_found_other_mtas(file: str) -> None:
    _assert_found(file)


@pytest.mark.parametrize("file", list(BY_FILE))
def test_the_fallback_alone_never_blames_a_wrong_address(file: str) -> None:
    # Run on every sample, also those flufl.bounce reads: the fallback may miss, never invent.
    message = email.message_from_bytes(_normalise_message(load(file)))
    permanent, temporary = dsn.failures(message)
    kind, addresses = expected(file) if file in VERIFIED else (P, frozenset())
    assert permanent | temporary <= addresses
    assert not (temporary if kind == P else permanent)
    assert dsn.named_recipients(message) <= addresses


@pytest.mark.parametrize("file", NOT_BOUNCES)
def test_not_a_bounce_gives_an_empty_report(file: str) -> None:
    assert scan_bounce(load(file)) == BounceReport(frozenset(), frozenset(), frozenset())


@pytest.mark.parametrize("file", list(BY_FILE))
def test_list_ids_of_the_samples(file: str) -> None:
    assert scan_bounce(load(file)).list_ids == LIST_IDS.get(file, set())


@pytest.mark.parametrize("file", list(BY_FILE))
def test_mbox_line_and_line_ends_make_no_difference(file: str) -> None:
    data = load(file)
    report = scan_bounce(data)
    assert scan_bounce((SAMPLES / file).read_bytes()) == report  # with its mbox line, if any
    assert scan_bounce(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n" + data) == report
    lf = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert scan_bounce(lf) == report
    assert scan_bounce(lf.replace(b"\n", b"\r\n")) == report
    assert scan_bounce(lf.replace(b"\n", b"\r")) == report  # flufl.bounce alone misses some
    # CRLF after an mbox line ended by a bare CR (tests.servers.dovecot.normalise_message
    # keeps a bare CR, and would drop all of a message that has only bare CRs)
    assert scan_bounce(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\r"
                       + lf.replace(b"\n", b"\r\n")) == report


# ------------------------------------------------------------------ our own DSNs
DSN = (
    b"Return-Path: <>\r\n"
    b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
    b"To: friends-bounces@example.test\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <dsn.1@mx.example.net>\r\n"
    b"Auto-Submitted: auto-replied\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
    b'\tboundary="=_dsn_boundary"\r\n'
    b"\r\n"
    b"This is a MIME-encapsulated message.\r\n"
    b"\r\n"
    b"--=_dsn_boundary\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Your message could not be delivered to <carol@example.net>.\r\n"
    b"\r\n"
    b"--=_dsn_boundary\r\n"
    b"Content-Type: message/delivery-status\r\n"
    b"\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n"
    b"Arrival-Date: Fri, 04 Dec 2026 09:59:58 +0000\r\n"
    b"\r\n"
    b"Final-Recipient: rfc822; carol@example.net\r\n"
    b"Original-Recipient: rfc822; Carol@Example.NET\r\n"
    b"Action: failed\r\n"
    b"Status: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 <carol@example.net>: User unknown\r\n"
    b"\r\n"
    b"--=_dsn_boundary\r\n"
    b"Content-Type: text/rfc822-headers\r\n"
    b"\r\n"
    b"From: Alice <alice@example.test>\r\n"
    b"To: friends@example.test\r\n"
    b"Subject: [friends] Hello\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"List-Id: Friends <friends.example.test>\r\n"
    b"Sender: friends-bounces@example.test\r\n"
    b"\r\n"
    b"--=_dsn_boundary--\r\n"
)
DELAYED = DSN.replace(b"Action: failed", b"Action: delayed").replace(
    b"Status: 5.1.1", b"Status: 4.4.7")


def test_a_failed_dsn() -> None:
    report = scan_bounce(DSN)
    assert report == BounceReport(permanent=frozenset({"carol@example.net"}),
                                  temporary=frozenset(),
                                  list_ids=frozenset({"friends.example.test"}))
    assert report.addresses == {"carol@example.net"}


def test_a_delayed_dsn() -> None:
    report = scan_bounce(DELAYED)
    assert report == BounceReport(permanent=frozenset(),
                                  temporary=frozenset({"carol@example.net"}),
                                  list_ids=frozenset({"friends.example.test"}))
    assert report.addresses == {"carol@example.net"}


def test_lf_line_ends_and_an_mbox_line() -> None:
    assert scan_bounce(b"From MAILER-DAEMON  Fri Dec  4 10:00:00 2026\n"
                       + DSN.replace(b"\r\n", b"\n")) == scan_bounce(DSN)


def test_failed_and_delayed_for_one_address_is_permanent() -> None:
    # e.g. a DSN from a host that first deferred, then gave up on one of two MX hosts
    data = DSN.replace(b"Action: failed\r\nStatus: 5.1.1\r\n",
                       b"Action: failed\r\nStatus: 5.1.1\r\n\r\n"
                       b"Final-Recipient: rfc822; dave@example.org\r\n"
                       b"Action: delayed\r\nStatus: 4.2.2\r\n\r\n"
                       b"Final-Recipient: rfc822; DAVE@example.org\r\n"
                       b"Action: failed\r\nStatus: 5.2.2\r\n")
    report = scan_bounce(data)
    assert report.permanent == {"carol@example.net", "dave@example.org"}
    assert report.temporary == frozenset()


def test_several_recipients_and_both_kinds() -> None:
    data = DSN.replace(b"Action: failed\r\nStatus: 5.1.1\r\n",
                       b"Action: failed\r\nStatus: 5.1.1\r\n\r\n"
                       b"Final-Recipient: rfc822; <Erin@Example.ORG>\r\n"
                       b"Action: delayed (will retry)\r\nStatus: 4.4.1\r\n\r\n"
                       b"Final-Recipient: rfc822; frank@example.org\r\n"
                       b"Action: delivered\r\nStatus: 2.0.0\r\n")
    report = scan_bounce(data)
    assert report.permanent == {"carol@example.net"}
    assert report.temporary == {"erin@example.org"}
    assert report.addresses == {"carol@example.net", "erin@example.org"}


def test_the_original_as_message_rfc822() -> None:
    data = DSN.replace(b"Content-Type: text/rfc822-headers\r\n\r\n",
                       b"Content-Type: message/rfc822\r\n\r\n").replace(
        b"Sender: friends-bounces@example.test\r\n\r\n",
        b"Sender: friends-bounces@example.test\r\n\r\nHello, friends.\r\n\r\n")
    assert scan_bounce(data).list_ids == {"friends.example.test"}


@pytest.mark.parametrize(("field", "list_id"), [
    (b"List-Id: <friends.example.test>", "friends.example.test"),
    (b"list-id:Friends<Friends.Example.TEST>", "friends.example.test"),
    (b"List-Id: =?utf-8?q?Fr=C3=BCnde?=\r\n <friends.example.test>", "friends.example.test"),
    (b'List-Id: "a <b.c> d" <friends.example.test>', "friends.example.test"),
    (b"List-Id: friends.example.test", None),  # not in angle brackets
    (b"List-Id: <friends>", None),  # no namespace
    (b"List-Id: <friends example.test>", None),
    (b"List-Id:", None),
    (b"X-List-Id: <friends.example.test>", None),
])
def test_list_id_forms(field: bytes, list_id: str | None) -> None:
    data = DSN.replace(b"List-Id: Friends <friends.example.test>", field)
    assert scan_bounce(data).list_ids == ({list_id} if list_id else set())


def test_the_bounces_own_list_id_is_not_the_originals() -> None:
    relayed = DSN.replace(b"Auto-Submitted: auto-replied\r\n",
                          b"List-Id: Postmasters <postmasters.example.net>\r\n")
    assert scan_bounce(relayed).list_ids == {"friends.example.test"}
    no_original = relayed.replace(b"List-Id: Friends <friends.example.test>\r\n", b"")
    assert scan_bounce(no_original).list_ids == frozenset()
    assert scan_bounce(no_original).permanent == {"carol@example.net"}


def test_a_message_forwarded_in_the_post_does_not_count() -> None:
    data = DSN.replace(b"Content-Type: text/rfc822-headers\r\n\r\n",
                       b"Content-Type: message/rfc822\r\n\r\n").replace(
        b"Sender: friends-bounces@example.test\r\n\r\n",
        b"Sender: friends-bounces@example.test\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="inner"\r\n\r\n'
        b"--inner\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
        b"--inner\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: x@example.org\r\nList-Id: <chess.example.test>\r\n\r\nCheck.\r\n"
        b"--inner--\r\n\r\n")
    assert scan_bounce(data).list_ids == {"friends.example.test"}


# A plain-text bounce (Exim style) that quotes the original below the notice.
TEXT_BOUNCE = (
    b"Return-path: <>\n"
    b"From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n"
    b"To: friends-bounces@example.test\n"
    b"Subject: Mail delivery failed: returning message to sender\n"
    b"X-Failed-Recipients: grace@example.org\n"
    b"Auto-Submitted: auto-replied\n"
    b"Message-Id: <E1abc-0001@mx.example.org>\n"
    b"Date: Fri, 04 Dec 2026 10:00:00 +0000\n"
    b"\n"
    b"This message was created automatically by mail delivery software.\n"
    b"\n"
    b"A message that you sent could not be delivered to one or more of its\n"
    b"recipients. This is a permanent error. The following address(es) failed:\n"
    b"\n"
    b"  grace@example.org\n"
    b"    mailbox is full\n"
    b"\n"
    b"------ This is a copy of the message, including all the headers. ------\n"
    b"\n"
    b"From: Alice <alice@example.test>\n"
    b"To: friends@example.test\n"
    b"Subject: [friends] Hello\n"
    b"List-Id: Friends of the garden\n"
    b"  <friends.example.test>\n"
    b"\n"
    b"Hello.\n"
)


def test_a_text_bounce_quoting_the_original() -> None:
    report = scan_bounce(TEXT_BOUNCE)
    assert report.permanent == {"grace@example.org"}
    assert report.list_ids == {"friends.example.test"}
    assert scan_bounce(TEXT_BOUNCE.replace(b"\n", b"\r\n")) == report
    assert scan_bounce(TEXT_BOUNCE.replace(b"\n", b"\r")) == report


def test_a_text_bounce_quoted_printable() -> None:
    data = TEXT_BOUNCE.replace(b"Date: Fri", b"Content-Transfer-Encoding: quoted-printable\n"
                               b"Date: Fri").replace(b"List-Id: Friends of the garden",
                                                     b"List-Id: Fr=C3=BCnde =\n des Gartens")
    assert scan_bounce(data).list_ids == {"friends.example.test"}


def test_no_list_id_without_an_address() -> None:
    # An auto-reply quoting the post is not a bounce, whatever List-Id it quotes.
    data = TEXT_BOUNCE.replace(b"X-Failed-Recipients: grace@example.org\n", b"").replace(
        b"Mailer-Daemon@", b"grace@").replace(
        b"The following address(es) failed:\n\n  grace@example.org\n    mailbox is full\n", b"")
    assert scan_bounce(data) == BounceReport()


# ------------------------------------------------------------------ the fallback readers
def parse(data: bytes) -> email.message.Message:
    return email.message_from_bytes(_normalise_message(data))


CAROL = frozenset({"carol@example.net"})
NOTHING: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


@pytest.mark.parametrize(("old", "new"), [
    (b"", b""),  # as it is
    (b"multipart/report; report-type=delivery-status;", b"multipart/report;"),
    (b"multipart/report; report-type=delivery-status;", b"MULTIPART/Mixed;"),
    (b"Content-Type: message/delivery-status", b"Content-Type: Message/Delivery-Status"),
    (b"Action: failed", b"Action: Failed (no such user)"),
    (b"Action: failed\r\n", b""),  # no Action: Status 5.1.1 decides
    (b"Original-Recipient: rfc822; Carol@Example.NET\r\n", b""),
    (b"Original-Recipient: rfc822; Carol@Example.NET", b"Original-Recipient: x400; c=nl;s=carol"),
    (b"Final-Recipient: rfc822; carol@example.net", b"Final-Recipient: RFC822;<carol@example.net>"),
])
def test_the_rfc3464_reader(old: bytes, new: bytes) -> None:
    assert dsn.failures(parse(DSN.replace(old, new))) == (CAROL, frozenset())


@pytest.mark.parametrize(("fields", "failures"), [
    (b"Action: delayed\r\nStatus: 4.4.7\r\n", (frozenset(), CAROL)),
    (b"Status: 4.4.7\r\n", (frozenset(), CAROL)),  # no Action: Status 4.4.7 decides
    (b"Action: delayed\r\nStatus: 5.1.1\r\n", (frozenset(), CAROL)),  # Action decides
    (b"Action: relayed\r\nStatus: 2.0.0\r\n", NOTHING),
    (b"Action: delivered\r\nStatus: 2.0.0\r\n", NOTHING),
    (b"Action: expanded\r\nStatus: 2.0.0\r\n", NOTHING),
    (b"Status: 2.0.0\r\n", NOTHING),
    (b"Diagnostic-Code: smtp; 550 no\r\n", NOTHING),  # neither Action nor Status
])
def test_the_rfc3464_reader_action_and_status(fields: bytes, failures: tuple[Any, Any]) -> None:
    data = DSN.replace(b"Action: failed\r\nStatus: 5.1.1\r\n", fields)
    assert dsn.failures(parse(data)) == failures


def test_what_flufl_bounce_misses_in_a_dsn_the_fallback_reads() -> None:
    no_original = DSN[:DSN.index(b"--=_dsn_boundary\r\nContent-Type: text/rfc822")] + (
        b"--=_dsn_boundary--\r\n")
    status_only = no_original.replace(b"Action: failed\r\n", b"")
    assert scan_bounce(status_only).permanent == CAROL
    assert scan_bounce(status_only.replace(b"5.1.1", b"4.2.2")).temporary == CAROL
    # flufl.bounce takes "carol" for the address (the "=" splits it like a MIME parameter)
    equals_sign = no_original.replace(b"Original-Recipient: rfc822; Carol@Example.NET\r\n",
                                      b"").replace(b"carol@", b"carol=home@")
    assert scan_bounce(equals_sign).permanent == {"carol=home@example.net"}


def test_a_dsn_of_a_delivery_is_not_read_as_text() -> None:
    # A delivery-status part is the MTA's own word: its text is never read for addresses.
    data = DSN.replace(b"Action: failed\r\nStatus: 5.1.1", b"Action: delivered\r\nStatus: 2.0.0")
    data = data.replace(b"Your message could not be delivered to <carol@example.net>.",
                        b"<carol@example.net>: 550 5.1.1 could not be delivered")
    assert dsn.failures(parse(data)) == NOTHING
    assert scan_bounce(data) == BounceReport()


def test_a_dsn_part_inside_the_original_is_not_read() -> None:
    # e.g. a post that forwards a bounce: not about a member of ours
    forwarded = DSN.replace(b"Content-Type: text/rfc822-headers", b"Content-Type: message/rfc822")
    outer = (b"From: MAILER-DAEMON@mx.example.org\r\n"
             b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
             b"--outer\r\nContent-Type: text/plain\r\n\r\nYour message was delivered.\r\n"
             b"--outer\r\nContent-Type: message/rfc822\r\n\r\n" + forwarded + b"\r\n--outer--\r\n")
    assert dsn.failures(parse(outer)) == NOTHING
    assert dsn.named_recipients(parse(outer)) == frozenset()


# A plain-text notice (no delivery-status part) in the form the readers below vary.
TEXT_NOTICE = (
    b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"
    b"To: friends-bounces@example.test\n"
    b"Subject: Undeliverable\n"
    b"\n"
    b"Sorry, your message could not be delivered.\n"
    b"\n"
    b"NOTICE\n"
    b"\n"
    b"--- Below this line is a copy of the message.\n"
    b"\n"
    b"Return-Path: <friends-bounces@example.test>\n"
    b"From: Alice <alice@example.test>\n"
    b"To: friends@example.test\n"
    b"Message-ID: <1@example.test>\n"
    b"List-Id: <friends.example.test>\n"
    b"\n"
    b"Hello. Write to dave@example.org: he knows.\n"
)


def notice(text: bytes, original: bytes = b"") -> bytes:
    data = TEXT_NOTICE.replace(b"NOTICE\n", text + b"\n")
    return data.replace(b"--- Below this line is a copy of the message.", original) if (
        original) else data


@pytest.mark.parametrize("text", [
    b"<carol@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 User unknown",  # Postfix
    b"carol@example.net: 550 5.1.1 No such user",  # OpenSMTPD
    b"<carol@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)",  # qmail
    b"<Carol@Example.NET> (expanded from <c@example.test>): unknown user",
    b"Recipient address: carol@example.net\nReason: mailbox unavailable",
    b"target mail address: carol@example.net",
    b"Original-Recipient: rfc822;carol@example.net",
    b"Final-Recipient: RFC822; <carol@example.net>",
    b"The following address(es) failed: carol@example.net",
    b"The following address(es) failed:\n\n  carol@example.net\n    mailbox is full",  # Exim
    b"Delivery has failed to these recipients or groups:\n\n"  # Office 365
    b"carol@example.net<mailto:carol@example.net>\nThe email address wasn't found.",
    b"An email to the following address could not be delivered:\n-- carol@example.net",
    b"An error occurred while delivering to\n    the following list of recipients:\n\n"
    b"    carol@example.net",
    b"Sent <<< RCPT TO:<carol@example.net>\nReceived >>> 550 5.1.1 <carol@example.net>... "
    b"User unknown",  # sendmail transcript (Trend Micro)
    b"carol@example.net: host 4.3.2.1 said: 550 no such user",  # an IP is not a status
])
def test_the_text_reader(text: bytes) -> None:
    assert dsn.failures(parse(notice(text))) == (CAROL, frozenset())


@pytest.mark.parametrize("text", [
    b"<carol@example.net>: delivery temporarily suspended",
    b"<carol@example.net>: 452 4.2.2 mailbox full",
    b"<carol@example.net>: connection timed out. Delivery delayed; we will retry.",
])
def test_the_text_reader_temporary(text: bytes) -> None:
    assert dsn.failures(parse(notice(text))) == (frozenset(), CAROL)


@pytest.mark.parametrize("marker", [
    b"----- Original message -----",
    b"--- Below this line is a copy of the message.",
    b"------ This is a copy of the message, including all the headers. ------",
    b"Content-Type: message/rfc822",
    b"Received: from mx.example.test by mx.example.org",
    b"Return-Path: <friends-bounces@example.test>",
    b"From friends-bounces@example.test Fri Dec  4 10:00:00 2026",
])
def test_the_text_reader_stops_at_the_original(marker: bytes) -> None:
    data = notice(b"<carol@example.net>: 550 unknown", marker + b"\n<dave@example.org>: 550 no\n"
                  b"Recipient address: erin@example.org")
    assert dsn.failures(parse(data)) == (CAROL, frozenset())


@pytest.mark.parametrize("text", [
    b"<MAILER-DAEMON@mx.example.org>: 550 5.1.1 unknown",  # the notice's own sender
    b"<friends-bounces@example.test>: 550 5.1.1 unknown",  # its addressee
    b"<alice@example.test>: 550 5.7.1 sender rejected",  # the original's sender
    b"Your message (<1@example.test>) could not be delivered: 550 5.1.1 <1@example.test>",
])
def test_the_text_reader_never_blames_the_sender(text: bytes) -> None:
    assert dsn.failures(parse(notice(text))) == NOTHING


@pytest.mark.parametrize("data", [
    notice(b"<carol@example.net>: 550 unknown").replace(b"MAILER-DAEMON@", b"bob@"),
    notice(b"<carol@example.net>: 550 unknown").replace(b"MAILER-DAEMON@", b"daemon@"),
    # no failure: a delivery notice listing who got the message
    notice(b"").replace(b"Sorry, your message could not be delivered.",
                        b"Your message was delivered to the following recipients:\n\n"
                        b"  carol@example.net\ncarol@example.net: ok"),
    notice(b"Please write to carol@example.net about it."),  # an address in prose
    notice(b"Reply to: carol@example.net"),
    TEXT_NOTICE,
])
def test_the_text_reader_finds_nothing(data: bytes) -> None:
    assert dsn.failures(parse(data)) == NOTHING


@pytest.mark.parametrize("sender", [
    b"MAILER-DAEMON@mx.example.org", b"<mailer-daemon@mx.example.org>", b"postmaster@example.org",
    b'"postmaster" <Postmaster@example.org>', b"Mail-Daemon@example.org",
    b"MAILER-DAEMON (Mail Delivery System)", b"Mail Delivery Subsystem <MAILER-DAEMON>",
])
def test_the_text_reader_senders(sender: bytes) -> None:
    data = notice(b"<carol@example.net>: 550 unknown").replace(
        b"Mail Delivery System <MAILER-DAEMON@mx.example.org>", sender)
    assert dsn.failures(parse(data)) == (CAROL, frozenset())


def test_a_text_notice_in_parts() -> None:
    # multipart/mixed: the notice in text/plain, the original in message/rfc822 (Trend Micro)
    data = (b"From: postmaster@mx.example.org\r\nTo: friends-bounces@example.test\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/html\r\n\r\n<p>dave@example.org: 550 no</p>\r\n"
            b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"Your message could not be delivered to the following addre=\r\nss:\r\n\r\n"
            b"carol@example.net\r\nGr=FC=DFe\r\n"
            b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
            b"From: carol@example.net\r\nList-Id: <friends.example.test>\r\n\r\n"
            b"erin@example.org: 550\r\n--b--\r\n")
    # carol is the original's sender here, so she is not blamed; nor anyone in the HTML part
    assert dsn.failures(parse(data)) == NOTHING
    data = data.replace(b"From: carol@example.net\r\n", b"From: alice@example.test\r\n")
    assert scan_bounce(data) == BounceReport(permanent=CAROL,
                                             list_ids=frozenset({"friends.example.test"}))


def test_original_senders() -> None:
    assert dsn.original_senders(parse(TEXT_NOTICE)) == {"alice@example.test", "1@example.test"}
    assert dsn.original_senders(parse(DSN)) == {
        "alice@example.test", "1@example.test", "friends-bounces@example.test"}


def test_the_original_sender_stays_blamed_when_the_dsn_names_her() -> None:
    # Alice is a member: her own post bounced back to the list from her mailbox.
    data = DSN.replace(b"carol@example.net", b"alice@example.test").replace(
        b"Carol@Example.NET", b"Alice@Example.TEST")
    assert scan_bounce(data).permanent == {"alice@example.test"}


# ------------------------------------------------------------------ addresses
@pytest.mark.parametrize(("found", "address"), [
    (b"carol@example.net", "carol@example.net"),
    (b"<Carol@Example.NET>", "carol@example.net"),
    (b"  carol@example.net \r\n", "carol@example.net"),
    (b"j\xc3\xbcrgen@b\xc3\xbccher.example", "j\u00fcrgen@b\u00fccher.example"),
    (b"j\xfcrgen@example.net", None),  # not UTF-8
    (b"carol", None),
    (b"carol@localhost", None),
    (b"@example.net", None),
    (b"carol@", None),
    (b"", None),
    (b"<>", None),
    (b"carol@example.net>", "carol@example.net"),
    (b"carol smith@example.net", None),
    (b"carol@exa mple.net", None),
    (b"carol@-example.net", None),
    (b"Carol <carol@example.net>", None),
    (b"a" * 250 + b"@example.net", None),
    (b"|IFS=' ' && exec /usr/bin/procmail -f- || exit 75 #kijitora", None),
])
def test_normalise(found: bytes, address: str | None) -> None:
    assert _normalise(found) == address


# ------------------------------------------------------------------ hostile input
_PIECES = [
    b"From: ", b"To: ", b"Subject: ", b"Return-Path: <>", b"Auto-Submitted: auto-replied",
    b"From: MAILER-DAEMON@example.net", b"X-Failed-Recipients: ", b"List-Id: ",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b",
    b"Content-Type: message/delivery-status", b"Content-Type: message/rfc822",
    b"Content-Type: text/rfc822-headers", b"Content-Type: text/plain; charset=",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Transfer-Encoding: x-uuencode", b"--b", b"--b--",
    b"Final-Recipient: rfc822; ", b"Original-Recipient: rfc822;", b"Action: failed",
    b"Action: delayed", b"Status: 5.1.1", b"Status: 4.4.7", b"carol@example.net",
    b"<friends.example.test>", b"utf-8", b"utf\xff8", b"iso-2022-jp", b"unknown-8bit",
    b"=?utf-8?b?###?=", b"=?", b"?=", b"=", b"<", b">", b'"', b"\\", b",", b"@", b":", b";",
    b"\r\n", b"\n", b"\r", b"\r\n ", b" ", b"\t", b"\xff", b"\xc3", b"\x00", b"a",
    b"From x Thu Jan  1 00:00:00 2026\n", b"\r\n\r\n",
    # the fallback's
    b"From: postmaster@example.org", b"From: MAILER-DAEMON", b"Status: 5", b"Status: 4.",
    b"Action: relayed", b"Action:", b"Original-Recipient: rfc822; <", b"Final-Recipient: x400; ",
    b"Content-Type: multipart/report; boundary=b", b"Content-Type: MESSAGE/DELIVERY-STATUS",
    b"The following address(es) failed:", b"Delivery has failed to these recipients:",
    b"could not be delivered", b"Recipient address: ", b"<carol@example.net>: ",
    b"550 5.1.1 <", b"452 4.2.2 <", b"will retry", b"<mailto:", b"-- ", b"    ", b"(",
    b"--- Below this line is a copy of the message.", b"----- Original message -----",
    b"Received: ", b"Return-Path: ", b"Message-ID: <1@example.test>", b"a" * 70, b"." * 10,
]
_SAMPLE_BYTES: list[bytes] = [(SAMPLES / entry["file"]).read_bytes() for entry in MANIFEST] + [
    DSN, DELAYED, TEXT_BOUNCE, TEXT_NOTICE, notice(b"<carol@example.net>: 550 unknown"),
    notice(b"The following address(es) failed:\n\n  carol@example.net\n    full"),
    DSN.replace(b"Action: failed\r\n", b"")]


def _hostile(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:  # truncated
        sample = rng.choice(_SAMPLE_BYTES)
        return sample[: rng.randrange(len(sample) + 1)]
    if choice == 1:  # assembled from pieces
        return b"".join(rng.choice(_PIECES) for _ in range(rng.randrange(120)))
    if choice == 2:  # random bytes
        return rng.randbytes(rng.randrange(600))
    data = bytearray(rng.choice(_SAMPLE_BYTES))
    if choice == 3:  # bytes flipped
        for _ in range(rng.randrange(1, 30)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if choice == 4:  # a chunk deleted or repeated
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randrange(1, 400))
        return bytes(data[:start] + data[end:] if rng.random() < 0.5
                     else data[:end] + data[start:end] * rng.randrange(2, 5) + data[end:])
    cut = rng.randrange(len(data))  # pieces inserted
    return bytes(data[:cut]) + b"".join(rng.choice(_PIECES) for _ in range(20)) + data[cut:]


def _check(report: BounceReport) -> None:
    assert isinstance(report, BounceReport)
    assert not report.permanent & report.temporary
    for address in report.addresses:
        assert address == address.lower()
        assert is_valid_address(address), address
    for list_id in report.list_ids:
        assert list_id == list_id.lower()
        assert re.fullmatch(r"[^\s<>@]+\.[^\s<>@]+", list_id), list_id
    if not report.addresses:
        assert report == BounceReport()


def test_hostile_input_never_raises() -> None:
    rng = random.Random(20261204)
    for _ in range(3000):
        _check(scan_bounce(_hostile(rng)))


def test_hostile_input_to_the_fallback_never_raises() -> None:
    # Called directly, not through scan_bounce's last-resort except clause.
    rng = random.Random(20261205)
    found = 0
    for _ in range(3000):
        data = _hostile(rng)
        try:
            message = parse(data)
        except Exception:  # the email package's, not ours
            continue
        permanent, temporary = dsn.failures(message)
        assert not permanent & temporary
        for address in (permanent | temporary | dsn.named_recipients(message)
                        | dsn.original_senders(message)):
            assert address == address.lower()
            assert is_valid_address(address), address
        found += bool(permanent or temporary)
    assert found > 300  # the readers were exercised, not just the parser


@pytest.mark.parametrize("data", [
    b"",
    b"\r\n",
    b"From ",
    b"From \r",
    b"\x00" * 1000,
    b"From: \r\n\r\nbody",  # flufl.bounce's Yale detector raises IndexError on an empty From
    b"Subject: x\r\n\r\n" + b"a@b.example " * 20_000,
    b"Content-Type: multipart/report; boundary=b\r\n\r\n" + b"--b\r\n" * 20_000,
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    + b"--b\r\nContent-Type: message/rfc822\r\n\r\n" * 500,
    b"Content-Type: message/rfc822\r\n\r\n" * 500,
    b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nx",
    b"Content-Type: text/plain; charset*=utf-8''%ff%fe\r\n\r\nx",
    b"Content-Transfer-Encoding: base64\r\n\r\n====!!!",
    DSN.replace(b"Content-Type: text/rfc822-headers", b"Content-Type: text/rfc822-headers;"
                b" charset=utf-16\r\nContent-Transfer-Encoding: base64"),
    DSN.replace(b"--=_dsn_boundary--\r\n", b""),
    DSN.replace(b"boundary=", b"boundary*0="),
    DSN.replace(b"rfc822; carol@example.net", b"rfc822; \xff\xfe@example.net"),
    DSN.replace(b"rfc822; carol@example.net", b"rfc822; =?utf-8?b?Y2Fyb2w=?=@example.net"),
    DSN.replace(b"List-Id: Friends <friends.example.test>", b"List-Id: <" + b"a." * 50_000 + b">"),
    # long lines for the text reader's patterns
    notice(b" " * 100_000 + b"x"),
    notice(b"-" * 100_000),
    notice(b"a" * 100_000 + b"@example.net: 550"),
    notice(b"<" + b"a@" * 50_000 + b">: 550"),
    notice(b"550 5.1.1 <" * 2_000),  # flufl.bounce's SimpleMatch is quadratic in this
    notice(b"The following addresses failed:\n" + b"  carol@example.net\n" * 20_000),
    notice(b"following " * 20_000 + b"recipients failed:"),
    notice(b"Recipient address: " + b"a" * 100_000),
    notice(b"\n" * 100_000 + b"<carol@example.net>: 550"),
])
def test_nasty_input(data: bytes) -> None:
    _check(scan_bounce(data))
