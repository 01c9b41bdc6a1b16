"""Fixtures with real mail servers on 127.0.0.1, and the CI no-skip rule."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.certs import make_cert
from tests.servers.dovecot import Dovecot
from tests.servers.idp import FakeIdp, http_introspector
from tests.servers.smtpcapture import SmtpCapture
from tests.servers.smtpsink import SmtpSink

LIST_USER = "list@example.test"
LIST_PASSWORD = "listpw"
# Access tokens from the ``idp`` fixture live this long unless a test sets
# ``idp.access_lifetime`` (e.g. to 1-2 s for expiry tests). Short, but not
# shorter: msal treats a token with < 5 min left as expired and google-auth
# one with < 3 min 45 s, so below that both refresh before every use and a
# test of token caching could never pass.
IDP_ACCESS_LIFETIME = 600.0


def pytest_configure(config: pytest.Config) -> None:
    # aiosmtpd warns on every implicit-TLS connection with AUTH, because it
    # only counts STARTTLS as TLS; auth_require_tls=False there is deliberate.
    config.addinivalue_line(
        "filterwarnings", "ignore:Requiring AUTH while not requiring TLS:UserWarning"
    )


# ------------------------------------------------------------------ servers
@pytest.fixture(scope="session")
def certs() -> Iterator[tuple[Path, Path]]:
    """One self-signed (cert, key) for all servers; clients use cafile=cert."""
    # mkdtemp + 0755, not tmp_path_factory: its 0700 dirs hide the key from
    # Dovecot's unprivileged processes.
    directory = Path(tempfile.mkdtemp(prefix="listd-certs-"))
    directory.chmod(0o755)
    try:
        yield make_cert(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot_server(certs: tuple[Path, Path]) -> Iterator[Dovecot]:
    """One Dovecot per session (per xdist worker); use ``dovecot`` in tests."""
    server = Dovecot(cert=certs)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def dovecot(dovecot_server: Dovecot) -> Dovecot:
    """The session Dovecot, running, with empty mailboxes for every user.

    A previous test may have stopped it (restart tests) or filled mailboxes,
    forced a UIDVALIDITY or created folders; all of that is undone here.
    """
    if not dovecot_server.running:
        dovecot_server.start()
    dovecot_server.reset()
    return dovecot_server


@pytest.fixture(scope="session")
def idp_server(certs: tuple[Path, Path]) -> Iterator[FakeIdp]:
    """One fake OAuth2 IdP per session (per xdist worker); use ``idp`` in tests.

    Session-scoped because ``dovecot_oauth_server`` is configured with its
    introspection URL, so it must live (on the same ports) as long as that
    Dovecot does.
    """
    with FakeIdp(cert=certs, access_lifetime=IDP_ACCESS_LIFETIME) as server:
        yield server


@pytest.fixture
def idp(idp_server: FakeIdp) -> Iterator[FakeIdp]:
    """The session IdP, running, with no tokens/flows/log and default settings.

    Settings (``access_lifetime``, ``clients``, ``token_failures``, ...) may
    be changed freely; they are put back before the next test. Clients using
    its https side need ``REQUESTS_CA_BUNDLE=idp.cafile`` (testbed §4.1).
    Fails the test at teardown if the IdP crashed on a request.
    """
    if not idp_server.running:  # a test may have stopped it (IdP outage)
        idp_server.start()
    idp_server.reset()
    yield idp_server
    if idp_server.errors:
        pytest.fail("fake IdP crashed:\n" + "\n".join(idp_server.errors), pytrace=False)


@pytest.fixture(scope="session")
def dovecot_oauth_server(certs: tuple[Path, Path], idp_server: FakeIdp) -> Iterator[Dovecot]:
    """Dovecot that also takes XOAUTH2/OAUTHBEARER, introspected at ``idp_server``."""
    server = Dovecot(cert=certs, oauth2_introspection_url=idp_server.introspection_url)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def dovecot_oauth(idp: FakeIdp, dovecot_oauth_server: Dovecot) -> Dovecot:
    """The OAuth2 Dovecot, running, empty mailboxes; its tokens come from ``idp``.

    Password logins work as on ``dovecot``.
    """
    if not dovecot_oauth_server.running:
        dovecot_oauth_server.start()
    dovecot_oauth_server.reset()
    return dovecot_oauth_server


@pytest.fixture
def smtp_oauth(certs: tuple[Path, Path], idp: FakeIdp) -> Iterator[SmtpCapture]:
    """Capturing SMTP server requiring AUTH XOAUTH2/OAUTHBEARER (no PLAIN/LOGIN).

    A token passes if ``idp`` says over HTTP introspection that it is active
    and belongs to the user the client names, as Dovecot checks it.
    """
    introspect = http_introspector(idp.introspection_url)
    with SmtpCapture(cert=certs, oauth2_introspect=introspect) as server:
        yield server


@pytest.fixture
def smtp(certs: tuple[Path, Path]) -> Iterator[SmtpCapture]:
    """Capturing SMTP server without AUTH (STARTTLS offered, not required)."""
    with SmtpCapture(cert=certs) as server:
        yield server


@pytest.fixture
def smtp_auth(certs: tuple[Path, Path]) -> Iterator[SmtpCapture]:
    """Capturing SMTP server requiring AUTH PLAIN/LOGIN as list@example.test."""
    with SmtpCapture(cert=certs, auth_users={LIST_USER: LIST_PASSWORD}) as server:
        yield server


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """Postfix smtp-sink (no dump files) for throughput tests."""
    with SmtpSink() as sink:
        yield sink


# ------------------------------------------------------- CI: no silent skips
# In CI the real-server tests must run; a skip (missing binary, import
# skipped, ...) would otherwise turn into a green build that tested nothing.
_skipped: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_sessionstart(session: pytest.Session) -> None:
    _skipped.clear()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # xfail is reported as "skipped" too, but it is a deliberate expectation
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _in_ci() and _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _in_ci() and _skipped:
        terminalreporter.section("skipped tests are failures in CI", red=True)
        for nodeid in _skipped:
            terminalreporter.line(f"SKIPPED (CI is set): {nodeid}")
