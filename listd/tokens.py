"""Confirmation tokens: 128 random bits, given out once, stored only as a hash.

A token is 26 lower-case base32 characters, safe in a Subject, a mail body and the local
part of a reply address (``list+confirm-TOKEN@``). The store keeps its SHA-256, so a copy
of the database cannot be used to confirm anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

TOKEN_BYTES = 16  # 128 bits


def new_token() -> str:
    return _encode(secrets.token_bytes(TOKEN_BYTES))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().lower().encode("ascii", "replace")).hexdigest()


def member_token(secret: bytes, list_id: str, address_key: str, generation: int) -> str:
    """A member's personal unsubscribe token, derived so it need not be stored.

    Bumping ``generation`` after use makes it one-shot.
    """
    message = f"unsubscribe\0{list_id}\0{address_key}\0{generation}".encode()
    return _encode(hmac.new(secret, message, hashlib.sha256).digest()[:TOKEN_BYTES])


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def load_secret(state_dir: Path) -> bytes:
    """The key of personal unsubscribe tokens: made once, kept beside the database.

    Losing it only invalidates the unsubscribe links of mail already sent.
    """
    path = state_dir / "secret.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    # Written under a temporary name and linked into place: the daemon and listctl may
    # both start at once, and neither may ever read a half-written key.
    temporary = path.with_name(f".secret.key.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    try:
        os.link(temporary, path)
    except FileExistsError:
        secret = path.read_bytes()  # the other one was first
    finally:
        temporary.unlink()
    return secret
