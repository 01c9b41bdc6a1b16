"""Membership by email through the real servers: double opt-in, unsubscribe, tokens,
personalized unsubscribe links, moderation, bounces, and the abuse limits."""

from __future__ import annotations

import email
import email.policy
import re
import sqlite3
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.listd_env import ListdEnv, mails_to, make_message
from tests.servers.dovecot import Dovecot, normalise_message
from tests.servers.smtpcapture import SmtpCapture

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "mail-samples"
TOKEN_RE = re.compile(r"\b(confirm|approve) ([a-z2-7]{26})\b")


def token_in(message: EmailMessage) -> str:
    match = TOKEN_RE.search(str(message["Subject"]))
    assert match, message["Subject"]
    return match.group(2)


def reply_to(message: EmailMessage, sender: str, *, extra: list[str] | None = None) -> bytes:
    """What a person's mail program sends when they press Reply: quoted original, too."""
    quoted = "".join(f"> {line}\r\n" for line in message.get_content().splitlines())
    body = f"Yes please.\r\n\r\nOn Friday, the list wrote:\r\n{quoted}".encode()
    return make_message(sender=sender, to=str(message["Reply-To"]),
                        subject=f"Re: {message['Subject']}", body=body,
                        extra=[f"In-Reply-To: {message['Message-ID']}", *(extra or [])])


@pytest.fixture
def env(tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> ListdEnv:
    listd = ListdEnv(tmp_path, dovecot, smtp.port)
    listd.subscribe("friends", "alice@example.test", "bob@example.test")
    return listd


def status_of(env: ListdEnv, address: str, list_id: str = "friends") -> str | None:
    result = env.listctl("members", list_id, "--json")
    for line in result.stdout.splitlines():
        if address in line:
            return str(line.split('"status": "')[1].split('"')[0])
    return None


def test_double_opt_in_round_trip(env: ListdEnv, smtp: SmtpCapture) -> None:
    env.post(make_message(sender="Newbie <newbie@example.test>",
                          to="friends-request@example.test", subject="subscribe"))
    env.once()
    (confirmation,) = mails_to(smtp, "newbie@example.test")
    assert confirmation["Auto-Submitted"] == "auto-replied"
    assert confirmation["Reply-To"] == "friends-request@example.test"
    assert status_of(env, "newbie@example.test") is None  # nothing changes before confirming

    env.post(reply_to(confirmation, "newbie@example.test"))
    env.once()
    assert status_of(env, "newbie@example.test") == "active"
    welcome = mails_to(smtp, "newbie@example.test")[-1]
    assert "Welcome" in str(welcome["Subject"])
    assert any("joined" in str(m["Subject"]) for m in mails_to(smtp, "owner@example.test"))

    smtp.clear()
    env.post(make_message(sender="alice@example.test", subject="hello newbie"))
    env.once()
    assert smtp.recipients_count() == {"bob@example.test": 1, "newbie@example.test": 1}


def test_forged_subscribe_only_asks_the_victim(env: ListdEnv, smtp: SmtpCapture) -> None:
    env.post(make_message(sender="victim@example.test", to="friends-request@example.test",
                          subject="subscribe",
                          extra=["Reply-To: attacker@example.test"]))
    env.once()
    assert smtp.recipients_count() == {"victim@example.test": 1}
    assert status_of(env, "victim@example.test") is None


def test_plus_address_command_and_reply_address_confirm(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.document["lists"]["friends"]["commands"] = "plus"
    env.write()
    env.post(make_message(sender="carol@example.test", to="friends+subscribe@example.test",
                          subject="please add me"))
    env.once()
    (confirmation,) = mails_to(smtp, "carol@example.test")
    token = token_in(confirmation)
    assert confirmation["Reply-To"] == f"friends+confirm-{token}@example.test"
    # A reply with an empty subject still confirms through the address alone.
    env.post(make_message(sender="carol@example.test", to=f"friends+confirm-{token}@example.test",
                          subject=""))
    env.once()
    assert status_of(env, "carol@example.test") == "active"


def _age_tokens(env: ListdEnv) -> None:
    with sqlite3.connect(env.state_dir / "listd.sqlite3") as db:
        db.execute("UPDATE tokens SET expires_at = 0")


@pytest.mark.parametrize("problem", ["expired", "already used", "for another list"])
def test_bad_tokens_change_nothing(env: ListdEnv, smtp: SmtpCapture, problem: str) -> None:
    env.document["lists"]["chess"] = {"address": "chess@example.test", "name": "Chess"}
    env.write()
    env.post(make_message(sender="dan@example.test", to="friends-request@example.test",
                          subject="subscribe"))
    env.once()
    (confirmation,) = mails_to(smtp, "dan@example.test")
    token = token_in(confirmation)
    to = "friends-request@example.test"
    if problem == "expired":
        _age_tokens(env)
    elif problem == "already used":
        env.post(reply_to(confirmation, "dan@example.test"))
        env.once()
        env.listctl("unsubscribe", "friends", "dan@example.test")
    else:
        to = "chess-request@example.test"
    env.post(make_message(sender="dan@example.test", to=to, subject=f"confirm {token}"))
    env.once()
    assert status_of(env, "dan@example.test") in (None, "unsubscribed")
    assert status_of(env, "dan@example.test", "chess") is None
    answer = mails_to(smtp, "dan@example.test")[-1]
    assert problem in answer.get_content()


def test_unsubscribe_by_request_needs_confirmation(env: ListdEnv, smtp: SmtpCapture) -> None:
    env.post(make_message(sender="bob@example.test", to="friends-request@example.test",
                          subject="unsubscribe"))
    env.once()
    assert status_of(env, "bob@example.test") == "active"
    (confirmation,) = mails_to(smtp, "bob@example.test")
    env.post(reply_to(confirmation, "bob@example.test"))
    env.once()
    assert status_of(env, "bob@example.test") == "unsubscribed"
    assert "left" in str(mails_to(smtp, "bob@example.test")[-1]["Subject"])


@pytest.mark.parametrize("style", ["request", "plus"])
def test_personalized_list_unsubscribe_is_one_shot(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture, style: str) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.document["lists"]["friends"].update(personalize=True, commands=style)
    env.write()
    env.subscribe("friends", "alice@example.test", "bob@example.test", "carol@example.test")
    env.post(make_message(sender="alice@example.test", subject="personal"))
    env.once()
    copies = {m.rcpts[0]: m for m in smtp.messages}
    assert sorted(copies) == ["bob@example.test", "carol@example.test"]
    assert all(len(m.rcpts) == 1 for m in smtp.messages)
    bob = email.message_from_bytes(copies["bob@example.test"].data,
                                   policy=email.policy.default)
    assert bob["To"] == "bob@example.test"
    uri = str(bob["List-Unsubscribe"]).strip("<>").removeprefix("mailto:")
    carol_uri = email.message_from_bytes(copies["carol@example.test"].data)["List-Unsubscribe"]
    assert uri not in str(carol_uri)
    address, _, query = uri.partition("?subject=")
    unsubscribe = make_message(sender="bob@example.test", to=address,
                               subject=query.replace("%20", " "))
    env.post(unsubscribe)
    env.once()
    assert status_of(env, "bob@example.test") == "unsubscribed"
    env.listctl("subscribe", "friends", "bob@example.test")
    env.post(make_message(sender="bob@example.test", to=address,
                          subject=query.replace("%20", " "), message_id="<again@x>"))
    env.once()
    assert status_of(env, "bob@example.test") == "active"  # the token was used up


def test_moderated_post_is_held_then_approved_by_reply_and_relayed_once(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.document["lists"]["friends"]["posting"] = "moderated"
    env.write()
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    env.post(make_message(sender="alice@example.test", subject="needs a look"))
    env.once()
    assert "bob@example.test" not in smtp.recipients_count()
    (notice,) = mails_to(smtp, "owner@example.test")
    assert "needs a look" in notice.get_content()
    approval = reply_to(notice, "owner@example.test")
    env.post(approval)
    env.once()
    assert smtp.recipients_count()["bob@example.test"] == 1
    posts = [m for m in mails_to(smtp, "bob@example.test")
             if "needs a look" in str(m["Subject"])]
    assert len(posts) == 1 and str(posts[0]["Subject"]) == "[friends] needs a look"
    env.post(make_message(sender="owner@example.test", to="friends-request@example.test",
                          subject=str(notice["Subject"]), message_id="<twice@x>"))
    env.once()
    assert smtp.recipients_count()["bob@example.test"] == 1


BOUNCES = {  # sample → the member address the MTA reports as failed
    "sisimai-bsd-lhost-postfix-01.eml": "kijitora@example.org",
    "sisimai-bsd-lhost-exim-01.eml": "kijitora@example.ed.jp",
    "sisimai-bsd-lhost-exchange2007-01.eml": "mikeneko@example.co.jp",
    "sisimai-bsd-lhost-gmail-01.eml": "userunknown@example.jp",
    "sisimai-bsd-lhost-qmail-01.eml": "kijitora@example.ne.jp",
}


def test_bounces_of_several_mtas_disable_the_member(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.document["membership"] = {"bounce_threshold": 1}
    env.write()
    env.subscribe("friends", "alice@example.test", *BOUNCES.values())
    for sample in BOUNCES:
        raw = normalise_message((SAMPLES / "bounces" / sample).read_bytes())
        env.post(b"Delivered-To: friends@example.test\r\n" + raw)
    env.once()
    for sample, address in BOUNCES.items():
        assert status_of(env, address) == "disabled", sample
        assert any("stopped" in str(m["Subject"]) for m in mails_to(smtp, address))
    assert status_of(env, "alice@example.test") == "active"
    smtp.clear()
    env.post(make_message(sender="alice@example.test", subject="after the bounces"))
    env.once()
    assert smtp.recipients_count() == {}  # every other member is disabled
    result = env.listctl("enable", "friends", "kijitora@example.org")
    assert result.returncode == 0, result.stderr
    assert status_of(env, "kijitora@example.org") == "active"


def _dsn(recipient: str, action: str, status: str, number: int) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "To: friends@example.test\r\n"
        f"Subject: Undelivered Mail Returned to Sender {number}\r\n"
        f"Message-ID: <dsn-{number}@mx.example.net>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: Alice via Friends <friends@example.test>\r\n"
        "List-Id: Friends of the garden <friends.example.test>\r\n"
        "\r\n--b--\r\n").encode()


def test_bounce_score_counts_temporary_failures_less(env: ListdEnv, smtp: SmtpCapture) -> None:
    for number in range(4):
        env.post(_dsn("bob@example.test", "failed", "5.1.1", number))
    for number in range(4, 6):
        env.post(_dsn("bob@example.test", "delayed", "4.4.7", number))
    env.once()
    assert status_of(env, "bob@example.test") == "active"  # 4 + 2 x 0.5 = 5 minus decay
    env.post(_dsn("bob@example.test", "failed", "5.1.1", 6))
    env.once()
    assert status_of(env, "bob@example.test") == "disabled"
    assert any("disabled" in str(m["Subject"]) for m in mails_to(smtp, "owner@example.test"))


def test_auto_reply_to_a_confirmation_gets_no_answer(env: ListdEnv, smtp: SmtpCapture) -> None:
    env.post(make_message(sender="erin@example.test", to="friends-request@example.test",
                          subject="subscribe"))
    env.once()
    (confirmation,) = mails_to(smtp, "erin@example.test")
    env.post(reply_to(confirmation, "erin@example.test",
                      extra=["Auto-Submitted: auto-replied"]))
    env.once()
    assert len(mails_to(smtp, "erin@example.test")) == 1
    assert status_of(env, "erin@example.test") is None


def test_answers_are_rate_limited_under_a_burst(env: ListdEnv, smtp: SmtpCapture) -> None:
    for number in range(12):
        env.post(make_message(sender="target@example.test", to="friends-request@example.test",
                              subject="subscribe", message_id=f"<burst-{number}@x>"))
    for number in range(12):
        env.post(make_message(sender="target@example.test", to="friends-request@example.test",
                              subject="help", message_id=f"<help-{number}@x>"))
    env.once()
    assert smtp.recipients_count()["target@example.test"] == 5  # membership.answers_per_day


def test_help_and_unknown_commands_get_the_help_text(env: ListdEnv, smtp: SmtpCapture) -> None:
    env.post(make_message(sender="frank@example.test", to="friends-request@example.test",
                          subject="what is this?", body=b"Hello, how does this work?\r\n"))
    env.once()
    (answer,) = mails_to(smtp, "frank@example.test")
    text = answer.get_content()
    assert "To join:" in text and "friends-request@example.test" in text


def test_held_post_expires_with_a_notice_to_the_sender(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.document["lists"]["friends"]["non_member_posts"] = "hold"
    env.write()
    env.subscribe("friends", "bob@example.test")
    env.post(make_message(sender="stranger@example.test", subject="may I?"))
    env.once()
    (waiting,) = mails_to(smtp, "stranger@example.test")
    assert "awaits approval" in str(waiting["Subject"])
    with sqlite3.connect(env.state_dir / "listd.sqlite3") as db:
        db.execute("UPDATE held SET expires_at = 0")
    env.once()
    expired = mails_to(smtp, "stranger@example.test")[-1]
    assert "not approved in time" in expired.get_content()
    assert "bob@example.test" not in smtp.recipients_count()
    held = env.listctl("held", "--json")
    assert held.returncode == 0 and held.stdout == ""
