"""sitecustomize_example/sitecustomize.py enables raximport where raximport.pth is never read.

The honest set-up for "the .pth is not processed": the venv's *base* interpreter (same Python
build, so the venv's compiled packages load) with raximport and the venv's site-packages on
PYTHONPATH. PYTHONPATH entries are not site directories, so their .pth files - raximport.pth and
the editable-install .pth included - are ignored; only the sitecustomize can switch raximport on.
A control run without the example directory shows that nothing else does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "sitecustomize_example"
BASE_PYTHON = getattr(sys, "_base_executable", None)

pytestmark = pytest.mark.skipif(
    sys.prefix == sys.base_prefix or not BASE_PYTHON or not os.path.exists(BASE_PYTHON),
    reason="needs a venv, whose base interpreter does not have raximport.pth",
)

MODEL = '''
import numpy as np
from jaxtyping import Float

def total(x: Float[np.ndarray, "n"]) -> Float[np.ndarray, ""]:
    return np.sum(x)
'''

MAIN = '''
import os, sys
loaded_at_start = sorted(m for m in sys.modules if m.startswith("raximport"))
import numpy as np
import model

print("raximport at start:", bool(loaded_at_start))
print("finders:", sum(type(f).__name__ == "RaxFinder" for f in sys.meta_path))
print("loader:", type(model.__loader__).__name__)
try:
    model.total(np.zeros((2, 3)))  # a matrix where a vector is declared
    print("call: accepted")
except Exception as exc:
    print("call: rejected", type(exc).__name__)
print("chained:", os.environ.get("CHAINED_SITECUSTOMIZE", "no"))
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "0"\n')
    (root / "model.py").write_text(textwrap.dedent(MODEL).lstrip())
    (root / "main.py").write_text(textwrap.dedent(MAIN).lstrip())
    return root


def run(python: str, project: Path, pythonpath: list[Path | str], **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RAX_", "PYTHON"))}
    full.update(
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath),
        RAX_CACHE_DIR=str(project.parent / "rax-cache"),
        NO_COLOR="1",
        **env,
    )
    result = subprocess.run([python, "main.py"], cwd=project, env=full, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def venv_site_packages() -> list[str]:
    return sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})


def test_base_interpreter_without_the_example_is_unchecked(project: Path) -> None:
    """The control: raximport and everything importable, RAX_ENABLE=1, but no .pth is read."""
    out = run(BASE_PYTHON, project, [REPO, *venv_site_packages()], RAX_ENABLE="1").stdout
    assert "raximport at start: False" in out
    assert "finders: 0" in out
    assert "loader: SourceFileLoader" in out
    assert "call: accepted" in out


def test_example_enables_raximport_where_the_pth_is_not_read(project: Path) -> None:
    out = run(BASE_PYTHON, project, [EXAMPLE, REPO, *venv_site_packages()], RAX_ENABLE="1").stdout
    assert "raximport at start: True" in out
    assert "finders: 1" in out
    assert "loader: RaxLoader" in out
    assert "call: rejected TypeCheckError" in out


@pytest.mark.parametrize("value", ["0", "", None, "false", "No", " OFF "])
def test_example_does_nothing_unless_rax_enable_is_set(project: Path, value: str | None) -> None:
    env = {} if value is None else {"RAX_ENABLE": value}
    out = run(BASE_PYTHON, project, [EXAMPLE, REPO, *venv_site_packages()], **env).stdout
    assert "raximport at start: False" in out
    assert "call: accepted" in out


@pytest.mark.parametrize("value", ["true", " Yes ", "ON"])
def test_example_enables_raximport_for_every_spelling_of_yes(project: Path, value: str) -> None:
    out = run(BASE_PYTHON, project, [EXAMPLE, REPO, *venv_site_packages()], RAX_ENABLE=value).stdout
    assert "call: rejected TypeCheckError" in out


def test_example_and_pth_together_install_one_hook(project: Path) -> None:
    """The venv's own python reads raximport.pth too: still a single finder."""
    out = run(sys.executable, project, [EXAMPLE], RAX_ENABLE="1").stdout
    assert "finders: 1" in out
    assert "call: rejected TypeCheckError" in out


def test_example_runs_the_sitecustomize_it_hides(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-site"
    other.mkdir()
    (other / "sitecustomize.py").write_text('import os\nos.environ["CHAINED_SITECUSTOMIZE"] = "yes"\n')
    out = run(BASE_PYTHON, project, [EXAMPLE, other, REPO, *venv_site_packages()], RAX_ENABLE="1").stdout
    assert "chained: yes" in out
    assert "call: rejected TypeCheckError" in out
    out = run(BASE_PYTHON, project, [EXAMPLE, other, REPO, *venv_site_packages()]).stdout
    assert "chained: yes" in out
