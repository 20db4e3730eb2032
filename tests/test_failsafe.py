"""raximport's own failure is never the user's: a fault injected into each stage of its machinery
leaves the script running as plain Python runs it, with one note naming the stage; --strict makes
that note an error (for CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write

SCRIPT = """
import jax, jax.numpy as jnp
from jaxtyping import Array, Float

def scale(x: Float[Array, "n"], k: float) -> Float[Array, "n"]:
    return x * k

@jax.jit
def step(x):
    return jnp.tanh(x).sum()

for seed in range(6):
    x = jnp.arange(5.0) + seed
    print(seed, float(step(x)), scale(x, 2.0).tolist())
"""

FAILING = """
import jax.numpy as jnp
print("before")
jnp.ones(3) @ jnp.ones(4)
"""

# A driver that breaks one function of raximport's machinery, then runs `rax run ARGS`.
DRIVER = """
import importlib, sys
module, name = sys.argv[1].rsplit(".", 1)

def broken(*args, **kwargs):
    raise RuntimeError("injected fault")

setattr(importlib.import_module(module), name, broken)
from raximport.cli import run
sys.exit(run(sys.argv[2:], prog="rax run"))
"""

STAGES = {  # the function broken -> the stage its note names
    "raximport.rewrite.rewrite_tree": "the rewrite",
    "raximport.jit.describe_call": "the recompilation watch",
    "raximport.jit._static_layout": "auto-jit's static detection",
    "raximport.memory.abstract_inputs": "the memory check (reading the arguments)",
    "raximport.memory.check_compiled": "the memory check",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "main.py", SCRIPT)
    write(tmp_path / "failing.py", FAILING)
    write(tmp_path / "driver.py", DRIVER)
    return tmp_path


@pytest.mark.parametrize("target", sorted(STAGES))
def test_a_broken_stage_is_one_note_and_the_script_runs_as_plain(run_python, project: Path, target: str) -> None:
    plain = run_python("main.py", cwd=project)
    ours = run_python("driver.py", target, "main.py", cwd=project, env={"RAX_XLA_CACHE": "0"})
    assert ours.returncode == 0 and ours.stdout == plain.stdout, ours.stderr
    notes = [line for line in ours.stderr.splitlines() if line.startswith("raximport: ")]
    assert len(notes) == 1 and notes[0].startswith(f"raximport: {STAGES[target]} failed for "), ours.stderr
    assert "injected fault" in notes[0] and "Traceback" not in ours.stderr


@pytest.mark.parametrize("target", sorted(STAGES))
def test_strict_makes_a_broken_stage_an_error(run_python, project: Path, target: str) -> None:
    result = run_python("driver.py", target, "--strict", "main.py", cwd=project, env={"RAX_XLA_CACHE": "0"})
    assert result.returncode == 1 and "RaxInternalError" in result.stderr, result.stderr
    assert "--strict makes this an error" in result.stderr


def test_a_broken_report_still_shows_the_users_error(run_python, project: Path) -> None:
    plain = run_python("failing.py", cwd=project)
    ours = run_python("driver.py", "raximport.explain.explain", "failing.py", cwd=project)
    assert ours.returncode == plain.returncode == 1 and ours.stdout == plain.stdout == "before\n"
    error = next(line for line in plain.stderr.splitlines() if line.startswith("TypeError"))
    assert error in ours.stderr  # the user's error, as JAX words it
    assert "raximport: the report failed for TypeError" in ours.stderr


ANNOTATED = """
import numpy as np
from jaxtyping import Float

def total(x: Float[np.ndarray, "n"]) -> float:
    return float(x.sum())
"""

OTHER_HOOK = """
import importlib.machinery, importlib.util, os, sys

class TheirLoader(importlib.machinery.SourceFileLoader):
    pass

class TheirFinder:
    def find_spec(self, name, path=None, target=None):
        if name == "special":
            origin = os.path.abspath("special.py")
            return importlib.util.spec_from_file_location(name, origin, loader=TheirLoader(name, origin))

sys.meta_path.insert(1, TheirFinder())  # after raximport's finder
import special, plain_one
print(type(special.__loader__).__name__, type(plain_one.__loader__).__name__)
"""


def test_a_module_another_import_hook_takes_is_said_once(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "special.py", ANNOTATED)
    write(tmp_path / "plain_one.py", ANNOTATED)
    write(tmp_path / "main.py", OTHER_HOOK)
    result = run_python("-m", "raximport", "main.py", cwd=tmp_path)
    assert result.stdout.split() == ["TheirLoader", "RaxLoader"], result.stderr
    assert result.stderr.count("raximport: ") == 1
    assert "modules such as special are loaded by another import hook (__main__.TheirLoader)" in result.stderr


def test_modules_an_earlier_import_hook_took_are_listed_at_exit(run_python, tmp_path: Path) -> None:
    """pytest puts its assertion rewriter ahead of raximport's finder: its test modules go unchecked."""
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "test_numbers.py", ANNOTATED + "\ndef test_total():\n    import numpy as np\n    assert total(np.ones(2)) == 2\n")
    result = run_python("-m", "raximport", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "test_numbers.py",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("1 of the modules to check were imported through another import hook ahead of raximport's "
            "(_pytest.assertion.rewrite.AssertionRewritingHook) and were not checked: test_numbers") in result.stderr
