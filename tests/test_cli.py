"""The three ways in: `python -m raximport`, `rax run`, `RAX_ENABLE=1 python`; the main script runs as Python would run it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from tests.helpers import write

SCRIPT = '''
import os, pickle, sys
import numpy as np
from dataclasses import dataclass
from jaxtyping import Float

@dataclass
class Point:
    x: Float[np.ndarray, "n"]

def double(x: Float[np.ndarray, "n"]) -> Float[np.ndarray, "n"]:
    return 2 * x

print("name", __name__)
print("argv", sys.argv)
print("path0", sys.path[0])
print("file", __file__)
print("checked", hasattr(double, "__wrapped__"))
print("roundtrip", pickle.loads(pickle.dumps(Point(np.ones(2)))).x.tolist())
if len(sys.argv) > 1 and sys.argv[1] == "bad":
    double(np.ones((2, 2)))
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root / "pyproject.toml", "[project]\nname = 'proj'\n")
    write(root / "scripts" / "train.py", SCRIPT)
    return root


def lines(stdout: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in stdout.splitlines() if " " in line)


def assert_ran_as_main(result, project: Path, argv0: str) -> None:
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    assert out["name"] == "__main__"
    assert out["argv"] == repr([argv0, "a", "--b=1"])
    assert out["path0"] == str((project / "scripts").resolve())
    assert out["file"] == str(project / "scripts" / "train.py")
    assert out["checked"] == "True"
    assert out["roundtrip"] == "[1.0, 1.0]"


def test_python_m_raximport_runs_script_as_main(run_python, project: Path) -> None:
    result = run_python("-m", "raximport", "scripts/train.py", "a", "--b=1", cwd=project)
    assert_ran_as_main(result, project, "scripts/train.py")


def test_rax_run_is_the_same(run_python, project: Path) -> None:
    rax = shutil.which("rax", path=str(Path(sys.executable).parent))
    assert rax, "the rax console script is installed"
    result = run_python("-c", "import sys; from raximport.cli import main; sys.exit(main())", cwd=project)
    assert result.returncode == 2 and "run" in result.stdout  # bare `rax` shows its commands
    import subprocess, os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")}
    env["RAX_CACHE_DIR"] = str(project / ".cache")
    result = subprocess.run([rax, "run", "scripts/train.py", "a", "--b=1"], cwd=project, env=env, capture_output=True, text=True)
    assert_ran_as_main(result, project, "scripts/train.py")


def test_rax_enable_rewrites_the_main_script_too(run_python, project: Path) -> None:
    result = run_python("scripts/train.py", "a", "--b=1", cwd=project, env={"RAX_ENABLE": "1"})
    assert_ran_as_main(result, project, "scripts/train.py")


@pytest.mark.parametrize("spelling", ["./scripts/train.py", "scripts/../scripts/train.py", "link.py"])
def test_rax_enable_checks_the_main_script_whatever_its_path_spelling(run_python, project: Path, spelling: str) -> None:
    (project / "link.py").symlink_to(project / "scripts" / "train.py")
    result = run_python(spelling, "bad", cwd=project, env={"RAX_ENABLE": "1"})
    assert result.returncode == 1 and "TypeCheckError" in result.stderr, result.stdout + result.stderr
    assert lines(result.stdout)["checked"] == "True"


@pytest.mark.parametrize("value, enabled", [
    ("1", True), ("true", True), (" Yes ", True), ("ON", True),
    ("", False), ("0", False), ("false", False), ("No", False), (" off ", False),
])
def test_rax_enable_is_read_as_a_yes_or_no(run_python, project: Path, value: str, enabled: bool) -> None:
    result = run_python("scripts/train.py", cwd=project, env={"RAX_ENABLE": value})
    assert lines(result.stdout)["checked"] == str(enabled), result.stderr
    probe = run_python("-c", "import sys; print('raximport' in sys.modules)", cwd=project, env={"RAX_ENABLE": value})
    assert probe.stdout.strip() == str(enabled)


def test_without_rax_enable_nothing_is_checked(run_python, project: Path) -> None:
    result = run_python("-c", "import sys; print(sorted(m for m in sys.modules if 'raximport' in m))", cwd=project)
    assert result.stdout.strip() == "[]"
    result = run_python("scripts/train.py", "a", "--b=1", cwd=project)
    assert lines(result.stdout)["checked"] == "False"


@pytest.mark.parametrize("how", ["python -m raximport", "RAX_ENABLE=1"])
def test_a_shape_error_fails_with_nonzero_exit_and_user_frames_only(run_python, project: Path, how: str) -> None:
    if how == "RAX_ENABLE=1":
        result = run_python("scripts/train.py", "bad", cwd=project, env={"RAX_ENABLE": "1"})
    else:
        result = run_python("-m", "raximport", "scripts/train.py", "bad", cwd=project)
    assert result.returncode == 1
    assert "TypeCheckError" in result.stderr
    assert f'File "{project / "scripts" / "train.py"}", line 20, in <module>' in result.stderr
    assert "raximport/runner.py" not in result.stderr and "<frozen runpy>" not in result.stderr


def test_exit_status_and_sys_exit_pass_through(run_python, tmp_path: Path) -> None:
    write(tmp_path / "quit.py", "import sys\nsys.exit(7)\n")
    assert run_python("-m", "raximport", "quit.py", cwd=tmp_path).returncode == 7
    assert run_python("quit.py", cwd=tmp_path, env={"RAX_ENABLE": "1"}).returncode == 7


def test_dash_m_runs_a_module_of_a_package(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "pkg" / "__init__.py", "")
    write(
        tmp_path / "pkg" / "tool.py",
        """
        import sys
        import numpy as np
        from jaxtyping import Float
        from . import helper

        def f(x: Float[np.ndarray, "n"]) -> Float[np.ndarray, "n"]:
            return x
        print(__name__, __package__, sys.argv[1:], hasattr(f, "__wrapped__"), hasattr(helper.g, "__wrapped__"))
        """,
    )
    write(
        tmp_path / "pkg" / "helper.py",
        """
        import numpy as np
        from jaxtyping import Int
        def g(x: Int[np.ndarray, "n"]) -> int:
            return 1
        """,
    )
    result = run_python("-m", "raximport", "-m", "pkg.tool", "x", "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["__main__", "pkg", "['x',", "'-v']", "True", "True"]
    result = run_python("-m", "pkg.tool", "x", cwd=tmp_path, env={"RAX_ENABLE": "1"})
    assert result.stdout.split()[-2:] == ["True", "True"], result.stderr


def test_missing_script_and_module_are_clear_errors(run_python, tmp_path: Path) -> None:
    result = run_python("-m", "raximport", "nope.py", cwd=tmp_path)
    assert result.returncode == 2 and "can't open file" in result.stderr
    result = run_python("-m", "raximport", "-m", "no_such_module_here", cwd=tmp_path)
    assert result.returncode == 1 and "No module named no_such_module_here" in result.stderr
    result = run_python("-m", "raximport", cwd=tmp_path)
    assert result.returncode == 2 and "a script or -m module is required" in result.stderr


def test_help_explains_options(run_python, tmp_path: Path) -> None:
    result = run_python("-m", "raximport", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--package", "--path", "--exclude", "--no-checks", "--verbose", "RAX_DONT_REWRITE", "[tool.raximport]"):
        assert option in result.stdout


def test_syntax_error_is_reported_like_python(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "broken.py", "x = 1\n\ndef f(:\n    pass\n")
    write(tmp_path / "main.py", "import broken\n")
    plain = run_python("main.py", cwd=tmp_path)
    ours = run_python("-m", "raximport", "main.py", cwd=tmp_path)
    assert ours.returncode == plain.returncode == 1
    assert ours.stderr == plain.stderr
    assert f'File "{tmp_path / "broken.py"}", line 3' in ours.stderr


def test_importtime_works_and_startup_imports_nothing_heavy(run_python, project: Path) -> None:
    result = run_python("-X", "importtime", "-m", "raximport", "scripts/train.py", "a", "--b=1", cwd=project)
    assert result.returncode == 0, result.stderr
    own = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.split("|")[-1].strip().startswith("raximport")}
    assert own >= {"raximport", "raximport.cli", "raximport.hook", "raximport.rewrite", "raximport.runner"}
    startup = "import sys, raximport.cli, raximport.session, raximport.runner, raximport.checks, raximport.jit; "
    heavy = "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'jaxlib', 'jaxtyping', 'beartype', 'numpy', 'rich'}))"
    assert run_python("-c", startup + heavy, cwd=project).stdout.strip() == "[]"


def test_report_json_is_written_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A symlink planted where the temp file would go never redirects the write; a failed write leaves nothing."""
    from raximport import report

    monkeypatch.setattr(report, "_exit_code", [])
    out = tmp_path / "out.json"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in (f"out.json.{os.getpid()}.tmp", "out.json.tmp"):
        (tmp_path / name).symlink_to(victim)
    umask = os.umask(0o022)
    try:
        report.write_json(str(out), 0)
    finally:
        os.umask(umask)
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and json.loads(out.read_text())["exit_code"] == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # as open() makes it, not mkstemp's 0600
    before = sorted(tmp_path.iterdir())
    out.unlink()
    out.mkdir()  # the replace fails
    report.write_json(str(out), 0)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("how", ["python -m raximport", "RAX_ENABLE=1"])
def test_verbose_names_the_main_script_among_the_instrumented_modules(run_python, tmp_path: Path, how: str) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "helper.py", "X = 1\n")
    write(tmp_path / "main.py", "import helper\nprint(helper.X)\n")
    if how == "RAX_ENABLE=1":
        result = run_python("main.py", cwd=tmp_path, env={"RAX_ENABLE": "1", "RAX_VERBOSE": "1"})
    else:
        result = run_python("-m", "raximport", "--verbose", "main.py", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "1\n", result.stderr
    assert f"raximport: instrumenting __main__ ({tmp_path / 'main.py'})" in result.stderr
    assert f"raximport: instrumenting helper ({tmp_path / 'helper.py'})" in result.stderr
