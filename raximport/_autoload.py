"""Imported by raximport.pth at interpreter start when RAX_ENABLE is set (and only then).

Installs the hook from RAX_* variables and pyproject.toml. When Python is about to run a script,
an audit hook on `cpython.run_file` runs it rewritten instead and exits with its status, so the
main script is checked too (Python reads that file directly, past every import hook).
"""

from __future__ import annotations

import os
import sys

from raximport.config import ConfigError
from raximport.errors import RaxWarning


def _autoload() -> None:
    from raximport.session import install

    try:
        installation = install()
    except Exception as exc:  # at every interpreter start: one line of warning, never a traceback
        import warnings

        reason = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        warnings.warn_explicit(f"raximport: not enabled: {reason}", RaxWarning, "<raximport startup>", 1)
        return
    script = sys.argv[0] if sys.argv else ""
    if not script or sys.flags.interactive or not os.path.isfile(script):
        return
    target = os.path.realpath(script)
    hooked = [True]

    def run_main_rewritten(event: str, args: tuple[object, ...]) -> None:
        # Any spelling of the script's path (./train.py, sub/../train.py, a symlink) is the script.
        if event != "cpython.run_file" or not hooked or not isinstance(args[0], str):
            return
        if os.path.realpath(args[0]) != target:
            return
        hooked.clear()
        from raximport.runner import run_path

        raise SystemExit(run_path(script, sys.argv[1:], installation.config))

    sys.addaudithook(run_main_rewritten)


_autoload()
