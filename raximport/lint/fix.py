"""Applying fixes, as Ruff does: each fix's edits together or not at all, never two fixes that
overlap in one pass (the engine lints again and fixes what is left, a few passes at most)."""

from __future__ import annotations

from raximport.lint.registry import Finding, Fix
from raximport.lint.source import NEWLINE


def applicable(finding: Finding, unsafe: bool) -> Fix | None:
    """The finding's fix if it may be applied (safe ones always, the rest with `unsafe`)."""
    fix = finding.fix
    return fix if fix is not None and fix.edits and (fix.safe or unsafe) else None


def apply(text: str, findings: list[Finding], unsafe: bool) -> tuple[str, int]:
    """`text` with the applicable, non-overlapping fixes applied (columns are characters), and
    how many were applied."""
    starts = _line_starts(text)

    def offset(row: int, col: int) -> int:
        return starts[min(max(row - 1, 0), len(starts) - 1)] + col

    fixes = [fix for fix in (applicable(f, unsafe) for f in findings) if fix is not None]
    spans: list[tuple[int, int, str]] = []
    applied = 0
    for fix in sorted(fixes, key=lambda f: min((e.row, e.col) for e in f.edits)):
        edits = [(offset(e.row, e.col), offset(e.end_row, e.end_col), e.text) for e in fix.edits]
        if any(_overlap(edit, taken) for edit in edits for taken in spans) or _self_overlap(edits):
            continue
        spans.extend(edits)
        applied += 1
    for start, end, replacement in sorted(spans, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text, applied


def _line_starts(text: str) -> list[int]:
    """The offset of each line (as Python counts lines: only \\n, \\r\\n and \\r end one), and of the end."""
    return [0, *(match.end() for match in NEWLINE.finditer(text)), len(text)]


def _overlap(a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    """Whether two edits touch the same text (two insertions at one point count: their order is unknown)."""
    return a[0] < b[1] and b[0] < a[1] or a[0] == b[0]


def _self_overlap(edits: list[tuple[int, int, str]]) -> bool:
    return any(_overlap(a, b) for i, a in enumerate(edits) for b in edits[i + 1 :])


