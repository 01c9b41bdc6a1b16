"""The configuration file: YAML in, frozen dataclasses out.

Every problem is reported as one :class:`ConfigError` line naming the file, the line, the key
and what to do about it; the CLIs turn it into exit code 78 (EX_CONFIG). Secrets are never
read here beyond checking that their files exist with safe permissions, and never printed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from listd.authconfig import AUTH_KEYS, AuthConfig, parse_auth
from listd.configschema import (
    ConfigError,
    Key,
    Reader,
    check_secret_file,
    is_loopback,
)
from listd.mail.addresses import ListAddress, address_key, is_valid_address
from listd.yamlmarks import DuplicateKeyError, MarkedDict, load_marked

__all__ = ["AuthConfig", "ConfigError", "check_secret_file"]

DEFAULT_PATH = Path("/etc/listd/listd.yml")

TLS_MODES = ("implicit", "starttls", "none")
POSTING_POLICIES = ("members", "open", "owners", "moderated")
SUBSCRIPTION_POLICIES = ("confirm", "moderate", "closed")
COMMAND_STYLES = ("request", "plus")
NON_MEMBER_POSTS = ("reject", "hold")
REPLY_TO_POLICIES = ("list", "author")
INITIAL_SYNC = ("new", "all")
_LIST_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


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
class MetricsConfig:
    """``metrics.listen``: where the Prometheus endpoint listens; None: no endpoint."""

    listen: tuple[str, int] | None = None  # (host, port)


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
    metrics: MetricsConfig = MetricsConfig()

    def list_by_id(self, list_id: str) -> ListConfig | None:
        return self.lists.get(list_id)


# --- schema -----------------------------------------------------------------------------

_IMAP_KEYS = {
    "host": Key(str, hint="the IMAP server's host name"),
    "port": Key(int, 993, minimum=1, maximum=65535),
    "tls": Key(str, "implicit", TLS_MODES),
    "username": Key(str, hint="the mailbox's login name"),
    "folder": Key(str, "INBOX"),
    "idle": Key(bool, True),
    "poll_interval": Key((int, float), 60.0, minimum=1),
    "timeout": Key((int, float), 60.0, minimum=1),
    "fetch_batch": Key(int, 50, minimum=1),
    "initial_sync": Key(str, "new", INITIAL_SYNC),
    "ca_file": Key(str, None),
}
_SMTP_KEYS = {
    "host": Key(str, hint="the SMTP server's host name"),
    "port": Key(int, 587, minimum=1, maximum=65535),
    "tls": Key(str, "starttls", TLS_MODES),
    "username": Key(str, None),
    "max_recipients": Key(int, 50, minimum=1),
    "connections": Key(int, 1, minimum=1),
    "timeout": Key((int, float), 60.0, minimum=1),
    "retry_initial": Key((int, float), 60.0, minimum=0),
    "retry_max": Key((int, float), 3600.0, minimum=0),
    "give_up_after": Key((int, float), 5 * 86400.0, minimum=0),
    "ca_file": Key(str, None),
}
_LIST_KEYS = {
    "address": Key(str, hint="the list's posting address"),
    "name": Key(str, None),
    "owners": Key(list, []),
    "posting": Key(str, "members", POSTING_POLICIES),
    "subject_prefix": Key(str, ""),
    "reply_to": Key(str, "list", REPLY_TO_POLICIES),
    "author_copy": Key(bool, False),
    "subscription": Key(str, "confirm", SUBSCRIPTION_POLICIES),
    "commands": Key(str, "request", COMMAND_STYLES),
    "personalize": Key(bool, False),
    "non_member_posts": Key(str, "reject", NON_MEMBER_POSTS),
    "notify_owners": Key(bool, True),
}
_MEMBERSHIP_KEYS = {
    "confirm_expiry_days": Key((int, float), 7.0, minimum=0.01),
    "hold_expiry_days": Key((int, float), 14.0, minimum=0.01),
    "bounce_threshold": Key((int, float), 5.0, minimum=0.5),
    "bounce_window_days": Key((int, float), 14.0, minimum=0.01),
    "answers_per_day": Key(int, 5, minimum=1),
}
_METRICS_KEYS = {
    # host:port, [v6]:port, or a bare port on 127.0.0.1; absent: no metrics endpoint
    "listen": Key((str, int), None),
}
_TOP_KEYS = {
    "state_dir": Key(str, "/var/lib/listd"),
    "imap": Key(dict),
    "smtp": Key(dict),
    "auth": Key(dict, None),  # None: an absent section is read as an empty one
    "lists": Key(dict, None),
    "membership": Key(dict, None),
    "templates_dir": Key(str, "/etc/listd/templates"),
    "metrics": Key(dict, None),
}


def load(path: Path | str = DEFAULT_PATH, *, service: bool = True) -> Config:
    """Read and validate the configuration file at ``path``.

    ``service=False`` (listctl) accepts systemd credentials it cannot see: outside the
    unit there is no ``$CREDENTIALS_DIRECTORY``, and managing members needs no secret.
    """
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
    return parse(raw, path, service=service)


def parse(raw: Any, path: Path, *, service: bool = True) -> Config:
    """Validate an already-parsed YAML document (see :func:`load`)."""
    reader = Reader(path)
    if raw is None:
        raise reader.error(1, "(top level)", "the file is empty; start from the annotated "
                           "example in /usr/share/doc/listd/examples/listd.yml")
    top = reader.section(raw, "", _TOP_KEYS, raw.line if isinstance(raw, MarkedDict) else 1)
    imap = reader.section(top["imap"], "imap", _IMAP_KEYS, top["__lines__"].line_of("imap"))
    smtp = reader.section(top["smtp"], "smtp", _SMTP_KEYS, top["__lines__"].line_of("smtp"))
    auth_line = top["__lines__"].line_of("auth")
    auth = reader.section(top["auth"], "auth", AUTH_KEYS, auth_line)
    membership = reader.section(top["membership"], "membership", _MEMBERSHIP_KEYS,
                                top["__lines__"].line_of("membership"))
    metrics = reader.section(top["metrics"], "metrics", _METRICS_KEYS,
                             top["__lines__"].line_of("metrics"))
    base = path.parent

    def resolve(value: str | None) -> Path | None:
        return None if value is None else (base / value if not os.path.isabs(value)
                                           else Path(value))

    for where, section in (("imap", imap), ("smtp", smtp)):
        if section["tls"] == "none" and not is_loopback(section["host"]):
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

    auth_config = parse_auth(reader, auth, resolve, auth_line, service=service)

    lists = _parse_lists(reader, top["lists"], top["__lines__"].line_of("lists"))
    return Config(
        path=path,
        state_dir=resolve(top["state_dir"]) or Path("/var/lib/listd"),
        imap=ImapConfig(**_fields(imap), ca_file=resolve(imap["ca_file"])),
        smtp=SmtpConfig(**_fields(smtp), ca_file=resolve(smtp["ca_file"])),
        auth=auth_config,
        lists=lists,
        membership=MembershipConfig(**{k: v for k, v in membership.items()
                                       if k != "__lines__"}),
        templates_dir=resolve(top["templates_dir"]),
        metrics=MetricsConfig(_parse_listen(reader, metrics)),
    )


_LISTEN_RE = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<v6port>\d+)|"
                        r"(?P<host>[A-Za-z0-9.-]+):(?P<port>\d+)|(?P<bare>\d+)")


def _parse_listen(reader: Reader, section: dict[str, Any]) -> tuple[str, int] | None:
    """``metrics.listen`` as (host, port): "127.0.0.1:9163", "[::1]:9163", or 9163 alone
    (on 127.0.0.1: the metrics name the lists, so they are not published by default)."""
    value = section["listen"]
    if value is None:
        return None
    line = section["__lines__"].line_of("listen")
    found = _LISTEN_RE.fullmatch(str(value).strip())
    if found is None:
        raise reader.error(line, "metrics.listen", f"{value!r} is not HOST:PORT; write for "
                           "example 127.0.0.1:9163 (or [::1]:9163)")
    host = found["v6"] or found["host"] or "127.0.0.1"
    port = int(found["v6port"] or found["port"] or found["bare"])
    if not 1 <= port <= 65535:
        raise reader.error(line, "metrics.listen", f"port {port} is not between 1 and 65535")
    if found["v6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise reader.error(line, "metrics.listen",
                               f"{host!r} is not an IPv6 address") from None
    return host, port


def _fields(section: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if isinstance(v, int) and k in _FLOAT_KEYS else v
            for k, v in section.items() if k not in ("__lines__", "ca_file")}


_FLOAT_KEYS = {"poll_interval", "timeout", "retry_initial", "retry_max", "give_up_after"}


def _parse_lists(reader: Reader, raw: Any, line: int) -> dict[str, ListConfig]:
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


def _check_address(reader: Reader, line: int, key: str, address: str) -> None:
    if not is_valid_address(address):
        raise reader.error(line, key, f"{address!r} is not an email address (local@domain)")

