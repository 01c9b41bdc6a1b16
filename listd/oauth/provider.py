"""A token provider: one access token shared by IMAP and SMTP, refreshed ahead of expiry.

Refresh happens at 80 % of the token's lifetime or 5 minutes before it expires, whichever
comes first, and once more when a server refuses the token; a lock keeps it to one
refresh at a time. A refused grant (revoked or expired refresh token) raises
:class:`~listd.credentials.AuthError` with the fix; an unreachable token endpoint raises
:class:`TokenEndpointError`, an ``OSError`` the adapters treat like a dropped connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from listd.credentials import Secret

REFRESH_BEFORE_S = 300.0
REFRESH_AT_FRACTION = 0.8
LOGIN_HINT = "sign in again with `listctl auth login`"


class TokenEndpointError(OSError):
    """The token endpoint could not be reached or answered nonsense: try again later."""


@dataclass(frozen=True)
class Grant:
    """What a token endpoint handed out."""

    token: Secret
    expires_in: float


@dataclass
class TokenState:
    """What status, logs and metrics show about the token (never the token itself)."""

    expires_at: float | None = None
    refreshed_at: float | None = None
    refresh_failures: int = 0
    problem: str = ""


def refresh_due(obtained_at: float, expires_at: float) -> float:
    lifetime = max(0.0, expires_at - obtained_at)
    return min(obtained_at + REFRESH_AT_FRACTION * lifetime, expires_at - REFRESH_BEFORE_S)


class TokenProvider:
    """Subclasses implement :meth:`_fetch`; this class decides when to call it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._grant: Grant | None = None
        self._refresh_at = 0.0
        self.state = TokenState()

    def _fetch(self, force: bool) -> Grant:
        raise NotImplementedError

    def login_changed(self) -> bool:
        """Whether a new sign-in was saved since the provider last read it."""
        raise NotImplementedError

    def token(self) -> Secret:
        """A valid access token, refreshed first if it is due."""
        with self._lock:
            now = self._clock()
            if self._grant is None or now >= self._refresh_at:
                self._refresh(force=self._grant is not None)
            assert self._grant is not None
            return self._grant.token

    def refused(self) -> Secret:
        """The server refused the current token: get a new one, once."""
        with self._lock:
            self._refresh(force=True)
            assert self._grant is not None
            return self._grant.token

    def _refresh(self, force: bool) -> None:
        now = self._clock()
        try:
            grant = self._fetch(force)
        except Exception as exc:
            self.state.refresh_failures += 1
            self.state.problem = str(exc)
            raise
        self._grant = grant
        self._refresh_at = refresh_due(now, now + grant.expires_in)
        self.state.expires_at = now + grant.expires_in
        self.state.refreshed_at = now
        self.state.refresh_failures = 0
        self.state.problem = ""
