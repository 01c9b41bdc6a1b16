"""An SMTP server (aiosmtpd) that records what it accepts and can misbehave.

Two listeners share one handler and one list of captured transactions:
``port`` (plain, STARTTLS offered) and ``tls_port`` (implicit TLS). Faults
(RCPT codes, temporary DATA failures, a slow server, a dropped connection)
are plain attributes that tests may change at any time while it runs; the
server threads read them under the same lock on every use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from .certs import make_cert
from .managed import Managed
from .ports import HOST, free_port

# Also avoids socket.getfqdn() (a DNS lookup) on every connection.
SERVER_NAME = "smtp-capture.example.test"
PASSWORD_MECHANISMS = ("LOGIN", "PLAIN")
OAUTH2_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
# Gmail's answer to a bad bearer token: a 334 challenge with this JSON, then
# (after the client's empty line) 535.
OAUTH2_ERROR = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
OAUTH2_FAILED = "535 5.7.8 Username and Password not accepted"

# token -> the user it was issued to, or None if it is not valid (any more)
Introspector = Callable[[str], str | None]


class _Identity(NamedTuple):
    """session.auth_data after a successful AUTH."""

    login: str
    mechanism: str


@dataclass(frozen=True)
class Captured:
    """One accepted mail transaction."""

    mail_from: str
    rcpts: list[str]  # only the recipients the server accepted
    data: bytes  # as received after dot-unstuffing, CRLF line ends
    auth_login: str | None  # SASL login of the session, None if unauthenticated
    tls: bool  # STARTTLS or implicit TLS
    auth_mechanism: str | None = None  # "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"


class _Controller(Controller):
    """Builds each connection's SMTP from the capture's *current* settings.

    aiosmtpd creates one SMTP object per connection, so overriding factory()
    lets tests toggle require_starttls / auth while the server runs.
    """

    def __init__(self, capture: SmtpCapture, port: int, implicit_tls: bool) -> None:
        self._capture = capture
        self._implicit_tls = implicit_tls
        super().__init__(
            capture._handler,
            hostname=HOST,
            port=port,
            ssl_context=capture._ssl_context if implicit_tls else None,
        )

    def factory(self) -> SMTP:
        return SMTP(self.handler, **self._capture._smtp_kwargs(self._implicit_tls))


class _Handler:
    """aiosmtpd hooks; all state lives in the SmtpCapture."""

    def __init__(self, capture: SmtpCapture) -> None:
        self._capture = capture

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._capture._rcpt_reply(address)
        if reply is not None and reply[0] >= 400:
            return f"{reply[0]} {reply[1]}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return f"{reply[0]} {reply[1]}" if reply is not None else "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        delay = self._capture.data_delay
        if delay > 0:
            await asyncio.sleep(delay)  # a deliberately slow server
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        identity = session.auth_data if isinstance(session.auth_data, _Identity) else None
        item = Captured(
            mail_from=str(envelope.mail_from),
            rcpts=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            auth_login=identity.login if identity else None,
            tls=tls,
            auth_mechanism=identity.mechanism if identity else None,
        )
        action = self._capture._on_data(item)
        if action == "drop":
            # Close without answering; the client sees the connection die
            # after it sent the final "." (message fate unknown to it).
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            # connection_lost() cancels this task; never reply.
            await asyncio.get_running_loop().create_future()
        return action

    # aiosmtpd offers every handler method auth_<MECH> as a SASL mechanism;
    # SmtpCapture._smtp_kwargs() hides these two unless oauth2_introspect is set.
    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """``user=<u>^Aauth=Bearer <token>^A^A`` (Google/Microsoft XOAUTH2)."""
        return await self._capture._auth_oauth2(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        """``n,a=<u>,^Aauth=Bearer <token>^A^A`` (RFC 7628)."""
        return await self._capture._auth_oauth2(server, args, "OAUTHBEARER")


def parse_oauth2_response(raw: bytes, mechanism: str) -> tuple[str, str] | None:
    """(user, token) from an XOAUTH2 or OAUTHBEARER client response, or None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = text.split("\x01")
    user: str | None = None
    if mechanism == "OAUTHBEARER":
        # gs2 header "n,a=<authzid>," then key=value pairs
        gs2 = parts.pop(0).split(",")
        if len(gs2) < 2 or not gs2[1].startswith("a="):
            return None
        user = gs2[1][2:].replace("=2C", ",").replace("=3D", "=")
    fields = dict(p.split("=", 1) for p in parts if "=" in p)
    if mechanism == "XOAUTH2":
        user = fields.get("user")
    auth = fields.get("auth", "")
    if not user or auth[:7].lower() != "bearer ":
        return None
    return user, auth[7:].strip()


class SmtpCapture(Managed):
    """Capturing SMTP server on 127.0.0.1 with STARTTLS, implicit TLS and AUTH.

    Settings (any may be reassigned while running; new connections pick up
    ``require_starttls``/``auth_*``, the rest apply to the next command):

    - ``auth_users``: {login: password} for AUTH PLAIN/LOGIN; None = no
      PLAIN/LOGIN.
    - ``oauth2_introspect``: ``token -> user | None`` (e.g. a FakeIdp's
      introspection); enables AUTH XOAUTH2 and OAUTHBEARER, accepted when it
      returns the user named in the client response. Failure is Gmail-style
      (334 JSON challenge, then 535). Without both of these: no AUTH at all.
    - ``require_starttls``: plain port refuses MAIL before STARTTLS.
    - ``auth_require_tls``: plain port offers AUTH only after STARTTLS.
    - ``rcpt_codes``: {address: (code, text)} answer RCPT for that address
      with this reply; codes >= 400 reject that recipient only.
    - ``data_failures``: replies for the next DATA commands, consumed in order
      (the list is popped), then DATA succeeds again.
    - ``data_delay``: seconds to wait before answering each DATA.
    - ``drop_after_data``: after this many more accepted messages, drop the
      connection on the following DATA without replying; fires once and then
      resets to None (so a client's retry can succeed). Counts from when it
      was set.
    """

    host = HOST

    def __init__(
        self,
        *,
        auth_users: Mapping[str, str] | None = None,
        require_starttls: bool = False,
        auth_require_tls: bool = True,
        rcpt_codes: Mapping[str, tuple[int, str]] | None = None,
        data_failures: list[tuple[int, str]] | None = None,
        data_delay: float = 0.0,
        drop_after_data: int | None = None,
        oauth2_introspect: Introspector | None = None,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        self._cond = threading.Condition()
        self._messages: list[Captured] = []
        self.auth_users: dict[str, str] | None = (
            dict(auth_users) if auth_users is not None else None
        )
        self.require_starttls = require_starttls
        self.auth_require_tls = auth_require_tls
        self.rcpt_codes: dict[str, tuple[int, str]] = dict(rcpt_codes or {})
        self.data_failures: list[tuple[int, str]] = list(data_failures or [])
        self.data_delay = data_delay
        self._drop_after: int | None = drop_after_data
        self.dropped = 0  # connections dropped by drop_after_data
        self.auth_failures = 0
        self.oauth2_introspect = oauth2_introspect

        self._tmpdir: Path | None = None
        if cert is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="listd-smtp-"))
            cert = make_cert(self._tmpdir)
        self.cert, self.key = cert
        self._ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl_context.load_cert_chain(self.cert, self.key)

        self._handler = _Handler(self)
        self.port = free_port()
        self.tls_port = free_port()
        self._controllers: list[_Controller] = []

    # -------------------------------------------------------------- lifecycle
    @property
    def cafile(self) -> Path:
        """CA file for clients: the self-signed server certificate itself."""
        return self.cert

    def start(self) -> None:
        if self._controllers:
            raise RuntimeError("SmtpCapture already running")
        # Controller.start() returns once each listener has answered a probe
        # connection, so no extra port wait is needed.
        for port, implicit in ((self.port, False), (self.tls_port, True)):
            c = _Controller(self, port, implicit)
            c.start()
            self._controllers.append(c)

    def stop(self) -> None:
        while self._controllers:
            self._controllers.pop().stop()

    def cleanup(self) -> None:
        self.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


    # --------------------------------------------------------------- settings
    @property
    def drop_after_data(self) -> int | None:
        with self._cond:
            return self._drop_after

    @drop_after_data.setter
    def drop_after_data(self, value: int | None) -> None:
        with self._cond:
            self._drop_after = value

    def _smtp_kwargs(self, implicit_tls: bool) -> dict[str, Any]:
        with self._cond:
            passwords = self.auth_users is not None
            oauth2 = self.oauth2_introspect is not None
            auth = passwords or oauth2
            exclude = list(OAUTH2_MECHANISMS)
            if auth:
                exclude = [
                    *(() if passwords else PASSWORD_MECHANISMS),
                    *(() if oauth2 else OAUTH2_MECHANISMS),
                ]
            # With no AUTH at all PLAIN/LOGIN stay offered (and always fail),
            # as aiosmtpd does by default.
            return {
                "hostname": SERVER_NAME,
                "enable_SMTPUTF8": True,
                # None = no per-command limit, so several thousand RCPTs in
                # one transaction are fine (aiosmtpd's default, made explicit)
                "command_call_limit": None,
                "tls_context": None if implicit_tls else self._ssl_context,
                "require_starttls": False if implicit_tls else self.require_starttls,
                "authenticator": self._authenticate if auth else None,
                "auth_required": auth,
                "auth_exclude_mechanism": exclude,
                # aiosmtpd only counts STARTTLS as TLS: with True, an
                # implicit-TLS session answers AUTH with 538 and hides it.
                "auth_require_tls": False if implicit_tls else self.auth_require_tls,
            }

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        login: str | None = None
        ok = False
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            with self._cond:
                users = self.auth_users
                ok = users is not None and users.get(login) == password
                if not ok:
                    self.auth_failures += 1
        # handled=False on failure: with the default handled=True aiosmtpd
        # sends no reply at all and the client hangs (testbed §3a).
        identity = _Identity(login, mechanism) if ok and login is not None else None
        return AuthResult(success=ok, handled=False, auth_data=identity)

    async def _auth_oauth2(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        if len(args) == 2:  # AUTH XOAUTH2 <initial response>
            try:
                raw = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:  # AUTH XOAUTH2 -> 334 -> <response>
            answer = await server.challenge_auth("")
            if answer is MISSING:  # "*" or bad base64: aiosmtpd already answered
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            raw = answer
        parsed = parse_oauth2_response(raw, mechanism)
        with self._cond:
            introspect = self.oauth2_introspect
        user: str | None = None
        if parsed is not None and introspect is not None:
            # may block on HTTP (the IdP's introspection): not on the event loop
            user = await asyncio.get_running_loop().run_in_executor(None, introspect, parsed[1])
        if parsed is not None and user is not None and user.lower() == parsed[0].lower():
            return AuthResult(success=True, auth_data=_Identity(parsed[0], mechanism))
        with self._cond:
            self.auth_failures += 1
        # The client answers the error challenge with an empty line (XOAUTH2)
        # or ^A (OAUTHBEARER); whatever it sends, the result is 535.
        if await server.challenge_auth(json.dumps(OAUTH2_ERROR)) is MISSING:
            return AuthResult(success=False, handled=True)  # "*": 501 already sent
        return AuthResult(success=False, handled=False, message=OAUTH2_FAILED)

    def _rcpt_reply(self, address: str) -> tuple[int, str] | None:
        with self._cond:
            wanted = address.lower()
            for addr, reply in self.rcpt_codes.items():
                if addr.lower() == wanted:
                    return reply
        return None

    def _on_data(self, item: Captured) -> str:
        """Decide the DATA reply atomically and record accepted messages."""
        with self._cond:
            if self.data_failures:
                code, text = self.data_failures.pop(0)
                return f"{code} {text}"
            if self._drop_after is not None:
                if self._drop_after <= 0:
                    self._drop_after = None
                    self.dropped += 1
                    return "drop"
                self._drop_after -= 1
            self._messages.append(item)
            self._cond.notify_all()
        return "250 2.0.0 OK captured"

    # ----------------------------------------------------------------- access
    @property
    def messages(self) -> list[Captured]:
        with self._cond:
            return list(self._messages)

    def recipients_count(self) -> collections.Counter[str]:
        """How many copies each recipient got, over all accepted messages."""
        with self._cond:
            return collections.Counter(r for m in self._messages for r in m.rcpts)

    def clear(self) -> None:
        """Forget captured messages and counters (settings are kept)."""
        with self._cond:
            self._messages.clear()
            self.dropped = 0
            self.auth_failures = 0

    def wait_for(
        self, predicate: Callable[[list[Captured]], bool], timeout: float = 10.0
    ) -> list[Captured]:
        """Block until ``predicate(messages)`` is true; return a copy of them.

        Raises TimeoutError (with what was captured) instead of returning
        False, so a forgotten ``assert`` cannot hide a failure.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._messages), timeout):
                copies = collections.Counter(r for m in self._messages for r in m.rcpts)
                raise TimeoutError(
                    f"condition not met after {timeout}s; {len(self._messages)} messages "
                    f"captured, {sum(copies.values())} copies to {len(copies)} recipients"
                )
            return list(self._messages)

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[Captured]:
        """Block until at least ``count`` messages were accepted."""
        return self.wait_for(lambda msgs: len(msgs) >= count, timeout)
