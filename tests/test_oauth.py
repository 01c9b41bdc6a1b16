"""OAuth2 end to end: the real listd signs in with msal / google-auth (unmocked) against a
real token server on loopback; Dovecot and the SMTP server check every token with it."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.listd_env import LIST_USER, ListdEnv, make_message, stop, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.idp import FakeIdp
from tests.servers.smtpcapture import SmtpCapture

CLIENT_SECRET = "s3cret"
SECRET_PATTERNS = re.compile(r"(at|rt|code|dc)-[A-Za-z0-9_-]{20,}|" + CLIENT_SECRET)


class OAuthEnv(ListdEnv):
    """A listd configured for OAuth2 against ``idp``; remembers all it printed."""

    def __init__(self, tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture, idp: FakeIdp,
                 auth: dict[str, Any]) -> None:
        super().__init__(tmp_path, dovecot, smtp.port,
                         smtp_extra={"tls": "starttls", "username": LIST_USER,
                                     "ca_file": str(smtp.cafile)},
                         imap_extra={"poll_interval": 1})
        secret = tmp_path / "client-secret"
        secret.write_text(CLIENT_SECRET + "\n")
        secret.chmod(0o600)
        self.document["auth"] = {"client_id": "listd-client", "ca_file": str(idp.cafile),
                                 "client_secret_file": str(secret), **auth}
        self.write()
        self.output: list[str] = []
        self.extra_env: dict[str, str] = {}

    def _env(self, **extra: str) -> dict[str, str]:
        return super()._env(**{**self.extra_env, **extra})

    def listd(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = super().listd(*args, timeout=timeout)
        self.output += [result.stdout, result.stderr]
        return result

    def listctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = super().listctl(*args, stdin=stdin)
        self.output += [result.stdout, result.stderr]
        return result

    def assert_no_secrets_printed(self) -> None:
        leaked = [m.group(0)[:12] for text in self.output
                  for m in SECRET_PATTERNS.finditer(text)]
        assert leaked == [], f"secrets in the output: {leaked}"


def microsoft(idp: FakeIdp, flow: str) -> dict[str, Any]:
    return {"method": "oauth2-microsoft", "tenant": "tenant1", "flow": flow,
            "authority": idp.https_base}


def login_delegated(env: OAuthEnv, idp: FakeIdp) -> None:
    """``listctl auth login`` as an admin does it: read the code, sign in elsewhere."""
    process = subprocess.Popen(env.command("listctl", "auth", "login"), env=env._env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    user_code = idp.wait_for_device_code()
    idp.approve_device(user_code, user=LIST_USER)
    stdout, stderr = process.communicate(timeout=60)
    env.output += [stdout, stderr]
    assert process.returncode == 0, stderr
    assert user_code in stdout and f"signed in as {LIST_USER}" in stdout


def test_app_only_client_credentials(tmp_path: Path, dovecot_oauth: Dovecot,
                                     smtp_oauth: SmtpCapture, idp: FakeIdp) -> None:
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "app-only"))
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    env.post(make_message())
    env.once()
    (copy,) = smtp_oauth.messages
    assert copy.rcpts == ["bob@example.test"] and copy.auth_login == LIST_USER
    status = env.status()
    assert status["auth_method"] == "oauth2-microsoft"
    assert status["token_expires_at"] and status["token_refresh_failures"] == 0
    assert idp.token_requests("client_credentials")
    env.assert_no_secrets_printed()


def test_client_secret_from_a_systemd_credential(tmp_path: Path, dovecot_oauth: Dovecot,
                                                 smtp_oauth: SmtpCapture, idp: FakeIdp) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "client-secret").write_text(CLIENT_SECRET)
    (credentials / "client-secret").chmod(0o400)
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "app-only"))
    del env.document["auth"]["client_secret_file"]
    env.document["auth"]["client_secret_credential"] = "client-secret"
    env.write()
    env.extra_env["CREDENTIALS_DIRECTORY"] = str(credentials)
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    env.post(make_message())
    env.once()
    assert [m.rcpts for m in smtp_oauth.messages] == [["bob@example.test"]]
    env.extra_env.clear()
    refused = env.listd("--once")
    assert refused.returncode == 78 and "CREDENTIALS_DIRECTORY" in refused.stderr


def test_delegated_login_then_relay_with_refresh(tmp_path: Path, dovecot_oauth: Dovecot,
                                                 smtp_oauth: SmtpCapture, idp: FakeIdp) -> None:
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "delegated"))
    del env.document["auth"]["client_secret_file"]  # a public client, as Entra allows
    env.write()
    not_yet = env.listd("--once")
    assert not_yet.returncode == 75 and "listctl auth login" in not_yet.stderr
    login_delegated(env, idp)
    cache = env.state_dir / "msal-token-cache.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    env.post(make_message(subject="first"))
    env.once()
    # The access token is revoked at the server before it expires: listd gets a new one
    # with the refresh token and nothing fails.
    idp.revoke_access_tokens(LIST_USER)
    env.post(make_message(subject="second"))
    env.once()
    assert [m.rcpts for m in smtp_oauth.messages] == [["bob@example.test"]] * 2
    assert idp.token_requests("refresh_token")
    status = env.status()
    assert status["deliveries_failed"] == 0 and status["deliveries_pending"] == 0
    auth = env.listctl("auth", "status", "--json")
    assert LIST_USER in auth.stdout
    env.assert_no_secrets_printed()


def _has_count(count: int, messages: list[Any]) -> bool:
    return len(messages) == count


def _later_than(moment: float) -> bool:
    return time.monotonic() > moment


def test_token_expiring_mid_run_is_refreshed_without_a_failed_delivery(
        tmp_path: Path, dovecot_oauth: Dovecot, smtp_oauth: SmtpCapture,
        idp: FakeIdp) -> None:
    idp.access_lifetime = 2.0  # shorter than a run: refreshed ahead every time
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "app-only"))
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    daemon = env.start()
    try:
        for number in range(1, 4):
            env.post(make_message(subject=f"post {number}"))
            smtp_oauth.wait_for(partial(_has_count, number), timeout=30)
            # Let every token issued so far expire at the server before the next post.
            wait_until(partial(_later_than, time.monotonic() + idp.access_lifetime + 0.5))
    finally:
        code, stderr = stop(daemon)
    env.output.append(stderr)
    assert code == 0, stderr
    assert env.status()["deliveries_failed"] == 0
    assert len(idp.token_requests("client_credentials")) >= 3
    env.assert_no_secrets_printed()


def test_revoked_sign_in_pauses_then_recovers_after_a_new_login(
        tmp_path: Path, dovecot_oauth: Dovecot, smtp_oauth: SmtpCapture,
        idp: FakeIdp) -> None:
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "delegated"))
    del env.document["auth"]["client_secret_file"]
    env.write()
    login_delegated(env, idp)
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    daemon = env.start()
    try:
        env.post(make_message(subject="before"))
        smtp_oauth.wait_for(lambda msgs: len(msgs) == 1, timeout=30)
        idp.revoke_refresh_tokens(LIST_USER)
        idp.revoke_access_tokens(LIST_USER)
        dovecot_oauth.restart()  # the server drops us: listd must sign in again
        wait_until(lambda: "listctl auth login" in (env.status()["imap_problem"] or ""),
                   timeout=30)
        refreshes = len(idp.token_requests("refresh_token"))
        env.post(make_message(subject="during"))
        assert daemon.poll() is None  # no crash, no restart loop
        assert len(idp.token_requests("refresh_token")) <= refreshes + 1
        login_delegated(env, idp)
        smtp_oauth.wait_for(lambda msgs: len(msgs) == 2, timeout=30)
    finally:
        code, stderr = stop(daemon)
    env.output.append(stderr)
    assert code == 0, stderr
    assert "sign in again with `listctl auth login`" in stderr
    env.assert_no_secrets_printed()


def test_google_installed_app_login_and_refresh(tmp_path: Path, dovecot_oauth: Dovecot,
                                                smtp_oauth: SmtpCapture, idp: FakeIdp) -> None:
    idp.rotate_refresh_tokens = False  # Google keeps the refresh token
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, {
        "method": "oauth2-google", "token_uri": f"{idp.https_base}/token",
        "auth_uri": f"{idp.https_base}/o/oauth2/v2/auth"})
    code = idp.issue_code(LIST_USER, scope="https://mail.google.com/")
    pasted = f"http://127.0.0.1:1/?state=x&code={code}&scope=https://mail.google.com/\n"
    login = env.listctl("auth", "login", stdin=pasted)
    assert login.returncode == 0, login.stderr
    assert f"{idp.https_base}/o/oauth2/v2/auth?" in login.stdout  # the consent address
    saved = env.state_dir / "google-token.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    env.post(make_message())
    env.once()
    assert [m.rcpts for m in smtp_oauth.messages] == [["bob@example.test"]]
    assert idp.token_requests("refresh_token")
    env.assert_no_secrets_printed()


@pytest.mark.parametrize("method", ["oauth2-microsoft", "oauth2-google"])
def test_revoked_refresh_token_is_reported_not_crashed_on(
        tmp_path: Path, dovecot_oauth: Dovecot, smtp_oauth: SmtpCapture, idp: FakeIdp,
        method: str) -> None:
    auth = (microsoft(idp, "delegated") if method == "oauth2-microsoft" else
            {"method": method, "token_uri": idp.google_token_uri})
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, auth)
    if method == "oauth2-microsoft":
        del env.document["auth"]["client_secret_file"]
        env.write()
        login_delegated(env, idp)
    else:
        env.state_dir.mkdir(parents=True, exist_ok=True)
        (env.state_dir / "google-token.json").write_text(
            json.dumps({"refresh_token": idp.issue_refresh_token(LIST_USER)}))
    idp.revoke_refresh_tokens(LIST_USER)
    idp.revoke_access_tokens(LIST_USER)
    result = env.listd("--once")
    assert result.returncode == 75
    assert "sign in again with `listctl auth login`" in result.stderr
    status = env.status()
    assert "listctl auth login" in status["imap_problem"]
    assert status["token_refresh_failures"] >= 1
    env.assert_no_secrets_printed()


def test_sigterm_during_an_auth_pause_stops_at_once(
        tmp_path: Path, dovecot_oauth: Dovecot, smtp_oauth: SmtpCapture,
        idp: FakeIdp) -> None:
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "delegated"))
    del env.document["auth"]["client_secret_file"]
    env.write()
    daemon = env.start()
    try:
        wait_until(lambda: "listctl auth login" in (env.status()["imap_problem"] or ""),
                   timeout=30)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=10)
    assert daemon.returncode == 0, stderr
    assert os.path.exists(env.state_dir)
