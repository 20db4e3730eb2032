"""`pytest --rax`: subprocess runs of pytest on a small project (a package, a conftest importing it,
tests), with the plugin loaded by `-p raximport.pytest_plugin` (the shared environment's raximport
may predate its entry point; the entry point's declaration is checked on its own)."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path
from types import CodeType

import pytest

from tests.helpers import write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]

PACKAGE = '''
from jaxtyping import Array, Float


def add(x: Float[Array, "n"], y: Float[Array, "n"]) -> Float[Array, "n"]:
    return x + y
'''

# Both calls run under plain JAX (jnp.ones(1) broadcasts); only the annotations reject them.
TESTS = '''
import jax.numpy as jnp
from jaxtyping import Array, Float

import mypkg


def local(x: Float[Array, "n"]) -> Float[Array, "n"]:
    return x


def test_package_mismatch():
    mypkg.add(jnp.ones(3), jnp.ones(1))


def test_local_mismatch():
    local(jnp.ones((2, 2)))


def test_assert_detail():
    assert [1, 2, 3] == [1, 2, 4]
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root / "pyproject.toml", "[project]\nname = 'mypkg'\nversion = '0'\n")
    write(root / "mypkg" / "__init__.py", PACKAGE)
    write(root / "conftest.py", "import mypkg  # the conftest imports the package before any test module\n")
    write(root / "test_shapes.py", TESTS)
    return root


def clean_env(*path: Path) -> dict[str, str]:
    """This environment without raximport's and pytest's variables (an outer xdist worker's), with
    this checkout's raximport (and `path`) importable; pytest's own pycs are written
    (PYTHONDONTWRITEBYTECODE unset), as in most projects."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAX_", "PYTEST_")) and k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": os.pathsep.join(map(str, (REPO, *path)))}


def run_pytest(project: Path, *args: str, path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """pytest in a fresh process on `project`, with the plugin loaded and raximport's cache in tmp."""
    env = {**clean_env(*path), "RAX_CACHE_DIR": str(project.parent / "rax-cache"), "JAX_PLATFORMS": "cpu",
           "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "raximport.pytest_plugin", "-rA", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=240,
    )


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """test name -> PASSED/FAILED, from the -rA summary."""
    found = {}
    for line in result.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED") and "::" in rest:
            found[rest.split(" ")[0].split("::")[-1]] = word
    return found


def line_of(text: str) -> int:
    """The line of test_shapes.py (TESTS) holding `text`."""
    return next(n for n, line in enumerate(TESTS.strip().splitlines(), 1) if text in line)


def failure_section(output: str, test: str) -> str:
    """What pytest shows for the failed `test`: from its `____ test ____` header to the next one."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("_") and f" {test} " in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("____", "===="))), len(lines))
    return "\n".join(lines[start:end])


CHECKED = {"test_package_mismatch": "FAILED", "test_local_mismatch": "FAILED", "test_assert_detail": "FAILED"}
PLAIN = {"test_package_mismatch": "PASSED", "test_local_mismatch": "PASSED", "test_assert_detail": "FAILED"}


def test_checks_fail_tests_with_the_report_and_asserts_keep_pytests_messages(project: Path) -> None:
    result = run_pytest(project, "--rax")
    output = result.stdout
    assert result.returncode == 1, output + result.stderr
    assert outcomes(result) == CHECKED
    assert f"raximport: instrumenting {project}" in output  # the header says the run is checked
    # the package, imported by the conftest before any test module, is checked
    package = failure_section(output, "test_package_mismatch")
    assert "- raximport -" in package
    assert "raximport: shape mismatch in add(): 'y' has n=1, but 'x' set n=3" in package
    assert f"at {project / 'test_shapes.py'}:{line_of('mypkg.add(')}" in package
    # the test module is rewritten by both: raximport's checks ...
    local = failure_section(output, "test_local_mismatch")
    assert "raximport: shape mismatch in local()" in local
    assert f"(defined at {project / 'test_shapes.py'}:{line_of('def local(')})" in local
    # ... and pytest's assertion rewrite, with its detailed message
    detail = failure_section(output, "test_assert_detail")
    assert "At index 2 diff: 3 != 4" in detail
    assert "- raximport -" not in detail  # raximport has nothing to add to a plain assert


def _names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names(const)
    return names


def test_pytests_pyc_cache_never_serves_across_rax_and_plain_runs(project: Path) -> None:
    pyc = project / "__pycache__" / f"test_shapes.{sys.implementation.cache_tag}-pytest-{pytest.__version__}.pyc"
    for flags, expected in [((), PLAIN), (("--rax",), CHECKED), ((), PLAIN), (("--rax",), CHECKED)]:
        result = run_pytest(project, *flags)
        assert outcomes(result) == expected, (flags, result.stdout + result.stderr)
        assert "At index 2 diff: 3 != 4" in result.stdout  # assertion rewriting either way
        # pytest's own cache holds its plain rewrite, written by the plain run and never replaced
        code = marshal.loads(pyc.read_bytes()[16:])
        assert "@pytest_ar" in _names(code)
        assert not any(name.startswith("_@rax") for name in _names(code))


def test_report_json_lists_every_report_with_its_test(project: Path) -> None:
    result = run_pytest(project, "--rax", "--rax-report-json", "out/reports.json")
    assert result.returncode == 1, result.stdout + result.stderr
    document = json.loads((project / "out" / "reports.json").read_text())
    assert document["exit_code"] == 1
    assert [(r["kind"], r["function"], r["extra"]["test"]) for r in document["reports"]] == [
        ("shape-mismatch", "add", "test_shapes.py::test_package_mismatch"),
        ("shape-mismatch", "local", "test_shapes.py::test_local_mismatch"),
    ]


def test_without_rax_nothing_is_instrumented_nor_imported(project: Path) -> None:
    write(project / "test_probe.py", '''
        import sys

        def test_probe():
            print("RAXMODULES", sorted(m for m in sys.modules if m.split(".")[0] == "raximport"))
            print("RAXFINDERS", [type(f).__name__ for f in sys.meta_path if "Rax" in type(f).__name__])
    ''')
    result = run_pytest(project, "-s")
    assert result.returncode == 1, result.stdout + result.stderr
    assert outcomes(result) == {**PLAIN, "test_probe": "PASSED"}
    assert "RAXMODULES ['raximport', 'raximport.pytest_plugin']" in result.stdout
    assert "RAXFINDERS []" in result.stdout
    assert "raximport:" not in result.stdout + result.stderr


def test_pyproject_options_apply_and_rax_packages_adds_packages(project: Path, tmp_path: Path) -> None:
    write(project / "pyproject.toml", '''
        [project]
        name = "mypkg"
        version = "0"

        [tool.raximport]
        exclude = ["mypkg"]
        packages = ["notimported"]
    ''')
    write(tmp_path / "elsewhere" / "otherpkg" / "__init__.py", PACKAGE)  # outside the project
    write(project / "test_other.py", '''
        import jax.numpy as jnp
        import otherpkg

        def test_other_mismatch():
            otherpkg.add(jnp.ones(3), jnp.ones(1))
    ''')
    result = run_pytest(project, "--rax", "--rax-packages", "otherpkg", path=(tmp_path / "elsewhere",))
    assert "raximport: instrumenting" in result.stdout and "packages notimported, otherpkg" in result.stdout
    found = outcomes(result)
    assert found["test_package_mismatch"] == "PASSED", result.stdout  # excluded by [tool.raximport]
    assert found["test_local_mismatch"] == "FAILED"
    assert found["test_other_mismatch"] == "FAILED"
    assert "raximport: shape mismatch in add()" in failure_section(result.stdout, "test_other_mismatch")


def test_a_broken_rewrite_leaves_pytests_and_says_so_after_the_run(project: Path, tmp_path: Path) -> None:
    write(tmp_path / "elsewhere" / "breakrewrite.py", '''
        import raximport.rewrite

        def broken(*args, **kwargs):
            raise RuntimeError("injected fault")

        raximport.rewrite.rewrite_tree = broken
    ''')
    result = run_pytest(project, "--rax", "-p", "breakrewrite", path=(tmp_path / "elsewhere",))
    assert outcomes(result) == PLAIN, result.stdout + result.stderr  # unchecked, as plain pytest runs it
    assert "At index 2 diff: 3 != 4" in result.stdout  # the test module keeps pytest's rewrite
    summary = result.stdout.split("raximport notes")[1]
    assert "raximport: the rewrite failed for " in summary and "injected fault" in summary


def test_a_package_imported_before_instrumenting_is_a_usage_error(project: Path) -> None:
    write(project / "earlyplugin.py", "import mypkg\n")
    result = run_pytest(project, "-p", "earlyplugin", "--rax")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "raximport: --rax cannot instrument earlyplugin, mypkg: earlyplugin, mypkg were imported" in result.stderr
    assert "collected" not in result.stdout  # the session stopped before collecting


def test_the_plugin_loaded_from_a_conftest_is_a_usage_error(tmp_path: Path) -> None:
    """Where entry points are not loaded (PYTEST_DISABLE_PLUGIN_AUTOLOAD), a conftest may load the
    plugin itself: too late to instrument what the conftests imported."""
    write(tmp_path / "late" / "conftest.py", 'pytest_plugins = ["raximport.pytest_plugin"]\n')
    write(tmp_path / "late" / "test_nothing.py", "def test_nothing():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "--rax"], cwd=tmp_path / "late", capture_output=True,
                            text=True, timeout=120, env={**clean_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "the plugin was loaded after the initial conftests" in result.stderr


@pytest.mark.slow
def test_xdist_workers_instrument_and_hand_their_reports_over(project: Path) -> None:
    write(project / "test_more.py", TESTS)
    result = run_pytest(project, "--rax", "-n", "2", "--dist", "loadfile", "--rax-report-json", "reports.json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert outcomes(result) == CHECKED  # both files: the same names, all failed
    assert result.stdout.count("- raximport -") == 4
    assert "At index 2 diff: 3 != 4" in result.stdout
    document = json.loads((project / "reports.json").read_text())
    assert document["exit_code"] == 1
    assert sorted(r["extra"]["test"] for r in document["reports"]) == [
        "test_more.py::test_local_mismatch", "test_more.py::test_package_mismatch",
        "test_shapes.py::test_local_mismatch", "test_shapes.py::test_package_mismatch",
    ]


def test_the_entry_point_is_declared_and_loading_the_plugin_imports_nothing_heavy() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # named as the module, so that the entry point and `-p raximport.pytest_plugin` are one plugin
    assert project["entry-points"]["pytest11"] == {"raximport.pytest_plugin": "raximport.pytest_plugin"}
    probe = "import sys, raximport.pytest_plugin; print(sorted(m for m in sys.modules if m.startswith('raximport')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            env=clean_env())
    assert result.stdout.strip() == "['raximport', 'raximport.pytest_plugin']", result.stderr


def test_python_m_raximport_m_pytest_keeps_a_suite_that_turns_warnings_into_errors(tmp_path: Path) -> None:
    """raximport is a registered pytest plugin, imported before pytest starts under `python -m
    raximport -m pytest`: pytest's "already imported, cannot be rewritten" warning must not fail
    equinox's or flax's suites, which set filterwarnings = error."""
    write(tmp_path / "pyproject.toml", '[tool.pytest.ini_options]\nfilterwarnings = ["error"]\n')
    write(tmp_path / "test_strict.py", "def test_one():\n    assert 1 + 1 == 2\n")
    result = subprocess.run([sys.executable, "-m", "raximport", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
