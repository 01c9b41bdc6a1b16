"""The texts listd sends (confirmations, welcome, help...): templates an admin can override.

Each template is a ``Subject:`` line, an empty line and the body, with ``$name``
placeholders (``string.Template``). A file of the same name in the configured
``templates_dir`` replaces the built-in one; a placeholder the text does not know is left
as it is rather than failing, so an edited template can never stop listd from answering.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Text:
    subject: str
    body: str


class Templates:
    def __init__(self, override_dir: Path | None = None) -> None:
        self._override_dir = override_dir

    def source(self, name: str) -> str:
        if self._override_dir is not None:
            custom = self._override_dir / f"{name}.txt"
            if custom.is_file():
                return custom.read_text(encoding="utf-8")
        return (BUILTIN_DIR / f"{name}.txt").read_text(encoding="utf-8")

    def render(self, name: str, **values: object) -> Text:
        text = string.Template(self.source(name)).safe_substitute(
            {k: str(v) for k, v in values.items()})
        head, _, body = text.partition("\n\n")
        subject = head.removeprefix("Subject:").strip() if head.startswith("Subject:") else ""
        return Text(subject=" ".join(subject.split()), body=body.strip("\n") + "\n")
