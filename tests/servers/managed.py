"""A server a test starts and cleans up, usable as a context manager."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class Managed:
    def start(self) -> Any:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
