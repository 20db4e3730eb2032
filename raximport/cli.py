"""The command line: `python -m raximport ...` and the `rax` console script."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Callable

from raximport import __version__
from raximport.config import OPTIONS, ConfigError, load_config

RUN_USAGE = "%(prog)s [options] script.py [args ...]\n       %(prog)s [options] -m module [args ...]"
RUN_DESCRIPTION = """\
Run a plain JAX script with raximport: its modules, and the script itself, are rewritten on import
so that every jaxtyping-annotated function and dataclass is shape- and dtype-checked
(jaxtyping + beartype). Everything after the script (or -m module) goes to the script.

By default the script's project is instrumented: the modules under the nearest parent directory
holding pyproject.toml, setup.py, setup.cfg or .git. The standard library and site-packages are
left alone unless named with --package. A module opts out with RAX_DONT_REWRITE in its docstring
or in a comment.

Every option can also be set in pyproject.toml under [tool.raximport] (its name, e.g.
memory_limit = "2GB") or with the RAX_* variable shown beside it; the command line wins.
"""
CACHE_DESCRIPTION = """\
raximport keeps three caches in its cache directory DIR: the bytecode of rewritten modules in
DIR/pyc, JAX's persistent compilation cache in DIR/xla, unless you set
JAX_COMPILATION_CACHE_DIR (then JAX uses yours, with no cap), and rax lint's results in
DIR/lint. `clear` removes only the files
raximport and JAX write there, and the temp files of interrupted writes; it never follows a
symbolic link, and it leaves your own JAX_COMPILATION_CACHE_DIR alone unless given
--include-user-xla-dir. raximport's cache directories are yours alone (mode 0700): `info` shows
one that another user owns, or that others can write, as refused (runs do not use it).
"""


def run_parser(prog: str) -> argparse.ArgumentParser:
    """`rax run`'s parser, one argument per row of the options table (config.OPTIONS)."""
    parser = argparse.ArgumentParser(
        prog=prog, usage=RUN_USAGE, description=RUN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for row in OPTIONS:
        help = f"{'do not ' if row.is_switch and row.default else ''}{row.help} [{row.env}]"
        if row.is_switch:
            action = "store_false" if row.default else "store_true"
            parser.add_argument(*row.cli_flags, dest=row.name, action=action, default=None, help=help)
        elif isinstance(row.default, tuple):
            parser.add_argument(*row.cli_flags, dest=row.name, action="append", metavar=row.metavar,
                                help=help + " (repeatable)")
        else:
            parser.add_argument(*row.cli_flags, dest=row.name, metavar=row.metavar, choices=row.choices or None,
                                help=help)
    parser.add_argument("--version", action="version", version=f"raximport {__version__}")
    return parser


def _value_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flags that take a value, so the value is not mistaken for the script."""
    return {flag for action in parser._actions if action.nargs != 0 for flag in action.option_strings}


def split_run_argv(argv: list[str], value_flags: set[str]) -> tuple[list[str], str | None, str | None, list[str]]:
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
        if token in value_flags and index + 1 < len(argv):
            options.append(argv[index + 1])
            index += 1
        index += 1
    return options, None, None, []


def run(argv: list[str], prog: str) -> int:
    """`rax run` / `python -m raximport`: run a script or module under the hook."""
    parser = run_parser(prog)
    options, script, module, args = split_run_argv(argv, _value_flags(parser))
    ns = parser.parse_args(options)
    if script is None and module is None:
        parser.error("a script or -m module is required")
    from raximport.runner import run_module, run_path
    from raximport.session import install

    root = Path(script).resolve().parent if script else Path.cwd()
    flags = {row.name: row.cli_flags[-1] for row in OPTIONS}
    try:
        config = load_config({row.name: getattr(ns, row.name) for row in OPTIONS}, root=root,
                             origin=flags.__getitem__)
    except ConfigError as exc:
        parser.error(str(exc))
    os.environ.update(config.to_env())  # child processes (multiprocessing spawn) inherit the hook
    install(config=config)
    if module is not None:
        return run_module(module, args, config)
    return run_path(script, args, config)  # type: ignore[arg-type]


def cache_command(
    action: str, cache_dir: str | None, include_user_xla_dir: bool, parser: argparse.ArgumentParser
) -> int:
    """`rax cache info|clear`: the bytecode cache, raximport's XLA cache and the user's
    JAX_COMPILATION_CACHE_DIR if set (cleared only when asked: other programs may use it)."""
    from raximport import hook, xla_cache
    from raximport.lint import cache as lint_cache

    try:
        config = load_config({"cache_dir": cache_dir}, root=Path.cwd(), origin=lambda name: "--cache-dir")
    except ConfigError as exc:
        parser.error(str(exc))
    if action == "info":
        print("\n".join([*hook.info_lines(config.cache_dir), "", *xla_cache.info_lines(config), "",
                         *lint_cache.info_lines(config.cache_dir)]))
        return 0
    lines = [_clear(hook.pyc_dir(config.cache_dir), hook.clear), _clear(xla_cache.xla_dir(config), xla_cache.clear),
             _clear(lint_cache.lint_dir(config.cache_dir), lint_cache.clear)]
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


# subcommands whose module parses its own arguments: (the module with `main(argv)`, the help line)
DELEGATED = {
    "annotate": ("raximport.annotate", "run a script and print the jaxtyping annotations its arrays imply (a diff)"),
    "lint": ("raximport.lint.__main__", "lint JAX code: the JAX checklist as static checks, in Ruff's conventions"),
    "ir": ("raximport.ir.__main__", "IR records: show, generate, validate, stats (rax ir --help)"),
}


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
    for name, (_, help) in DELEGATED.items():
        commands.add_parser(name, help=help, add_help=False)
    if argv[:1] == ["run"]:
        return run(argv[1:], prog="rax run")
    if argv[:1] and argv[0] in DELEGATED:
        return int(importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:]))
    ns = parser.parse_args(argv)
    if ns.command == "cache":
        return cache_command(ns.action, ns.cache_dir, ns.include_user_xla_dir, cache)
    parser.print_help()
    return 2
