"""A fake OAuth2/OIDC identity provider, in-process and stdlib only (testbed §8).

One in-memory token store is served by two ``ThreadingHTTPServer`` listeners
on free loopback ports: plain http (Dovecot's introspection, google-auth) and
https with the test certificate (msal refuses http authorities, testbed §4.1).

Shapes served, on both listeners (``{t}`` is any tenant name)::

    GET  /{t}/v2.0/.well-known/openid-configuration   Microsoft discovery (msal)
    GET  /{t}/.well-known/openid-configuration        the same
    GET  /.well-known/openid-configuration            Google-style discovery
    GET  /{t}/discovery/v2.0/keys, /jwks              empty JWKS
    POST /{t}/oauth2/v2.0/token, /token               token endpoint (all grants)
    POST /{t}/oauth2/v2.0/devicecode, /device/code    device authorization (RFC 8628)
    GET  /{t}/oauth2/v2.0/authorize, /auth            auto-consenting "browser" (302)
    POST /introspect  GET /introspect?token=  GET /introspect/<token>   RFC 7662
    POST /revoke                                      RFC 7009

Grants: ``client_credentials``, ``refresh_token`` (rotating), ``authorization_code``
(optionally PKCE) and ``urn:ietf:params:oauth:grant-type:device_code``. Tokens are
opaque random strings; an id_token (unsigned, ``alg: none``; msal does not
verify it) comes with every grant whose scope contains ``openid``.

Nothing is ever printed: the request log lives in memory (``FakeIdp.requests``)
and handler crashes are kept in ``FakeIdp.errors`` and answered with 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import shutil
import ssl
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .certs import make_cert
from .managed import Managed
from .ports import HOST

DEFAULT_CLIENTS: Mapping[str, str] = {"listd-client": "s3cret"}
DEFAULT_USER = "list@example.test"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels, no look-alikes

Json = dict[str, Any]


# --------------------------------------------------------------------- records
@dataclass(frozen=True)
class IdpRequest:
    """One HTTP request the IdP answered (kept in memory, never printed)."""

    method: str
    path: str  # without the query string
    query: dict[str, str]
    form: dict[str, str]  # urlencoded POST body (client secrets included)
    authorization: str | None  # the Authorization header as sent
    scheme: str  # "http" or "https"
    status: int  # HTTP status of the answer
    error: str | None  # the OAuth "error" of the answer, if any

    @property
    def grant_type(self) -> str | None:
        return self.form.get("grant_type")


@dataclass
class _AccessToken:
    user: str
    client_id: str | None
    scope: str
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class _RefreshToken:
    user: str
    client_id: str | None  # None: usable by any known client
    scope: str
    expires_at: float | None
    revoked: bool = False


@dataclass
class _DeviceFlow:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    user: str | None = None  # set by approve_device()
    denied: bool = False
    redeemed: bool = False


@dataclass
class _AuthCode:
    user: str
    client_id: str | None
    redirect_uri: str | None
    scope: str
    expires_at: float
    code_challenge: str | None
    code_challenge_method: str
    nonce: str | None
    used: bool = False


@dataclass
class _Response:
    status: int
    body: Json | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    authorization: str | None
    scheme: str
    base: str  # scheme://host:port as the client addressed us


class _OAuthError(Exception):
    """Answer with a standard OAuth error body."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.response = _Response(status, {"error": error, "error_description": description})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_jwt(claims: Mapping[str, Any]) -> str:
    """An ``alg: none`` JWT (header.payload. with an empty signature)."""
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64url(json.dumps(dict(claims)).encode())}."


# ---------------------------------------------------------------- HTTP plumbing
class _Server(ThreadingHTTPServer):
    daemon_threads = True  # handlers are short; a stuck client must not block stop()

    def __init__(self, port: int, idp: FakeIdp, tls: ssl.SSLContext | None) -> None:
        self.idp = idp
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep crashes out of stderr; a client hanging up is not a crash."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            self.idp._record_error(f"connection from {client_address}", traceback.format_exc())

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # The handshake runs in the connection's own thread, not in the
        # accept loop, so a client that never speaks TLS blocks nobody.
        request.settimeout(_Handler.timeout)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except OSError:  # includes ssl.SSLError: e.g. a client rejecting our cert
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # socket timeout per connection
    server_version = "FakeIdp/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's stderr log: query strings may carry tokens."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        form: dict[str, str] = {}
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        host = self.headers.get("Host") or f"{HOST}:{self.server.server_address[1]}"
        req = _Request(
            method=method,
            path=url.path,
            query=dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)),
            form=form,
            authorization=self.headers.get("Authorization"),
            scheme=self.server.scheme,
            base=f"{self.server.scheme}://{host}",
        )
        resp = self.server.idp._handle(req)
        payload = b"" if resp.body is None else json.dumps(resp.body).encode()
        self.send_response(resp.status)
        if resp.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


# ------------------------------------------------------------------------- IdP
_DISCOVERY = re.compile(r"/(?P<tenant>[^/]+)(?:/v2\.0)?/\.well-known/openid-configuration")
_MS_ENDPOINT = re.compile(r"/(?P<tenant>[^/]+)/oauth2/v2\.0/(?P<ep>token|devicecode|authorize)")
_MS_KEYS = re.compile(r"/[^/]+/discovery/v2\.0/keys")
_INTROSPECT_PATH = re.compile(r"/introspect/(?P<token>[^/]+)")


class FakeIdp(Managed):
    """Fake Microsoft/Google OAuth2 + OIDC server for loopback tests.

    Settings are plain attributes that tests may change at any time; they are
    read on every request. ``reset()`` puts back the constructor's values and
    forgets every token, flow, code, logged request and error (ports stay).

    - ``clients``: {client_id: secret}. Unknown client id or wrong secret:
      401 ``invalid_client``.
    - ``public_clients``: client ids that may omit the secret (msal's
      PublicClientApplication) on the device_code, refresh_token and
      authorization_code grants; client_credentials always needs it.
      Default: every configured client.
    - ``app_user``: the user of client_credentials tokens.
    - ``default_user``: who "signs in" at the authorize endpoint without login_hint.
    - ``access_lifetime`` / ``refresh_lifetime`` (None = never) / ``code_lifetime``
      / ``device_lifetime``: seconds.
    - ``device_interval``: polling interval the device flow asks for (msal
      sleeps that many whole seconds between polls; 0 = poll without pause).
    - ``rotate_refresh_tokens``: refresh returns a new refresh token and
      invalidates the old one (Microsoft); False = no new one (Google).
    - ``consent``: False makes the authorize endpoint redirect with access_denied.
    - ``token_failures``: [(status, json_body)] answers for the next token
      requests, consumed in order (to simulate an IdP outage or throttling).
    - ``failure_retry_after``: Retry-After header (seconds) sent with those
      answers, None = none. msal raises MsalServiceError on a 5xx and then
      replays that failure from its own cache, without asking again, for
      Retry-After seconds (5 s without the header); the default 0 lets a
      retry through at once. google-auth retries 5xx by itself after ~1 s.
    """

    def __init__(
        self,
        *,
        cert: tuple[Path, Path] | None = None,
        clients: Mapping[str, str] | None = None,
        public_clients: Iterable[str] | None = None,
        app_user: str = DEFAULT_USER,
        default_user: str = DEFAULT_USER,
        access_lifetime: float = 3600.0,
        refresh_lifetime: float | None = None,
        code_lifetime: float = 60.0,
        device_lifetime: float = 900.0,
        device_interval: int = 1,
        rotate_refresh_tokens: bool = True,
    ) -> None:
        clients = dict(DEFAULT_CLIENTS if clients is None else clients)
        self._initial: Json = {
            "clients": clients,
            "public_clients": set(clients if public_clients is None else public_clients),
            "app_user": app_user,
            "default_user": default_user,
            "access_lifetime": access_lifetime,
            "refresh_lifetime": refresh_lifetime,
            "code_lifetime": code_lifetime,
            "device_lifetime": device_lifetime,
            "device_interval": device_interval,
            "rotate_refresh_tokens": rotate_refresh_tokens,
            "failure_retry_after": 0,
        }
        self.clients: dict[str, str] = {}
        self.public_clients: set[str] = set()
        self.app_user = app_user
        self.default_user = default_user
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.code_lifetime = code_lifetime
        self.device_lifetime = device_lifetime
        self.device_interval = device_interval
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.consent = True
        self.token_failures: list[tuple[int, Json]] = []
        self.failure_retry_after: int | None = 0

        self._lock = threading.Condition()
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._devices: dict[str, _DeviceFlow] = {}  # by device_code
        self._codes: dict[str, _AuthCode] = {}
        self._requests: list[IdpRequest] = []
        self._errors: list[str] = []
        self._token_count = 0
        self._apply_initial()

        self._tmpdir: Path | None = None
        if cert is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="listd-idp-"))
            cert = make_cert(self._tmpdir)
        self.cert, self.key = cert
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(self.cert, self.key)
        self.http_port = 0  # chosen by the OS on the first start(), kept on restarts
        self.https_port = 0
        self._servers: list[tuple[_Server, threading.Thread]] = []

    # -------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        return bool(self._servers)

    def start(self) -> None:
        """Listen on http and https; the ports stay the same across restarts."""
        if self._servers:
            raise RuntimeError("FakeIdp already running")
        try:
            for tls in (None, self._tls):
                port = self.http_port if tls is None else self.https_port
                server = _Server(port, self, tls)
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"fake-idp-{server.scheme}",
                    daemon=True,
                )
                thread.start()
                self._servers.append((server, thread))
                if tls is None:
                    self.http_port = server.server_address[1]
                else:
                    self.https_port = server.server_address[1]
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop listening (connections in progress finish); state is kept."""
        while self._servers:
            server, thread = self._servers.pop()
            server.shutdown()
            server.server_close()
            thread.join()

    def cleanup(self) -> None:
        self.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


    def reset(self) -> None:
        """Constructor settings back, all tokens/flows/codes/log/errors gone."""
        with self._lock:
            self._apply_initial()
            self.consent = True
            self.token_failures = []
            self._access.clear()
            self._refresh.clear()
            self._devices.clear()
            self._codes.clear()
            self._requests.clear()
            self._errors.clear()
            self._token_count = 0

    def _apply_initial(self) -> None:
        for name, value in self._initial.items():
            setattr(self, name, value.copy() if isinstance(value, dict | set) else value)

    # ------------------------------------------------------------------- URLs
    @staticmethod
    def _base(scheme: str, port: int) -> str:
        if not port:
            raise RuntimeError("FakeIdp was never started: no port yet")
        return f"{scheme}://{HOST}:{port}"

    @property
    def http_base(self) -> str:
        return self._base("http", self.http_port)

    @property
    def https_base(self) -> str:
        return self._base("https", self.https_port)

    @property
    def cafile(self) -> Path:
        """CA file for https clients: the self-signed certificate itself."""
        return self.cert

    @property
    def introspection_url(self) -> str:
        """Plain-http RFC 7662 endpoint (for Dovecot and SmtpCapture)."""
        return f"{self.http_base}/introspect"

    def authority(self, tenant: str = "tenant1") -> str:
        """msal ``authority=`` (https; use with validate_authority=False)."""
        return f"{self.https_base}/{tenant}"

    @property
    def google_token_uri(self) -> str:
        """google-auth ``token_uri`` (plain http works there, testbed §4.2)."""
        return f"{self.http_base}/token"

    # -------------------------------------------------------------- inspection
    @property
    def requests(self) -> list[IdpRequest]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def token_requests(self, grant_type: str | None = None) -> list[IdpRequest]:
        """Requests to a token endpoint, optionally only those of one grant."""
        return [
            r
            for r in self.requests
            if (r.path == "/token" or r.path.endswith("/oauth2/v2.0/token"))
            and (grant_type is None or r.grant_type == grant_type)
        ]

    @property
    def token_count(self) -> int:
        """Access tokens issued since start/reset (by HTTP grants or issue_access_token)."""
        with self._lock:
            return self._token_count

    @property
    def errors(self) -> list[str]:
        """Tracebacks of requests the IdP crashed on (answered with 500)."""
        with self._lock:
            return list(self._errors)

    def introspect(self, token: str) -> Json:
        """RFC 7662 answer for ``token``, as served on /introspect."""
        with self._lock:
            at = self._access.get(token)
            if at is None or at.revoked or time.time() >= at.expires_at:
                return {"active": False}
            return {
                "active": True,
                "email": at.user,
                "username": at.user,
                "sub": f"sub-{at.user}",
                "scope": at.scope,
                "client_id": at.client_id,
                "token_type": "Bearer",
                "iat": int(at.issued_at),
                "exp": int(at.expires_at),
            }

    def token_user(self, token: str) -> str | None:
        """The user of an active access token, else None."""
        info = self.introspect(token)
        return str(info["email"]) if info["active"] else None

    # ------------------------------------------------------------- test control
    def issue_access_token(
        self,
        user: str,
        *,
        lifetime: float | None = None,
        scope: str = "",
        client_id: str | None = None,
    ) -> str:
        """An access token as if a grant had been run (default ``access_lifetime``)."""
        with self._lock:
            return self._new_access(user, client_id, scope, lifetime)

    def issue_refresh_token(
        self, user: str, *, client_id: str | None = None, scope: str = ""
    ) -> str:
        """A refresh token, as a user's earlier sign-in would have left behind.

        ``client_id=None`` lets any known client redeem it.
        """
        with self._lock:
            return self._new_refresh(user, client_id, scope)

    def issue_code(
        self,
        user: str = DEFAULT_USER,
        *,
        client_id: str | None = None,
        redirect_uri: str | None = None,
        scope: str = "",
        code_challenge: str | None = None,
        code_challenge_method: str = "S256",
        nonce: str | None = None,
    ) -> str:
        """An authorization code for ``user`` (the installed-app flow after consent).

        Bound values (client_id, redirect_uri, PKCE challenge) are checked at
        redemption when given; the code is single-use and lives ``code_lifetime``.
        """
        with self._lock:
            return self._new_code(
                user, client_id, redirect_uri, scope, code_challenge, code_challenge_method, nonce
            )

    def pending_user_codes(self) -> list[str]:
        """User codes of device flows not yet approved, denied or expired."""
        now = time.time()
        with self._lock:
            return [
                f.user_code
                for f in self._devices.values()
                if f.user is None and not f.denied and f.expires_at > now
            ]

    def wait_for_device_code(self, timeout: float = 10.0) -> str:
        """Block until exactly one device flow is pending; return its user code."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.pending_user_codes()) == 1, timeout):
                raise TimeoutError(
                    f"{len(self.pending_user_codes())} pending device flows after {timeout}s"
                )
            return self.pending_user_codes()[0]

    def approve_device(self, user_code: str, user: str = DEFAULT_USER) -> None:
        """The user enters ``user_code`` and signs in as ``user``."""
        with self._lock:
            self._pending_flow(user_code).user = user

    def deny_device(self, user_code: str) -> None:
        """The user declines: the client gets ``access_denied``."""
        with self._lock:
            self._pending_flow(user_code).denied = True

    def revoke_refresh_tokens(self, user: str) -> int:
        """Invalidate all of ``user``'s refresh tokens; return how many."""
        with self._lock:
            return self._revoke(self._refresh.values(), user)

    def revoke_access_tokens(self, user: str) -> int:
        """Make all of ``user``'s access tokens fail introspection; return how many."""
        with self._lock:
            return self._revoke(self._access.values(), user)

    def revoke_token(self, token: str) -> bool:
        """Invalidate one access or refresh token; False if unknown."""
        with self._lock:
            rec = self._access.get(token) or self._refresh.get(token)
            if rec is None:
                return False
            rec.revoked = True
            return True

    # ----------------------------------------------------------- store helpers
    # All of these expect self._lock to be held.
    def _new_access(
        self, user: str, client_id: str | None, scope: str, lifetime: float | None = None
    ) -> str:
        token = "at-" + secrets.token_urlsafe(24)
        now = time.time()
        life = self.access_lifetime if lifetime is None else lifetime
        self._access[token] = _AccessToken(user, client_id, scope, now, now + life)
        self._token_count += 1
        return token

    def _new_refresh(self, user: str, client_id: str | None, scope: str) -> str:
        token = "rt-" + secrets.token_urlsafe(32)
        life = self.refresh_lifetime
        expires = None if life is None else time.time() + life
        self._refresh[token] = _RefreshToken(user, client_id, scope, expires)
        return token

    def _new_code(
        self,
        user: str,
        client_id: str | None,
        redirect_uri: str | None,
        scope: str,
        code_challenge: str | None,
        code_challenge_method: str,
        nonce: str | None,
    ) -> str:
        if code_challenge_method not in ("S256", "plain"):
            raise ValueError(f"unsupported code_challenge_method {code_challenge_method!r}")
        code = "code-" + secrets.token_urlsafe(24)
        self._codes[code] = _AuthCode(
            user,
            client_id,
            redirect_uri,
            scope,
            time.time() + self.code_lifetime,
            code_challenge,
            code_challenge_method,
            nonce,
        )
        return code

    def _pending_flow(self, user_code: str) -> _DeviceFlow:
        for flow in self._devices.values():
            if flow.user_code == user_code.strip().upper():
                if flow.user is not None or flow.denied:
                    raise ValueError(f"device flow {user_code} already decided")
                return flow
        raise KeyError(f"no device flow with user code {user_code!r}")

    @staticmethod
    def _revoke(records: Iterable[_AccessToken | _RefreshToken], user: str) -> int:
        count = 0
        for rec in records:
            if rec.user == user and not rec.revoked:
                rec.revoked = True
                count += 1
        return count

    # --------------------------------------------------------------- requests
    def _handle(self, req: _Request) -> _Response:
        try:
            resp = self._route(req)
        except _OAuthError as exc:
            resp = exc.response
        except Exception:
            self._record_error(f"{req.method} {req.path}", traceback.format_exc())
            resp = _Response(500, {"error": "server_error", "error_description": "IdP crashed"})
        error = resp.body.get("error") if resp.body is not None else None
        entry = IdpRequest(
            req.method,
            req.path,
            req.query,
            req.form,
            req.authorization,
            req.scheme,
            resp.status,
            str(error) if error is not None else None,
        )
        with self._lock:
            self._requests.append(entry)
        return resp

    def _record_error(self, what: str, tb: str) -> None:
        with self._lock:
            self._errors.append(f"{what}\n{tb}")

    def _route(self, req: _Request) -> _Response:
        path, method = req.path, req.method
        if method == "GET" and path == "/.well-known/openid-configuration":
            return _Response(200, self._discovery(req.base, None))
        if method == "GET" and (m := _DISCOVERY.fullmatch(path)):
            return _Response(200, self._discovery(req.base, m["tenant"]))
        if method == "GET" and (path == "/jwks" or _MS_KEYS.fullmatch(path)):
            return _Response(200, {"keys": []})
        if path == "/introspect" and method in ("GET", "POST"):
            return _Response(200, self.introspect(self._introspected_token(req)))
        if method == "GET" and (m := _INTROSPECT_PATH.fullmatch(path)):
            return _Response(200, self.introspect(urllib.parse.unquote(m["token"])))
        if method == "POST" and path == "/revoke":
            self.revoke_token(req.form.get("token", ""))
            return _Response(200, {})
        tenant: str | None = None
        endpoint = {"/token": "token", "/device/code": "devicecode", "/auth": "authorize"}.get(
            path
        )
        if m := _MS_ENDPOINT.fullmatch(path):
            tenant, endpoint = m["tenant"], m["ep"]
        issuer = self._issuer(req.base, tenant)
        if endpoint == "token" and method == "POST":
            return self._token(req, issuer, tenant)
        if endpoint == "devicecode" and method == "POST":
            return self._device_authorization(req)
        if endpoint == "authorize" and method == "GET":
            return self._authorize(req)
        return _Response(404, {"error": "not_found", "error_description": f"{method} {path}"})

    @staticmethod
    def _introspected_token(req: _Request) -> str:
        auth = req.authorization or ""
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return req.form.get("token") or req.query.get("token", "")

    @staticmethod
    def _issuer(base: str, tenant: str | None) -> str:
        return base if tenant is None else f"{base}/{tenant}/v2.0"

    def _discovery(self, base: str, tenant: str | None) -> Json:
        if tenant is None:  # Google shape
            ep = {"authorize": "/auth", "token": "/token", "devicecode": "/device/code"}
            prefix, jwks = base, f"{base}/jwks"
        else:
            ep = {k: f"/oauth2/v2.0/{k}" for k in ("authorize", "token", "devicecode")}
            prefix, jwks = f"{base}/{tenant}", f"{base}/{tenant}/discovery/v2.0/keys"
        return {
            "issuer": self._issuer(base, tenant),
            "authorization_endpoint": prefix + ep["authorize"],
            "token_endpoint": prefix + ep["token"],
            "device_authorization_endpoint": prefix + ep["devicecode"],
            "introspection_endpoint": f"{base}/introspect",
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": jwks,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "client_credentials",
                DEVICE_CODE_GRANT,
            ],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256", "plain"],
        }

    # ---------------------------------------------------------- client auth
    def _client(self, req: _Request, grant: str) -> str:
        """Authenticate the client (form or HTTP Basic); return its id."""
        client_id = req.form.get("client_id")
        secret = req.form.get("client_secret")
        auth = req.authorization or ""
        if auth[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
                basic_id, _, basic_secret = raw.partition(":")
            except ValueError:
                raise _OAuthError(401, "invalid_client", "malformed Basic header") from None
            # RFC 6749 §2.3.1: both parts are form-urlencoded before base64
            basic_id = urllib.parse.unquote_plus(basic_id)
            if client_id is not None and client_id != basic_id:
                raise _OAuthError(400, "invalid_request", "client_id differs from Basic auth")
            client_id, secret = basic_id, urllib.parse.unquote_plus(basic_secret)
        if not client_id or client_id not in self.clients:
            raise _OAuthError(401, "invalid_client", "unknown client")
        if secret is None:
            if grant == "client_credentials" or client_id not in self.public_clients:
                raise _OAuthError(401, "invalid_client", "client secret required")
        elif not hmac.compare_digest(secret.encode(), self.clients[client_id].encode()):
            raise _OAuthError(401, "invalid_client", "bad client secret")
        return client_id

    # ------------------------------------------------------------ endpoints
    def _token(self, req: _Request, issuer: str, tenant: str | None) -> _Response:
        with self._lock:
            failure = self.token_failures.pop(0) if self.token_failures else None
        if failure is not None:
            retry_after = self.failure_retry_after
            headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
            return _Response(failure[0], dict(failure[1]), headers)
        grant = req.form.get("grant_type", "")
        client_id = self._client(req, grant)
        form = req.form
        with self._lock:
            if grant == "client_credentials":
                return self._tokens(self.app_user, client_id, form.get("scope", ""))
            if grant == "refresh_token":
                rt = self._redeem_refresh(form.get("refresh_token", ""), client_id)
                scope = form.get("scope") or rt.scope
                extra: Json = {}
                if self.rotate_refresh_tokens:
                    extra["refresh_token"] = self._new_refresh(rt.user, rt.client_id, scope)
                return self._tokens(rt.user, client_id, scope, issuer, tenant, extra)
            if grant == DEVICE_CODE_GRANT:
                flow = self._redeem_device(form.get("device_code") or form.get("code", ""))
                if flow.client_id != client_id:
                    raise _OAuthError(400, "invalid_grant", "device code of another client")
                assert flow.user is not None
                rt_new = self._new_refresh(flow.user, client_id, flow.scope)
                return self._tokens(
                    flow.user, client_id, flow.scope, issuer, tenant, {"refresh_token": rt_new}
                )
            if grant == "authorization_code":
                code = self._redeem_code(form, client_id)
                rt_new = self._new_refresh(code.user, client_id, code.scope)
                return self._tokens(
                    code.user,
                    client_id,
                    code.scope,
                    issuer,
                    tenant,
                    {"refresh_token": rt_new},
                    code.nonce,
                )
        raise _OAuthError(400, "unsupported_grant_type", f"grant_type {grant!r}")

    def _tokens(
        self,
        user: str,
        client_id: str,
        scope: str,
        issuer: str | None = None,
        tenant: str | None = None,
        extra: Json | None = None,
        nonce: str | None = None,
    ) -> _Response:
        lifetime = math.ceil(self.access_lifetime)
        body: Json = {
            "token_type": "Bearer",
            "access_token": self._new_access(user, client_id, scope),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "scope": scope,
            **(extra or {}),
        }
        if issuer is not None and "openid" in scope.split():
            now = int(time.time())
            claims: Json = {
                "iss": issuer,
                "aud": client_id,
                "sub": f"sub-{user}",
                "oid": f"oid-{user}",
                "tid": tenant or "google",
                "preferred_username": user,
                "email": user,
                "email_verified": True,
                "name": user,
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
            }
            if nonce is not None:
                claims["nonce"] = nonce
            body["id_token"] = unsigned_jwt(claims)
        return _Response(200, body, {"Pragma": "no-cache"})

    def _redeem_refresh(self, token: str, client_id: str) -> _RefreshToken:
        rt = self._refresh.get(token)
        if rt is None:
            raise _OAuthError(400, "invalid_grant", "unknown refresh token")
        if rt.revoked:
            raise _OAuthError(400, "invalid_grant", "refresh token revoked")
        if rt.expires_at is not None and time.time() >= rt.expires_at:
            raise _OAuthError(400, "invalid_grant", "refresh token expired")
        if rt.client_id is not None and rt.client_id != client_id:
            raise _OAuthError(400, "invalid_grant", "refresh token of another client")
        if self.rotate_refresh_tokens:
            rt.revoked = True  # rotated: the old one is used up
        return rt

    def _redeem_device(self, device_code: str) -> _DeviceFlow:
        flow = self._devices.get(device_code)
        if flow is None:
            raise _OAuthError(400, "invalid_grant", "unknown device code")
        if flow.redeemed:
            raise _OAuthError(400, "invalid_grant", "device code already redeemed")
        if flow.denied:
            raise _OAuthError(400, "access_denied", "the user declined")
        if time.time() >= flow.expires_at:
            raise _OAuthError(400, "expired_token", "device code expired")
        if flow.user is None:
            raise _OAuthError(400, "authorization_pending", "the user has not signed in yet")
        flow.redeemed = True
        return flow

    def _redeem_code(self, form: Mapping[str, str], client_id: str) -> _AuthCode:
        code = self._codes.get(form.get("code", ""))
        if code is None:
            raise _OAuthError(400, "invalid_grant", "unknown authorization code")
        if code.used:
            raise _OAuthError(400, "invalid_grant", "authorization code already used")
        code.used = True  # a failed redemption uses it up too
        if time.time() >= code.expires_at:
            raise _OAuthError(400, "invalid_grant", "authorization code expired")
        if code.client_id is not None and code.client_id != client_id:
            raise _OAuthError(400, "invalid_grant", "authorization code of another client")
        if code.redirect_uri is not None and form.get("redirect_uri") != code.redirect_uri:
            raise _OAuthError(400, "invalid_grant", "redirect_uri mismatch")
        if code.code_challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                raise _OAuthError(400, "invalid_grant", "code_verifier required")
            if code.code_challenge_method == "S256":
                verifier = _b64url(hashlib.sha256(verifier.encode()).digest())
            if not hmac.compare_digest(verifier.encode(), code.code_challenge.encode()):
                raise _OAuthError(400, "invalid_grant", "PKCE verification failed")
        return code

    def _device_authorization(self, req: _Request) -> _Response:
        client_id = self._client(req, DEVICE_CODE_GRANT)
        with self._lock:
            taken = {f.user_code for f in self._devices.values()}
            while True:
                letters = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
                user_code = f"{letters[:4]}-{letters[4:]}"
                if user_code not in taken:
                    break
            device_code = "dc-" + secrets.token_urlsafe(32)
            lifetime = math.ceil(self.device_lifetime)
            self._devices[device_code] = _DeviceFlow(
                device_code,
                user_code,
                client_id,
                req.form.get("scope", ""),
                time.time() + lifetime,
            )
            self._lock.notify_all()
        uri = f"{req.base}/devicelogin"
        return _Response(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": uri,
                "verification_url": uri,  # Google's spelling
                "expires_in": lifetime,
                "interval": self.device_interval,
                "message": f"To sign in, use a web browser to open the page {uri} "
                f"and enter the code {user_code} to authenticate.",
            },
        )

    def _authorize(self, req: _Request) -> _Response:
        """Auto-consent: redirect straight back with a code (or access_denied)."""
        q = req.query
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if client_id not in self.clients:
            raise _OAuthError(400, "invalid_client", "unknown client")
        if not redirect_uri:
            raise _OAuthError(400, "invalid_request", "redirect_uri required")
        params: dict[str, str] = {}
        if q.get("response_type") != "code":
            params["error"] = "unsupported_response_type"
        elif not self.consent:
            params["error"] = "access_denied"
        else:
            with self._lock:
                params["code"] = self._new_code(
                    q.get("login_hint") or self.default_user,
                    client_id,
                    redirect_uri,
                    q.get("scope", ""),
                    q.get("code_challenge"),
                    q.get("code_challenge_method", "plain"),
                    q.get("nonce"),
                )
        if "state" in q:
            params["state"] = q["state"]
        sep = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + sep + urllib.parse.urlencode(params)
        return _Response(302, None, {"Location": location})


# ------------------------------------------------------------ client helpers
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_introspect(url: str, token: str, timeout: float = 5.0) -> Json:
    """POST ``token=`` to an RFC 7662 endpoint, as Dovecot does; return the JSON."""
    data = urllib.parse.urlencode({"token": token}).encode()
    with _NO_PROXY_OPENER.open(urllib.request.Request(url, data=data), timeout=timeout) as resp:
        result = json.load(resp)
    if not isinstance(result, dict):
        raise ValueError(f"introspection answered {type(result).__name__}, not an object")
    return result


def http_introspector(url: str, timeout: float = 5.0) -> Callable[[str], str | None]:
    """A ``token -> user | None`` check over HTTP (for SmtpCapture)."""

    def check(token: str) -> str | None:
        try:
            info = http_introspect(url, token, timeout)
        except (OSError, ValueError):  # IdP down or garbage: not a valid token
            return None
        email = info.get("email")
        return str(email) if info.get("active") is True and email else None

    return check
