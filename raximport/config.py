"""One frozen Config, merged from defaults < pyproject.toml [tool.raximport] < RAX_* env < explicit options.

Stdlib only: this module is imported at interpreter start when RAX_ENABLE is set.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from raximport.rewrite import RewriteOptions

PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
# Entries are ~2 KB (CPU, small functions) to tens of MB (GPU train steps); 4 GB keeps hundreds of
# big train-step variants, and JAX's eviction rescans the whole directory on each write, so an
# entry count in the thousands, not millions, keeps writes cheap.
DEFAULT_XLA_CACHE_MAX_SIZE = 4 * 10**9


class ConfigError(ValueError):
    """A bad option value, named with where it came from."""


def default_cache_dir() -> Path:
    """$RAX_CACHE_DIR, else $XDG_CACHE_HOME/raximport, else ~/.cache/raximport."""
    explicit = os.environ.get("RAX_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "raximport"


@dataclass(frozen=True)
class Config:
    """What to instrument and how.

    packages: module names instrumented wherever they live (site-packages included).
    paths: extra directories whose modules are instrumented.
    exclude: module-name prefixes or path globs never instrumented.
    project_root: the directory whose modules are the user's; None means "find it from the
        main script" (the nearest parent holding pyproject.toml, setup.py, setup.cfg or .git).
    checks: add jaxtyping+beartype checks to annotated functions and dataclasses.
    jit: route the instrumented modules' `jax.jit` through raximport.jit (watched traces).
    autojit: jit annotated pure module-level functions that nobody jitted.
    memory_check: before a compiled step first runs, hold XLA's memory analysis against the budget.
    memory_limit: the budget in bytes ("2GB" accepted); None: the device's, or the host's free memory.
    memory_report: at exit, show every compiled function's predicted peak and headroom.
    verbose: say what raximport decides.
    cache_dir: where rewritten bytecode is cached.
    xla_cache: turn on JAX's persistent compilation cache (in cache_dir/xla unless the user set
        JAX_COMPILATION_CACHE_DIR), so a second run skips XLA compilation.
    xla_cache_max_size: bytes the XLA cache may hold before its least recently used entries are
        evicted; -1 is no cap. Sizes like "512MB" or "2GiB" are accepted.
    report_json: also write every report of the run, as JSON, to this file (for CI).
    traceback: "short" collapses the frames of jax, jaxtyping, beartype and raximport in the
        tracebacks of reports; "full" (or verbose) shows Python's complete traceback.
    """

    packages: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    project_root: str | None = None
    checks: bool = True
    jit: bool = True
    autojit: bool = True
    memory_check: bool = True
    memory_limit: int | None = None
    memory_report: bool = False
    verbose: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
    xla_cache: bool = True
    xla_cache_max_size: int = DEFAULT_XLA_CACHE_MAX_SIZE
    report_json: str | None = None
    traceback: str = "short"

    def rewrite_options(self) -> "RewriteOptions":
        from raximport.rewrite import RewriteOptions

        return RewriteOptions(checks=self.checks, jit=self.jit, autojit=self.autojit)

    def rewrite_key(self) -> str:
        """The options that change the rewritten code, for the bytecode cache key."""
        return repr(self.rewrite_options())

    def to_env(self) -> dict[str, str]:
        """RAX_* variables that reproduce this config in a child process."""
        return {
            "RAX_ENABLE": "1",
            "RAX_PACKAGES": ",".join(self.packages),
            "RAX_PATHS": os.pathsep.join(self.paths),
            "RAX_EXCLUDE": ",".join(self.exclude),
            "RAX_PROJECT_ROOT": self.project_root or "",
            "RAX_CHECKS": "1" if self.checks else "0",
            "RAX_JIT": "1" if self.jit else "0",
            "RAX_AUTOJIT": "1" if self.autojit else "0",
            "RAX_MEMORY_CHECK": "1" if self.memory_check else "0",
            "RAX_MEMORY_LIMIT": str(self.memory_limit or ""),
            "RAX_MEMORY_REPORT": "1" if self.memory_report else "0",
            "RAX_VERBOSE": "1" if self.verbose else "0",
            "RAX_CACHE_DIR": str(self.cache_dir),
            "RAX_XLA_CACHE": "1" if self.xla_cache else "0",
            "RAX_XLA_CACHE_MAX_SIZE": str(self.xla_cache_max_size),
            "RAX_TRACEBACK": self.traceback,  # not RAX_REPORT_JSON: a child would overwrite the parent's file
        }


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_TUPLE_FIELDS = {"packages", "paths", "exclude"}
_BOOL_FIELDS = {"checks", "jit", "autojit", "memory_check", "memory_report", "verbose", "xla_cache"}
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(value: str | int) -> int:
    """Bytes from 4000000000, "4GB", "512MB" or "2GiB" (k/M/G/T are decimal, Ki/Mi/Gi/Ti binary,
    as ccache and systemd read them); "none", "unlimited" and -1 mean no cap (-1).

    0 is refused: JAX reads a 0 cap as "cache nothing", which is what xla_cache = false is for.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        number: float = value
    else:
        text = value.strip().lower().replace(" ", "").replace("_", "")
        if text in ("none", "unlimited", "-1"):
            return -1
        digits = text.rstrip("bikmgt")
        suffix = text[len(digits):]
        unit = suffix[:-1] if suffix.endswith("b") else suffix
        if unit not in _SIZE_UNITS:
            raise ValueError(f"not a size: {value!r}")
        try:
            number = float(digits) * _SIZE_UNITS[unit]
        except ValueError:
            raise ValueError(f"not a size: {value!r}") from None
    if number == -1:
        return -1
    if number < 1:
        raise ValueError(f"size must be positive, or -1/unlimited for no cap, got {value!r}")
    return int(number)


def _coerce(name: str, value: Any, origin: str) -> Any:
    if name not in _FIELDS:
        valid = ", ".join(sorted(_FIELDS))
        raise ConfigError(f"{origin}: unknown option {name!r}; valid options: {valid}")
    if name in _TUPLE_FIELDS:
        if isinstance(value, str):
            sep = os.pathsep if name == "paths" else ","
            value = [part for part in value.split(sep) if part.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{origin}: {name} must be a list of strings, got {value!r}")
        return tuple(v.strip() for v in value)
    if name in _BOOL_FIELDS:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{origin}: {name} must be true or false, got {value!r}")
    if name == "cache_dir":
        return Path(value).expanduser()
    if name == "traceback":
        if value not in ("short", "full"):
            raise ConfigError(f"{origin}: traceback must be 'short' or 'full', got {value!r}")
        return value
    if name == "report_json":
        return os.path.abspath(os.path.expanduser(value)) if value else None
    if name == "memory_limit":
        try:
            return parse_size(value) if value not in (None, "") else None
        except ValueError as exc:
            raise ConfigError(f"{origin}: memory_limit: {exc}") from None
    if name == "xla_cache_max_size":
        try:
            return parse_size(value)
        except ValueError as exc:
            raise ConfigError(f"{origin}: xla_cache_max_size: {exc}") from None
    if name == "project_root":
        return str(Path(value).expanduser().resolve()) if value else None
    return value


def find_project_root(start: Path) -> Path:
    """The nearest directory at or above `start` with a project marker, else `start`."""
    start = start.resolve()
    home = Path.home()
    for directory in (start, *start.parents):
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
        if directory == home:
            break
    return start


def pyproject_options(root: Path) -> dict[str, Any]:
    """The [tool.raximport] table of `root`/pyproject.toml, or {}."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with pyproject.open("rb") as fh:
        try:
            table = tomllib.load(fh).get("tool", {}).get("raximport", {})
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{pyproject}: {exc}") from None
    return {key.replace("-", "_"): value for key, value in table.items()}


def env_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """Options set by RAX_* variables (empty ones count as unset)."""
    options = {}
    for name in _FIELDS:
        value = environ.get("RAX_" + name.upper())
        if value:
            options[name] = value
    return options


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge defaults < pyproject.toml < environment < `overrides` (None values are unset)."""
    environ = os.environ if environ is None else environ
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    layers = [("environment", env_options(environ)), ("options", given)]
    root_hint = given.get("project_root") or environ.get("RAX_PROJECT_ROOT")
    project = Path(root_hint) if root_hint else root
    if project is not None:
        project = find_project_root(project)
        layers.insert(0, (f"{project / 'pyproject.toml'} [tool.raximport]", pyproject_options(project)))
    merged: dict[str, Any] = {"project_root": str(project)} if project is not None else {}
    for origin, options in layers:
        for name, value in options.items():
            merged[name] = _coerce(name, value, origin)
    return Config(**merged)
