"""Every option in one table, and one frozen Config merged from it.

The `Config` class body is the table: each field's `option(...)` names its parser, default, CLI
flag and help; its environment variable is `RAX_<NAME>` and its pyproject.toml key is `<name>`
under `[tool.raximport]`. The command line (cli.py), the variables children inherit (`to_env`),
`--help` and the README's options table are all generated from it. Layers, weakest first:
defaults < pyproject.toml < RAX_* variables < install() arguments or the command line. Every
value remembers where it came from (`Config.origin`), so errors and reports can name it.

Stdlib only: this module is imported at interpreter start when RAX_ENABLE is set.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from raximport.rewrite import RewriteOptions

PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
# Entries are ~2 KB (CPU, small functions) to tens of MB (GPU train steps); 4 GB keeps hundreds of
# big train-step variants, and JAX's eviction rescans the whole directory on each write, so an
# entry count in the thousands, not millions, keeps writes cheap.
DEFAULT_XLA_CACHE_MAX_SIZE = 4 * 10**9
# RAX_ENABLE (read by raximport.pth and sitecustomize_example/, which repeat these words) and
# boolean options: any case, surrounding spaces ignored.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")
TRACEBACK_MODES = ("short", "full")


class ConfigError(ValueError):
    """A bad option value, named with where it came from."""


# --- parsers: a value from TOML, an environment string or a Python argument -> the typed value --


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError(f"must be true or false, got {value!r}")


_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(value: str | int) -> int:
    """Bytes from 4000000000, "4GB", "512MB" or "2GiB" (k/M/G/T are decimal, Ki/Mi/Gi/Ti binary,
    as ccache and systemd read them); "none", "unlimited" and -1 mean no cap (-1).

    0 is refused: JAX reads a 0 cap as "cache nothing", which is what xla_cache = false is for.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
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
    if not math.isfinite(number):
        raise ValueError(f"not a size: {value!r}")
    if number == -1:
        return -1
    if number < 1:
        raise ValueError(f"size must be positive, or -1/unlimited for no cap, got {value!r}")
    return int(number)


def _limit(value: Any) -> int | None:
    if value in (None, ""):
        return None
    size = parse_size(value)
    if size < 0:
        raise ValueError(f"must be a size such as 2GB, got {value!r}")
    return size


def _names(separator: str, absolute: bool = False) -> Callable[[Any], tuple[str, ...]]:
    """A list of strings, or one string of `separator`-separated ones (each list item too)."""

    def parse(value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"must be a list of strings, got {value!r}")
        parts = [part.strip() for item in items for part in item.split(separator) if part.strip()]
        return tuple(os.path.abspath(os.path.expanduser(p)) for p in parts) if absolute else tuple(parts)

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"must be a path (a string), got {value!r}")
    return os.path.expanduser(os.fspath(value))


def _directory(value: Any) -> Path:
    return Path(_text(value))


def _root(value: Any) -> str | None:
    return str(Path(_text(value)).resolve()) if value not in (None, "") else None


def _file(value: Any) -> str | None:
    return os.path.abspath(_text(value)) if value not in (None, "") else None


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"must be a number of seconds >= 0, got {value!r}")
    return seconds


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One row of the options table (the metadata of one Config field)."""

    parse: Callable[[Any], Any]
    help: str
    flags: tuple[str, ...] = ()  # the command line's spellings; () derives them from the name
    metavar: str = ""  # the value's placeholder; "" for a switch
    choices: tuple[str, ...] = ()
    inherit: bool = True  # passed to child processes by `to_env`
    name: str = ""
    default: Any = None

    @property
    def env(self) -> str:
        return "RAX_" + self.name.upper()

    @property
    def is_switch(self) -> bool:
        return not self.metavar

    @property
    def cli_flags(self) -> tuple[str, ...]:
        """`--memory-limit`; for a switch, the spelling that turns the default around (`--no-checks`)."""
        if self.flags:
            return self.flags
        dashed = self.name.replace("_", "-")
        return (f"--no-{dashed}",) if self.is_switch and self.default else (f"--{dashed}",)

    def format(self, value: Any) -> str:
        """The value as an environment variable spells it."""
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, tuple):
            return (os.pathsep if self.name == "paths" else ",").join(value)
        return "" if value is None else str(value)


def option(default: Any, parse: Callable[[Any], Any], help: str, *, factory: Callable[[], Any] | None = None,
           **details: Any) -> Any:
    """A Config field that is also a row of the options table."""
    row = Option(parse, help, **details)
    if factory is not None:
        return field(default_factory=factory, metadata={"option": row})
    return field(default=default, metadata={"option": row})


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/raximport, else ~/.cache/raximport ($RAX_CACHE_DIR is the option's variable)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "raximport"


@dataclass(frozen=True)
class Config:
    """What to instrument and how: one field per option (see `OPTIONS` and the README's table).

    `origins` says where each value that is not a default came from: "install(memory_limit=...)",
    "--memory-limit", "RAX_MEMORY_LIMIT" or "<root>/pyproject.toml [tool.raximport]".
    """

    packages: tuple[str, ...] = option(
        (), _names(","), "also instrument these packages or modules, wherever they are installed",
        flags=("-p", "--package"), metavar="NAME")
    paths: tuple[str, ...] = option(
        (), _names(os.pathsep, absolute=True), "also instrument the modules under these directories",
        flags=("--path",), metavar="DIR")
    exclude: tuple[str, ...] = option(
        (), _names(","), "never instrument modules with these name prefixes or matching these path globs",
        flags=("-x", "--exclude"), metavar="PATTERN")
    project_root: str | None = option(
        None, _root, "the directory whose modules are the user's (default: the nearest parent of the script "
        "holding pyproject.toml, setup.py, setup.cfg or .git)", metavar="DIR")
    checks: bool = option(True, parse_bool, "add jaxtyping+beartype shape/dtype checks to annotated functions")
    jit: bool = option(True, parse_bool, "route the script's jax.jit through raximport (trace watch, memory check)")
    autojit: bool = option(True, parse_bool, "jit annotated pure functions that the script did not jit")
    memory_check: bool = option(
        True, parse_bool, "hold XLA's memory analysis of each new compiled step against the budget before it runs")
    memory_limit: int | None = option(
        None, _limit, "the memory budget, e.g. 2GB (default: the device's, or the host's free memory)",
        metavar="SIZE")
    memory_report: bool = option(False, parse_bool, "at exit, show each compiled function's predicted peak and headroom")
    verbose: bool = option(False, parse_bool, "say what raximport does (and show full tracebacks)",
                           flags=("-v", "--verbose"))
    cache_dir: Path = option(
        None, _directory, "where raximport keeps its caches (default: $XDG_CACHE_HOME/raximport or "
        "~/.cache/raximport)", factory=default_cache_dir, metavar="DIR")
    xla_cache: bool = option(
        True, parse_bool, "use JAX's persistent compilation cache (in <cache_dir>/xla unless "
        "JAX_COMPILATION_CACHE_DIR is set), so a second run skips XLA compiles")
    xla_cache_max_size: int = option(
        DEFAULT_XLA_CACHE_MAX_SIZE, parse_size, "evict the XLA cache's least recently used entries beyond "
        "this size (-1: no cap)", metavar="SIZE")
    slow_compile_secs: float = option(
        5.0, _seconds, "report a compile slower than this while the XLA cache is off", metavar="SECONDS")
    report_json: str | None = option(
        None, _file, "also write every report (errors with their fix, recompilations...) as JSON to this file",
        metavar="PATH", inherit=False)  # a child process would overwrite its parent's file
    dump_ir: str | None = option(
        None, _file, "write each compiled function's jaxpr, StableHLO, optimized HLO and jax.export artifact "
        "as JSONL records in this directory (see `rax ir show`)", metavar="DIR")
    traceback: str = option(
        "short", _one_of(*TRACEBACK_MODES), "short: fold the frames of jax, jaxtyping, beartype and raximport in "
        "tracebacks; full: Python's complete traceback", metavar="MODE", choices=TRACEBACK_MODES)
    strict: bool = option(
        False, parse_bool, "for CI: where raximport's own machinery fails (a note, and the code runs as plain "
        "JAX), fail instead with RaxInternalError")
    nan_guard: bool = option(
        False, parse_bool, "stop at the first call of a jitted function whose outputs hold NaN or Inf, with a "
        "report (checked inside the compiled program and read one call behind: no added sync)")
    debug_nans: bool = option(
        False, parse_bool, "turn on JAX's NaN checks (jax_debug_nans): stop at the first operation making a NaN")
    debug_keys: bool = option(
        False, parse_bool, "turn on JAX's PRNG key-reuse checker (jax_debug_key_reuse; typed jax.random.key only)")
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def origin(self, name: str) -> str:
        """Where option `name` was set ("default" if nowhere)."""
        return self.origins.get(name, "default")

    def rewrite_options(self) -> "RewriteOptions":
        from raximport.rewrite import RewriteOptions

        return RewriteOptions(checks=self.checks, jit=self.jit, autojit=self.autojit)

    def rewrite_key(self) -> str:
        """The options that change the rewritten code, for the bytecode cache key."""
        return repr(self.rewrite_options())

    @property
    def full_tracebacks(self) -> bool:
        return self.verbose or self.traceback == "full"

    def to_env(self) -> dict[str, str]:
        """RAX_* variables that reproduce this config in a child process."""
        return {"RAX_ENABLE": "1", **{o.env: o.format(getattr(self, o.name)) for o in OPTIONS if o.inherit}}


def _rows() -> tuple[Option, ...]:
    rows = []
    for f in dataclasses.fields(Config):
        if "option" in f.metadata:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            rows.append(dataclasses.replace(f.metadata["option"], name=f.name, default=default))
    return tuple(rows)


OPTIONS: tuple[Option, ...] = _rows()
_BY_NAME = {o.name: o for o in OPTIONS}


def options_markdown() -> str:
    """The README's options table (tests/test_config.py keeps the README's copy equal to this)."""
    lines = ["| option (pyproject key) | command line | environment | default | what it does |",
             "| --- | --- | --- | --- | --- |"]
    for o in OPTIONS:
        flags = ", ".join(f"`{f}{' ' + o.metavar if o.metavar else ''}`" for f in o.cli_flags)
        if o.name == "cache_dir":
            default = "`~/.cache/raximport`"
        elif isinstance(o.default, bool):
            default = "on" if o.default else "off"
        else:
            default = f"`{o.format(o.default)}`" if o.default not in (None, ()) else "none"
        lines.append(f"| `{o.name}` | {flags} | `{o.env}` | {default} | {o.help} |")
    return "\n".join(lines)


# --- merging ----------------------------------------------------------------------------------


def _coerce(name: str, value: Any, origin: str) -> Any:
    row = _BY_NAME.get(name)
    if row is None:
        valid = ", ".join(sorted(_BY_NAME))
        raise ConfigError(f"{origin}: unknown option {name!r}; valid options: {valid}")
    try:
        return row.parse(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(f"{origin}: {name}: {exc}") from None


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
    """The run options of `root`/pyproject.toml's [tool.raximport] table, or {}."""
    # its [tool.raximport.lint] subtable configures `rax lint` (raximport/lint/settings.py), not runs
    return {key.replace("-", "_"): value for key, value in pyproject_table(root).items() if key != "lint"}


def pyproject_table(root: Path) -> dict[str, Any]:
    """The [tool.raximport] table of `root`/pyproject.toml, as written, or {}."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with pyproject.open("rb") as fh:
            table = tomllib.load(fh).get("tool", {}).get("raximport", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{pyproject}: cannot read it: {exc}") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.raximport] must be a table")
    return table


def env_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """Options set by RAX_* variables (empty ones count as unset)."""
    return {o.name: environ[o.env] for o in OPTIONS if environ.get(o.env)}


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    origin: Callable[[str], str] = lambda name: f"install({name}=...)",
) -> Config:
    """Merge defaults < pyproject.toml < environment < `overrides` (None values are unset).

    `origin(name)` names where an override came from (`--memory-limit` for the command line).
    """
    environ = os.environ if environ is None else environ
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    layers: list[tuple[dict[str, Any], Callable[[str], str]]] = [
        (env_options(environ), lambda name: _BY_NAME[name].env if name in _BY_NAME else "RAX_" + name.upper()),
        (given, origin),
    ]
    root_hint = given.get("project_root") or environ.get("RAX_PROJECT_ROOT")
    project = Path(_text(root_hint)) if root_hint else root
    merged: dict[str, Any] = {}
    if project is not None:
        project = find_project_root(project)
        where = f"{project / 'pyproject.toml'} [tool.raximport]"
        layers.insert(0, (pyproject_options(project), lambda name: where))
        merged["project_root"] = str(project)
    origins: dict[str, str] = {}
    for options, named in layers:
        for name, value in options.items():
            merged[name] = _coerce(name, value, named(name))
            origins[name] = named(name)
    return Config(**merged, origins=origins)
