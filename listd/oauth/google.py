"""Google Workspace / Gmail tokens: a refresh token obtained once with ``listctl auth
login``, refreshed by google-auth (no hand-made HTTP). The refresh token lives in the state
directory (mode 0600); a rotated one is saved back.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

import google.auth.exceptions
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials

from listd.authconfig import AuthConfig
from listd.credentials import AuthError, Secret, read_secret
from listd.oauth.http import session, write_private
from listd.oauth.provider import LOGIN_HINT, Grant, TokenEndpointError, TokenProvider

TOKEN_NAME = "google-token.json"


def save_refresh_token(state_dir: Path, refresh_token: str) -> None:
    write_private(str(state_dir / TOKEN_NAME), json.dumps({"refresh_token": refresh_token}))


class GoogleTokens(TokenProvider):
    def __init__(self, auth: AuthConfig, state_dir: Path, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self._auth = auth
        self._state_dir = state_dir
        self.token_path = state_dir / TOKEN_NAME
        self._seen_mtime: float | None = None

    def _refresh_token(self) -> str:
        try:
            self._seen_mtime = self.token_path.stat().st_mtime
            return str(json.loads(self.token_path.read_text(encoding="utf-8"))["refresh_token"])
        except (FileNotFoundError, ValueError, KeyError):
            raise AuthError(f"no saved Google sign-in in {self.token_path}; {LOGIN_HINT}"
                            ) from None

    def _fetch(self, force: bool) -> Grant:
        refresh_token = self._refresh_token()
        assert self._auth.client_secret_file is not None
        credentials = Credentials(  # type: ignore[no-untyped-call]  # google-auth is untyped
            token=None, refresh_token=refresh_token, token_uri=self._auth.token_uri,
            client_id=self._auth.client_id,
            client_secret=read_secret(self._auth.client_secret_file).reveal(),
            scopes=list(self._auth.scopes))
        try:
            credentials.refresh(Request(session=session(self._auth)))  # type: ignore[no-untyped-call]
        except google.auth.exceptions.RefreshError as exc:
            reason = str(exc.args[0]) if exc.args else "refused"
            raise AuthError(f"Google refused the saved sign-in ({reason.splitlines()[0]}); "
                            f"{LOGIN_HINT}") from None
        except google.auth.exceptions.TransportError as exc:
            raise TokenEndpointError(f"Google token endpoint unreachable: {exc}") from None
        if credentials.refresh_token and credentials.refresh_token != refresh_token:
            save_refresh_token(self._state_dir, credentials.refresh_token)
            self._seen_mtime = self.token_path.stat().st_mtime
        expiry = credentials.expiry  # naive UTC, as google-auth keeps it
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        lifetime = (expiry - now).total_seconds() if expiry else 3600.0
        return Grant(Secret(str(credentials.token)), max(0.0, lifetime))

    def login_changed(self) -> bool:
        try:
            return self.token_path.stat().st_mtime != self._seen_mtime
        except FileNotFoundError:
            return False
