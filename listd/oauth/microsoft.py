"""Microsoft 365 tokens through msal: app-only (client credentials) or delegated.

Delegated sign-in happens once with ``listctl auth login`` (device code); msal's token
cache in the state directory (mode 0600) keeps the refresh token, and the daemon re-reads
it whenever it changes, so a new sign-in is picked up without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import requests

from listd.authconfig import AuthConfig
from listd.credentials import AuthError, Secret, read_secret
from listd.oauth.http import session, write_private
from listd.oauth.provider import LOGIN_HINT, Grant, TokenEndpointError, TokenProvider

CACHE_NAME = "msal-token-cache.json"
# Microsoft's own clouds; any other authority (a test IdP) skips instance discovery.
MICROSOFT_HOSTS = {"login.microsoftonline.com", "login.microsoftonline.us",
                   "login.chinacloudapi.cn", "login.partner.microsoftonline.cn"}
_REFUSED = {"invalid_grant", "invalid_client", "unauthorized_client", "interaction_required",
            "invalid_scope", "consent_required"}


def _client_kwargs(auth: AuthConfig, cache: msal.TokenCache) -> dict[str, Any]:
    microsoft = urlsplit(auth.authority).hostname in MICROSOFT_HOSTS
    kwargs: dict[str, Any] = {"authority": f"{auth.authority}/{auth.tenant}",
                              "token_cache": cache, "http_client": session(auth),
                              "timeout": 30}
    if not microsoft:
        kwargs.update(validate_authority=False, instance_discovery=False)
    return kwargs


def credential(auth: AuthConfig) -> str | dict[str, str] | None:
    if auth.certificate_file is not None:
        return {"private_key": read_secret(auth.certificate_file).reveal(),
                "thumbprint": auth.certificate_thumbprint}
    if auth.client_secret_file is not None:
        return read_secret(auth.client_secret_file).reveal()
    return None


def application(auth: AuthConfig, cache: msal.TokenCache) -> msal.ClientApplication:
    """A public client for the delegated flow (device code), a confidential one else."""
    try:
        secret = None if auth.flow == "delegated" else credential(auth)
        if secret is None:
            return msal.PublicClientApplication(auth.client_id, **_client_kwargs(auth, cache))
        return msal.ConfidentialClientApplication(auth.client_id, client_credential=secret,
                                                  **_client_kwargs(auth, cache))
    except (requests.RequestException, OSError) as exc:
        raise TokenEndpointError(f"Microsoft sign-in service unreachable: {exc}") from None
    except ValueError as exc:  # msal's word for a malformed authority or discovery document
        raise AuthError(f"Microsoft sign-in is misconfigured: {exc}") from None


def _grant(result: dict[str, Any] | None, what: str) -> Grant:
    if result and "access_token" in result:
        return Grant(Secret(result["access_token"]), float(result.get("expires_in", 3600)))
    error = (result or {}).get("error", "no token")
    description = str((result or {}).get("error_description", "")).splitlines()[:1]
    detail = f"{error}: {description[0]}" if description else str(error)
    if error in _REFUSED or result is None:
        raise AuthError(f"Microsoft refused {what} ({detail}); {LOGIN_HINT}")
    raise TokenEndpointError(f"Microsoft sign-in failed ({detail})")


class MicrosoftTokens(TokenProvider):
    def __init__(self, auth: AuthConfig, username: str, state_dir: Path,
                 clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self._auth = auth
        self._username = username
        self.cache_path = state_dir / CACHE_NAME
        self._cache = msal.SerializableTokenCache()
        self._cache_mtime: float | None = None
        self._app: msal.ClientApplication | None = None

    def _fetch(self, force: bool) -> Grant:
        try:
            if self._auth.flow == "app-only":
                return self._app_only(force)
            return self._delegated(force)
        except (requests.RequestException, OSError) as exc:
            if isinstance(exc, TokenEndpointError):
                raise
            raise TokenEndpointError(f"Microsoft sign-in service unreachable: {exc}") from None

    def _app_only(self, force: bool) -> Grant:
        if self._app is None or force:
            # A fresh cache: client credentials can always get a new token, and msal would
            # otherwise hand back the cached one that the server just refused.
            self._app = application(self._auth, msal.TokenCache())
        assert isinstance(self._app, msal.ConfidentialClientApplication)
        result = self._app.acquire_token_for_client(scopes=list(self._auth.scopes))
        return _grant(result, "the app credentials")

    def _delegated(self, force: bool) -> Grant:
        self._reload_cache()
        if self._app is None:
            self._app = application(self._auth, self._cache)
        accounts = (self._app.get_accounts(username=self._username)
                    or self._app.get_accounts())
        if not accounts:
            raise AuthError(f"no signed-in Microsoft account for {self._username}; "
                            f"{LOGIN_HINT}")
        result = self._app.acquire_token_silent_with_error(
            list(self._auth.scopes), account=accounts[0], force_refresh=force)
        grant = _grant(result, "the saved sign-in")
        self._save_cache()
        return grant

    def _reload_cache(self) -> None:
        try:
            mtime = self.cache_path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._cache_mtime:
            self._cache.deserialize(self.cache_path.read_text(encoding="utf-8"))
            self._cache_mtime = mtime

    def _save_cache(self) -> None:
        if self._cache.has_state_changed:
            write_private(str(self.cache_path), self._cache.serialize())
            self._cache_mtime = self.cache_path.stat().st_mtime
            self._cache.has_state_changed = False

    def login_changed(self) -> bool:
        try:
            return self.cache_path.stat().st_mtime != self._cache_mtime
        except FileNotFoundError:
            return False


def cache_accounts(path: Path) -> list[str]:
    """The usernames in a saved token cache (for status)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return []
    return sorted(str(a.get("username", "")) for a in data.get("Account", {}).values())
