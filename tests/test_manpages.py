"""The man pages: built with scdoc, rendered without a warning, and complete.

What must be documented comes from the code, not from a list kept here: the options and
commands from the argparse parsers of listd and listctl, the configuration keys from every
schema (a module-level dict of ``Key``) in the listd package, the exit statuses from the
``EX_*`` names the command-line modules use. A new option, command, key or exit status
without its entry in the page makes a test fail, naming it.

The pages are scdoc sources (man/*.scd) written in one shape that these tests read:
sections are ``# NAME`` lines; a documented item is a definition entry, a line starting
at column 0 with its bold term (``*--once*``, ``*members* [*--json*] _LIST_``,
``*imap.port*``, ``*78*``) followed by its tab-indented description.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import listd
from listd.cli import common
from listd.cli import listctl as listctl_cli
from listd.cli import listd as listd_cli
from listd.configschema import REQUIRED, Key
from tests.listd_env import ROOT

MAN = ROOT / "man"
PAGES = ("listd.8", "listctl.8", "listd.yml.5")
_TERM = re.compile(r"\*([^*\s\\][^*]*)\*")
_FENCE = "```"


# --- tools and building ---------------------------------------------------------------------


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed, and the man page tests need it "
                    f"(Debian: apt-get install {package})", pytrace=False)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pages, built by man/build into a temporary directory."""
    _tool("scdoc", "scdoc")
    out = tmp_path_factory.mktemp("man")
    result = subprocess.run(["sh", str(MAN / "build"), str(out)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, f"man/build failed:\n{result.stderr}"
    assert not result.stderr, f"man/build complained:\n{result.stderr}"
    return out


def test_build_makes_every_page(built: Path) -> None:
    sources = sorted(path.name.removesuffix(".scd") for path in MAN.glob("*.scd"))
    assert sources == sorted(PAGES)
    assert sorted(path.name for path in built.iterdir()) == sorted(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_cleanly(page: str, built: Path) -> None:
    source = MAN / f"{page}.scd"
    scdoc = subprocess.run([_tool("scdoc", "scdoc")], input=source.read_bytes(),
                           capture_output=True, timeout=60, check=False)
    assert scdoc.returncode == 0 and not scdoc.stderr, (
        f"scdoc refuses man/{page}.scd: {scdoc.stderr.decode(errors='replace')}")
    roff = (built / page).read_text(encoding="utf-8")
    name, section = page.rsplit(".", 1)
    assert f'.TH "{name}" "{section}"' in roff, f"man/{page}.scd: first line must be " \
        f"{name}({section})"
    # -ww: every troff warning (a line starting with "." or "'" that scdoc passes through
    # is read as a request and the text lost); -k: the UTF-8 characters of the sources.
    groff = subprocess.run([_tool("groff", "groff-base"), "-k", "-man", "-Tutf8", "-ww",
                            "-P-cbou", str(built / page)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert groff.returncode == 0 and not groff.stderr, f"{page}: groff: {groff.stderr}"
    for number, line in enumerate(groff.stdout.splitlines(), 1):
        # scdoc leaves markup it cannot apply as it is (friends+*_tag_ stays "_tag_").
        leftover = re.search(r"(?<![\w.])_[A-Za-z][\w-]*_(?!\w)|(?<![\w\\])\*[^\s*]+\*", line)
        assert leftover is None, f"{page}: unapplied scdoc markup {leftover.group()!r} " \
            f"in rendered line {number}: {line.strip()}"
    for start, paragraph in _paragraphs(source.read_text(encoding="utf-8")):
        stars = paragraph.replace("\\*", "").count("*")
        assert stars % 2 == 0, f"man/{page}.scd:{start}: a '*' is not closed in this " \
            "paragraph (write \\* for a literal one)"


# --- reading the sources ----------------------------------------------------------------------


def _lines(source: str) -> Iterator[tuple[int, str]]:
    """(number, line) of the lines outside literal ``` blocks."""
    literal = False
    for number, line in enumerate(source.splitlines(), 1):
        if line.strip().startswith(_FENCE):
            literal = not literal
        elif not literal:
            yield number, line


def _paragraphs(source: str) -> Iterator[tuple[int, str]]:
    start, lines = 0, []
    for number, line in [*_lines(source), (0, "")]:
        if line.strip():
            start = start or number
            lines.append(line)
        elif lines:
            yield start, "\n".join(lines)
            start, lines = 0, []


def _page(page: str) -> str:
    return (MAN / f"{page}.scd").read_text(encoding="utf-8")


def _sections(source: str) -> dict[str, str]:
    """The level-1 sections of a page (``# NAME``), by name."""
    sections: dict[str, list[str]] = {"": []}
    current = sections[""]
    for _, line in _lines(source):
        heading = re.match(r"# (\S.*)$", line)
        if heading:
            current = sections.setdefault(heading.group(1).strip(), [])
        else:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


class Entry:
    """A definition entry: its header line (the terms) and its description."""

    def __init__(self, header: str) -> None:
        self.header = header
        self.text = header
        self.terms = _TERM.findall(header)

    @property
    def name(self) -> str:
        return str(self.terms[0])


def _entries(text: str) -> list[Entry]:
    """The entries of a page or section: a paragraph whose first line starts with a
    *term* and whose next line is indented (a line of prose that merely starts with a
    bold word is no entry)."""
    lines = [line for _, line in _lines(text)]
    entries: list[Entry] = []
    current: Entry | None = None
    for index, line in enumerate(lines):
        starts_paragraph = index == 0 or not lines[index - 1].strip()
        described = index + 1 < len(lines) and lines[index + 1].startswith("\t")
        if starts_paragraph and described and _TERM.match(line):
            current = Entry(line)
            entries.append(current)
        elif line.startswith("\t") and current is not None:
            current.text += "\n" + line
        elif line.strip():
            current = None  # prose or a heading ends the entry
    return entries


def _section(page: str, name: str) -> str:
    sections = _sections(_page(page))
    assert name in sections, f"man/{page}.scd has no section '# {name}'"
    return sections[name]


def _report(problems: list[str]) -> None:
    assert not problems, "\n".join(["the man pages are not complete:", *problems])


# --- command lines ----------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction[Any]]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser``, nested ones too (``auth login``), with its path."""
    yield path, parser
    for action in _subparsers(parser):
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) not in seen:  # an alias
                seen.add(id(sub))
                yield from _commands(sub, (*path, name))


def _documented_options(parser: argparse.ArgumentParser, entries: list[Entry], where: str,
                        *, with_help: bool) -> list[str]:
    """Problems: options (and their choices, and positionals) of ``parser`` that no
    entry in ``entries`` names."""
    problems = []
    terms = {term for entry in entries for term in entry.terms}
    text = "\n".join(entry.text for entry in entries)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if isinstance(action, argparse._HelpAction) and not with_help:
            continue
        for option in action.option_strings:
            if option not in terms:
                problems.append(f"{where}: option {option} is not documented (want "
                                f"'*{option}*' in an entry)")
        if not action.option_strings:
            metavar = action.metavar if isinstance(action.metavar, str) else action.dest
            if f"_{metavar.upper()}_" not in text:
                problems.append(f"{where}: argument {metavar.upper()} is not documented "
                                f"(want '_{metavar.upper()}_' in the entry)")
        for choice in action.choices or ():
            if f"*{choice}*" not in text:
                problems.append(f"{where}: {action.option_strings or action.dest} value "
                                f"{choice!r} is not documented (want '*{choice}*')")
    return problems


def test_every_listd_option_is_in_listd_8() -> None:
    entries = _entries(_section("listd.8", "OPTIONS"))
    _report(_documented_options(listd_cli.build_parser(), entries,
                                "man/listd.8.scd OPTIONS", with_help=True))


def test_every_listctl_command_and_option_is_in_listctl_8() -> None:
    parser = listctl_cli.build_parser()
    problems = _documented_options(parser, _entries(_section("listctl.8", "OPTIONS")),
                                   "man/listctl.8.scd OPTIONS", with_help=True)
    entries = _entries(_section("listctl.8", "COMMANDS"))
    by_name = {entry.name: entry for entry in entries}
    commands = {" ".join(path): sub for path, sub in _commands(parser) if path}
    for command, sub in commands.items():
        where = f"man/listctl.8.scd COMMANDS, listctl {command}"
        if _subparsers(sub):  # a group (auth): its actions have the entries
            mine = [e for e in entries if e.name.startswith(f"{command} ")]
        elif command in by_name:
            mine = [by_name[command]]
        else:
            problems.append(f"{where}: not documented (want an entry line "
                            f"'*{command}* ...' under # COMMANDS)")
            continue
        problems += _documented_options(sub, mine, where, with_help=False)
    for name in by_name:
        if name not in commands:
            problems.append(f"man/listctl.8.scd COMMANDS documents '{name}', which "
                            "listctl does not have")
    _report(problems)


# --- exit statuses ----------------------------------------------------------------------------


def _exit_statuses(modules: list[ModuleType],
                   parser: argparse.ArgumentParser) -> dict[int, str]:
    """The exit statuses the modules use by name (EX_*), with where; 2 if argparse's
    own error exit is left as it is."""
    statuses: dict[int, str] = {}
    for module in modules:
        assert module.__file__ is not None
        path = Path(module.__file__)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = (node.id if isinstance(node, ast.Name) else
                    node.attr if isinstance(node, ast.Attribute) else "")
            value = getattr(module, name, getattr(common, name, None))
            if name.startswith("EX_") and isinstance(value, int):
                statuses.setdefault(value, f"{name} in {path.relative_to(ROOT)}")
    if type(parser).error is argparse.ArgumentParser.error:
        statuses.setdefault(2, "argparse's usage error")
    return statuses


def _check_exit_statuses(page: str, statuses: dict[int, str]) -> None:
    documented = {int(e.name) for e in _entries(_section(page, "EXIT STATUS"))
                  if e.name.isdigit()}
    problems = [f"man/{page}.scd EXIT STATUS: {code} ({where}) is not documented "
                f"(want an entry '*{code}*')"
                for code, where in sorted(statuses.items()) if code not in documented]
    problems += [f"man/{page}.scd EXIT STATUS documents {code}, which the code does not use"
                 for code in sorted(documented - set(statuses) - {0})]
    _report(problems)


def test_listd_exit_statuses_are_in_listd_8() -> None:
    modules = [listd_cli, importlib.import_module("listd.service")]
    _check_exit_statuses("listd.8", _exit_statuses(modules, listd_cli.build_parser()))


def test_listctl_exit_statuses_are_in_listctl_8() -> None:
    cli = importlib.import_module("listd.cli")
    modules = [listctl_cli] + [importlib.import_module(f"listd.cli.{m.name}")
                               for m in pkgutil.iter_modules(cli.__path__)
                               if m.name.startswith("ctl_")]
    _check_exit_statuses("listctl.8", _exit_statuses(modules, listctl_cli.build_parser()))


# --- configuration keys -----------------------------------------------------------------------


def _schemas() -> dict[str, dict[str, Key]]:
    """Every module-level dict of Keys in the listd package, by its name where defined."""
    found: dict[int, tuple[str, dict[str, Key]]] = {}
    for info in pkgutil.walk_packages(listd.__path__, "listd."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        for name, value in vars(module).items():
            if not (isinstance(value, dict) and value
                    and all(isinstance(v, Key) for v in value.values())):
                continue
            defined_here = re.search(rf"^{re.escape(name)}\s*(:[^=\n]*)?=", source, re.M)
            if id(value) not in found or defined_here:
                found[id(value)] = (f"{info.name}.{name}", value)
    return dict(found.values())


def _where(node: ast.expr, assigned: dict[str, ast.expr]) -> str | None:
    """The section a ``reader.section(raw, WHERE, ...)`` call reads: "imap", or
    "lists.<id>" for f"lists.{list_id}"."""
    if isinstance(node, ast.Name) and node.id in assigned:
        return _where(assigned[node.id], {})
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(part.value) if isinstance(part, ast.Constant) else "<id>"
                       for part in node.values)
    return None


def _section_prefixes() -> dict[str, str | None]:
    """Schema name -> the dotted prefix of its keys, from the code that reads it."""
    prefixes: dict[str, str | None] = {}
    for path in sorted((ROOT / "listd").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for scope in ast.walk(tree):
            if not isinstance(scope, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assigned = {target.id: node.value for node in ast.walk(scope)
                        if isinstance(node, ast.Assign) for target in node.targets
                        if isinstance(target, ast.Name)}
            for call in ast.walk(scope):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "section" and len(call.args) >= 3
                        and isinstance(call.args[2], ast.Name)):
                    prefixes[call.args[2].id] = _where(call.args[1], assigned)
    return prefixes


def _default(value: object) -> str:
    """A default as the page writes it: Default: *60*, *true*, *""*, *[]*."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value) if value != "" else '""'


def test_every_config_key_is_in_listd_yml_5() -> None:
    source = _page("listd.yml.5")
    entries = {entry.name: entry for entry in _entries(source)}
    headings = set(_sections(source))
    schemas = _schemas()
    prefixes = _section_prefixes()
    assert any(name.endswith("._TOP_KEYS") for name in schemas), sorted(schemas)
    problems: list[str] = []
    known: dict[str, dict[str, Key]] = {}
    for qualified, schema in sorted(schemas.items()):
        prefix = prefixes.get(qualified.rsplit(".", 1)[1])
        if prefix is None:
            problems.append(f"{qualified}: a schema of Keys that no reader.section(raw, "
                            f"'SECTION', {qualified.rsplit('.', 1)[1]}, line) call reads; "
                            "cannot tell which keys of listd.yml it describes")
            continue
        known[prefix] = schema
        for key, spec in schema.items():
            term = f"{prefix}.{key}" if prefix else key
            entry = entries.get(term)
            where = f"man/listd.yml.5.scd: config key {term} ({qualified})"
            if entry is None:
                problems.append(f"{where} is not documented (want an entry line '*{term}*' "
                                "with its type, default and meaning)")
                continue
            if spec.kind is dict:
                if key.upper() not in headings:
                    problems.append(f"{where}: no section '# {key.upper()}' for its keys")
                continue
            if spec.default is REQUIRED:
                wanted = "Required"
            elif spec.default is None:
                wanted = "Default:"
            else:
                wanted = f"Default: *{_default(spec.default)}*"
            if wanted not in entry.text:
                problems.append(f"{where}: its entry does not say '{wanted}'")
            problems += [f"{where}: value {choice!r} is not documented (want '*{choice}*')"
                         for choice in spec.choices if f"*{choice}*" not in entry.text]
    for term in entries:  # documented keys of a known section that the code does not know
        prefix, _, key = term.rpartition(".")
        if prefix and prefix in known and key not in known[prefix]:
            problems.append(f"man/listd.yml.5.scd documents {term}, which is not a "
                            "configuration key")
    _report(problems)
