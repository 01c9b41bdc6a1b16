"""The one-time interactive sign-in behind ``listctl auth login``.

Microsoft (delegated): the device-code flow — listd prints a code and a URL, the admin
signs in on any device, msal stores the result in the token cache. Google: the installed-app
flow — listd prints the consent URL, the admin pastes back the code or the address the
browser ended on, and the refresh token is saved. App-only Microsoft needs no sign-in; the
login only proves the credentials work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msal

from listd.authconfig import AuthConfig
from listd.credentials import AuthError, read_secret
from listd.oauth.google import save_refresh_token
from listd.oauth.http import write_private
from listd.oauth.microsoft import CACHE_NAME, MicrosoftTokens, application

# Google's installed-app flow redirects the browser to the loopback address; nothing needs
# to listen there: the code is in the address the browser shows.
GOOGLE_REDIRECT = "http://127.0.0.1:1"


def login_microsoft(auth: AuthConfig, username: str, state_dir: Path,
                    say: Callable[[str], None]) -> str:
    if auth.flow == "app-only":
        provider = MicrosoftTokens(auth, username, state_dir, time.time)
        provider.token()
        expires = provider.state.expires_at or time.time()
        return (f"app-only credentials work (no sign-in is kept for this flow); token valid "
                f"until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(expires))}")
    cache = msal.SerializableTokenCache()
    cache_path = state_dir / CACHE_NAME
    if cache_path.exists():
        cache.deserialize(cache_path.read_text(encoding="utf-8"))
    app = application(auth, cache)
    flow = app.initiate_device_flow(scopes=list(auth.scopes))
    if "user_code" not in flow:
        raise AuthError(f"Microsoft refused to start the sign-in: "
                        f"{flow.get('error')}: {flow.get('error_description', '')}")
    say(f"{flow['message']}\nSign in as {username}. Waiting...")
    result = app.acquire_token_by_device_flow(flow)
    if "access_token" not in result:
        raise AuthError(f"sign-in did not complete: {result.get('error')}: "
                        f"{str(result.get('error_description', '')).splitlines()[:1]}")
    write_private(str(cache_path), cache.serialize())
    who = result.get("id_token_claims", {}).get("preferred_username", username)
    return f"signed in as {who}; listd picks the new sign-in up by itself"


def login_google(auth: AuthConfig, username: str, state_dir: Path,
                 ask: Callable[[str], str]) -> str:
    from google_auth_oauthlib.flow import Flow  # only the login needs it

    assert auth.client_secret_file is not None
    flow = Flow.from_client_config(
        {"installed": {"client_id": auth.client_id,
                       "client_secret": read_secret(auth.client_secret_file).reveal(),
                       "auth_uri": auth.auth_uri, "token_uri": auth.token_uri,
                       "redirect_uris": [GOOGLE_REDIRECT]}},
        scopes=list(auth.scopes), redirect_uri=GOOGLE_REDIRECT)
    url, _ = flow.authorization_url(access_type="offline", prompt="consent",
                                    login_hint=username)
    answer = ask(f"Open this address, sign in as {username} and allow access:\n\n  {url}\n\n"
                 "Your browser then shows an error page at 127.0.0.1: that is expected.\n"
                 "Paste that page's address (or just the code) here: ").strip()
    code = parse_qs(urlsplit(answer).query).get("code", [""])[0] if "://" in answer else answer
    if not code:
        raise AuthError("no code in what was pasted")
    # Google may grant scopes in another order or add some (openid); oauthlib would then
    # refuse a perfectly good answer. Only this short-lived listctl process is affected.
    os.environ.setdefault("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    try:
        flow.fetch_token(code=code, verify=str(auth.ca_file) if auth.ca_file else True)
    except Exception as exc:  # oauthlib raises its own error types for every refusal
        raise AuthError(f"Google refused the code: {exc}") from None
    refresh_token = flow.credentials.refresh_token
    if not refresh_token:
        raise AuthError("Google returned no refresh token; remove listd's access at "
                        "myaccount.google.com/permissions and sign in again")
    save_refresh_token(state_dir, refresh_token)
    return "signed in; listd picks the new sign-in up by itself"
