"""The OAuth2 test servers work with the real token libraries, unmocked.

A fake IdP on loopback issues tokens to msal (over https with the test CA) and
google-auth (over http); Dovecot checks them by RFC 7662 introspection against
that IdP, and so does the capturing SMTP server.
"""

from __future__ import annotations

import base64
import hashlib
import smtplib
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google.auth.transport.requests as google_requests
import msal
import pytest
import requests
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2.credentials import Credentials
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from msal.exceptions import MsalServiceError

from tests.servers.dovecot import Dovecot
from tests.servers.idp import DEVICE_CODE_GRANT, FakeIdp, http_introspect
from tests.servers.smtpcapture import SmtpCapture

LIST = "list@example.test"
ALICE = "alice@example.test"
CLIENT_ID, CLIENT_SECRET = "listd-client", "s3cret"
IMAP_SCOPES = ["https://outlook.office.com/IMAP.AccessAsUser.All"]
GOOGLE_SCOPES = ["https://mail.google.com/"]
MSG = b"From: list@example.test\r\nTo: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


# ------------------------------------------------------------------ helpers
@pytest.fixture
def ca_env(idp: FakeIdp, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust the IdP's CA in requests (msal, google-auth).

    A preset REQUESTS_CA_BUNDLE (the system bundle on the test host) would
    override msal's ``verify=`` (testbed §4.1), so set it, not ``verify``.
    """
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(idp.cafile))


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout}s")
        time.sleep(0.02)


def wait_until_expired(idp: FakeIdp, token: str) -> None:
    """Poll the IdP's introspection endpoint (what the servers ask) until inactive."""
    wait_until(
        lambda: http_introspect(idp.introspection_url, token) == {"active": False},
        "token still active",
    )


def confidential_app(idp: FakeIdp) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential=CLIENT_SECRET,
        authority=idp.authority("tenant1"),
        validate_authority=False,
        instance_discovery=False,
    )


def google_credentials(idp: FakeIdp, refresh_token: str) -> Credentials:
    return Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token=refresh_token,
        token_uri=idp.google_token_uri,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scopes=GOOGLE_SCOPES,
    )


def refresh(creds: Credentials) -> str:
    """google-auth's refresh over requests; return the new access token."""
    creds.refresh(google_requests.Request())  # type: ignore[no-untyped-call]
    return str(creds.token)


def imap_oauth2_login(dovecot: Dovecot, user: str, token: str, mech: str = "XOAUTH2") -> None:
    """Log in over IMAPS with a bearer token; raises LoginError when refused."""
    ctx = ssl.create_default_context(cafile=str(dovecot.cafile))
    with IMAPClient(dovecot.host, port=dovecot.imaps_port, ssl_context=ctx, timeout=10) as c:
        if mech == "XOAUTH2":
            c.oauth2_login(user, token)
        else:
            c.oauthbearer_login(user, token)
        assert c.select_folder("INBOX")[b"EXISTS"] == 0


def sasl(mech: str, user: str, token: str) -> Callable[..., str]:
    """smtplib ``auth()`` callable; smtplib base64-encodes what it returns."""
    if mech == "XOAUTH2":
        text = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:
        text = f"n,a={user},\x01auth=Bearer {token}\x01\x01"
    return lambda challenge=None: text


def smtp_send(smtp: SmtpCapture, user: str, token: str, mech: str = "XOAUTH2") -> None:
    """STARTTLS, EHLO again, AUTH with the token, send one message."""
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
        s.starttls(context=ssl.create_default_context(cafile=str(smtp.cafile)))
        s.ehlo()  # smtplib.auth() sends no EHLO; a 503 would count as success
        s.auth(mech, sasl(mech, user, token))
        s.sendmail(user, ["a@example.test"], MSG)


def refused_by_smtp(smtp: SmtpCapture, user: str, token: str) -> smtplib.SMTPAuthenticationError:
    with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
        smtp_send(smtp, user, token)
    return exc.value


# --------------------------------------------------------------- FakeIdp alone
def test_discovery_follows_listener_and_tenant(idp: FakeIdp) -> None:
    doc = requests.get(
        f"{idp.https_base}/tenantX/v2.0/.well-known/openid-configuration",
        verify=str(idp.cafile),
        timeout=10,
    ).json()
    assert doc["issuer"] == f"{idp.https_base}/tenantX/v2.0"
    endpoints = f"{idp.https_base}/tenantX/oauth2/v2.0"
    assert doc["token_endpoint"] == f"{endpoints}/token"
    assert doc["device_authorization_endpoint"] == f"{endpoints}/devicecode"
    google = requests.get(f"{idp.http_base}/.well-known/openid-configuration", timeout=10).json()
    assert (google["issuer"], google["token_endpoint"]) == (idp.http_base, idp.google_token_uri)


def test_client_authentication(idp: FakeIdp) -> None:
    url = idp.google_token_uri
    grant = {"grant_type": "client_credentials", "scope": "x"}

    def post(auth: tuple[str, str] | None = None, **form: str) -> requests.Response:
        return requests.post(url, data={**grant, **form}, auth=auth, timeout=10)

    assert post(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).status_code == 200
    basic = post(auth=(CLIENT_ID, CLIENT_SECRET))
    assert basic.status_code == 200
    assert idp.token_user(basic.json()["access_token"]) == idp.app_user == LIST
    for bad in (
        post(client_id="nobody", client_secret=CLIENT_SECRET),
        post(client_id=CLIENT_ID, client_secret="wrong"),
        post(auth=(CLIENT_ID, "wrong")),
        post(client_id=CLIENT_ID),  # client_credentials always needs the secret
    ):
        assert (bad.status_code, bad.json()["error"]) == (401, "invalid_client")
    unsupported = post(auth=(CLIENT_ID, CLIENT_SECRET), grant_type="password")
    assert unsupported.json()["error"] == "unsupported_grant_type"
    assert idp.token_count == 2
    logged = idp.token_requests("client_credentials")[1]
    assert logged.authorization is not None and logged.authorization.startswith("Basic ")


def test_authorization_code_with_pkce(idp: FakeIdp) -> None:
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    redirect = "http://127.0.0.1:1/callback"
    # the "browser": the authorize endpoint consents at once and redirects
    resp = requests.get(
        f"{idp.http_base}/auth",
        params={
            "client_id": CLIENT_ID,
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": "https://mail.google.com/ openid",
            "state": "st8",
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "login_hint": ALICE,
        },
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302
    location = urllib.parse.urlsplit(resp.headers["Location"])
    query = dict(urllib.parse.parse_qsl(location.query))
    assert (location.path, query["state"]) == ("/callback", "st8")

    def redeem(code: str, **extra: str) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
        form |= {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **extra}
        result: dict[str, Any] = requests.post(idp.google_token_uri, data=form, timeout=10).json()
        return result

    tokens = redeem(query["code"], code_verifier=verifier)
    assert idp.token_user(tokens["access_token"]) == ALICE
    assert tokens["refresh_token"] and tokens["id_token"].count(".") == 2
    assert redeem(query["code"], code_verifier=verifier)["error"] == "invalid_grant"  # single use
    other = idp.issue_code(ALICE, code_challenge=challenge.rstrip(b"=").decode())
    assert redeem(other, code_verifier="w" * 50)["error"] == "invalid_grant"
    assert "access_token" in redeem(idp.issue_code(ALICE))  # installed-app code, nothing bound


def test_token_failures_and_outage(idp: FakeIdp, ca_env: None) -> None:
    unavailable = (503, {"error": "temporarily_unavailable"})
    app = confidential_app(idp)
    rt = idp.issue_refresh_token(LIST)
    idp.token_failures = [unavailable]
    with pytest.raises(MsalServiceError, match="503"):  # no dict for 5xx
        app.acquire_token_by_refresh_token(rt, IMAP_SCOPES)
    # Retry-After: 0 (idp.failure_retry_after) keeps msal from replaying the 503
    ok = app.acquire_token_by_refresh_token(rt, IMAP_SCOPES)
    assert "access_token" in ok, ok.get("error_description")
    # without the header msal replays a 5xx from its own cache for 5 s
    idp.failure_retry_after = None
    idp.token_failures = [unavailable]
    other_rt = idp.issue_refresh_token(LIST)
    for _ in range(2):
        with pytest.raises(MsalServiceError, match="503"):
            app.acquire_token_by_refresh_token(other_rt, IMAP_SCOPES)
    assert len(idp.token_requests("refresh_token")) == 3  # the 2nd 503 never reached the IdP

    # google-auth retries 5xx / temporarily_unavailable itself (after ~1 s)
    idp.token_failures = [unavailable]
    creds = google_credentials(idp, ok["refresh_token"])
    refresh(creds)
    assert [r.status for r in idp.token_requests("refresh_token")][-2:] == [503, 200]

    ports = (idp.http_port, idp.https_port)
    idp.stop()
    with pytest.raises(TransportError):  # connection refused, not retried
        refresh(creds)
    idp.start()
    assert (idp.http_port, idp.https_port) == ports  # Dovecot's URL stays valid
    assert idp.token_user(refresh(creds)) == LIST


# ---------------------------------------------------------------- Dovecot (IMAP)
def test_msal_client_credentials_token_logs_in_to_dovecot(
    idp: FakeIdp, dovecot_oauth: Dovecot, ca_env: None
) -> None:
    app = confidential_app(idp)
    result = app.acquire_token_for_client(scopes=["https://outlook.office365.com/.default"])
    assert result.get("token_source") == "identity_provider", result.get("error_description")
    token = result["access_token"]

    imap_oauth2_login(dovecot_oauth, LIST, token)
    imap_oauth2_login(dovecot_oauth, LIST, token, mech="OAUTHBEARER")
    log = dovecot_oauth.log_text()
    assert f"user=<{LIST}>, method=XOAUTH2" in log
    assert f"user=<{LIST}>, method=OAUTHBEARER" in log
    # Dovecot really asked the IdP: one RFC 7662 POST per login (it also
    # sends empty client_id/client_secret fields)
    asked = [r for r in idp.requests if r.path == "/introspect"]
    assert [(r.method, r.form["token"]) for r in asked] == [("POST", token)] * 2

    for user, bad in ((LIST, "at-not-issued"), (ALICE, token)):  # unknown / other user's
        with pytest.raises(LoginError):
            imap_oauth2_login(dovecot_oauth, user, bad)
    with dovecot_oauth.imap(ALICE) as c:  # passwords still work
        assert c.select_folder("INBOX")[b"EXISTS"] == 0


def test_msal_device_flow_then_forced_refresh(
    idp: FakeIdp, dovecot_oauth: Dovecot, ca_env: None
) -> None:
    app = msal.PublicClientApplication(
        CLIENT_ID,
        authority=idp.authority("tenant1"),
        validate_authority=False,
        instance_discovery=False,
    )
    flow = app.initiate_device_flow(scopes=IMAP_SCOPES)
    assert flow["user_code"] in flow["message"]
    assert idp.wait_for_device_code() == flow["user_code"]

    result: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: result.update(app.acquire_token_by_device_flow(flow)))
    poller.start()
    try:
        # msal polls; the IdP keeps answering authorization_pending until approval
        wait_until(
            lambda: any(
                r.error == "authorization_pending" for r in idp.token_requests(DEVICE_CODE_GRANT)
            ),
            "msal polled the device flow",
        )
        assert "access_token" not in result
        idp.approve_device(flow["user_code"], user=ALICE)
    finally:
        poller.join(30)
    assert not poller.is_alive()
    assert "refresh_token" in result, result.get("error_description")
    assert result["id_token_claims"]["preferred_username"] == ALICE
    assert idp.pending_user_codes() == []
    first = result["access_token"]
    imap_oauth2_login(dovecot_oauth, ALICE, first)

    (account,) = app.get_accounts()
    assert account["username"] == ALICE
    cached = app.acquire_token_silent(IMAP_SCOPES, account=account)
    # served from msal's cache: the token has more than msal's 5-minute margin left
    assert cached is not None and cached["access_token"] == first
    refreshed = app.acquire_token_silent(IMAP_SCOPES, account=account, force_refresh=True)
    assert refreshed is not None and refreshed["token_source"] == "identity_provider"
    assert refreshed["access_token"] != first
    imap_oauth2_login(dovecot_oauth, ALICE, refreshed["access_token"])
    (rotation,) = idp.token_requests("refresh_token")
    assert rotation.form["refresh_token"] == result["refresh_token"]
    assert "client_secret" not in rotation.form  # a public client


# -------------------------------------------------------------------- SMTP
def test_google_refresh_token_sends_over_smtp_xoauth2(
    idp: FakeIdp, smtp_oauth: SmtpCapture
) -> None:
    original_rt = idp.issue_refresh_token(LIST)
    creds = google_credentials(idp, original_rt)
    token = refresh(creds)
    assert creds.valid and creds.refresh_token != original_rt  # rotated

    with smtplib.SMTP(smtp_oauth.host, smtp_oauth.port, timeout=10) as s:
        s.starttls(context=ssl.create_default_context(cafile=str(smtp_oauth.cafile)))
        s.ehlo()
        assert s.esmtp_features["auth"].split() == ["OAUTHBEARER", "XOAUTH2"]
    smtp_send(smtp_oauth, LIST, token)
    smtp_send(smtp_oauth, LIST, token, mech="OAUTHBEARER")
    with smtplib.SMTP_SSL(  # implicit TLS too
        smtp_oauth.host,
        smtp_oauth.tls_port,
        timeout=10,
        context=ssl.create_default_context(cafile=str(smtp_oauth.cafile)),
    ) as s:
        s.ehlo()
        s.auth("XOAUTH2", sasl("XOAUTH2", LIST, token))
        s.sendmail(LIST, ["b@example.test"], MSG)
    captured = smtp_oauth.wait_for_messages(3)
    assert [(m.auth_login, m.auth_mechanism, m.tls) for m in captured] == [
        (LIST, "XOAUTH2", True),
        (LIST, "OAUTHBEARER", True),
        (LIST, "XOAUTH2", True),
    ]

    # Gmail-style refusal: 334 + JSON challenge, then 535
    for user, bad in ((LIST, "at-not-issued"), (ALICE, token)):
        err = refused_by_smtp(smtp_oauth, user, bad)
        assert (err.smtp_code, err.smtp_error) == (
            535,
            b"5.7.8 Username and Password not accepted",
        )
    assert smtp_oauth.auth_failures == 2
    assert len(smtp_oauth.messages) == 3


# ---------------------------------------------------------- expiry, revocation
def test_expired_token_is_refused_by_dovecot_and_smtp(
    idp: FakeIdp, dovecot_oauth: Dovecot, smtp_oauth: SmtpCapture
) -> None:
    creds = google_credentials(idp, idp.issue_refresh_token(LIST))
    idp.access_lifetime = 1
    expired = refresh(creds)
    wait_until_expired(idp, expired)
    with pytest.raises(LoginError):
        imap_oauth2_login(dovecot_oauth, LIST, expired)
    assert refused_by_smtp(smtp_oauth, LIST, expired).smtp_code == 535

    # the same client, refreshed with a long lifetime: both accept again
    idp.access_lifetime = 3600
    fresh = refresh(creds)
    imap_oauth2_login(dovecot_oauth, LIST, fresh)
    smtp_send(smtp_oauth, LIST, fresh)
    assert smtp_oauth.wait_for_messages(1)[0].auth_login == LIST


def test_revoked_access_token_is_refused_at_once(
    idp: FakeIdp, dovecot_oauth: Dovecot, smtp_oauth: SmtpCapture
) -> None:
    token = idp.issue_access_token(LIST)
    imap_oauth2_login(dovecot_oauth, LIST, token)  # no auth cache in between
    assert idp.revoke_access_tokens(LIST) == 1
    with pytest.raises(LoginError):
        imap_oauth2_login(dovecot_oauth, LIST, token)
    assert refused_by_smtp(smtp_oauth, LIST, token).smtp_code == 535


def test_revoked_refresh_token_is_invalid_grant(idp: FakeIdp, ca_env: None) -> None:
    app = confidential_app(idp)
    first = app.acquire_token_by_refresh_token(idp.issue_refresh_token(LIST), IMAP_SCOPES)
    assert "refresh_token" in first, first.get("error_description")
    (account,) = app.get_accounts()
    creds = google_credentials(idp, idp.issue_refresh_token(LIST))

    assert idp.revoke_refresh_tokens(LIST) == 2  # the rotated msal one + google's
    by_rt = app.acquire_token_by_refresh_token(first["refresh_token"], IMAP_SCOPES)
    assert (by_rt["error"], by_rt["error_description"]) == (
        "invalid_grant",
        "refresh token revoked",
    )
    silent = app.acquire_token_silent_with_error(IMAP_SCOPES, account=account, force_refresh=True)
    assert silent is not None and silent["error"] == "invalid_grant"
    with pytest.raises(RefreshError) as exc:
        refresh(creds)
    assert exc.value.args[1]["error"] == "invalid_grant"


def test_fixture_files_are_shared(idp: FakeIdp, dovecot_oauth: Dovecot) -> None:
    """IdP and Dovecot use the session certificate: one CA file for all clients."""
    assert Path(idp.cafile) == Path(dovecot_oauth.cafile)
