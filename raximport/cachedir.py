"""raximport's cache directories: private to the user.

What the caches hold runs as the user (rewritten bytecode; JAX's compiled executables), so a cache
directory that someone else owns or can write to would let them plant code. raximport creates its
directories with mode 0700 and refuses a directory or entry that is another user's or that group
or others can write, with one RaxWarning, running on without that cache. Stdlib only: imported at
interpreter start.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from raximport.errors import RaxWarning

# Where it exists: opening a planted symbolic link fails instead of following it.
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_warned: set[str] = set()


def untrusted(status: os.stat_result) -> str | None:
    """Why a file or directory with this status could hold someone else's code, or None."""
    if hasattr(os, "geteuid") and status.st_uid != os.geteuid():
        return f"it belongs to another user (uid {status.st_uid}), who could plant code there that runs as you"
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(status.st_mode)
        return f"other users can write to it (mode {mode:o}), and could plant code there that runs as you"
    return None


def check_dir(path: Path) -> str | None:
    """Why the directory `path` must not hold a cache, or None (also when it does not exist yet)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if not stat.S_ISDIR(status.st_mode):
        return "it is not a directory"
    return untrusted(status)


def private_dir(path: Path) -> str | None:
    """Create `path` with mode 0700 if it is missing; None if a cache may live in it, else why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot create it ({exc.strerror})"
    why = check_dir(path)
    if why is None and not os.access(path, os.W_OK | os.X_OK):
        why = "it is not writable"
    return why


def warn_once(key: str, message: str) -> None:
    """One RaxWarning per `key` and process, however many imports or compiles meet the problem."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RaxWarning, stacklevel=2)


def usable(directory: Path, what: str) -> bool:
    """Whether `directory` (in raximport's cache directory, its parent) may hold `what`; both are
    created (0700) if missing. If not, one warning says why and the run goes on without it."""
    whole = "raximport runs without its caches (RAX_CACHE_DIR or --cache-dir chooses another directory)"
    for path, off in ((directory.parent, whole), (directory, f"{what} is off")):
        why = private_dir(path)
        if why is not None:
            warn_once(str(path), f"raximport: not using {path}: {why}; {off}")
            return False
    return True
