"""The rewrite compiles on real code: scripts/check_rewrite_corpus.py over the stdlib, jax, jaxlib,
optax and numpy, as is and with every annotation taken for jaxtyping's."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import raximport.rewrite as rewrite

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_rewrite_corpus.py"
SUMMARY = re.compile(r"^TOTAL: (\d+) files, (\d+) rewritten and compiled, (\d+) skipped.*, (\d+) failures$", re.M)


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def corpus(monkeypatch):
    """The script as a module (registered: its dataclasses need their module in sys.modules)."""
    spec = importlib.util.spec_from_file_location("check_rewrite_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_sample_of_every_library_compiles() -> None:
    result = run_script("--limit", "6", "-q", timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for lib in ("stdlib", "jax", "jaxlib", "optax", "numpy"):
        assert re.search(rf"^  {lib}: 6 files, .*, 0 failures$", result.stdout, re.M), result.stdout
    files, compiled, skipped, failures = map(int, SUMMARY.search(result.stdout).groups())
    assert (files, failures) == (30, 0) and compiled + skipped == files


def test_harness_reports_a_broken_rewrite_and_skips_invalid_files(corpus, tmp_path: Path, monkeypatch) -> None:
    """The check can fail: a rewrite that leaves an injected node without a location is caught,
    and a file that plain compile() rejects is skipped, not failed."""
    valid = tmp_path / "valid.py"
    valid.write_text("def f(x: int) -> int:\n    return x\n")
    invalid = tmp_path / "invalid.py"
    invalid.write_text("print 'python 2'\n")

    def broken(tree, source, *args, **kwargs):
        import ast

        tree.body.insert(0, ast.Expr(ast.Name("oops", ast.Load())))  # no lineno: compile() refuses it
        return 1

    monkeypatch.setattr(corpus, "_real_rewrite_tree", broken)
    monkeypatch.setattr(rewrite, "rewrite_tree", corpus._recording_rewrite_tree)
    result = corpus.check_file(("test", str(valid)))
    assert result.status == "failed"
    assert [e.split("]")[0] for e in result.errors] == ["[as-is", "[worst"]
    assert corpus.check_file(("test", str(invalid))).status == "skipped"


def test_worst_case_instruments_every_annotated_def(corpus, tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "plain.py"
    source.write_text(
        "import dataclasses\n\n"
        "def f(x: int) -> int:\n    return x\n\n"
        "def g(x):\n    return x\n\n"
        "@dataclasses.dataclass\nclass C:\n    a: int\n\n"
        "    def m(self, y: str):\n        return y\n"
    )
    monkeypatch.setattr(rewrite, "rewrite_tree", corpus._recording_rewrite_tree)
    result = corpus.check_file(("test", str(source)))
    assert result.status == "ok", result.errors
    assert result.as_is == 0  # no jaxtyping import: untouched
    assert result.worst >= 3  # f, C.m and class C (plus whatever else the rewrite adds)


@pytest.mark.slow
def test_whole_corpus_compiles() -> None:
    result = run_script("-q", timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    files, compiled, skipped, failures = map(int, SUMMARY.search(result.stdout).groups())
    assert failures == 0 and compiled + skipped == files
    assert files > 2500 and skipped < 50, result.stdout[-3000:]
