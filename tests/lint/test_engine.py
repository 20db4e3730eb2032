"""The `rax lint` engine and command line: selection, noqa, config, exit codes, formats, fixes,
cache, processes, internal errors, and the flake8 plugin's contract."""

from __future__ import annotations

import ast
import gc
import json
import os
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from raximport.cli import main as rax
from raximport.lint import engine
from raximport.lint.__main__ import main as lint
from raximport.lint.flake8 import Plugin
from raximport.lint.registry import RULES, Edit, Finding, Fix, Rule
from raximport.lint.settings import Settings, UsageError

PMAP = "import jax\nstep = jax.pmap(lambda x: x)\n"
STEP = '''import jax
import optax


@jax.jit
def step(params, opt_state, grads):
    updates, opt_state = optax.sgd(0.1).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project as the working directory, with its own cache directory."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAX_CACHE_DIR", str(tmp_path / ".cache"))
    return tmp_path


def test_selection_follows_ruff() -> None:
    root = Path.cwd()
    default = Settings(root).codes
    assert "RAX305" in default and "RAX502" not in default and "RAX000" in default
    assert Settings(root, select=("ALL",)).codes == frozenset(RULES)
    assert Settings(root, select=("RAX5",)).codes == {"RAX000", "RAX501", "RAX502"}
    assert Settings(root, select=("RAX5",), ignore=("RAX502",)).codes == {"RAX000", "RAX501"}
    assert Settings(root, select=("RAX502",), ignore=("RAX5",)).codes == {"RAX000", "RAX502"}  # more specific wins
    assert "RAX502" in Settings(root, extend_select=("RAX502",)).codes
    assert "RAX000" not in Settings(root, ignore=("RAX000",)).codes
    with pytest.raises(UsageError, match="RAX9"):
        Settings(root, select=("RAX9",))


def test_noqa_silences_by_code_and_prefix_and_reports_unused(project: Path) -> None:
    (project / "a.py").write_text(
        "import jax\n"
        "a = jax.pmap(f)  # noqa: RAX502 the old cluster has no shardings\n"
        "b = jax.pmap(f)  # noqa: RAX5\n"
        "c = jax.pmap(f)  # noqa\n"
        "d = jax.pmap(f)  # noqa: E501\n"
        "e = 1  # noqa: RAX502\n"
    )
    outcome = engine.run([project], Settings(project, select=("RAX502", "RAX100")))
    found = [(f.row, f.code) for f in outcome.files[0].findings]
    assert found == [(5, "RAX502"), (6, "RAX100")]


def test_per_file_ignores_exclude_and_skipped_directories(project: Path) -> None:
    for name in ("src/a.py", "tests/b.py", ".venv/c.py", "build/d.py", "gen/e.py", ".hidden/f.py"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(PMAP)
    (project / "pyproject.toml").write_text(
        '[tool.raximport.lint]\nselect = ["RAX502"]\nexclude = ["gen"]\n'
        '[tool.raximport.lint.per-file-ignores]\n"tests/*" = ["RAX5"]\n'
    )
    assert lint([]) == 1
    outcome = engine.run([project], __import__("raximport.lint.settings", fromlist=["load"]).load(project))
    assert [(f.path.relative_to(project).as_posix(), len(f.findings)) for f in outcome.files] == [
        ("src/a.py", 1), ("tests/b.py", 0)]
    # a file named on the command line is linted even in a skipped directory
    assert lint([".venv/c.py", "--output-format", "concise"]) == 1


def test_exit_codes_and_usage_errors(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "a.py").write_text(PMAP)
    assert lint(["a.py"]) == 0  # RAX502 is off by default
    assert lint(["a.py", "--select", "RAX502"]) == 1
    assert lint(["a.py", "--select", "RAX502", "--exit-zero"]) == 0
    assert lint(["a.py", "--select", "NOPE"]) == 2
    assert lint(["missing.py"]) == 2
    (project / "pyproject.toml").write_text('[tool.raximport.lint]\nselekt = ["ALL"]\n')
    assert lint(["a.py"]) == 2
    assert "unknown key(s) selekt" in capsys.readouterr().err


def test_syntax_errors_are_findings_not_crashes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "bad.py").write_text("def f(:\n")
    (project / "latin.py").write_bytes(b"# -*- coding: utf-8 -*-\nx = '\xff'\n")
    (project / "ok.py").write_text(PMAP)
    assert lint(["--select", "RAX502"]) == 1
    out = capsys.readouterr().out
    assert "bad.py:1:7: RAX000 SyntaxError" in out
    assert "latin.py:1:1: RAX000 SyntaxError: the file cannot be decoded" in out
    assert "ok.py:2:8: RAX502" in out


def test_a_failing_rule_is_one_internal_error_and_the_rest_is_linted(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(source: object) -> list[Finding]:
        raise KeyError("oops")

    monkeypatch.setitem(RULES, "RAX998", Rule("RAX998", "broken", False, broken, ""))
    for name in ("a.py", "b.py"):
        (project / name).write_text(PMAP)
    assert lint(["--select", "RAX502,RAX998", "--no-cache"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("internal error: rule RAX998 (broken) failed") == 1
    assert captured.out.count("RAX502") == 2


def test_output_formats(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "a.py").write_text(STEP)
    lint(["a.py", "--output-format", "json"])
    [item] = json.loads(capsys.readouterr().out)
    assert set(item) == {"cell", "code", "end_location", "filename", "fix", "location", "message", "noqa_row", "url"}
    assert item["code"] == "RAX305" and item["location"] == {"column": 1, "row": 6}
    assert item["fix"]["applicability"] == "unsafe" and item["filename"] == str(project / "a.py")
    lint(["a.py", "--output-format", "github"])
    assert capsys.readouterr().out.startswith("::error title=rax lint (RAX305),file=a.py,line=6,col=1,endLine=6,")
    lint(["a.py", "--output-format", "sarif"])
    log = json.loads(capsys.readouterr().out)
    assert log["version"] == "2.1.0"
    [result] = log["runs"][0]["results"]
    assert result["ruleId"] == "RAX305" and result["locations"][0]["physicalLocation"]["region"]["startLine"] == 6
    lint(["a.py", "--output-format", "full"])
    full = capsys.readouterr().out
    assert "6 | def step(params, opt_state, grads):\n  | ^^^^^^^^ RAX305" in full
    assert "= help: Add `donate_argnames=(\"params\", \"opt_state\")` (unsafe)" in full
    assert lint(["a.py", "--statistics"]) == 1
    assert capsys.readouterr().out == "1\tRAX305\t[ ] undonated-train-step\n"
    assert lint(["--explain", "rax305"]) == 0
    assert "## Why is this bad?" in capsys.readouterr().out
    assert lint(["--explain", "RAX999"]) == 2


def test_fix_applies_safe_fixes_only_unless_unsafe(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = project / "a.py"
    path.write_text(STEP.replace("import optax\n", "import optax  # noqa: RAX999\n"))
    assert lint(["a.py", "--select", "RAX100,RAX305", "--fix"]) == 1  # RAX100 fixed; RAX305's fix is unsafe
    out = capsys.readouterr().out
    assert "noqa" not in path.read_text() and "(1 fixed, 1 remaining)" in out
    assert "1 hidden fix can be enabled with the `--unsafe-fixes` option" in out
    assert lint(["a.py", "--select", "RAX305", "--fix", "--unsafe-fixes"]) == 0
    assert '@jax.jit(donate_argnames=("params", "opt_state"))' in path.read_text()
    ast.parse(path.read_text())


def test_fix_skips_overlapping_edits_in_one_pass() -> None:
    from raximport.lint.fix import apply

    def finding(col: int, end: int, text: str) -> Finding:
        return Finding("RAX100", "m", 1, col, 1, end, Fix("f", (Edit(1, col, 1, end, text),), safe=True))

    text, applied = apply("abcdef\n", [finding(0, 3, "X"), finding(2, 4, "Y"), finding(4, 6, "Z")], unsafe=False)
    assert (text, applied) == ("XdZ\n", 2)


def test_cache_hits_on_unchanged_content_and_is_private(project: Path) -> None:
    (project / "a.py").write_text(PMAP)
    (project / "b.py").write_text(PMAP)
    settings = Settings(project, select=("RAX502",))
    cache = project / ".cache" / "lint"
    first = engine.run([project], settings, cache_dir=cache)
    assert first.cache_hits == 0 and stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    (project / "b.py").write_text(PMAP + "x = 1\n")
    second = engine.run([project], settings, cache_dir=cache)
    assert second.cache_hits == 1
    assert [len(f.findings) for f in second.files] == [1, 1]
    assert engine.run([project], Settings(project, select=("RAX501",)), cache_dir=cache).cache_hits == 0
    os.chmod(cache, 0o777)
    with pytest.warns(Warning, match="not using"):
        assert engine.run([project], settings, cache_dir=cache).cache_hits == 0


def test_many_files_over_processes_match_one_process(project: Path) -> None:
    for i in range(engine.PARALLEL_MIN_FILES + 6):
        (project / f"m{i}.py").write_text(PMAP * (i % 3 + 1) + ("def f(:\n" if i == 5 else ""))
    settings = Settings(project, select=("RAX502",))

    def summary(outcome: engine.Outcome) -> list[tuple[str, list[Finding]]]:
        return [(f.path.name, f.findings) for f in outcome.files]

    assert summary(engine.run([project], settings, jobs=2)) == summary(engine.run([project], settings, jobs=1))
    # In a process with threads (JAX's, here), workers come from a fork server, not a fork of it.
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert engine._pool_context().get_start_method() == "forkserver"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # JAX warns when a process that imported it forks
            assert summary(engine.run([project], settings, jobs=2)) == summary(engine.run([project], settings, jobs=1))
    finally:
        stop.set()
        thread.join()


def test_a_linted_file_is_freed_when_its_check_ends(project: Path) -> None:
    """The rules' shared analyses reference their file; a run must not keep every file's tree alive
    (the engine runs the cyclic GC rarely: reference counting alone has to free them)."""
    from raximport.lint.source import SourceFile

    (project / "step.py").write_text(STEP + "\n\n@jax.jit\ndef f(x, n):\n    return x[: int(n)]\n")
    def alive() -> int:
        return sum(isinstance(o, (SourceFile, ast.mod, ast.stmt)) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        before = alive()
        outcome = engine.run([project], Settings(project, select=("ALL",)), jobs=1)
        after = alive()
    finally:
        gc.enable()
    assert {f.code for f in outcome.files[0].findings} >= {"RAX301", "RAX305"}  # the analyses ran
    assert after == before


def test_pyproject_dimensions_extend_the_vocabulary(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "a.py").write_text('from jaxtyping import Array, Float\nx: Float[Array, "batch head_dim"]\n')
    assert lint(["a.py", "--select", "RAX102"]) == 1
    (project / "pyproject.toml").write_text('[tool.raximport.lint]\ndimensions = ["head_dim"]\n')
    assert lint(["a.py", "--select", "RAX102"]) == 0


def test_rax_lint_and_python_m(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "a.py").write_text(PMAP)
    assert rax(["lint", "a.py", "--select", "RAX502"]) == 1
    assert "a.py:2:8: RAX502" in capsys.readouterr().out
    run = subprocess.run([sys.executable, "-m", "raximport.lint", "a.py", "--select", "RAX502", "--no-cache"],
                         capture_output=True, text=True, cwd=project)
    assert run.returncode == 1 and "a.py:2:8: RAX502 `jax.pmap`" in run.stdout


def test_flake8_plugin_contract(project: Path) -> None:
    path = project / "a.py"
    path.write_text(STEP + "x = jax.pmap(step)  # noqa: RAX502\n")
    plugin = Plugin(ast.parse(path.read_text()), str(path))
    assert Plugin.name and Plugin.version
    results = list(plugin.run())
    assert results == [(6, 0, results[0][2], Plugin)]
    assert results[0][2].startswith("RAX305 Jitted training step `step`")


def test_readme_rule_table_matches_the_registry() -> None:
    from raximport.lint.output import rules_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("<!-- lint-rules:begin -->\n", 1)[1].split("<!-- lint-rules:end -->", 1)[0]
    assert table == rules_markdown(), "regenerate the README's rule table with output.rules_markdown()"


def test_the_lint_table_is_not_a_run_option(project: Path) -> None:
    from raximport.config import load_config

    (project / "pyproject.toml").write_text('[tool.raximport]\nstrict = true\n[tool.raximport.lint]\nselect = ["ALL"]\n')
    assert load_config(root=project, environ={}).strict is True
