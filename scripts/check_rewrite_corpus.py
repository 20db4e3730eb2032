#!/usr/bin/env python
"""Run raximport's AST rewrite over real code and check that the result always compiles.

The corpus: every `.py` file of the installed standard library (its site-packages excluded),
jax, jaxlib's Python files, optax and numpy. Each file is rewritten twice:

  as-is   exactly what the import hook does (`raximport.rewrite.compile_source`);
  worst   every non-None annotation is treated as jaxtyping's (`_JaxtypingNames.uses` patched to
          return True, `_JaxtypingNames.__bool__` forced true), so that a check decorator is
          inserted on every annotated def and class and the runtime import on every such module.

The worst-case rewrite reuses the as-is tree when the as-is rewrite left it untouched, is skipped
for modules without a single annotation (there it is the as-is rewrite), and compiles the tree
only when it changed something.

The rewritten tree must compile for every file that plain `compile()` accepts. Files that plain
`compile()` rejects (test data written for other Python versions, deliberately broken files) are
counted as "skipped: not valid Python 3.x" and listed, never counted as failures.

    python scripts/check_rewrite_corpus.py [--libs stdlib,jax,jaxlib,optax,numpy] [--limit N] [-j 2]

Exit status: 0 when nothing failed, 1 otherwise. The last line is the summary, e.g.
"TOTAL: 3088 files, ... 0 failures".
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import multiprocessing
import os
import sys
import sysconfig
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import raximport.rewrite as rewrite

LIBS = ("stdlib", "jax", "jaxlib", "optax", "numpy")
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def library_root(lib: str) -> Path:
    if lib == "stdlib":
        return Path(sysconfig.get_path("stdlib"))
    spec = importlib.util.find_spec(lib)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"check_rewrite_corpus: library {lib!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def library_files(lib: str) -> list[str]:
    """The library's .py files, sorted; the stdlib's site-packages and caches are left out."""
    root = library_root(lib)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return files


def sample(files: list[str], limit: int | None) -> list[str]:
    """`limit` files spread evenly over the library (not just its first directory)."""
    if limit is None or limit >= len(files):
        return files
    if limit <= 0:
        return []
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


# --- the worker ------------------------------------------------------------------------------

_seen: list[tuple[ast.Module, int]] = []
_real_rewrite_tree = rewrite.rewrite_tree


def _recording_rewrite_tree(tree: ast.Module, source: str, *args: Any, **kwargs: Any) -> int:
    count = _real_rewrite_tree(tree, source, *args, **kwargs)
    _seen.append((tree, count))
    return count


@contextlib.contextmanager
def worst_case() -> Iterator[None]:
    """Every annotation counts as jaxtyping's, every module as importing jaxtyping."""
    names = rewrite._JaxtypingNames
    saved_uses, saved_bool = names.uses, names.__bool__
    names.uses = lambda self, annotation: annotation is not None  # type: ignore[method-assign]
    names.__bool__ = lambda self: True  # type: ignore[method-assign]
    try:
        yield
    finally:
        names.uses, names.__bool__ = saved_uses, saved_bool  # type: ignore[method-assign]


def _as_is(source: bytes, path: str) -> tuple[ast.Module, int]:
    """compile_source exactly as the hook calls it; returns the rewritten tree and its count."""
    _seen.clear()
    code = rewrite.compile_source(source, path)
    if len(_seen) != 1:
        raise AssertionError(f"compile_source called rewrite_tree {len(_seen)} times")
    if code.co_filename != path:
        raise AssertionError(f"code object has filename {code.co_filename!r}")
    return _seen[0]


def _worst(tree: ast.Module, source: bytes, path: str) -> int:
    """The same parse -> rewrite_tree (default options) -> compile, with every annotation taken
    for jaxtyping's."""
    text = source.decode("utf-8", "replace")
    with worst_case():
        count = _real_rewrite_tree(tree, text)
    if count:  # an untouched tree is the as-is tree, compiled already
        code = compile(tree, path, "exec", dont_inherit=True)
        if code.co_filename != path:
            raise AssertionError(f"code object has filename {code.co_filename!r}")
    return count


def _annotated(tree: ast.Module) -> bool:
    """Whether any def or class body in the module carries an annotation."""
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            if node.returns is not None or any(
                arg.annotation is not None
                for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
                if arg is not None
            ):
                return True
    return False


@dataclass
class Result:
    lib: str
    path: str
    status: str  # "ok", "skipped", "failed"
    as_is: int = 0
    worst: int = 0
    errors: list[str] = field(default_factory=list)


def _describe(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


def check_file(job: tuple[str, str]) -> Result:
    lib, path = job
    try:
        source = Path(path).read_bytes()
    except OSError as exc:
        return Result(lib, path, "skipped", errors=[f"unreadable: {exc}"])
    result = Result(lib, path, "ok")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning/DeprecationWarning of invalid escapes etc.
        tree = None
        try:
            tree, result.as_is = _as_is(source, path)
        except (Exception, RecursionError) as exc:
            # Only now ask plain compile(): a file it rejects too is not valid Python, not a failure.
            try:
                compile(source, path, "exec", dont_inherit=True)
            except (SyntaxError, ValueError) as plain:  # ValueError: null bytes
                return Result(lib, path, "skipped", errors=[_describe(plain)])
            result.status = "failed"
            result.errors.append(f"[as-is] {_describe(exc)}")
        try:
            if tree is None or result.as_is:  # the as-is rewrite changed it: start afresh
                tree = ast.parse(source, path)
            if result.as_is or _annotated(tree):  # else the worst case is the as-is case
                result.worst = _worst(tree, source, path)
        except (Exception, RecursionError) as exc:
            result.status = "failed"
            result.errors.append(f"[worst] {_describe(exc)}")
    return result


def _init_worker() -> None:
    rewrite.rewrite_tree = _recording_rewrite_tree  # compile_source looks it up in the module


# --- the driver ------------------------------------------------------------------------------


@dataclass
class Tally:
    files: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    as_is: int = 0
    worst: int = 0
    modules_as_is: int = 0

    def add(self, r: Result) -> None:
        self.files += 1
        self.as_is += r.as_is
        self.worst += r.worst
        self.modules_as_is += r.as_is > 0
        setattr(self, r.status, getattr(self, r.status) + 1)

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.files} files, {self.ok} rewritten and compiled, "
            f"{self.skipped} skipped: not valid Python {PY}, "
            f"instrumented as-is {self.as_is} (in {self.modules_as_is} modules), "
            f"worst case {self.worst}, {self.failed} failures"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--libs", default=",".join(LIBS), help=f"comma-separated subset of {','.join(LIBS)}")
    parser.add_argument("--limit", type=int, default=None, help="at most N files per library (spread evenly)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    unknown = [lib for lib in libs if lib not in LIBS]
    if unknown:
        parser.error(f"unknown libraries {unknown}; choose from {','.join(LIBS)}")

    jobs = [(lib, path) for lib in libs for path in sample(library_files(lib), args.limit)]
    print(f"check_rewrite_corpus: Python {sys.version.split()[0]}, {len(jobs)} files from {', '.join(libs)}, "
          f"{args.jobs} workers", flush=True)
    tallies = {lib: Tally() for lib in libs}
    failures: list[Result] = []
    skipped: list[Result] = []
    started = time.perf_counter()
    last_report = started
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(max(1, args.jobs), initializer=_init_worker) as pool:
        for done, result in enumerate(pool.imap_unordered(check_file, jobs, chunksize=8), 1):
            tallies[result.lib].add(result)
            if result.status == "failed":
                failures.append(result)
                print(f"FAILED {result.path}: {'; '.join(result.errors)}", flush=True)
            elif result.status == "skipped":
                skipped.append(result)
            now = time.perf_counter()
            if not args.quiet and (now - last_report > 5 or done == len(jobs)):
                last_report = now
                print(f"  progress: {done}/{len(jobs)} files, {now - started:.0f}s", flush=True)

    total = Tally()
    for lib in libs:
        t = tallies[lib]
        for name in ("files", "ok", "skipped", "failed", "as_is", "worst", "modules_as_is"):
            setattr(total, name, getattr(total, name) + getattr(t, name))
    if skipped:
        print(f"\nskipped (plain compile() rejects them too: not valid Python {PY}):")
        for r in sorted(skipped, key=lambda r: r.path):
            print(f"  {r.path}: {r.errors[0]}")
    if failures:
        print("\nfailures:")
        for r in sorted(failures, key=lambda r: r.path):
            for error in r.errors:
                print(f"  {r.path}: {error}")
    print(f"\nper library ({time.perf_counter() - started:.1f}s):")
    for lib in libs:
        print("  " + tallies[lib].line(lib))
    print(total.line("TOTAL"))
    return 1 if total.failed else 0


if __name__ == "__main__":
    sys.exit(main())
