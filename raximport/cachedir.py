"""raximport's cache directories: private to the user; their entries listed and removed by name.

What the caches hold runs as the user (rewritten bytecode; JAX's compiled executables), so a cache
directory that someone else owns or can write to would let them plant code. raximport creates its
directories with mode 0700 and refuses a directory or entry that is another user's or that group
or others can write, with one RaxWarning, running on without that cache. Stdlib only: imported at
interpreter start.

`rax cache clear` removes only files named as raximport or JAX name their entries, and never
follows a symbolic link: a link in place of a cache directory could point anywhere.
"""

from __future__ import annotations

import os
import re
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


def files(directory: Path, pattern: re.Pattern[str]) -> list[tuple[str, os.stat_result]]:
    """(name, status) of the regular files in `directory` whose whole name matches `pattern`.
    Symbolic links are skipped, and a `directory` that is one is not followed: []."""
    if directory.is_symlink():
        return []
    try:
        scan = list(os.scandir(directory))
    except OSError:
        return []
    found = []
    for entry in scan:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                found.append((entry.name, entry.stat(follow_symlinks=False)))
            except OSError:
                continue
    return found


def remove(directory: Path, pattern: re.Pattern[str], older_than_ns: int | None = None) -> list[tuple[str, int]]:
    """Unlink the files that `files` lists (only those last modified before `older_than_ns`, if
    given); (name, size) of each one removed."""
    removed = []
    for name, status in files(directory, pattern):
        if older_than_ns is not None and status.st_mtime_ns >= older_than_ns:
            continue
        try:
            os.unlink(directory / name)
        except OSError:
            continue
        removed.append((name, status.st_size))
    return removed


def human_size(size: float) -> str:
    """Bytes in the decimal units that sizes are given in ("4GB")."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def state_of(directory: Path) -> str:
    """`rax cache info`'s state of a cache `directory` (in raximport's cache directory, its parent)."""
    why = check_dir(directory.parent) or check_dir(directory)
    return f"refused: {why}" if why else "on"


def section(title: str, directory: Path, state: str, count: int, size: int) -> list[str]:
    """One cache's block of `rax cache info`, its values aligned."""
    values = (("directory", directory), ("state", state), ("entries", count), ("size", human_size(size)))
    return [title, *(f"{label + ':':<10} {value}" for label, value in values)]


def removed_line(directory: Path, count: int, size: int, temps: int = 0) -> str:
    """What `rax cache clear` says about one directory."""
    line = f"removed {count} entries ({human_size(size)}) from {directory}"
    if temps == 1:
        line += ", and 1 temp file of an interrupted write"
    elif temps:
        line += f", and {temps} temp files of interrupted writes"
    return line
