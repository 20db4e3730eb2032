"""Helpers shared by the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write(path: Path, source: str) -> Path:
    """Write dedented `source` to `path`, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    return path
