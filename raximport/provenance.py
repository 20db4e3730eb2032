"""Whose code a file is: raximport's own, a library's (the standard library or an installed
package), or the user's; and, for a traceback, which package a hidden frame belongs to.

The import hook (which modules to rewrite), the reports (which line is the user's), the tracebacks
(which frames to fold) and the runner (which frames a custom excepthook is not shown) all ask
here, so they agree. Stdlib only: the import hook imports this at interpreter start.
"""

from __future__ import annotations

import os
import re
import sysconfig

RAXIMPORT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# The standard library and this interpreter's own package directories; any other site-packages or
# dist-packages directory (a Debian python3-* package, a venv's) is recognised by its name.
_LIBRARY_DIRS = tuple(sorted({
    os.path.join(os.path.abspath(path), "")
    for path in (sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib"))
    if path
}))
_INSTALLED = re.compile(r".*/(?:site|dist)-packages/([^/]*)")

# Packages whose frames a traceback folds into one "… N frames in jax hidden" line: JAX and the
# libraries built on it that a training script calls through (their internals are no more the
# user's to read than JAX's), the checkers and raximport.
HIDDEN_PACKAGES = ("jax", "jaxlib", "equinox", "flax", "optax", "jaxtyping", "beartype", "raximport")
# The import machinery (importlib's and raximport's hook) is left out without a trace, as Python
# leaves out importlib's own frames: an import error then reads exactly as it does without raximport.
SILENT = "-"
_IMPORT_MACHINERY = ("<frozen runpy", "<frozen importlib") + tuple(
    RAXIMPORT_DIR + name
    for name in ("hook.py", "pytest_hook.py", "runner.py", "rewrite.py", "session.py", "cli.py", "__main__.py",
                 "_autoload.py")
)


def is_raximport_file(filename: str) -> bool:
    """A file of raximport itself: never rewritten, never the user's line."""
    return filename.startswith(RAXIMPORT_DIR)


def installed_package(filename: str) -> str | None:
    """The top-level package of a file (or directory) in a site-packages or dist-packages
    directory ("" for the directory itself), else None."""
    match = _INSTALLED.match(filename.replace("\\", "/"))
    return match.group(1) if match else None


def is_library_file(filename: str) -> bool:
    """The standard library or an installed package (site-packages, dist-packages)."""
    return filename.startswith(_LIBRARY_DIRS) or installed_package(filename) is not None


def is_user_file(filename: str) -> bool:
    """Not raximport, not the standard library or an installed package, not generated code."""
    return not (filename.startswith("<") or is_raximport_file(filename) or is_library_file(filename))


def is_import_machinery(filename: str) -> bool:
    """importlib's, runpy's and the frames of raximport's import hook and runner."""
    return filename.startswith(_IMPORT_MACHINERY)


def hidden_owner(filename: str) -> str | None:
    """The package whose internals a frame of `filename` is (then it is collapsed), else None;
    SILENT for the import machinery, which is dropped without a line."""
    if is_import_machinery(filename):
        return SILENT
    if is_raximport_file(filename):
        return "raximport"
    if filename.startswith("<@beartype"):
        return "beartype"
    package = installed_package(filename)
    return package if package in HIDDEN_PACKAGES else None
