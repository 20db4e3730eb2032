"""Error reports: every script of the bug corpus (tests/bugs/) run through `python -m raximport
--report-json`, its JSON report and its terminal text checked against what the script expects."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import write

REPO = Path(__file__).resolve().parents[1]
BUGS = REPO / "tests" / "bugs"
SCRIPTS = sorted(p.name for p in BUGS.glob("*.py"))
FIELDS = ("kind", "function", "file", "line", "parameter", "expected", "got", "suggestion")


def expectations(path: Path) -> dict[str, object]:
    """What a bug script's header says its report must hold (see tests/bugs/README.md)."""
    spec: dict[str, object] = {"equal": {}, "contains": [], "args": [], "env": {}, "exit": 1, "line": None,
                               "requires": []}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if "# <- report" in line:
            spec["line"] = number
        match = re.match(r"# (expect|expect~|args|env|exit|requires): (.*)$", line)
        if not match:
            continue
        key, value = match.groups()
        if key == "expect":
            name, _, wanted = value.partition("=")
            spec["equal"][name] = wanted  # type: ignore[index]
        elif key == "expect~":
            name, _, wanted = value.partition("=")
            spec["contains"].append((name, wanted))  # type: ignore[union-attr]
        elif key == "args":
            spec["args"] = value.split()
        elif key == "env":
            name, _, wanted = value.partition("=")
            spec["env"][name] = wanted  # type: ignore[index]
        elif key == "exit":
            spec["exit"] = int(value)
        elif key == "requires":
            spec["requires"].append(value.strip())  # type: ignore[union-attr]
    return spec


def base_env(cache_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAX_", "JAX_", "FORCE_COLOR"))}
    env.update({"RAX_CACHE_DIR": str(cache_dir), "JAX_PLATFORMS": "cpu", "NO_COLOR": "1"})
    return env


def run_script(name: str, workdir: Path) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    spec = expectations(BUGS / name)
    out = workdir / f"{name}.json"
    env = base_env(workdir / "cache") | spec["env"]  # type: ignore[operator]
    result = subprocess.run(
        [sys.executable, "-m", "raximport", "--report-json", str(out), *spec["args"], str(BUGS / name)],  # type: ignore[misc]
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    return result, json.loads(out.read_text()) if out.exists() else None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], dict | None]]:
    """Every bug script's run, two at a time (the machines that run this have two cores)."""
    workdir = tmp_path_factory.mktemp("bugs")
    runnable = [n for n in SCRIPTS if all(importlib.util.find_spec(m) for m in expectations(BUGS / n)["requires"])]  # type: ignore[union-attr]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(runnable, pool.map(lambda n: run_script(n, workdir), runnable)))


def _value(report: dict, name: str) -> object:
    value: object = report
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None  # type: ignore[union-attr]
    return value


def test_the_corpus_covers_the_catalogue() -> None:
    kinds = {expectations(BUGS / n)["equal"].get("kind") for n in SCRIPTS}  # type: ignore[union-attr]
    assert len(SCRIPTS) >= 25
    assert kinds >= {
        "shape-mismatch", "dtype-mismatch", "type-mismatch", "concretization", "tracer-bool-conversion",
        "tracer-array-conversion", "tracer-integer-conversion", "unexpected-tracer", "non-hashable-static-argument",
        "invalid-jax-type", "concrete-shape", "key-reuse", "nan", "nan-detected", "deleted-array", "out-of-memory",
        "slow-compile", "error", "recompilation", "autojit-fallback", "shape-error", "loop-carry",
    }


@pytest.mark.parametrize("name", SCRIPTS)
def test_bug_report(name: str, corpus: dict) -> None:
    spec = expectations(BUGS / name)
    if name not in corpus:
        pytest.skip(f"needs {spec['requires']}")
    result, document = corpus[name]
    stderr = result.stderr
    assert result.returncode == spec["exit"], stderr
    assert document is not None and document["version"] == 1, stderr
    assert document["exit_code"] == spec["exit"]
    wanted_kind = spec["equal"]["kind"]  # type: ignore[index]
    reports = [r for r in document["reports"] if r["kind"] == wanted_kind]
    assert reports, (document, stderr)
    report = reports[-1]
    for field, wanted in spec["equal"].items():  # type: ignore[union-attr]
        assert str(_value(report, field)) == wanted, (field, report)
    for field, wanted in spec["contains"]:  # type: ignore[union-attr]
        value = _value(report, field)
        text = "\n".join(value) if isinstance(value, list) else str(value)
        assert wanted in text, (field, report)
    if spec["line"] is not None:
        assert (report["file"], report["line"]) == (str(BUGS / name), spec["line"]), report
    # the terminal says the same as the JSON
    if wanted_kind == "error":  # nothing to add: Python's traceback, the user's frames only
        assert report["error"] in stderr
        assert f'File "{BUGS / name}", line {spec["line"]}' in stderr
        assert "raximport/" not in stderr and "raximport: " not in stderr
        return
    assert f"raximport: {report['title']}" in stderr
    assert f"at {report['file']}:{report['line']}" in stderr
    for field in ("function", "parameter", "expected", "got", "suggestion", "explanation"):
        assert str(report[field]) in stderr, (field, report[field], stderr)
    for line in report["details"]:
        assert line in stderr


def test_gpt_block_size_mismatch_names_parameter_dimension_sizes_and_config(corpus: dict) -> None:
    result, document = corpus["shape_gpt_block_size.py"]
    report = document["reports"][-1]
    text = result.stderr
    assert "'y' has seq=32, but 'x' set seq=16" in text
    assert "parameter:  y" in text and "got:        int32[4,32]" in text
    assert "seq is set by block_size: config.block_size = 16, which 'y' does not match" in text
    assert report["extra"]["config_source"] == "config.block_size"
    assert report["defined_at"]["file"] == str(REPO / "gpt" / "model.py")


def test_jax_errors_point_at_the_users_line_not_at_jax(corpus: dict) -> None:
    result, _ = corpus["shape_jit.py"]
    lines = result.stderr.splitlines()
    assert not any("site-packages" in line for line in lines), result.stderr
    assert any(re.match(r"  … \d+ frames? in raximport hidden", line) for line in lines)
    assert f'File "{BUGS / "shape_jit.py"}", line 19, in train_step' in result.stderr


def _run(args: list[str], cwd: Path, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=base_env(cache) | env,
                          capture_output=True, text=True, timeout=300)


def test_full_tracebacks_with_verbose_or_env(tmp_path: Path) -> None:
    script = str(BUGS / "shape_param_np.py")
    short = _run(["-m", "raximport", script], tmp_path, tmp_path / "c")
    assert "jaxtyping/_decorator.py" not in short.stderr and "frames in raximport, jaxtyping hidden" in short.stderr
    for args, env in ((["--verbose"], {}), ([], {"RAX_TRACEBACK": "full"}), (["--traceback", "full"], {})):
        full = _run(["-m", "raximport", *args, script], tmp_path, tmp_path / "c", **env)
        assert full.returncode == 1
        assert "jaxtyping/_decorator.py" in full.stderr and "raximport/checks.py" in full.stderr
        assert "hidden" not in full.stderr
        assert "raximport: shape mismatch in embed()" in full.stderr


def test_rich_on_a_terminal_plain_with_no_color(tmp_path: Path) -> None:
    script = str(BUGS / "shape_param_np.py")
    env = base_env(tmp_path / "c")
    del env["NO_COLOR"]
    rich = subprocess.run([sys.executable, "-m", "raximport", script], cwd=tmp_path, capture_output=True, text=True,
                          env=env | {"FORCE_COLOR": "1", "COLUMNS": "200"}, timeout=300)
    assert rich.returncode == 1
    assert "\x1b[" in rich.stderr and "╭" in rich.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", rich.stderr)
    assert "raximport: shape mismatch in embed()" in plain and "config.block_size = 16" in plain
    no_color = subprocess.run([sys.executable, "-m", "raximport", script], cwd=tmp_path, capture_output=True,
                              text=True, env=env | {"FORCE_COLOR": "1", "NO_COLOR": "1"}, timeout=300)
    assert "\x1b[" not in no_color.stderr and "╭" not in no_color.stderr
    assert "  fix: 'targets' and 'idx' must agree on seq" in no_color.stderr


def test_report_json_from_the_environment_under_rax_enable(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "out.json"
    result = _run([str(BUGS / "dtype_param_np.py")], tmp_path, tmp_path / "c", RAX_ENABLE="1",
                  RAX_REPORT_JSON=str(out))
    assert result.returncode == 1
    document = json.loads(out.read_text())
    assert document["exit_code"] == 1
    assert [r["kind"] for r in document["reports"]] == ["dtype-mismatch"]
    assert "raximport: dtype mismatch in lookup()" in result.stderr


def test_a_clean_run_writes_an_empty_report_list(tmp_path: Path) -> None:
    script = write(tmp_path / "ok.py", "print('fine')\n")
    out = tmp_path / "out.json"
    result = _run(["-m", "raximport", "--report-json", "out.json", str(script)], tmp_path, tmp_path / "c")
    assert result.returncode == 0 and result.stdout == "fine\n"
    assert json.loads(out.read_text()) == {"version": 1, "exit_code": 0, "reports": []}


def test_chained_unknown_errors_keep_their_chain(tmp_path: Path) -> None:
    script = write(tmp_path / "chain.py", """
        def load(path):
            try:
                return open(path).read()
            except OSError as exc:
                raise RuntimeError(f"cannot read the dataset {path}") from exc

        load("missing.bin")
    """)
    result = _run(["-m", "raximport", str(script)], tmp_path, tmp_path / "c")
    assert result.returncode == 1
    assert "FileNotFoundError: [Errno 2] No such file or directory: 'missing.bin'" in result.stderr
    assert "The above exception was the direct cause of the following exception:" in result.stderr
    assert "RuntimeError: cannot read the dataset missing.bin" in result.stderr
    assert "raximport" not in result.stderr


def test_startup_imports_neither_rich_nor_jax(tmp_path: Path) -> None:
    code = ("import sys, raximport.report, raximport.explain, raximport.tracebacks, raximport.runner; "
            "print(sorted(m for m in ('rich', 'jax', 'jaxtyping', 'beartype') if m in sys.modules))")
    result = _run(["-c", code], tmp_path, tmp_path / "c")
    assert result.stdout.strip() == "[]", result.stderr


def test_unknown_and_failing_explanations_never_hide_the_error() -> None:
    from raximport.explain import explain

    try:
        {}["missing"]
    except KeyError as exc:
        report = explain(exc)
    assert report.kind == "error" and report.error == "KeyError: 'missing'"
    assert report.where is not None and report.where[0] == __file__


def test_a_dist_packages_frame_is_a_librarys_not_the_users_line() -> None:
    """Debian's python3-* packages live in dist-packages: the report points at the user's call into one."""
    from raximport.explain import explain
    from raximport.provenance import hidden_owner

    namespace: dict[str, object] = {}
    exec(compile("def parse(text):\n    return int(text)\n", "/usr/lib/python3/dist-packages/fakelib/util.py", "exec"),
         namespace)
    try:
        call_line = sys._getframe().f_lineno + 1
        namespace["parse"]("x")  # type: ignore[operator]
    except ValueError as exc:
        report = explain(exc)
    assert report.where == (__file__, call_line)
    assert hidden_owner("/usr/lib/python3/dist-packages/jax/_src/core.py") == "jax"


def test_a_librarys_own_jit_is_reported_in_the_users_terms(tmp_path: Path) -> None:
    """Under -p equinox, eqx.filter_jit hands raximport.jit equinox's own function, whose parameters
    (`dynamic_nodonate['rest'][0]`, `static`) the user never wrote; the user's eqx.filter_jit is
    watched on the user's function, so its recompilations name the user's parameter `n`."""
    pytest.importorskip("equinox")
    script = write(tmp_path / "eqx_loop.py", """
        import equinox as eqx
        import jax
        import jax.numpy as jnp


        @eqx.filter_jit
        def scaled(x, n):
            return x * n


        @jax.jit
        def doubled(x):
            return 2 * x


        for i in range(1, 8):
            scaled(jnp.ones(i), i)
            doubled(jnp.ones(i))
    """)
    out = tmp_path / "out.json"
    result = _run(["-m", "raximport", "-p", "equinox", "--report-json", str(out), str(script)], tmp_path,
                  tmp_path / "c")
    assert result.returncode == 0, result.stderr
    reports = json.loads(out.read_text())["reports"]
    assert [(r["kind"], r["function"]) for r in reports] == [("recompilation", "scaled"),
                                                             ("recompilation", "doubled")], reports
    assert "static argument 'n' changed from 4 to 5" in result.stderr
    assert "dynamic_nodonate" not in result.stderr and "'static'" not in result.stderr


def test_equinox_flax_and_optax_frames_fold_like_jax(tmp_path: Path) -> None:
    """A step under eqx.filter_jit fails in the user's body: equinox's wrapper frames fold into one
    line, as jax's do, between the user's call and the user's line."""
    pytest.importorskip("equinox")
    from raximport.provenance import hidden_owner

    script = write(tmp_path / "eqx_step.py", """
        import equinox as eqx
        import jax.numpy as jnp


        @eqx.filter_jit
        def step(x):
            raise ValueError("bad batch")


        step(jnp.ones(2))
    """)
    result = _run(["-m", "raximport", str(script)], tmp_path, tmp_path / "c")
    assert result.returncode == 1
    assert "site-packages" not in result.stderr, result.stderr
    assert re.search(r"\n  … \d+ frames in equinox[, a-z]* hidden .*\n  File \"" + re.escape(str(script)) + r"\", line 7, in step",
                     result.stderr), result.stderr
    for package in ("flax", "optax"):
        assert hidden_owner(f"/venv/lib/python3.11/site-packages/{package}/core/scope.py") == package
