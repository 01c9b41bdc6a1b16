"""The HTTP session both token libraries use: verifying against ``auth.ca_file`` if set.

requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the environment override an
explicit ``verify``; with a CA of our own configured, the environment is ignored.
"""

from __future__ import annotations

import os

import requests

from listd.authconfig import AuthConfig

TIMEOUT_S = 30.0


def session(auth: AuthConfig) -> requests.Session:
    http = requests.Session()
    if auth.ca_file is not None:
        http.trust_env = False
        http.verify = str(auth.ca_file)
    return http


def write_private(path_text: str, data: str) -> None:
    """Write a file only its owner can read, atomically (no half-written token cache)."""
    temporary = f"{path_text}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.replace(temporary, path_text)
