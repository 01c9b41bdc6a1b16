"""The token provider's timing and locking, and the auth: section's validation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from listd.config import ConfigError, load
from listd.credentials import AuthError, Secret
from listd.oauth.provider import Grant, TokenProvider, refresh_due


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting(TokenProvider):
    def __init__(self, clock: Clock, lifetime: float, slow: float = 0.0) -> None:
        super().__init__(clock)
        self.lifetime = lifetime
        self.slow = slow
        self.fetches: list[bool] = []
        self.fail_with: Exception | None = None

    def _fetch(self, force: bool) -> Grant:
        self.fetches.append(force)
        if self.slow:
            time.sleep(self.slow)  # hold the lock like a slow token endpoint would
        if self.fail_with is not None:
            raise self.fail_with
        return Grant(Secret(f"token-{len(self.fetches)}"), self.lifetime)

    def login_changed(self) -> bool:
        return False


@pytest.mark.parametrize(("lifetime", "due_after"), [
    (3600.0, 2880.0),  # 80 % of an hour comes before 5 minutes before the end
    (1200.0, 900.0),   # 5 minutes before the end comes first (80 % would be 960)
    (60.0, -240.0),    # shorter than 5 minutes: refresh at every use
])
def test_refresh_is_due_at_80_percent_or_5_minutes_before_expiry(
        lifetime: float, due_after: float) -> None:
    assert refresh_due(0.0, lifetime) == pytest.approx(due_after)


def test_token_is_reused_until_due_then_refreshed() -> None:
    clock = Clock()
    provider = Counting(clock, lifetime=3600.0)
    first = provider.token().reveal()
    clock.now += 2000
    assert provider.token().reveal() == first
    clock.now += 900  # past 80 % of the lifetime
    assert provider.token().reveal() != first
    assert provider.fetches == [False, True]
    assert provider.state.expires_at == pytest.approx(clock.now + 3600.0)


def test_a_refused_token_is_replaced_once() -> None:
    provider = Counting(Clock(), lifetime=3600.0)
    first = provider.token().reveal()
    assert provider.refused().reveal() != first
    assert provider.fetches == [False, True]


def test_failures_are_counted_and_cleared() -> None:
    provider = Counting(Clock(), lifetime=3600.0)
    provider.fail_with = AuthError("invalid_grant; sign in again with `listctl auth login`")
    for _ in range(2):
        with pytest.raises(AuthError):
            provider.token()
    assert provider.state.refresh_failures == 2
    assert "listctl auth login" in provider.state.problem
    provider.fail_with = None
    provider.token()
    assert provider.state.refresh_failures == 0 and provider.state.problem == ""


def test_never_more_than_one_refresh_in_flight() -> None:
    provider = Counting(Clock(), lifetime=3600.0, slow=0.05)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(provider.token().reveal()))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(provider.fetches) == 1 and set(tokens) == {"token-1"}


def test_secret_never_shows_in_repr_or_str() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert "hunter2" not in repr(Grant(secret, 10.0))


BASE = """
state_dir: {state}
imap: {{host: imap.example.org, username: lists@example.org}}
smtp: {{host: smtp.example.org, username: lists@example.org}}
auth:
{auth}
lists: {{}}
"""


def _load(tmp_path: Path, auth: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    path = tmp_path / "listd.yml"
    path.write_text(BASE.format(state=tmp_path / "state",
                                auth=auth.replace("SECRET", str(secret))))
    load(path)


@pytest.mark.parametrize(("auth", "problem"), [
    ("  method: oauth2-microsoft\n  client_id: x\n  client_secret_file: SECRET",
     "auth.tenant: missing"),
    ("  method: oauth2-microsoft\n  client_id: x\n  tenant: t", "auth.client_secret_file: "
     "app-only sign-in needs"),
    ("  method: oauth2-microsoft\n  client_id: x\n  tenant: t\n  flow: delegated\n"
     "  client_secret_file: SECRET", "uses no client secret"),
    ("  method: oauth2-microsoft\n  client_id: x\n  tenant: t\n  client_secret_file: SECRET\n"
     "  authority: http://login.example.org", "must be an https URL"),
    ("  method: oauth2-google\n  client_id: x", "auth.client_secret_file: missing"),
    ("  method: oauth2-google\n  client_id: x\n  client_secret_credential: cs",
     "no $CREDENTIALS_DIRECTORY"),
    ("  method: password\n  password_file: SECRET\n  password_credential: pw",
     "not both"),
    ("  method: oauth2-yahoo", "is not one of password, oauth2-microsoft, oauth2-google"),
])
def test_auth_section_errors_name_key_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              auth: str, problem: str) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=r"listd\.yml:") as caught:
        _load(tmp_path, auth)
    assert problem in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_valid_oauth_sections_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _load(tmp_path, "  method: oauth2-microsoft\n  client_id: x\n  tenant: t\n"
                    "  client_secret_file: SECRET")
    _load(tmp_path, "  method: oauth2-microsoft\n  client_id: x\n  tenant: t\n"
                    "  flow: delegated")
    _load(tmp_path, "  method: oauth2-google\n  client_id: x\n  client_secret_file: SECRET")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "cs").write_text("s3cret")
    (credentials / "cs").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    _load(tmp_path, "  method: oauth2-google\n  client_id: x\n  client_secret_credential: cs")


def test_listctl_outside_the_unit_accepts_credentials_it_cannot_see(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "listd.yml"
    path.write_text(BASE.format(state=tmp_path / "state", auth="  method: password\n"
                                "  password_credential: mailbox-password"))
    assert load(path, service=False).auth.password_file is None
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY"):
        load(path)
