"""listctl, the real command against the real servers: every command's output, ``--json``
shape and exit code; import/sync all or nothing; moderation and approvals end to end."""

from __future__ import annotations

import csv
import io
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from listd.cli import ctl_privileges
from listd.cli.ctl_base import Failure
from listd.mail.policy import MemberStatus
from listd.store import Effects, MemberChange, Store
from listd.tokens import token_hash
from tests.listd_env import ListdEnv, mails_to, make_message
from tests.servers.dovecot import Dovecot
from tests.servers.smtpcapture import SmtpCapture

EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_NOPERM = 64, 65, 66, 77
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def env(tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> ListdEnv:
    listd = ListdEnv(tmp_path, dovecot, smtp.port)
    listd.subscribe("friends", "Alice Example <alice@example.test>", "bob@example.test")
    return listd


def run(env: ListdEnv, *args: str, stdin: str | None = None,
        code: int = 0) -> subprocess.CompletedProcess[str]:
    result = env.listctl(*args, stdin=stdin)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


def records(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def members(env: ListdEnv, list_id: str = "friends") -> dict[str, tuple[str, str]]:
    """address -> (status, name)"""
    return {r["address"]: (r["status"], r["name"])
            for r in records(run(env, "members", list_id, "--json"))}


def add_list(env: ListdEnv, list_id: str, **settings: Any) -> None:
    env.document["lists"][list_id] = {"address": f"{list_id}@example.test",
                                      "owners": ["owner@example.test"], **settings}
    env.write()


# --- usage and the commands that were there before --------------------------------------

@pytest.mark.parametrize("args", [
    ("members", "nope"), ("log", "nope"), ("pending", "nope"), ("held", "nope"),
    ("export", "nope"), ("import", "nope", "-"), ("sync", "nope", "-"),
    ("enable", "nope", "a@example.test"), ("approve-subscription", "nope", "a@example.test"),
    ("reject-subscription", "nope", "a@example.test"), ("subscribe", "nope", "a@example.test"),
    ("approve", "abc"), ("discard", "-1"), ("approve", "0"),
    ("log", "friends", "--limit", "0"), ("members",), ("no-such-command",),
])
def test_usage_errors_exit_64(env: ListdEnv, args: tuple[str, ...]) -> None:
    result = run(env, *args, stdin="", code=EX_USAGE)
    assert result.stdout == ""
    assert result.stderr.strip()


def test_lists_members_status_and_check_config_keep_working(env: ListdEnv) -> None:
    (lst,) = records(run(env, "lists", "--json"))
    assert lst == {"list": "friends", "address": "friends@example.test",
                   "name": "Friends of the garden", "posting": "members", "active": 2,
                   "pending": 0, "disabled": 0}
    assert run(env, "lists").stdout.startswith("friends\tfriends@example.test\t2 active")
    alice, _ = records(run(env, "members", "friends", "--json"))
    assert set(alice) == {"list", "address", "name", "status", "since", "updated"}
    assert (alice["address"], alice["name"], alice["status"]) == (
        "alice@example.test", "Alice Example", "active")
    assert ISO.match(alice["since"])
    assert run(env, "members", "friends").stdout == (
        "alice@example.test\tactive\tAlice Example\nbob@example.test\tactive\n")
    (status,) = records(run(env, "status", "--json"))
    assert status["deliveries_pending"] == 0
    (checked,) = records(run(env, "check-config", "--json"))
    assert checked["ok"] is True


# --- subscribe, unsubscribe, import, export, sync ----------------------------------------

def test_subscribe_reads_stdin_like_import_and_is_all_or_nothing(env: ListdEnv) -> None:
    result = run(env, "subscribe", "friends", "carol@example.test", "-",
                 stdin="# more\ndan@example.test,Dan\nCarol@Example.test\n")
    assert result.stdout == "carol@example.test\tsubscribed\ndan@example.test\tsubscribed\n"
    assert "stdin:3: warning: Carol@Example.test is listed again (first at argument 1)" \
        in result.stderr
    result = run(env, "subscribe", "friends", "erin@example.test", "not an address",
                 code=EX_DATAERR)
    assert "argument 2: 'not an address' is not an email address" in result.stderr
    assert "erin@example.test" not in members(env)
    result = run(env, "unsubscribe", "friends", "carol@example.test", "zed@example.test")
    assert result.stdout == "carol@example.test\tunsubscribed\n"
    assert "zed@example.test is not a member of friends" in result.stderr


def test_import_plain_file_with_names_comments_csv_rows_and_duplicates(
        env: ListdEnv, tmp_path: Path) -> None:
    path = tmp_path / "people.txt"
    path.write_text("# the garden club\n\nCarol Gardener <carol@example.test>\n"
                    '"Dan, the Man" <dan@example.test>\nerin@example.test,"Erin, E."\n'
                    "ALICE@example.test\nfrank@example.test\ncarol@EXAMPLE.test\n"
                    "Carol@example.test\n")
    result = run(env, "import", "friends", str(path))
    assert result.stdout.splitlines() == [
        "carol@example.test\tsubscribed", "dan@example.test\tsubscribed",
        "erin@example.test\tsubscribed", "ALICE@example.test\talready active",
        "frank@example.test\tsubscribed"]
    # A duplicate is one warning, however often it repeats; not an error.
    assert result.stderr.count("warning") == 1
    assert f"{path}:8: warning: carol@EXAMPLE.test is listed again (first at {path}:3)" \
        in result.stderr
    assert "friends: 4 subscribed, 1 already active" in result.stderr
    found = members(env)
    assert found["carol@example.test"] == ("active", "Carol Gardener")
    assert found["dan@example.test"] == ("active", "Dan, the Man")
    assert found["erin@example.test"] == ("active", "Erin, E.")
    assert found["alice@example.test"] == ("active", "Alice Example")
    (entry, *_) = records(run(env, "log", "friends", "--json"))
    assert (entry["via"], entry["by"], entry["new"]) == ("import", "admin", "active")


def test_import_is_all_or_nothing_and_names_every_bad_line(
        env: ListdEnv, tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("carol@example.test\nnot an address\ndan@example.test\n"
                    "x@example.test, y@example.test\nSmith, John <john@example.test>\n"
                    'erin@example.test,"unbalanced\n')
    result = run(env, "import", "friends", str(path), code=EX_DATAERR)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}:2: 'not an address' is not an email address"
    assert lines[1] == f"{path}:4: more than one address; write one per line"
    assert lines[2].startswith(f"{path}:5: 'Smith, John <john@example.test>' is not an "
                               'email address (a name with a comma needs quotes')
    assert lines[3].startswith(f"{path}:6: ")
    assert lines[4] == "listctl: nothing changed (4 bad line(s))"
    assert set(members(env)) == {"alice@example.test", "bob@example.test"}
    path.write_bytes(b"carol@example.test\ndan@exa\xe9mple.test\n")
    result = run(env, "import", "friends", str(path), code=EX_DATAERR)
    assert f"{path}:2: not UTF-8 text" in result.stderr
    assert set(members(env)) == {"alice@example.test", "bob@example.test"}


def test_import_cannot_open_exits_66(env: ListdEnv, tmp_path: Path) -> None:
    for path in (tmp_path / "missing.txt", tmp_path):
        result = run(env, "import", "friends", str(path), code=EX_NOINPUT)
        assert result.stderr.startswith(f"listctl: {path}: cannot open")
        run(env, "sync", "friends", str(path), code=EX_NOINPUT)


def test_import_csv_from_stdin_with_an_email_name_header(env: ListdEnv) -> None:
    result = run(env, "import", "friends", "-",
                 stdin="email,name\r\ncarol@example.test,Carol\r\n"
                       '"dan@example.test","Dan ""the Man"""\r\nerin@example.test\r\n')
    assert result.stdout.splitlines() == ["carol@example.test\tsubscribed",
                                          "dan@example.test\tsubscribed",
                                          "erin@example.test\tsubscribed"]
    assert members(env)["dan@example.test"] == ("active", 'Dan "the Man"')
    result = run(env, "import", "friends", "-", stdin="address,name\nBob <b@example.test>,B\n",
                 code=EX_DATAERR)
    assert "stdin:2: 'Bob <b@example.test>' is not an email address" in result.stderr


def test_export_then_import_round_trip(env: ListdEnv) -> None:
    run(env, "subscribe", "friends", '"Zoë, Émile" <zoe@example.test>', "carol@example.test")
    run(env, "unsubscribe", "friends", "carol@example.test")
    exported = run(env, "export", "friends").stdout
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0] == ["address", "name", "status", "since"]
    assert [r[:3] for r in rows[1:]] == [
        ["alice@example.test", "Alice Example", "active"],
        ["bob@example.test", "", "active"],
        ["carol@example.test", "", "unsubscribed"],
        ["zoe@example.test", "Zoë, Émile", "active"]]
    assert all(ISO.match(r[3]) for r in rows[1:])
    only_active = run(env, "export", "friends", "--status", "active").stdout
    assert "carol@example.test" not in only_active

    add_list(env, "copy")
    result = run(env, "import", "copy", "-", stdin=exported)
    # Who left stays out: an export read back never subscribes them again.
    assert "stdin:4: warning: skipped carol@example.test: status unsubscribed" in result.stderr
    copied = {a: v for a, v in members(env).items() if v[0] == "active"}
    assert members(env, "copy") == copied
    copy_rows = list(csv.reader(io.StringIO(run(env, "export", "copy").stdout)))
    assert [r[:3] for r in copy_rows] == [r[:3] for r in rows if r[2] != "unsubscribed"]


def test_sync_dry_run_changes_nothing_then_sync_does_it(env: ListdEnv, tmp_path: Path) -> None:
    run(env, "subscribe", "friends", "carol@example.test", "dan@example.test")
    run(env, "unsubscribe", "friends", "dan@example.test")
    path = tmp_path / "roster.csv"
    path.write_text("address,name\nbob@example.test,Bob\ndan@example.test,Dan\n"
                    "erin@example.test,Erin\n")
    before = members(env)
    result = run(env, "sync", "friends", str(path), "--dry-run")
    assert result.stdout.splitlines() == ["+ dan@example.test", "+ erin@example.test",
                                          "- alice@example.test", "- carol@example.test"]
    assert result.stderr.strip() == (
        "friends: 2 added, 2 removed, 1 unchanged (dry run: nothing changed)")
    assert members(env) == before

    result = run(env, "sync", "friends", str(path))
    assert result.stdout.splitlines() == ["+ dan@example.test", "+ erin@example.test",
                                          "- alice@example.test", "- carol@example.test"]
    assert result.stderr.strip() == "friends: 2 added, 2 removed, 1 unchanged"
    assert {a: s for a, (s, _) in members(env).items()} == {
        "alice@example.test": "unsubscribed", "bob@example.test": "active",
        "carol@example.test": "unsubscribed", "dan@example.test": "active",
        "erin@example.test": "active"}
    log = records(run(env, "log", "friends", "--json", "--limit", "4"))
    assert {(e["address"], e["new"], e["via"]) for e in log} == {
        ("dan@example.test", "active", "sync"), ("erin@example.test", "active", "sync"),
        ("alice@example.test", "unsubscribed", "sync"),
        ("carol@example.test", "unsubscribed", "sync")}

    # Again: nothing to do. A bad line or an empty file changes nothing.
    assert run(env, "sync", "friends", str(path)).stdout == ""
    result = run(env, "sync", "friends", "-", stdin="bob@example.test\nwhat\n",
                 code=EX_DATAERR)
    assert "stdin:2: 'what' is not an email address" in result.stderr
    result = run(env, "sync", "friends", "-", stdin="# nobody\n", code=EX_DATAERR)
    assert "no addresses" in result.stderr
    assert members(env)["erin@example.test"][0] == "active"


def test_log_text_and_json(env: ListdEnv) -> None:
    run(env, "unsubscribe", "friends", "bob@example.test")
    first, second = records(run(env, "log", "friends", "--json", "--limit", "2"))
    assert first == {"list": "friends", "when": first["when"], "address": "bob@example.test",
                     "old": "active", "new": "unsubscribed", "by": "admin", "via": "listctl",
                     "reason": ""}
    assert ISO.match(first["when"])
    assert (second["address"], second["old"], second["new"]) == ("bob@example.test", None,
                                                                 "active")
    text = run(env, "log", "friends").stdout.splitlines()
    assert len(text) == 3
    assert text[0].split("\t")[1:] == ["bob@example.test", "active -> unsubscribed", "admin",
                                       "listctl"]
    assert text[2].split("\t")[1:3] == ["alice@example.test", "- -> active"]


# --- enable -------------------------------------------------------------------------------

def test_enable_a_member_disabled_by_bounces(env: ListdEnv) -> None:
    store = Store.open(env.state_dir)
    try:
        store.apply(Effects(member_changes=[MemberChange(
            "friends", "bob@example.test", MemberStatus.DISABLED, "bounces", "listd",
            reason="bounce score 5.0 reached 5")]), time.time())
    finally:
        store.close()
    assert members(env)["bob@example.test"][0] == "disabled"
    result = run(env, "enable", "friends", "BOB@example.test")
    assert result.stdout == "BOB@example.test: enabled\n"
    assert members(env)["bob@example.test"][0] == "active"
    (entry, *_) = records(run(env, "log", "friends", "--json"))
    assert (entry["old"], entry["new"], entry["by"]) == ("disabled", "active", "admin")
    result = run(env, "enable", "friends", "bob@example.test", code=EX_DATAERR)
    assert "bob@example.test is not disabled on friends (active)" in result.stderr
    result = run(env, "enable", "friends", "zed@example.test", code=EX_DATAERR)
    assert "(not a member)" in result.stderr


# --- held posts -----------------------------------------------------------------------------

def test_held_post_approved_is_delivered_once_and_discarded_is_not(
        env: ListdEnv, smtp: SmtpCapture) -> None:
    env.document["lists"]["friends"]["non_member_posts"] = "hold"
    env.write()
    env.post(make_message(sender="Mallory <mallory@example.test>", subject="Plants for sale"))
    env.post(make_message(sender="Trent <trent@example.test>", subject="Cheap pills"))
    env.once()
    assert mails_to(smtp, "bob@example.test") == []  # held, not relayed

    held = records(run(env, "held", "--json"))
    assert [(h["sender"], h["subject"], h["list"]) for h in held] == [
        ("mallory@example.test", "Plants for sale", "friends"),
        ("trent@example.test", "Cheap pills", "friends")]
    assert set(held[0]) == {"id", "list", "sender", "subject", "reason", "since", "expires"}
    assert held[0]["reason"] == "the sender is not a member"
    assert ISO.match(held[0]["since"]) and ISO.match(held[0]["expires"])
    assert records(run(env, "held", "friends", "--json")) == held
    text = run(env, "held").stdout.splitlines()
    assert text[0].startswith(f"{held[0]['id']}\tfriends\tmallory@example.test\t"
                              "Plants for sale\tthe sender is not a member\texpires ")
    # The owners' tokens for held posts are not confirmations waiting.
    assert run(env, "pending", "--json").stdout == ""

    mallory, trent = str(held[0]["id"]), str(held[1]["id"])
    result = run(env, "approve", mallory)
    assert result.stdout == (f"held post {mallory} (friends, from mallory@example.test): "
                             "approved\n")
    result = run(env, "discard", trent)
    assert result.stdout == f"held post {trent} (friends, from trent@example.test): discarded\n"
    assert run(env, "held", "--json").stdout == ""
    env.once()
    env.once()
    for member in ("alice@example.test", "bob@example.test"):
        posts = [m for m in mails_to(smtp, member) if "[friends]" in str(m["Subject"])]
        assert [str(m["Subject"]) for m in posts] == ["[friends] Plants for sale"], member
    assert mails_to(smtp, "mallory@example.test")  # told it was held
    assert any("Cheap pills" in m.get_content() for m in mails_to(smtp, "trent@example.test")
               if "discarded" in m.get_content())

    result = run(env, "approve", mallory, code=EX_DATAERR)
    assert f"held post {mallory} was already approved" in result.stderr
    result = run(env, "discard", trent, code=EX_DATAERR)
    assert f"held post {trent} was already discarded" in result.stderr
    result = run(env, "approve", "999", code=EX_DATAERR)
    assert "no held post 999" in result.stderr


# --- pending confirmations and owner approval ---------------------------------------------

def _confirmed_pending(env: ListdEnv, smtp: SmtpCapture, address: str) -> str:
    """Subscribe ``address`` by email and confirm it: pending the owners. Returns the token
    of the confirmation mail."""
    env.post(make_message(sender=address, to="friends-request@example.test",
                          subject="subscribe"))
    env.once()
    (confirmation,) = [m for m in mails_to(smtp, address)
                       if str(m["Subject"]).startswith("confirm ")]
    token = str(confirmation["Subject"]).split()[1]
    (waiting,) = [r for r in records(run(env, "pending", "friends", "--json"))
                  if r["waiting"] == "confirmation"]
    assert waiting == {"waiting": "confirmation", "list": "friends", "address": address,
                       "action": "subscribe", "created": waiting["created"],
                       "expires": waiting["expires"]}
    env.post(make_message(sender=address, to="friends-request@example.test",
                          subject=f"confirm {token}"))
    env.once()
    return token


def test_pending_then_approve_and_reject_subscription(env: ListdEnv,
                                                      smtp: SmtpCapture) -> None:
    env.document["lists"]["friends"]["subscription"] = "moderate"
    env.write()
    token = _confirmed_pending(env, smtp, "newbie@example.test")
    _confirmed_pending(env, smtp, "spammer@example.test")

    result = run(env, "pending", "--json")
    assert token not in result.stdout and token_hash(token) not in result.stdout
    newbie, spammer = records(result)
    assert newbie == {"waiting": "approval", "list": "friends",
                      "address": "newbie@example.test", "name": "",
                      "action": "approve-subscription", "created": newbie["created"],
                      "expires": newbie["expires"]}
    assert ISO.match(newbie["created"]) and ISO.match(newbie["expires"])
    assert spammer["address"] == "spammer@example.test"
    assert run(env, "pending").stdout.splitlines()[0].startswith(
        "friends\tnewbie@example.test\tapprove-subscription\tthe owners\tsince ")
    assert members(env)["newbie@example.test"][0] == "pending"

    result = run(env, "approve-subscription", "friends", "NEWBIE@example.test")
    assert result.stdout == "subscribe newbie@example.test: active\n"
    result = run(env, "reject-subscription", "friends", "spammer@example.test")
    assert result.stdout == "subscribe spammer@example.test: rejected by admin\n"
    assert members(env)["newbie@example.test"][0] == "active"
    assert members(env)["spammer@example.test"][0] == "unsubscribed"
    assert run(env, "pending", "--json").stdout == ""

    result = run(env, "approve-subscription", "friends", "newbie@example.test",
                 code=EX_DATAERR)
    assert "newbie@example.test is not waiting for approval on friends (active)" \
        in result.stderr
    run(env, "reject-subscription", "friends", "nobody@example.test", code=EX_DATAERR)
    env.once()
    assert any(str(m["Subject"]).startswith("Welcome")
               for m in mails_to(smtp, "newbie@example.test"))
    assert not any(str(m["Subject"]).startswith("Welcome")
                   for m in mails_to(smtp, "spammer@example.test"))


# --- running as root ----------------------------------------------------------------------

@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (unlike pytest's private tmp_path)."""
    directory = Path(tempfile.mkdtemp(prefix="listctl-test-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def switches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Pretend to be root and record the identity switches instead of making them."""
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "initgroups", lambda name, gid: calls.append(("initgroups", gid)))
    monkeypatch.setattr(os, "setgroups", lambda groups: calls.append(("setgroups", groups)))
    monkeypatch.setattr(os, "setgid", lambda gid: calls.append(("setgid", gid)))
    monkeypatch.setattr(os, "setuid", lambda uid: calls.append(("setuid", uid)))
    return calls


def test_root_becomes_the_owner_of_the_state_dir(open_dir: Path,
                                                 switches: list[tuple[str, object]]) -> None:
    state = open_dir / "state"
    state.mkdir()
    if os.getuid() == 0:  # really root: give it to someone else
        os.chown(state, 65534, 65534)
    info = state.stat()
    ctl_privileges.become_state_owner(state)
    assert switches[-2:] == [("setgid", info.st_gid), ("setuid", info.st_uid)]
    assert switches[0][0] in ("initgroups", "setgroups")


def test_root_stays_root_in_a_root_state_dir(switches: list[tuple[str, object]]) -> None:
    ctl_privileges.become_state_owner(Path("/"))
    assert switches == []


def test_root_refuses_to_create_a_state_dir_others_could_use(
        open_dir: Path, switches: list[tuple[str, object]]) -> None:
    with pytest.raises(Failure) as raised:
        ctl_privileges.become_state_owner(open_dir / "state")
    assert raised.value.code == EX_NOPERM
    assert "run as the listd user: sudo -u listd listctl ..." in str(raised.value)
    assert switches == []


def test_root_may_create_a_state_dir_only_root_can_reach(
        open_dir: Path, switches: list[tuple[str, object]]) -> None:
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    if os.getuid() != 0:  # only root can reach it if root owns it: pretend it does
        assert not ctl_privileges.only_root_reaches(private / "state")
        return
    ctl_privileges.become_state_owner(private / "deeper" / "state")
    assert switches == []


def test_listctl_as_root_leaves_only_files_the_daemon_can_open(
        env: ListdEnv, open_dir: Path) -> None:
    # The suite runs as root (scripts/test installs packages), so this always runs.
    assert os.geteuid() == 0, "run the tests as root, as scripts/test does"
    nobody = pwd.getpwnam("nobody")
    env.document["state_dir"] = str(open_dir / "state")
    env.write()
    result = run(env, "subscribe", "friends", "alice@example.test", code=EX_NOPERM)
    assert "run as the listd user: sudo -u listd listctl ..." in result.stderr
    assert not (open_dir / "state").exists()

    (open_dir / "state").mkdir(mode=0o750)
    os.chown(open_dir / "state", nobody.pw_uid, nobody.pw_gid)
    run(env, "subscribe", "friends", "alice@example.test")
    run(env, "members", "friends")
    created = list((open_dir / "state").iterdir())
    assert created
    assert {(p.stat().st_uid, p.stat().st_gid) for p in created} == {
        (nobody.pw_uid, nobody.pw_gid)}
