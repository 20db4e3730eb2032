"""Helpers shared by the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

# The suite is bound by XLA's CPU compiles: without LLVM's optimisations they take ~40% less CPU
# (a tiny gpt run: 34.6 s -> 20.7 s). The HLO passes are the same, so the memory analysis the memory
# check reads is byte for byte the same. conftest.py sets it for the test process and every
# subprocess that inherits the environment, so plain-vs-raximport runs still compile alike.
XLA_TEST_FLAGS = "--xla_backend_optimization_level=0"


def write(path: Path, source: str) -> Path:
    """Write dedented `source` to `path`, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    return path
