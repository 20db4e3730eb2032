"""Shared helpers: run Python in a subprocess under raximport, with a private cache."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import raximport
from tests.helpers import XLA_TEST_FLAGS, write

REPO = Path(__file__).resolve().parents[1]

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAGS}".strip()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "rax-cache"


@pytest.fixture
def run_python(cache_dir: Path):
    """Run `python ARGS` in a fresh process with raximport's cache in the test's tmp dir."""

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")}
        full_env.update({"RAX_CACHE_DIR": str(cache_dir), "JAX_PLATFORMS": "cpu", "NO_COLOR": "1"})
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
        )

    return run


@pytest.fixture
def load(tmp_path: Path, cache_dir: Path):
    """Write a module into a tmp project and import it through the hook."""
    project = tmp_path / "project"
    project.mkdir()
    sys.path.insert(0, str(project))
    installation = raximport.install(project_root=project, cache_dir=cache_dir)
    names: list[str] = []

    def load_module(name: str, source: str):
        write(project / f"{name}.py", source)
        importlib.invalidate_caches()
        names.append(name)
        return importlib.import_module(name)

    yield load_module
    installation.uninstall()
    sys.path.remove(str(project))
    for name in names:
        sys.modules.pop(name, None)
