"""listd.config: a valid file loads; every broken one gives one line "FILE:LINE: KEY: problem"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from listd import config
from listd.config import ConfigError, ListConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "etc" / "listd" / "listd.yml"
EX_CONFIG = 78

# Line numbers below refer to this text (line 1 is "state_dir").
BASE = """\
state_dir: {state}
imap:
  host: imap.example.org
  username: lists@example.org
smtp:
  host: smtp.example.org
auth:
  password_file: {password}
lists:
  friends:
    address: friends@example.org
    owners: [alice@example.org]
"""


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("secret\n")
    path.chmod(0o600)
    return path


def write(tmp_path: Path, text: str, password: Path | None = None) -> Path:
    path = tmp_path / "listd.yml"
    path.write_text(text.format(state=tmp_path / "state",
                                password=password or tmp_path / "password"))
    return path


def base(tmp_path: Path, password: Path, *edits: tuple[str, str]) -> Path:
    text = BASE
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return write(tmp_path, text, password)


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- valid files --------------------------------------------------------------------------

def test_minimal_file_loads_with_defaults(tmp_path: Path, password: Path) -> None:
    path = base(tmp_path, password)
    cfg = config.load(path)
    assert cfg.path == path
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.imap == config.ImapConfig(host="imap.example.org", username="lists@example.org")
    assert cfg.smtp == config.SmtpConfig(host="smtp.example.org")
    assert cfg.auth == config.AuthConfig(method="password", password_file=password)
    assert dict(cfg.lists) == {"friends": ListConfig(
        id="friends", address="friends@example.org", name="friends",
        owners=("alice@example.org",))}
    assert cfg.list_by_id("friends") is cfg.lists["friends"]
    assert cfg.list_by_id("nope") is None
    assert isinstance(cfg.imap.poll_interval, float)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path, password: Path) -> None:
    (tmp_path / "ca.pem").write_text("not checked here\n")
    path = base(tmp_path, password, ("password_file: {password}", "password_file: password"),
                ("state_dir: {state}", "state_dir: state"),
                ("  host: imap.example.org\n", "  host: imap.example.org\n  ca_file: ca.pem\n"))
    cfg = config.load(path)
    assert cfg.auth.password_file == tmp_path / "password"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.imap.ca_file == tmp_path / "ca.pem"


def test_lists_and_auth_may_be_left_out_or_empty(tmp_path: Path, password: Path) -> None:
    text = BASE.split("lists:")[0]
    assert config.load(write(tmp_path, text, password)).lists == {}
    assert config.load(write(tmp_path, text + "lists:\n", password)).lists == {}


def test_every_setting_of_a_list(tmp_path: Path, password: Path) -> None:
    path = base(tmp_path, password, ("    owners: [alice@example.org]\n", """\
    name: "Friends of the garden"
    owners: [alice@example.org, " Bob@Example.org "]
    posting: owners
    subject_prefix: "[friends] "
    reply_to: author
    author_copy: true
  chess:
    address: chess@example.org
"""))
    lists = config.load(path).lists
    assert lists["friends"] == ListConfig(
        id="friends", address="friends@example.org", name="Friends of the garden",
        owners=("alice@example.org", "Bob@Example.org"), posting="owners",
        subject_prefix="[friends] ", reply_to="author", author_copy=True)
    assert lists["chess"].name == "chess" and lists["chess"].posting == "members"


def test_tls_none_is_fine_for_loopback(tmp_path: Path, password: Path) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"):
        path = base(tmp_path, password, ("host: smtp.example.org",
                                         f"host: '{host}'\n  tls: none"))
        assert config.load(path).smtp.tls == "none"


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_password_file_modes_that_are_fine(tmp_path: Path, password: Path, mode: int) -> None:
    password.chmod(mode)
    assert config.load(base(tmp_path, password)).auth.password_file == password


def test_the_shipped_example_loads(tmp_path: Path, password: Path) -> None:
    text = EXAMPLE.read_text()
    assert "password_file: /etc/listd/password\n" in text
    path = tmp_path / "listd.yml"
    path.write_text(text.replace("/etc/listd/password", str(password)))
    cfg = config.load(path)
    assert cfg.imap.host == "imap.example.org" and cfg.imap.port == 993
    assert cfg.smtp.tls == "starttls" and cfg.smtp.username == "lists@example.org"
    assert cfg.smtp.give_up_after == 432000.0
    friends = cfg.lists["friends"]
    assert friends.address == "friends@example.org"
    assert friends.name == "Friends of the garden"
    assert friends.subject_prefix == "[friends] "
    assert friends.owners == ("alice@example.org",)


# --- broken files: one line each, with the right line --------------------------------------

BROKEN: list[tuple[str, list[tuple[str, str]], str]] = [
    ("unknown key with a suggestion",
     [("  host: imap.example.org", "  hots: imap.example.org")],
     "3: imap.hots: unknown key; did you mean 'host'?"),
    ("unknown key without a suggestion",
     [("  host: smtp.example.org", "  host: smtp.example.org\n  zzz: 1")],
     "7: smtp.zzz: unknown key; known keys: host, port, tls, username, max_recipients, "
     "connections, timeout, retry_initial, retry_max, give_up_after, ca_file"),
    ("unknown top-level key",
     [("lists:", "list:")], "9: list: unknown key; did you mean 'lists'?"),
    ("unknown key of a list",
     [("    owners:", "    owner:")],
     "12: lists.friends.owner: unknown key; did you mean 'owners'?"),
    ("string for a number",
     [("  username: lists", "  port: '993'\n  username: lists")],
     "4: imap.port: must be a whole number, not '993'"),
    ("boolean for a number",
     [("  username: lists", "  port: yes\n  username: lists")],
     "4: imap.port: must be a whole number, not True"),
    ("fraction for a whole number",
     [("  username: lists", "  fetch_batch: 2.5\n  username: lists")],
     "4: imap.fetch_batch: must be a whole number, not 2.5"),
    ("string for a boolean",
     [("  username: lists", "  idle: maybe\n  username: lists")],
     "4: imap.idle: must be true or false, not 'maybe'"),
    ("mapping expected",
     [("imap:\n  host: imap.example.org\n  username: lists@example.org\n", "imap: [a, b]\n")],
     "2: imap: must be a mapping, not ['a', 'b']"),
    ("list of owners expected",
     [("    owners: [alice@example.org]", "    owners: alice@example.org")],
     "12: lists.friends.owners: must be a list, not 'alice@example.org'"),
    ("bad choice",
     [("  host: smtp.example.org", "  host: smtp.example.org\n  tls: ssl")],
     "7: smtp.tls: 'ssl' is not one of implicit, starttls, none"),
    ("bad posting policy",
     [("    owners:", "    posting: everybody\n    owners:")],
     "12: lists.friends.posting: 'everybody' is not one of members, open, owners, moderated"),
    ("below minimum",
     [("  username: lists", "  fetch_batch: 0\n  username: lists")],
     "4: imap.fetch_batch: must be at least 1"),
    ("negative retry",
     [("  host: smtp.example.org", "  host: smtp.example.org\n  retry_initial: -5")],
     "7: smtp.retry_initial: must be at least 0"),
    ("port too high",
     [("  host: smtp.example.org", "  host: smtp.example.org\n  port: 70000")],
     "7: smtp.port: must be at most 65535"),
    ("not a number",
     [("  username: lists", "  timeout: .nan\n  username: lists")],
     "4: imap.timeout: must be a finite number, not nan"),
    ("infinite",
     [("  host: smtp.example.org", "  host: smtp.example.org\n  give_up_after: .inf")],
     "7: smtp.give_up_after: must be a finite number, not inf"),
    ("retry_max below retry_initial",
     [("  host: smtp.example.org",
       "  host: smtp.example.org\n  retry_initial: 600\n  retry_max: 60")],
     "8: smtp.retry_max: must not be smaller than smtp.retry_initial"),
    ("missing required key of a section",
     [("  username: lists@example.org\n", "")],
     "2: imap.username: missing; add it (the mailbox's login name)"),
    ("missing required section",
     [("smtp:\n  host: smtp.example.org\n", "")],
     "1: smtp: missing; add it"),
    ("missing list address",
     [("    address: friends@example.org\n", "")],
     "10: lists.friends.address: missing; add it (the list's posting address)"),
    ("missing password_file",
     [("  password_file: {password}", "  method: password")],
     "7: auth.password_file: missing; name the file holding the mailbox password (mode 0600), "
     "or use auth.password_credential"),
    ("tls none to a remote host",
     [("  host: imap.example.org", "  host: imap.example.org\n  tls: none")],
     "4: imap.tls: 'none' sends the password in clear text to imap.example.org; use implicit "
     "or starttls (none is allowed for loopback hosts only)"),
    ("two lists with one address",
     [("    owners: [alice@example.org]",
       "    owners: [alice@example.org]\n  garden:\n    address: Friends@Example.org")],
     "14: lists.garden.address: Friends@Example.org is already the address of list "
     "'friends'; each list needs its own address"),
    ("a list at another list's owner address",
     [("    owners: [alice@example.org]",
       "    owners: [alice@example.org]\n  fo:\n    address: friends-owner@example.org")],
     "14: lists.fo.address: friends-owner@example.org is taken by list 'friends' "
     "(friends@example.org also answers at its -request, -owner and +tag addresses); "
     "each list needs its own address"),
    ("a list whose +tag address is another list",
     [("  friends:\n", "  tagged:\n    address: friends+x@example.org\n  friends:\n")],
     "13: lists.friends.address: friends@example.org is taken by list 'tagged' "
     "(friends+x@example.org also answers at its -request, -owner and +tag addresses); "
     "each list needs its own address"),
    ("invalid list id",
     [("  friends:", "  Friends!:")],
     "10: lists.Friends!: a list id uses lower-case letters, digits, '.', '_' and '-' only "
     "(at most 64)"),
    ("invalid address",
     [("    address: friends@example.org", "    address: friends at example.org")],
     "11: lists.friends.address: 'friends at example.org' is not an email address "
     "(local@domain)"),
    ("address with a display name",
     [("    address: friends@example.org", "    address: Friends <friends@example.org>")],
     "11: lists.friends.address: 'Friends <friends@example.org>' is not an email address "
     "(local@domain)"),
    ("invalid owner",
     [("[alice@example.org]", "[alice@example.org, bob]")],
     "12: lists.friends.owners: 'bob' is not an email address (local@domain)"),
    ("owner that is no string",
     [("[alice@example.org]", "[alice@example.org, 42]")],
     "12: lists.friends.owners: must be a list of addresses, not 42"),
    ("posting owners without owners",
     [("    owners: [alice@example.org]", "    posting: owners")],
     "12: lists.friends.posting: 'owners' needs at least one address in owners"),
    ("multi-line subject prefix",
     [("    owners:", "    subject_prefix: \"[a]\\n\"\n    owners:")],
     "12: lists.friends.subject_prefix: must be on one line"),
    ("name with a line break the email package sees (NEL)",
     [("    owners:", "    name: \"a\\Nb\"\n    owners:")],
     "12: lists.friends.name: must be on one line"),
    ("prefix with a vertical tab",
     [("    owners:", "    subject_prefix: \"[a]\\v\"\n    owners:")],
     "12: lists.friends.subject_prefix: must be on one line"),
    ("lists not a mapping",
     [("lists:\n  friends:\n    address: friends@example.org\n    owners: [alice@example.org]\n",
       "lists: [friends]\n")],
     "9: lists: must be a mapping, not ['friends']"),
    ("list settings not a mapping",
     [("  friends:\n    address: friends@example.org\n    owners: [alice@example.org]\n",
       "  friends: friends@example.org\n")],
     "10: lists.friends: must be a mapping of keys to values"),
    ("duplicate key",
     [("  username: lists@example.org", "  username: lists@example.org\n  host: again")],
     "5: imap.host: given twice (first on line 3); keep one"),
    ("duplicate list",
     [("    owners: [alice@example.org]",
       "    owners: [alice@example.org]\n  friends:\n    address: x@example.org")],
     "13: lists.friends: given twice (first on line 10); keep one"),
    ("YAML syntax error",
     [("  username: lists@example.org", "  username: [lists@example.org")],
     "5: not valid YAML: expected ',' or ']', but got ':'"),
    ("tab indentation",
     [("  host: smtp.example.org", "\thost: smtp.example.org")],
     "6: not valid YAML: found character '\\t' that cannot start any token"),
]


@pytest.mark.parametrize(("edits", "expected"), [(e, x) for _, e, x in BROKEN],
                         ids=[name for name, _, _ in BROKEN])
def test_broken_config_gives_one_line(tmp_path: Path, password: Path,
                                      edits: list[tuple[str, str]], expected: str) -> None:
    path = base(tmp_path, password, *edits)
    assert error_of(path) == f"{path}:{expected}"


def test_missing_password_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    path = write(tmp_path, BASE, missing)
    assert error_of(path) == (f"{path}:8: auth.password_file: {missing} does not exist; "
                              "create it (mode 0600) with the secret on one line")


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o606])
def test_password_file_readable_by_others(tmp_path: Path, password: Path, mode: int) -> None:
    password.chmod(mode)
    path = base(tmp_path, password)
    assert error_of(path) == (f"{path}:8: auth.password_file: {password} is readable by "
                              f"others (mode {mode:04o}); chmod 0600 it")


def test_password_file_that_is_a_directory_or_under_a_file(tmp_path: Path,
                                                           password: Path) -> None:
    path = write(tmp_path, BASE, tmp_path)
    assert error_of(path) == f"{path}:8: auth.password_file: {tmp_path} is not a regular file"
    under = password / "x"
    path = write(tmp_path, BASE, under)
    assert error_of(path) == (f"{path}:8: auth.password_file: {under} cannot be used: "
                              "Not a directory")


def test_missing_ca_file(tmp_path: Path, password: Path) -> None:
    path = base(tmp_path, password, ("  host: smtp.example.org",
                                     "  host: smtp.example.org\n  ca_file: ca.pem"))
    assert error_of(path) == f"{path}:7: smtp.ca_file: {tmp_path / 'ca.pem'} does not exist"


def test_missing_auth_section(tmp_path: Path, password: Path) -> None:
    path = base(tmp_path, password, ("auth:\n  password_file: {password}\n", ""))
    assert error_of(path) == (f"{path}:1: auth.password_file: missing; name the file holding "
                              "the mailbox password (mode 0600), or use auth.password_credential")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "~\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "listd.yml"
    path.write_text(text)
    assert error_of(path) == (f"{path}:1: (top level): the file is empty; start from the "
                              "annotated example in /usr/share/doc/listd/examples/listd.yml")


@pytest.mark.parametrize("text", ["- imap\n- smtp\n", "just text\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "listd.yml"
    path.write_text(text)
    assert error_of(path) == f"{path}:1: (top level): must be a mapping of keys to values"


def test_top_level_missing_key_names_the_first_line_of_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "listd.yml"
    path.write_text("# listd\n\nsmtp:\n  host: smtp.example.org\n")
    assert error_of(path) == f"{path}:3: imap: missing; add it"


def test_file_not_found_and_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    assert error_of(missing) == (f"{missing}: file not found; copy the annotated example from "
                                 "/usr/share/doc/listd/examples/listd.yml")
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"imap: \xff\xfe\n")
    assert error_of(binary).startswith(f"{binary}: cannot be read: ")


def test_secrets_are_never_in_the_message(tmp_path: Path, password: Path) -> None:
    password.write_text("hunter2-secret\n")
    password.chmod(0o644)
    assert "hunter2" not in error_of(base(tmp_path, password))


# --- the real command-line tools ----------------------------------------------------------

def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env,
                          check=False)


def _listctl() -> list[str]:
    script = Path(sys.executable).with_name("listctl")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from listd.cli.listctl import main; "
            "sys.exit(main())"]


def test_listd_exits_78_with_the_one_line(tmp_path: Path, password: Path) -> None:
    path = base(tmp_path, password, ("  host: imap.example.org", "  hots: imap.example.org"))
    result = _run(sys.executable, "-m", "listd", "--config", str(path), "--once")
    assert result.returncode == EX_CONFIG
    (line,) = result.stderr.splitlines()
    assert line.endswith(f"{path}:3: imap.hots: unknown key; did you mean 'host'?")
    assert result.stdout == ""
    assert not (tmp_path / "state").exists()


def test_listctl_exits_78_with_the_one_line(tmp_path: Path, password: Path) -> None:
    password.chmod(0o644)
    path = base(tmp_path, password)
    result = _run(*_listctl(), "--config", str(path), "status")
    assert result.returncode == EX_CONFIG
    (line,) = result.stderr.splitlines()
    assert line.endswith(f"{path}:8: auth.password_file: {password} is readable by others "
                         "(mode 0644); chmod 0600 it")
    assert result.stdout == ""
