"""`rax lint`'s result cache: one JSON file in raximport's cache directory (DIR/lint, mode 0700,
refused when another user could write to it), mapping a hash of (file content, selected codes,
dimension vocabulary) to that file's findings. Its name carries a digest of the lint package's
sources, so a changed rule starts a fresh cache; files of older digests are removed on save.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from raximport import __version__, cachedir
from raximport.lint.registry import Edit, Finding, Fix
from raximport.xla_cache import write_json

MAX_ENTRIES = 200_000
_NAME = re.compile(r"results-[0-9a-f]{16}\.json")


def lint_dir(cache_dir: Path) -> Path:
    """The lint cache's directory in raximport's cache directory."""
    return Path(cache_dir) / "lint"


def info_lines(cache_dir: Path) -> list[str]:
    """What `rax cache info` says about the lint cache (an entry: one version of the rules' results)."""
    directory = lint_dir(cache_dir)
    found = cachedir.files(directory, _NAME)
    size = sum(status.st_size for _, status in found)
    return cachedir.section("lint cache (rax lint's results)", directory, cachedir.state_of(directory), len(found), size)


def clear(directory: Path) -> tuple[int, int]:
    """Remove the lint cache's result files from `directory`, nothing else: (entries, their bytes)."""
    removed = cachedir.remove(directory, _NAME)
    return len(removed), sum(size for _, size in removed)


def rules_digest() -> str:
    """A digest of raximport's version and the lint package's sources."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def key(content: bytes, codes: frozenset[str], dimensions: frozenset[str]) -> str:
    material = b"\0".join([content, ",".join(sorted(codes)).encode(), ",".join(sorted(dimensions)).encode()])
    return hashlib.sha256(material).hexdigest()[:32]


def encode(finding: Finding) -> list:
    fix = finding.fix
    return [finding.code, finding.message, finding.row, finding.col, finding.end_row, finding.end_col,
            None if fix is None else [fix.message, fix.safe, [[e.row, e.col, e.end_row, e.end_col, e.text] for e in fix.edits]]]


def decode(data: list) -> Finding:
    code, message, row, col, end_row, end_col, fix = data
    if fix is not None:
        fix = Fix(fix[0], tuple(Edit(*edit) for edit in fix[2]), bool(fix[1]))
    return Finding(code, message, row, col, end_row, end_col, fix)


class ResultCache:
    """Findings by key; `directory` None (or unusable) keeps nothing."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory if directory is not None and cachedir.usable(directory, "the lint cache") else None
        self.path = self.directory / f"results-{rules_digest()}.json" if self.directory else None
        self.entries: dict[str, list] = self._read() if self.path else {}
        self.used: set[str] = set()
        self.hits = 0
        self.changed = False

    def _read(self) -> dict[str, list]:
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_RDONLY | cachedir.O_NOFOLLOW)
        except OSError:
            return {}
        with os.fdopen(fd, "rb") as fh:
            if cachedir.untrusted(os.fstat(fd)) is not None:
                return {}
            try:
                data = json.loads(fh.read())
            except (OSError, ValueError):
                return {}
        return data if isinstance(data, dict) else {}

    def get(self, entry: str) -> list[Finding] | None:
        found = self.entries.get(entry)
        if found is None:
            return None
        try:
            findings = [decode(item) for item in found]
        except (TypeError, ValueError, IndexError):
            return None
        self.used.add(entry)
        self.hits += 1
        return findings

    def put(self, entry: str, findings: list[Finding]) -> None:
        self.entries[entry] = [encode(f) for f in findings]
        self.used.add(entry)
        self.changed = True

    def save(self) -> None:
        """Write the entries (only this run's if there are too many), atomically; errors only cost speed."""
        if self.path is None or not self.changed:
            return
        entries = self.entries if len(self.entries) <= MAX_ENTRIES else {k: self.entries[k] for k in self.used}
        try:
            write_json(self.path, entries)
        except OSError:
            return
        for name, _ in cachedir.files(self.path.parent, _NAME):
            if name != self.path.name:
                try:
                    os.unlink(self.path.parent / name)
                except OSError:
                    pass
