"""What both command-line tools share: exit codes (sysexits.h) and logging to stderr."""

from __future__ import annotations

import logging
import os
import sys

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78

# syslog priorities for the "<N>" prefix journald understands on stderr.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    """No timestamp (journald adds its own); a ``<N>`` priority prefix under journald."""

    def __init__(self, journald: bool) -> None:
        super().__init__("%(message)s")
        self._journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self._journald:
            prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
            return "\n".join(prefix + line for line in text.splitlines())
        return f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter(journald=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # imapclient logs every command at DEBUG, LOGIN included, and the HTTP and token
    # libraries log requests (token endpoint forms, headers): never let them through.
    for noisy in ("imapclient", "msal", "urllib3", "requests_oauthlib", "oauthlib",
                  "google.auth", "flufl.bounce"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
