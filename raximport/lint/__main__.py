"""`rax lint` / `python -m raximport.lint`: the command line of the JAX linter."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raximport.config import ConfigError, find_project_root, load_config
from raximport.lint import engine, output, settings
from raximport.lint.cache import lint_dir
from raximport.lint.registry import RULES

DESCRIPTION = """\
Lint JAX code: the checklist of JAX pitfalls (PRNG key reuse, Python control flow on traced values,
side effects and recompiles under jit, missing donation, ...) as fast static checks, in Ruff's
conventions. PATHS default to the project root. Settings also come from [tool.raximport.lint] in
the nearest pyproject.toml (select, extend-select, ignore, per-file-ignores, exclude, dimensions).
Silence one line with `# noqa: RAX201 reason`. Exit status: 0 clean, 1 findings, 2 usage or
internal error.
"""


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, metavar="PATHS", help="files or directories (default: the project root)")
    p.add_argument("--select", action="append", metavar="CODES",
                   help="rules to run, by code or prefix, comma-separated (RAX201,RAX3; ALL): replaces the default")
    p.add_argument("--extend-select", action="append", metavar="CODES", help="rules to run besides the selected ones")
    p.add_argument("--ignore", action="append", metavar="CODES", help="rules not to run")
    p.add_argument("--output-format", choices=output.FORMATS, default="concise", help="how findings are written")
    p.add_argument("--fix", action="store_true", help="apply the safe fixes in place")
    p.add_argument("--unsafe-fixes", action="store_true", help="also apply (with --fix) or count the unsafe fixes")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even if there are findings")
    p.add_argument("--statistics", action="store_true", help="print the number of findings per rule instead")
    p.add_argument("--explain", metavar="CODE", help="print a rule's documentation and exit")
    p.add_argument("--no-cache", action="store_true", help="lint every file afresh, and keep no results")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="raximport's cache directory (the results go in DIR/lint; default as `rax cache`)")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="processes for large trees (default: one per core)")
    return p


def main(argv: list[str] | None = None, prog: str = "rax lint") -> int:
    ns = parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    if ns.explain:
        code = ns.explain.upper()
        if code not in RULES:
            print(f"{prog}: error: no rule {ns.explain!r}; the rules are {', '.join(sorted(RULES))}", file=sys.stderr)
            return 2
        print(output.explain(code), end="")
        return 0
    start = ns.paths[0] if ns.paths else Path.cwd()
    try:
        options = settings.load(start.resolve(), select=settings.split_selectors(ns.select),
                                extend_select=settings.split_selectors(ns.extend_select),
                                ignore=settings.split_selectors(ns.ignore))
        cache_dir = None if ns.no_cache else lint_dir(ns.cache_dir or load_config(root=options.root).cache_dir)
    except (settings.UsageError, ConfigError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    missing = [str(p) for p in ns.paths if not p.exists()]
    if missing:
        print(f"{prog}: error: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    paths = ns.paths or [find_project_root(Path.cwd())]
    outcome = engine.run(paths, options, fix=ns.fix, unsafe=ns.unsafe_fixes, cache_dir=cache_dir, jobs=ns.jobs)
    if ns.statistics:
        sys.stdout.write(output.statistics(outcome, ns.unsafe_fixes))
    else:
        sys.stdout.write(output.WRITERS[ns.output_format](outcome, ns.unsafe_fixes))
        if ns.output_format in ("concise", "full"):
            sys.stdout.write(output.summary(outcome, ns.unsafe_fixes, ns.fix))
    for message in outcome.errors.values():
        print(f"{prog}: internal error: {message} (please report it; the other rules and files were linted)",
              file=sys.stderr)
    if outcome.errors:
        return 2
    return 0 if ns.exit_zero or not outcome.findings else 1


if __name__ == "__main__":
    sys.exit(main(prog="python -m raximport.lint"))
