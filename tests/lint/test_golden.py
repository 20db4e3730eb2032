"""Golden files (TorchFix's pattern): each tests/lint/fixtures/RAXnnn*.py is linted with only RAXnnn
selected; its findings, one concise line each, must equal <stem>.expected; where <stem>.fixed
(or <stem>.unsafe-fixed) exists, the text after `--fix` (with --unsafe-fixes) must equal it.
UPDATE_GOLDEN=1 rewrites the files that exist from the current output (review the diff)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from raximport.lint import engine
from raximport.lint.output import concise_line
from raximport.lint.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(FIXTURES.glob("RAX[0-9][0-9][0-9]*.py"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _code(fixture: Path) -> str:
    match = re.match(r"RAX\d{3}", fixture.name)
    assert match
    return match.group()


def _lint(fixture: Path, fix: bool = False, unsafe: bool = False) -> tuple[str | None, str]:
    settings = Settings(root=FIXTURES, select=(_code(fixture),))
    text, findings, _, errors = engine.lint_text(fixture.name, fixture.read_text(), settings.codes,
                                                 settings.dimensions, fix=fix, unsafe=unsafe)
    assert not errors, errors
    return text, "".join(concise_line(fixture.name, f) + "\n" for f in findings)


def _compare(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"{path.name} is missing (UPDATE_GOLDEN=1 writes it from the current output)"
    assert actual == path.read_text()


@pytest.mark.parametrize("fixture", CASES, ids=[c.stem for c in CASES])
def test_findings(fixture: Path) -> None:
    _compare(fixture.with_suffix(".expected"), _lint(fixture)[1])


@pytest.mark.parametrize("fixture", CASES, ids=[c.stem for c in CASES])
def test_fixes(fixture: Path) -> None:
    for suffix, unsafe in ((".fixed", False), (".unsafe-fixed", True)):
        expected = fixture.with_suffix(suffix)
        if expected.exists():
            text, _ = _lint(fixture, fix=True, unsafe=unsafe)
            _compare(expected, text or "")


def test_every_rule_has_a_golden_finding() -> None:
    """Every registered rule (both engineers' and the engine's) is pinned by at least one finding."""
    from raximport.lint.registry import RULES

    for code in sorted(RULES):
        fixtures = [c for c in CASES if c.name.startswith(code)]
        assert fixtures, f"{code} has no fixture"
        expected = "".join(c.with_suffix(".expected").read_text() for c in fixtures if c.with_suffix(".expected").exists())
        assert f": {code} " in expected, f"{code}'s fixtures have no finding"
