"""Self-signed test certificate for localhost / 127.0.0.1."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_cert(directory: Path | str) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` into ``directory``; return (cert, key).

    The certificate is its own CA (basicConstraints CA:TRUE), so clients
    verify with ``cafile=cert``. The SAN covers both names clients may use.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    cmd += ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    cmd += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    cmd += ["-addext", "basicConstraints=critical,CA:TRUE"]
    # capture_output: openssl prints key-generation progress dots
    subprocess.run(cmd, check=True, capture_output=True)
    # The unprivileged Dovecot user (nobody) must be able to read the key.
    key.chmod(0o644)
    cert.chmod(0o644)
    return cert, key
