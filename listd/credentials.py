"""Signing in to the mailbox: the seam where password and OAuth2 methods plug in.

A secret is held in a :class:`Secret`, whose repr and str never show it, so a stray log
line or traceback cannot leak it. Secret files are re-read at every sign-in, so rotating
a password needs no restart.
"""

from __future__ import annotations

import imaplib
import smtplib
from pathlib import Path
from typing import Any, Protocol

from listd.configschema import check_secret_file


class AuthError(Exception):
    """The server refused our credentials, or they cannot be obtained. Never retried fast."""


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


def read_secret(path: Path) -> Secret:
    problem = check_secret_file(path)
    if problem:
        raise AuthError(problem)
    text = path.read_text(encoding="utf-8").strip("\r\n")
    if not text:
        raise AuthError(f"{path} is empty")
    return Secret(text)


class Authenticator(Protocol):
    """Signs an open IMAP or SMTP connection in as ``username``."""

    def imap_login(self, client: Any, username: str) -> None: ...

    def smtp_login(self, connection: smtplib.SMTP, username: str) -> None: ...


class PasswordAuth:
    def __init__(self, password_file: Path) -> None:
        self._password_file = password_file

    def imap_login(self, client: Any, username: str) -> None:
        password = read_secret(self._password_file)
        try:
            client.login(username, password.reveal())
        except imaplib.IMAP4.error as exc:
            # imapclient's LoginError is an IMAP4.error; its text is the server's, no secret.
            raise AuthError(f"IMAP server refused the login of {username}: "
                            f"{_server_text(exc)}") from None

    def smtp_login(self, connection: smtplib.SMTP, username: str) -> None:
        password = read_secret(self._password_file)
        try:
            connection.login(username, password.reveal())
        except smtplib.SMTPAuthenticationError as exc:
            raise AuthError(f"SMTP server refused the login of {username}: "
                            f"{exc.smtp_code} {_server_text(exc.smtp_error)}") from None
        except smtplib.SMTPNotSupportedError:
            raise AuthError("the SMTP server offers no AUTH; remove smtp.username to relay "
                            "without signing in") from None


def _server_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
