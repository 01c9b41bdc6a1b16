"""Signing IMAP and SMTP connections in with SASL XOAUTH2 and a provider's token.

When a server refuses a token (revoked, or expired early), the provider is asked for a new
one and the sign-in is tried once more; a second refusal is an AuthError.
"""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Callable
from typing import Any

from listd.credentials import AuthError, Secret
from listd.oauth.provider import TokenProvider


def xoauth2_response(username: str, token: Secret) -> str:
    return f"user={username}\x01auth=Bearer {token.reveal()}\x01\x01"


class OAuthAuth:
    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    def _twice(self, attempt: Callable[[Secret], None], what: str) -> None:
        try:
            attempt(self.provider.token())
            return
        except AuthError:
            pass
        try:
            attempt(self.provider.refused())
        except AuthError as exc:
            raise AuthError(f"{what} refused a fresh OAuth2 token: {exc}") from None

    def imap_login(self, client: Any, username: str) -> None:
        def attempt(token: Secret) -> None:
            try:
                client.oauth2_login(username, token.reveal())
            except imaplib.IMAP4.error as exc:
                raise AuthError(_text(exc)) from None
        self._twice(attempt, f"the IMAP server (as {username})")

    def smtp_login(self, connection: smtplib.SMTP, username: str) -> None:
        def attempt(token: Secret) -> None:
            initial = xoauth2_response(username, token)
            # On failure the server sends a JSON challenge; the client answers with an
            # empty line and gets the final 535 (RFC 7628 style, as Gmail does).
            try:
                connection.auth("XOAUTH2", lambda challenge=None: "" if challenge else initial)
            except smtplib.SMTPAuthenticationError as exc:
                raise AuthError(f"{exc.smtp_code} {_text(exc.smtp_error)}") from None
            except smtplib.SMTPNotSupportedError:
                raise AuthError("the SMTP server does not offer AUTH XOAUTH2") from None
        self._twice(attempt, f"the SMTP server (as {username})")


def _text(value: object) -> str:
    if isinstance(value, BaseException) and value.args:
        value = value.args[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
