"""raximport lints its own flagship: `rax lint --select ALL gpt raximport` finds nothing, and every
`# noqa` there says why (so CI, which runs the suite, runs the linter on both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raximport.lint import noqa
from raximport.lint.__main__ import main as lint

ROOT = Path(__file__).resolve().parents[2]


def test_gpt_and_raximport_pass_every_rule(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    assert lint(["gpt", "raximport", "--select", "ALL", "--no-cache"]) == 0, capsys.readouterr().out


def test_every_noqa_gives_a_reason() -> None:
    missing = [
        f"{path.relative_to(ROOT)}:{row}"
        for folder in ("gpt", "raximport")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for row, directive in noqa.directives(path.read_text()).items()
        if not directive.reason
    ]
    assert not missing, f"`# noqa` without a reason at {', '.join(missing)}"
