"""raximport: shape-checked, auto-jitted, OOM-safe JAX training scripts with no code changes.

    python -m raximport train.py [args]      # or: rax run train.py, or RAX_ENABLE=1 python train.py

or, from code, `raximport.install()`. Importing this package is cheap: nothing heavy is imported
until it is needed.

PYTEST_DONT_REWRITE: raximport is a pytest plugin (`pytest --rax`), and pytest would mark it for
assertion rewriting; under `python -m raximport -m pytest` it is imported before pytest starts,
and pytest's "already imported" warning must not fail a suite that turns warnings into errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Config", "RaxWarning", "install", "uninstall", "__version__"]

if TYPE_CHECKING:
    from raximport.config import Config
    from raximport.errors import RaxWarning
    from raximport.session import install, uninstall

_LAZY = {
    "Config": "raximport.config",
    "RaxWarning": "raximport.errors",
    "install": "raximport.session",
    "uninstall": "raximport.session",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raximport' has no attribute {name!r}")
