"""YAML loading that remembers the line of every mapping key.

Configuration errors must name the file *and line* of the offending key, which plain
``yaml.safe_load`` forgets; this loader keeps it without changing what is parsed.
"""

from __future__ import annotations

from typing import Any

import yaml


class MarkedDict(dict[str, Any]):
    """A YAML mapping that knows the 1-based line of itself and of each of its keys."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping (plain YAML would silently keep the last value)."""

    def __init__(self, path: str, first_line: int, mark: yaml.Mark) -> None:
        super().__init__(None, None, f"duplicate key {path!r}", mark)
        self.path = path  # dotted, from the top: "imap.host"
        self.first_line = first_line


class _MarkedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_path: list[str] = []  # the keys leading to the mapping being built


def _construct_marked_mapping(loader: _MarkedLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    result = MarkedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            # A non-string key (a number, a date...) is reported as an unknown key by its text.
            key = str(key)
        if key in result:
            raise DuplicateKeyError(".".join([*loader.key_path, key]), result.key_lines[key],
                                    key_node.start_mark)
        loader.key_path.append(key)
        result[key] = loader.construct_object(value_node, deep=True)
        loader.key_path.pop()
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_MarkedLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_marked_mapping,
)


def load_marked(text: str) -> Any:
    """Parse YAML text; mappings come back as :class:`MarkedDict`.

    Raises ``yaml.YAMLError`` (with ``problem_mark``) for syntax errors, and
    :class:`DuplicateKeyError` for a key given twice.
    """
    return yaml.load(text, Loader=_MarkedLoader)
