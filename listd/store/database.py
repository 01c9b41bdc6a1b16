"""The connection: WAL mode, busy timeout, transactions, forward migrations."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from listd.store.schema import MIGRATIONS

DB_NAME = "listd.sqlite3"
BUSY_TIMEOUT_S = 30.0
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The database cannot be used (unreadable, from a newer listd, ...)."""


class Database:
    """One SQLite connection, safe to share between the daemon's threads."""

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives any process crash (kill -9); only a power loss can
            # roll back the last commits, which at worst re-sends a batch. listctl asks for
            # FULL: an admin's change must survive a power cut too.
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from exc

    @classmethod
    def open(cls, state_dir: Path, *, durable: bool = False) -> Self:
        try:
            state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {state_dir}: "
                             f"{exc.strerror}") from exc
        old_umask = os.umask(0o027)  # the database holds mail: not for other users
        try:
            return cls(state_dir / DB_NAME, durable=durable)
        finally:
            os.umask(old_umask)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer listd (schema "
                                 f"{version} > {SCHEMA_VERSION}); upgrade listd")
            for steps in MIGRATIONS[version:]:
                for statement in steps:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])
