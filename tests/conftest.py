"""Shared helpers: run Python in a subprocess under raximport, with a private cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
