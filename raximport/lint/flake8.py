"""`rax lint` as a flake8 plugin (entry point `RAX = "raximport.lint.flake8:Plugin"`): flake8 hands
over each file's tree; the rules selected by [tool.raximport.lint] run on it. flake8 applies its own
`# noqa`, select and ignore, and reports syntax errors itself (E999), so RAX000 and RAX100 are left
to it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from raximport import __version__
from raximport.lint import engine, settings
from raximport.lint.source import SourceFile


@lru_cache(maxsize=None)
def _settings(directory: Path) -> settings.Settings:
    return settings.load(directory)


class Plugin:
    name = "raximport-lint"
    version = __version__

    def __init__(self, tree: ast.AST, filename: str) -> None:
        self.tree = tree
        self.filename = filename

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        path = Path(self.filename)
        try:
            _, text = engine.read(path)
        except OSError:
            return
        if text is None:
            return
        options = _settings(path.resolve().parent)
        with SourceFile(self.filename, text, dimensions=options.dimensions) as source:
            source.__dict__["tree"] = self.tree  # flake8 parsed it already
            findings, errors = engine.check(source, options.codes_for(path) - set(engine.ENGINE_CODES))
        if errors:  # flake8 reports a plugin's exception as its failure, as `rax lint` exits 2
            raise RuntimeError("; ".join(errors.values()))
        for finding in findings:
            yield finding.row, finding.col, f"{finding.code} {finding.message}", type(self)
