"""The configuration file: YAML in, frozen dataclasses out.

Every problem is reported as one :class:`ConfigError` line naming the file, the line, the key
and what to do about it; the CLIs turn it into exit code 78 (EX_CONFIG). Secrets are never
read here beyond checking that their files exist with safe permissions, and never printed.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from listd.mail.addresses import ListAddress, address_key, is_valid_address
from listd.yamlmarks import DuplicateKeyError, MarkedDict, load_marked

DEFAULT_PATH = Path("/etc/listd/listd.yml")

TLS_MODES = ("implicit", "starttls", "none")
POSTING_POLICIES = ("members", "open", "owners", "moderated")
SUBSCRIPTION_POLICIES = ("confirm", "moderate", "closed")
COMMAND_STYLES = ("request", "plus")
NON_MEMBER_POSTS = ("reject", "hold")
REPLY_TO_POLICIES = ("list", "author")
INITIAL_SYNC = ("new", "all")
AUTH_METHODS = ("password",)
_LIST_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line the operator will read."""

    def __init__(self, path: Path | str, line: int | None, key: str, problem: str) -> None:
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


@dataclass(frozen=True)
class ImapConfig:
    host: str
    username: str
    port: int = 993
    tls: str = "implicit"
    folder: str = "INBOX"
    idle: bool = True
    poll_interval: float = 60.0
    timeout: float = 60.0
    fetch_batch: int = 50
    initial_sync: str = "new"
    ca_file: Path | None = None


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    tls: str = "starttls"
    username: str | None = None
    max_recipients: int = 50
    connections: int = 1
    timeout: float = 60.0
    retry_initial: float = 60.0
    retry_max: float = 3600.0
    give_up_after: float = 5 * 86400.0
    ca_file: Path | None = None


@dataclass(frozen=True)
class AuthConfig:
    method: str = "password"
    password_file: Path | None = None


@dataclass(frozen=True)
class ListConfig:
    id: str
    address: str
    name: str
    owners: tuple[str, ...] = ()
    posting: str = "members"
    subject_prefix: str = ""
    reply_to: str = "list"
    author_copy: bool = False
    subscription: str = "confirm"
    commands: str = "request"  # where List-* and our mails point: list-request@ or list+cmd@
    personalize: bool = False
    non_member_posts: str = "reject"
    notify_owners: bool = True


@dataclass(frozen=True)
class MembershipConfig:
    confirm_expiry_days: float = 7.0
    hold_expiry_days: float = 14.0
    bounce_threshold: float = 5.0
    bounce_window_days: float = 14.0
    answers_per_day: int = 5  # mails answering commands, per address and day (all lists)


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    imap: ImapConfig
    smtp: SmtpConfig
    auth: AuthConfig
    lists: Mapping[str, ListConfig]
    membership: MembershipConfig = MembershipConfig()
    templates_dir: Path | None = None

    def list_by_id(self, list_id: str) -> ListConfig | None:
        return self.lists.get(list_id)


# --- schema -----------------------------------------------------------------------------

_REQUIRED = object()


@dataclass(frozen=True)
class _Key:
    kind: type | tuple[type, ...]
    default: Any = _REQUIRED
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    hint: str = ""


_IMAP_KEYS = {
    "host": _Key(str, hint="the IMAP server's host name"),
    "port": _Key(int, 993, minimum=1, maximum=65535),
    "tls": _Key(str, "implicit", TLS_MODES),
    "username": _Key(str, hint="the mailbox's login name"),
    "folder": _Key(str, "INBOX"),
    "idle": _Key(bool, True),
    "poll_interval": _Key((int, float), 60.0, minimum=1),
    "timeout": _Key((int, float), 60.0, minimum=1),
    "fetch_batch": _Key(int, 50, minimum=1),
    "initial_sync": _Key(str, "new", INITIAL_SYNC),
    "ca_file": _Key(str, None),
}
_SMTP_KEYS = {
    "host": _Key(str, hint="the SMTP server's host name"),
    "port": _Key(int, 587, minimum=1, maximum=65535),
    "tls": _Key(str, "starttls", TLS_MODES),
    "username": _Key(str, None),
    "max_recipients": _Key(int, 50, minimum=1),
    "connections": _Key(int, 1, minimum=1),
    "timeout": _Key((int, float), 60.0, minimum=1),
    "retry_initial": _Key((int, float), 60.0, minimum=0),
    "retry_max": _Key((int, float), 3600.0, minimum=0),
    "give_up_after": _Key((int, float), 5 * 86400.0, minimum=0),
    "ca_file": _Key(str, None),
}
_AUTH_KEYS = {
    "method": _Key(str, "password", AUTH_METHODS),
    "password_file": _Key(str, None),
}
_LIST_KEYS = {
    "address": _Key(str, hint="the list's posting address"),
    "name": _Key(str, None),
    "owners": _Key(list, []),
    "posting": _Key(str, "members", POSTING_POLICIES),
    "subject_prefix": _Key(str, ""),
    "reply_to": _Key(str, "list", REPLY_TO_POLICIES),
    "author_copy": _Key(bool, False),
    "subscription": _Key(str, "confirm", SUBSCRIPTION_POLICIES),
    "commands": _Key(str, "request", COMMAND_STYLES),
    "personalize": _Key(bool, False),
    "non_member_posts": _Key(str, "reject", NON_MEMBER_POSTS),
    "notify_owners": _Key(bool, True),
}
_MEMBERSHIP_KEYS = {
    "confirm_expiry_days": _Key((int, float), 7.0, minimum=0.01),
    "hold_expiry_days": _Key((int, float), 14.0, minimum=0.01),
    "bounce_threshold": _Key((int, float), 5.0, minimum=0.5),
    "bounce_window_days": _Key((int, float), 14.0, minimum=0.01),
    "answers_per_day": _Key(int, 5, minimum=1),
}
_TOP_KEYS = {
    "state_dir": _Key(str, "/var/lib/listd"),
    "imap": _Key(dict),
    "smtp": _Key(dict),
    "auth": _Key(dict, None),  # None: an absent section is read as an empty one
    "lists": _Key(dict, None),
    "membership": _Key(dict, None),
    "templates_dir": _Key(str, "/etc/listd/templates"),
}


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
             list: "a list", dict: "a mapping"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names[k] for k in kinds if k is not int or float not in kinds)


class _Reader:
    """Validates one mapping against a schema, raising the first problem as ConfigError."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, line: int | None, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, line, key, problem)

    def section(self, raw: Any, where: str, schema: Mapping[str, _Key],
                line: int) -> dict[str, Any]:
        """``line`` is that of the key naming the section: where a missing key goes."""
        if raw is None:
            raw = MarkedDict()
            raw.line, raw.key_lines = line, {}
        if not isinstance(raw, MarkedDict):
            raise self.error(line, where or "(top level)", "must be a mapping of keys to values")
        for key in raw:
            if key not in schema:
                close = difflib.get_close_matches(key, list(schema), n=1)
                advice = f"did you mean '{close[0]}'?" if close else (
                    "known keys: " + ", ".join(schema))
                raise self.error(raw.line_of(key), _join(where, key), f"unknown key; {advice}")
        values: dict[str, Any] = {}
        for key, spec in schema.items():
            full = _join(where, key)
            if key not in raw or raw[key] is None:
                if spec.default is _REQUIRED:
                    hint = f" ({spec.hint})" if spec.hint else ""
                    raise self.error(line, full, f"missing; add it{hint}")
                values[key] = spec.default
                continue
            value = raw[key]
            kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise self.error(raw.line_of(key), full,
                                 f"must be {_type_name(spec.kind)}, not {value!r}")
            if spec.choices and value not in spec.choices:
                raise self.error(raw.line_of(key), full,
                                 f"{value!r} is not one of {', '.join(spec.choices)}")
            if isinstance(value, int | float):
                problem = _number_problem(value, spec)
                if problem:
                    raise self.error(raw.line_of(key), full, problem)
            values[key] = value
        values["__lines__"] = raw
        return values


def _number_problem(value: float, spec: _Key) -> str:
    if not math.isfinite(value):  # YAML's .nan and .inf are floats too
        return f"must be a finite number, not {value}"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g}"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be at most {spec.maximum:g}"
    return ""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_secret_file(path: Path) -> str | None:
    """Why ``path`` is not acceptable as a secret file, or None if it is."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"{path} does not exist; create it (mode 0600) with the secret on one line"
    except PermissionError:
        return f"{path} cannot be read by this user; check its owner and mode"
    except OSError as exc:  # a file in the path is no directory, a symlink loop...
        return f"{path} cannot be used: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_mode & 0o007:
        return f"{path} is readable by others (mode {info.st_mode & 0o777:04o}); chmod 0600 it"
    if not os.access(path, os.R_OK):
        return f"{path} cannot be read by this user; check its owner and mode"
    return None


def load(path: Path | str = DEFAULT_PATH) -> Config:
    """Read and validate the configuration file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "", "file not found; copy the annotated example from "
                          "/usr/share/doc/listd/examples/listd.yml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, "", f"cannot be read: {exc}") from None
    try:
        raw = load_marked(text)
    except DuplicateKeyError as exc:
        raise ConfigError(path, exc.problem_mark.line + 1 if exc.problem_mark else None,
                          exc.path, f"given twice (first on line {exc.first_line}); "
                          "keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, mark.line + 1 if mark else None, "",
                          f"not valid YAML: {problem}") from None
    return parse(raw, path)


def parse(raw: Any, path: Path) -> Config:
    """Validate an already-parsed YAML document (see :func:`load`)."""
    reader = _Reader(path)
    if raw is None:
        raise reader.error(1, "(top level)", "the file is empty; start from the annotated "
                           "example in /usr/share/doc/listd/examples/listd.yml")
    top = reader.section(raw, "", _TOP_KEYS, raw.line if isinstance(raw, MarkedDict) else 1)
    imap = reader.section(top["imap"], "imap", _IMAP_KEYS, top["__lines__"].line_of("imap"))
    smtp = reader.section(top["smtp"], "smtp", _SMTP_KEYS, top["__lines__"].line_of("smtp"))
    auth = reader.section(top["auth"], "auth", _AUTH_KEYS, top["__lines__"].line_of("auth"))
    membership = reader.section(top["membership"], "membership", _MEMBERSHIP_KEYS,
                                top["__lines__"].line_of("membership"))
    base = path.parent

    def resolve(value: str | None) -> Path | None:
        return None if value is None else (base / value if not os.path.isabs(value)
                                           else Path(value))

    for where, section in (("imap", imap), ("smtp", smtp)):
        if section["tls"] == "none" and not _is_loopback(section["host"]):
            raise reader.error(section["__lines__"].line_of("tls"), f"{where}.tls",
                               f"'none' sends the password in clear text to {section['host']}; "
                               "use implicit or starttls (none is allowed for loopback hosts only)")
        ca = resolve(section["ca_file"])
        if ca is not None and not ca.is_file():
            raise reader.error(section["__lines__"].line_of("ca_file"), f"{where}.ca_file",
                               f"{ca} does not exist")
    if smtp["retry_max"] < smtp["retry_initial"]:
        raise reader.error(smtp["__lines__"].line_of("retry_max"), "smtp.retry_max",
                           "must not be smaller than smtp.retry_initial")

    password_file = resolve(auth["password_file"])
    # IMAP always logs in with it; SMTP only when smtp.username is set.
    if auth["method"] == "password":
        if password_file is None:
            raise reader.error(top["__lines__"].line_of("auth"), "auth.password_file",
                               "missing; name the file holding the mailbox password (mode 0600)")
        problem = check_secret_file(password_file)
        if problem:
            raise reader.error(auth["__lines__"].line_of("password_file"),
                               "auth.password_file", problem)

    lists = _parse_lists(reader, top["lists"], top["__lines__"].line_of("lists"))
    return Config(
        path=path,
        state_dir=resolve(top["state_dir"]) or Path("/var/lib/listd"),
        imap=ImapConfig(**_fields(imap), ca_file=resolve(imap["ca_file"])),
        smtp=SmtpConfig(**_fields(smtp), ca_file=resolve(smtp["ca_file"])),
        auth=AuthConfig(method=auth["method"], password_file=password_file),
        lists=lists,
        membership=MembershipConfig(**{k: v for k, v in membership.items()
                                       if k != "__lines__"}),
        templates_dir=resolve(top["templates_dir"]),
    )


def _fields(section: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if isinstance(v, int) and k in _FLOAT_KEYS else v
            for k, v in section.items() if k not in ("__lines__", "ca_file")}


_FLOAT_KEYS = {"poll_interval", "timeout", "retry_initial", "retry_max", "give_up_after"}


def _parse_lists(reader: _Reader, raw: Any, line: int) -> dict[str, ListConfig]:
    if raw is None:
        return {}
    if not isinstance(raw, MarkedDict):
        raise reader.error(line, "lists", "must be a mapping of list ids to list settings")
    lists: dict[str, ListConfig] = {}
    for list_id in raw:
        where = f"lists.{list_id}"
        key_line = raw.line_of(list_id)
        if not _LIST_ID_RE.match(list_id):
            raise reader.error(key_line, where, "a list id uses lower-case letters, digits, "
                               "'.', '_' and '-' only (at most 64)")
        values = reader.section(raw[list_id], where, _LIST_KEYS, key_line)
        lines: MarkedDict = values["__lines__"]
        address = values["address"].strip()
        _check_address(reader, lines.line_of("address"), f"{where}.address", address)
        for other in lists.values():
            # Not only the same address: friends-owner@ or friends+x@ as a list of its own
            # would receive the owner mail or the tagged posts of the list friends@.
            mine, theirs = ListAddress.parse(address), ListAddress.parse(other.address)
            if mine.match(other.address) is not None or theirs.match(address) is not None:
                problem = (f"{address} is already the address of list '{other.id}'"
                           if address_key(address) == address_key(other.address) else
                           f"{address} is taken by list '{other.id}' ({other.address} also "
                           "answers at its -request, -owner and +tag addresses)")
                raise reader.error(lines.line_of("address"), f"{where}.address",
                                   f"{problem}; each list needs its own address")
        owners: list[str] = []
        for owner in values["owners"]:
            if not isinstance(owner, str):
                raise reader.error(lines.line_of("owners"), f"{where}.owners",
                                   f"must be a list of addresses, not {owner!r}")
            _check_address(reader, lines.line_of("owners"), f"{where}.owners", owner.strip())
            owners.append(owner.strip())
        if values["posting"] == "owners" and not owners:
            raise reader.error(lines.line_of("posting"), f"{where}.posting",
                               "'owners' needs at least one address in owners")
        prefix = values["subject_prefix"]
        if not _one_line(prefix):
            raise reader.error(lines.line_of("subject_prefix"), f"{where}.subject_prefix",
                               "must be on one line")
        name = values["name"] if values["name"] is not None else list_id
        if not _one_line(name):
            raise reader.error(lines.line_of("name"), f"{where}.name", "must be on one line")
        lists[list_id] = ListConfig(
            id=list_id, address=address, name=name, owners=tuple(owners),
            posting=values["posting"], subject_prefix=prefix, reply_to=values["reply_to"],
            author_copy=values["author_copy"], subscription=values["subscription"],
            commands=values["commands"], personalize=values["personalize"],
            non_member_posts=values["non_member_posts"],
            notify_owners=values["notify_owners"])
    return lists


def _one_line(text: str) -> bool:
    # Not only CR and LF: the email package also takes VT, FF, NEL, U+2028... for line
    # breaks, and refuses them in the header fields the name and the prefix go into.
    return "".join(text.splitlines()) == text


def _check_address(reader: _Reader, line: int, key: str, address: str) -> None:
    if not is_valid_address(address):
        raise reader.error(line, key, f"{address!r} is not an email address (local@domain)")

