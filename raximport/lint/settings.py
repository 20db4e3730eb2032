"""What `rax lint` checks where: rule selection in Ruff's terms and the [tool.raximport.lint] table.

Selectors are codes or code prefixes (`RAX201`, `RAX2`, `ALL`). As in Ruff, `select` replaces the
default set, `extend-select` adds to it and `ignore` removes; where selectors disagree about a
code, the most specific one wins (an `ignore` on a tie). The command line's `select` replaces the
pyproject's; its `extend-select` and `ignore` add to the pyproject's.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from raximport.config import ConfigError, find_project_root, pyproject_table
import raximport.lint.rules  # noqa: F401 (registers the rules)
from raximport.lint.registry import RULES

# Directories never walked into (a path given by name is linted all the same).
SKIPPED_DIRS = frozenset({".venv", "venv", "build", "dist", "__pycache__", "site-packages", "node_modules"})
_LIST_KEYS = ("select", "extend-select", "ignore", "exclude", "dimensions")


class UsageError(Exception):
    """A bad selector or setting: `rax lint` exits 2 with this message."""


@dataclass(frozen=True)
class Settings:
    """The merged settings of one run; `root` is the project whose pyproject.toml was read."""

    root: Path
    select: tuple[str, ...] | None = None
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude: tuple[str, ...] = ()
    dimensions: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        selectors = [*(self.select or ()), *self.extend_select, *self.ignore]
        selectors += [code for _, codes in self.per_file_ignores for code in codes]
        for selector in selectors:
            if selector != "ALL" and not any(code.startswith(selector) for code in RULES):
                raise UsageError(f"unknown rule selector {selector!r} (a code such as RAX201, a prefix such as RAX2, or ALL)")

    @cached_property
    def codes(self) -> frozenset[str]:
        """The codes selected for every file (before per-file-ignores)."""
        enable = list(self.extend_select) + (
            list(self.select) if self.select is not None else [c for c, r in RULES.items() if r.default]
        )
        codes = {code for code in RULES if _wins(code, enable, list(self.ignore))}
        if not any(s != "ALL" and "RAX000".startswith(s) for s in self.ignore):
            codes.add("RAX000")  # a file that does not parse is reported whatever is selected
        return frozenset(codes)

    def codes_for(self, path: Path) -> frozenset[str]:
        """The codes selected for `path`, its per-file-ignores applied."""
        ignored = [code for pattern, codes in self.per_file_ignores if self.matches(path, pattern) for code in codes]
        return frozenset(c for c in self.codes if not ignored or not _wins(c, [], ignored, strict=True))

    def matches(self, path: Path, pattern: str) -> bool:
        """Whether a glob matches `path` relative to the project root, its absolute path or its name."""
        absolute = path.resolve()
        try:
            relative = absolute.relative_to(self.root).as_posix()
        except ValueError:
            relative = absolute.as_posix()
        return any(fnmatch.fnmatchcase(text, pattern) for text in (relative, absolute.as_posix(), path.name))

    def excluded(self, path: Path) -> bool:
        """Whether a directory or file met while walking is skipped."""
        name = path.name
        if name in SKIPPED_DIRS or (name.startswith(".") and name not in (".", "..")):
            return True
        return any(self.matches(path, pattern) or fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)


def _specificity(selector: str, code: str) -> int:
    """How closely `selector` names `code` (-1: not at all)."""
    if selector == "ALL":
        return 0
    return len(selector) if code.startswith(selector) else -1


def _wins(code: str, enable: list[str], disable: list[str], strict: bool = False) -> bool:
    """Whether the most specific enabling selector of `code` beats every disabling one
    (`strict`: whether any disabling selector names it)."""
    off = max((_specificity(s, code) for s in disable), default=-1)
    if strict:
        return off >= 0
    on = max((_specificity(s, code) for s in enable), default=-1)
    return on >= 0 and on > off


def load(start: Path, **cli: Any) -> Settings:
    """The settings for linting from `start`: [tool.raximport.lint] in the nearest project's
    pyproject.toml, then the command line (`select`, `extend_select`, `ignore`; None when not given)."""
    root = find_project_root(start if start.is_dir() else start.parent)
    table = pyproject_table(root).get("lint", {})
    where = f"{root / 'pyproject.toml'} [tool.raximport.lint]"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table")
    unknown = set(table) - {*_LIST_KEYS, "per-file-ignores"}
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
                         f"{', '.join([*_LIST_KEYS, 'per-file-ignores'])}")
    lists = {key: _strings(table.get(key, []), f"{where} {key}") for key in _LIST_KEYS}
    per_file = table.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise UsageError(f"{where} per-file-ignores must be a table of glob = [codes]")
    return Settings(
        root=root,
        select=tuple(cli.get("select") or ()) or (tuple(lists["select"]) if "select" in table else None),
        extend_select=(*lists["extend-select"], *(cli.get("extend_select") or ())),
        ignore=(*lists["ignore"], *(cli.get("ignore") or ())),
        per_file_ignores=tuple((g, tuple(_strings(c, f"{where} per-file-ignores {g!r}"))) for g, c in per_file.items()),
        exclude=tuple(lists["exclude"]),
        dimensions=frozenset(lists["dimensions"]),
    )


def _strings(value: Any, where: str) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise UsageError(f"{where} must be a list of strings")
    return value


def split_selectors(values: list[str] | None) -> list[str] | None:
    """`--select RAX2,RAX301 --select RAX5` -> ["RAX2", "RAX301", "RAX5"] (None if not given)."""
    if values is None:
        return None
    return [part.strip().upper() for value in values for part in value.split(",") if part.strip()]
