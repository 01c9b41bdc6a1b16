"""Validating a YAML mapping against a table of keys, with errors that name the line.

Shared by the configuration sections; every problem becomes one :class:`ConfigError` line
naming the file, the line, the key and what to do about it.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listd.yamlmarks import MarkedDict


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line the operator will read."""

    def __init__(self, path: Path | str, line: int | None, key: str, problem: str) -> None:
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


REQUIRED = object()


@dataclass(frozen=True)
class Key:
    kind: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    hint: str = ""


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
             list: "a list", dict: "a mapping"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names[k] for k in kinds if k is not int or float not in kinds)


class Reader:
    """Validates one mapping against a schema, raising the first problem as ConfigError."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, line: int | None, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, line, key, problem)

    def section(self, raw: Any, where: str, schema: Mapping[str, Key],
                line: int) -> dict[str, Any]:
        """``line`` is that of the key naming the section: where a missing key goes."""
        if raw is None:
            raw = MarkedDict()
            raw.line, raw.key_lines = line, {}
        if not isinstance(raw, MarkedDict):
            raise self.error(line, where or "(top level)", "must be a mapping of keys to values")
        for key in raw:
            if key not in schema:
                close = difflib.get_close_matches(key, list(schema), n=1)
                advice = f"did you mean '{close[0]}'?" if close else (
                    "known keys: " + ", ".join(schema))
                raise self.error(raw.line_of(key), join(where, key), f"unknown key; {advice}")
        values: dict[str, Any] = {}
        for key, spec in schema.items():
            full = join(where, key)
            if key not in raw or raw[key] is None:
                if spec.default is REQUIRED:
                    hint = f" ({spec.hint})" if spec.hint else ""
                    raise self.error(line, full, f"missing; add it{hint}")
                values[key] = spec.default
                continue
            value = raw[key]
            kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise self.error(raw.line_of(key), full,
                                 f"must be {_type_name(spec.kind)}, not {value!r}")
            if spec.choices and value not in spec.choices:
                raise self.error(raw.line_of(key), full,
                                 f"{value!r} is not one of {', '.join(spec.choices)}")
            if isinstance(value, int | float):
                problem = _number_problem(value, spec)
                if problem:
                    raise self.error(raw.line_of(key), full, problem)
            values[key] = value
        values["__lines__"] = raw
        return values


def _number_problem(value: float, spec: Key) -> str:
    if not math.isfinite(value):  # YAML's .nan and .inf are floats too
        return f"must be a finite number, not {value}"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g}"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be at most {spec.maximum:g}"
    return ""


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_secret_file(path: Path) -> str | None:
    """Why ``path`` is not acceptable as a secret file, or None if it is."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"{path} does not exist; create it (mode 0600) with the secret on one line"
    except PermissionError:
        return f"{path} cannot be read by this user; check its owner and mode"
    except OSError as exc:  # a file in the path is no directory, a symlink loop...
        return f"{path} cannot be used: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_mode & 0o007:
        return f"{path} is readable by others (mode {info.st_mode & 0o777:04o}); chmod 0600 it"
    if not os.access(path, os.R_OK):
        return f"{path} cannot be read by this user; check its owner and mode"
    return None


