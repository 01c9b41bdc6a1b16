"""From the ``auth:`` section to an authenticator (password or OAuth2) and its status."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from listd.authconfig import AuthConfig
from listd.credentials import Authenticator, PasswordAuth
from listd.oauth.provider import TokenProvider
from listd.oauth.xoauth2 import OAuthAuth


def token_provider(auth: AuthConfig, username: str, state_dir: Path,
                   clock: Callable[[], float] = time.time) -> TokenProvider:
    # Imported here: msal, google-auth and requests cost ~20 MB that a password
    # setup never needs.
    if auth.method == "oauth2-microsoft":
        from listd.oauth.microsoft import MicrosoftTokens

        return MicrosoftTokens(auth, username, state_dir, clock)
    if auth.method == "oauth2-google":
        from listd.oauth.google import GoogleTokens

        return GoogleTokens(auth, state_dir, clock)
    raise ValueError(f"{auth.method} uses no tokens")


def make_authenticator(auth: AuthConfig, username: str, state_dir: Path,
                       clock: Callable[[], float] = time.time) -> Authenticator:
    if auth.oauth:
        return OAuthAuth(token_provider(auth, username, state_dir, clock))
    assert auth.password_file is not None  # the config guarantees it
    return PasswordAuth(auth.password_file)
