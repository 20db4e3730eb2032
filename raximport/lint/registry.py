"""The lint rules' shared vocabulary: a Finding (with its optional Fix) and the registry of rules.

Each rule module registers its check functions with `@rule(code, name, default=...)`; the engine
selects among `RULES` by code or prefix. A check's docstring is its `--explain` text.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raximport.lint.source import SourceFile


@dataclass(frozen=True)
class Edit:
    """Replace the source text between (row, col) and (end_row, end_col); rows 1-based, cols 0-based as in ast."""

    row: int
    col: int
    end_row: int
    end_col: int
    text: str


@dataclass(frozen=True)
class Fix:
    """Edits that resolve one finding; only `safe` ones apply without --unsafe-fixes."""

    message: str
    edits: tuple[Edit, ...]
    safe: bool


@dataclass(frozen=True)
class Finding:
    """One violation of one rule, located as ast locates nodes."""

    code: str
    message: str
    row: int
    col: int
    end_row: int
    end_col: int
    fix: Fix | None = None

    @classmethod
    def at(cls, code: str, node: ast.AST, message: str, fix: Fix | None = None) -> Finding:
        """The finding spanning `node` (a statement, expression, argument...); for a function or
        class, its `def name` / `class name` (the whole body would be noise in an editor)."""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            keyword = {ast.FunctionDef: "def ", ast.AsyncFunctionDef: "async def ", ast.ClassDef: "class "}[type(node)]
            end = node.col_offset + len(keyword) + len(node.name)
            return cls(code, message, node.lineno, node.col_offset, node.lineno, end, fix)
        row = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        end_row = getattr(node, "end_lineno", None) or row
        end_col = getattr(node, "end_col_offset", None)
        return cls(code, message, row, col, end_row, col if end_col is None else end_col, fix)


Check = Callable[["SourceFile"], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    """A registered check: `code` like "RAX201", `name` kebab-case, `doc` its `--explain` text."""

    code: str
    name: str
    default: bool
    check: Check
    doc: str


RULES: dict[str, Rule] = {}


def rule(code: str, name: str, *, default: bool) -> Callable[[Check], Check]:
    """Register the decorated check under `code`; the function is returned unchanged."""

    def register(check: Check) -> Check:
        if code in RULES:
            raise ValueError(f"lint rule {code} is registered twice")
        RULES[code] = Rule(code, name, default, check, inspect.cleandoc(check.__doc__ or ""))
        return check

    return register
