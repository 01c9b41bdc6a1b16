"""IMAP adapter over imapclient: connect, sign in, list and fetch by UID, IDLE, flags.

Every error of the connection surfaces as :class:`ImapError` (transient: reconnect with
backoff) or :class:`~listd.credentials.AuthError` (back off hard). Nothing here decides
what a message means.
"""

from __future__ import annotations

import contextlib
import imaplib
import select
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from listd.config import ImapConfig
from listd.credentials import Authenticator


class ImapError(Exception):
    """The IMAP connection failed or broke; reconnecting may help."""


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None


_CONNECTION_ERRORS = (IMAPClientError, imaplib.IMAP4.error, OSError, ssl.SSLError,
                      socket.timeout, EOFError)


class ImapMailbox:
    """One signed-in connection with the configured folder selected."""

    def __init__(self, config: ImapConfig, authenticator: Authenticator) -> None:
        self._config = config
        self._authenticator = authenticator
        self._client: Any = None
        self.folder_state = FolderState(0, None)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect(self) -> FolderState:
        cfg = self._config
        context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        try:
            client = IMAPClient(cfg.host, port=cfg.port, ssl=cfg.tls == "implicit",
                                ssl_context=context, timeout=cfg.timeout)
            self._client = client
            if cfg.tls == "starttls":
                client.starttls(context)
            self._authenticator.imap_login(client, cfg.username)
            selected = client.select_folder(cfg.folder)
        except _CONNECTION_ERRORS as exc:
            self.close()
            raise ImapError(f"IMAP {cfg.host}:{cfg.port}: {_describe(exc)}") from None
        except BaseException:
            self.close()
            raise
        uidnext = selected.get(b"UIDNEXT")
        self.folder_state = FolderState(int(selected[b"UIDVALIDITY"]),
                                        int(uidnext) if uidnext is not None else None)
        return self.folder_state

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # the connection is going away either way
            with contextlib.suppress(Exception):
                client.shutdown()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._client is None:
            raise ImapError("not connected")
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except _CONNECTION_ERRORS as exc:
            self.close()
            raise ImapError(f"IMAP {method}: {_describe(exc)}") from None

    def uids_above(self, last_uid: int) -> list[int]:
        """UIDs greater than ``last_uid`` in ascending order (read or unread alike)."""
        found = self._call("search", ["UID", f"{last_uid + 1}:*"])
        # "N:*" also matches the highest existing UID when it is below N (RFC 3501).
        return sorted(uid for uid in found if uid > last_uid)

    def fetch(self, uids: Sequence[int], batch: int) -> Iterator[list[tuple[int, bytes]]]:
        """(uid, raw message) in batches, without setting \\Seen (BODY.PEEK)."""
        for start in range(0, len(uids), batch):
            chunk = list(uids[start : start + batch])
            response = self._call("fetch", chunk, [b"BODY.PEEK[]"])
            yield [(uid, response[uid][b"BODY[]"]) for uid in chunk
                   if uid in response and b"BODY[]" in response[uid]]

    def fetch_headers(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The Message-ID and Date header lines of each message, for de-duplication."""
        if not uids:
            return {}
        key = b"BODY[HEADER.FIELDS (MESSAGE-ID DATE)]"
        response = self._call("fetch", list(uids),
                              [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)]"])
        return {uid: data.get(key, b"") for uid, data in response.items()}

    def mark_seen(self, uids: Sequence[int]) -> None:
        if uids:
            self._call("add_flags", list(uids), [b"\\Seen"], silent=True)

    def supports_idle(self) -> bool:
        return bool(self._call("has_capability", "IDLE"))

    def noop(self) -> None:
        self._call("noop")

    def idle_wait(self, timeout: float, wakeup_fd: int | None) -> None:
        """IDLE until the server reports a change, ``wakeup_fd`` is readable, or timeout."""
        self._call("idle")
        try:
            sock = self._client.socket()
            pending = getattr(sock, "pending", None)
            if not (pending and pending()):
                watched = [sock] + ([wakeup_fd] if wakeup_fd is not None else [])
                select.select(watched, [], [], max(0.0, timeout))
        except (OSError, ValueError) as exc:
            self.close()
            raise ImapError(f"IMAP IDLE: {_describe(exc)}") from None
        finally:
            if self._client is not None:
                self._call("idle_done")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
