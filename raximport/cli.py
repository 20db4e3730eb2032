"""The command line: `python -m raximport ...` and the `rax` console script."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from raximport import __version__
from raximport.config import ConfigError, load_config

RUN_USAGE = "%(prog)s [options] script.py [args ...]\n       %(prog)s [options] -m module [args ...]"
RUN_DESCRIPTION = """\
Run a plain JAX script with raximport: its modules, and the script itself, are rewritten on import
so that every jaxtyping-annotated function and dataclass is shape- and dtype-checked
(jaxtyping + beartype). Everything after the script (or -m module) goes to the script.

By default the script's project is instrumented: the modules under the nearest parent directory
holding pyproject.toml, setup.py, setup.cfg or .git. The standard library and site-packages are
left alone unless named with --package. A module opts out with RAX_DONT_REWRITE in its docstring
or in a comment. Options can also be set with RAX_* environment variables (RAX_PACKAGES,
RAX_PATHS, RAX_EXCLUDE, RAX_CHECKS, RAX_VERBOSE, RAX_CACHE_DIR, RAX_XLA_CACHE, RAX_REPORT_JSON,
RAX_TRACEBACK) and in pyproject.toml under
[tool.raximport]; the command line wins.
"""
CACHE_DESCRIPTION = """\
raximport keeps two caches in its cache directory DIR: the bytecode of rewritten modules in
DIR/pyc, and JAX's persistent compilation cache in DIR/xla, unless you set
JAX_COMPILATION_CACHE_DIR (then JAX uses yours, with no cap). `clear` removes only the files
raximport and JAX write there, and the temp files of interrupted writes; it never follows a
symbolic link, and it leaves your own JAX_COMPILATION_CACHE_DIR alone unless given
--include-user-xla-dir. raximport's cache directories are yours alone (mode 0700): `info` shows
one that another user owns, or that others can write, as refused (runs do not use it).
"""
VALUE_OPTIONS = {"-p", "--package", "--path", "-x", "--exclude", "--project-root", "--cache-dir", "--memory-limit",
                 "--report-json", "--traceback"}


def run_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, usage=RUN_USAGE, description=RUN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-p", "--package", action="append", metavar="NAME", dest="packages",
                        help="also instrument this package or module, wherever it is installed (repeatable)")
    parser.add_argument("--path", action="append", metavar="DIR", dest="paths",
                        help="also instrument the modules under this directory (repeatable)")
    parser.add_argument("-x", "--exclude", action="append", metavar="PATTERN",
                        help="never instrument modules with this name prefix or matching this path glob (repeatable)")
    parser.add_argument("--no-checks", dest="checks", action="store_false", default=None,
                        help="do not add shape/dtype checks")
    parser.add_argument("-v", "--verbose", action="store_true", default=None, help="say what raximport does")
    parser.add_argument("--project-root", metavar="DIR", help="the directory whose modules are the user's")
    parser.add_argument("--cache-dir", metavar="DIR", help="where raximport keeps its caches")
    parser.add_argument("--no-xla-cache", dest="xla_cache", action="store_false", default=None,
                        help="leave JAX's persistent compilation cache alone (raximport turns it on)")
    parser.add_argument("--no-jit", dest="jit", action="store_false", default=None,
                        help="leave the script's jax.jit calls alone (no trace watch, no memory check)")
    parser.add_argument("--no-autojit", dest="autojit", action="store_false", default=None,
                        help="do not jit annotated pure functions that the script did not jit")
    parser.add_argument("--memory-limit", metavar="SIZE",
                        help="the memory budget, e.g. 2GB (default: the device's, or the host's free memory)")
    parser.add_argument("--memory-report", action="store_true", default=None,
                        help="at exit, show each compiled function's predicted peak memory and headroom")
    parser.add_argument("--no-memory-check", dest="memory_check", action="store_false", default=None,
                        help="do not check compiled steps against the memory budget before they run")
    parser.add_argument("--report-json", metavar="PATH",
                        help="also write every report (errors, with their fix; recompilations...) as JSON to PATH")
    parser.add_argument("--traceback", choices=("short", "full"), default=None,
                        help="short (default): collapse frames inside jax, jaxtyping, beartype, raximport; "
                             "full: show them all (as --verbose does)")
    parser.add_argument("--debug-nans", action="store_true",
                        help="turn on JAX's NaN checks (jax_debug_nans): stop at the first operation producing a NaN")
    parser.add_argument("--debug-keys", action="store_true",
                        help="turn on JAX's PRNG key-reuse checker (jax_debug_key_reuse; typed jax.random.key only)")
    parser.add_argument("--version", action="version", version=f"raximport {__version__}")
    return parser


def split_run_argv(argv: list[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """Split into (raximport's options, script, module, the program's args), like `python` does."""
    options: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "-m":
            if index + 1 >= len(argv):
                options.append(token)  # let argparse report it
                return options, None, None, []
            return options, None, argv[index + 1], argv[index + 2 :]
        if token.startswith("-m") and not token.startswith("--"):
            return options, None, token[2:], argv[index + 1 :]
        if not token.startswith("-") or token == "-":
            return options, token, None, argv[index + 1 :]
        options.append(token)
        if token in VALUE_OPTIONS and index + 1 < len(argv):
            options.append(argv[index + 1])
            index += 1
        index += 1
    return options, None, None, []


def _split_commas(values: list[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return tuple(part for value in values for part in value.split(",") if part)


def run(argv: list[str], prog: str) -> int:
    """`rax run` / `python -m raximport`: run a script or module under the hook."""
    parser = run_parser(prog)
    options, script, module, args = split_run_argv(argv)
    ns = parser.parse_args(options)
    if script is None and module is None:
        parser.error("a script or -m module is required")
    from raximport.runner import run_module, run_path
    from raximport.session import install

    root = Path(script).resolve().parent if script else Path.cwd()
    try:
        config = load_config(
            {
                "packages": _split_commas(ns.packages),
                "paths": tuple(os.path.abspath(p) for p in ns.paths) if ns.paths else None,
                "exclude": _split_commas(ns.exclude),
                "checks": ns.checks,
                "verbose": ns.verbose,
                "project_root": ns.project_root,
                "cache_dir": ns.cache_dir,
                "xla_cache": ns.xla_cache,
                "jit": ns.jit,
                "autojit": ns.autojit,
                "memory_limit": ns.memory_limit,
                "memory_report": ns.memory_report,
                "memory_check": ns.memory_check,
                "report_json": ns.report_json,
                "traceback": ns.traceback,
            },
            root=root,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    os.environ.update(config.to_env())  # child processes (multiprocessing spawn) inherit the hook
    _debug_env(ns.debug_nans, ns.debug_keys, config.verbose or config.traceback == "full")
    install(config=config)
    if module is not None:
        return run_module(module, args, config)
    return run_path(script, args, config)  # type: ignore[arg-type]


def _debug_env(nans: bool, keys: bool, full_tracebacks: bool) -> None:
    """JAX reads these when it is first imported (by the script, after this): a value the user set wins."""
    if nans:
        os.environ.setdefault("JAX_DEBUG_NANS", "True")
    if keys:
        os.environ.setdefault("JAX_DEBUG_KEY_REUSE", "True")
    if full_tracebacks:
        os.environ.setdefault("JAX_TRACEBACK_FILTERING", "off")


def cache_command(
    action: str, cache_dir: str | None, include_user_xla_dir: bool, parser: argparse.ArgumentParser
) -> int:
    """`rax cache info|clear`: the bytecode cache, raximport's XLA cache and the user's
    JAX_COMPILATION_CACHE_DIR if set (cleared only when asked: other programs may use it)."""
    from raximport import hook, xla_cache

    try:
        config = load_config({"cache_dir": cache_dir}, root=Path.cwd())
    except ConfigError as exc:
        parser.error(str(exc))
    if action == "info":
        print("\n".join([*hook.info_lines(config.cache_dir), "", *xla_cache.info_lines(config)]))
        return 0
    lines = [_clear(hook.pyc_dir(config.cache_dir), hook.clear), _clear(xla_cache.xla_dir(config), xla_cache.clear)]
    theirs, owned = xla_cache.resolve_dir(config)
    if not owned and include_user_xla_dir:
        lines.append(_clear(theirs, xla_cache.clear))
    elif not owned:
        lines.append(f"left {theirs} alone (your JAX_COMPILATION_CACHE_DIR): --include-user-xla-dir empties it too")
    print("\n".join(lines))
    return 0


def _clear(directory: Path, clear: Callable[[Path], tuple[int, ...]]) -> str:
    """Empty one cache directory, never through a symbolic link (it could point anywhere)."""
    from raximport import cachedir

    if directory.is_symlink():
        return f"skipped {directory}: a symbolic link, not followed"
    return cachedir.removed_line(directory, *clear(directory))


def main(argv: list[str] | None = None) -> int:
    """The `rax` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="rax",
        description="raximport: make plain JAX training scripts safe without touching them.",
        epilog="Run `rax COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"raximport {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run a script or -m module under raximport (as python -m raximport)", add_help=False)
    cache = commands.add_parser("cache", help="raximport's caches (rewritten modules, compiled XLA): info, clear",
                                description=CACHE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache.add_argument("action", choices=["info", "clear"],
                       help="info: each directory, its entries and size, the XLA cap and the last run's hits/misses; "
                            "clear: remove the entries")
    cache.add_argument("--cache-dir", metavar="DIR",
                       help="raximport's cache directory (default: $RAX_CACHE_DIR, else $XDG_CACHE_HOME/raximport, "
                            "else ~/.cache/raximport)")
    cache.add_argument("--include-user-xla-dir", action="store_true",
                       help="clear: also empty the JAX_COMPILATION_CACHE_DIR you set, which is otherwise only listed "
                            "(other programs may share it)")
    if argv[:1] == ["run"]:
        return run(argv[1:], prog="rax run")
    ns = parser.parse_args(argv)
    if ns.command == "cache":
        return cache_command(ns.action, ns.cache_dir, ns.include_user_xla_dir, cache)
    parser.print_help()
    return 2
