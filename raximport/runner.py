"""Run the user's main script or `-m` module as `__main__`, rewritten, the way `python` would.

`__file__`, `sys.argv`, `sys.path[0]` and `sys.modules["__main__"]` are set as Python sets them, so
that relative imports, pickling of classes defined in the script, and multiprocessing work.
An uncaught exception is printed as a report (explain.py): the user's frames, internals collapsed.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import os
import sys
from types import CodeType, ModuleType, TracebackType
from typing import Callable

from raximport.config import Config
from raximport.failsafe import stepped_aside
from raximport.hook import BytecodeCache, load_rewritten, note_instrumented
from raximport.provenance import is_import_machinery, is_raximport_file
from raximport.report import write_json
from raximport.rewrite import CONFIG


def _fresh_main(config: Config, **attributes: object) -> ModuleType:
    main = ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __cached__=None, **attributes)
    main.__dict__[CONFIG] = config
    sys.modules["__main__"] = main
    return main


def run_path(path: str, args: list[str], config: Config) -> int:
    """Run the script at `path` with `args`; return its exit status."""
    abspath = os.path.abspath(path)
    if not os.path.isfile(abspath):
        sys.stderr.write(f"{sys.executable}: can't open file {abspath!r}: [Errno 2] No such file or directory\n")
        return 2
    sys.argv[:] = [path, *args]
    sys.path[0] = os.path.dirname(os.path.realpath(abspath))
    loader = importlib.machinery.SourceFileLoader("__main__", abspath)
    main = _fresh_main(config, __file__=abspath, __loader__=loader, __spec__=None, __package__=None)
    note_instrumented(config, "__main__", abspath)
    return _execute(lambda: load_rewritten(abspath, config, BytecodeCache(config.cache_dir, config.rewrite_key())), main,
                    config)


def run_module(name: str, args: list[str], config: Config) -> int:
    """Run module `name` (a package runs its `__main__`) like `python -m name`."""
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            name = name + ".__main__"
            spec = importlib.util.find_spec(name)
    except ImportError as exc:
        sys.stderr.write(f"{sys.executable}: Error while finding module specification for {name!r} ({exc})\n")
        return 1
    if spec is None or spec.loader is None or not spec.origin:
        sys.stderr.write(f"{sys.executable}: No module named {name}\n")
        return 1
    sys.argv[:] = [spec.origin, *args]
    main = _fresh_main(config, __file__=spec.origin, __loader__=spec.loader, __spec__=spec, __package__=spec.parent)
    if spec.origin.endswith(".py"):
        cache = BytecodeCache(config.cache_dir, config.rewrite_key())
        return _execute(lambda: load_rewritten(spec.origin, config, cache), main, config)
    return _execute(lambda: spec.loader.get_code(name), main, config)  # type: ignore[union-attr]


def _execute(get_code: Callable[[], CodeType], main: ModuleType, config: Config) -> int:
    try:
        exec(get_code(), main.__dict__)
        if "raximport.nan_guard" in sys.modules:  # --nan-guard: the last calls, not read yet
            sys.modules["raximport.nan_guard"].check_pending()
    except SystemExit:
        raise
    except BaseException as exc:
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
        print_user_exception(exc, config, status)
        return status
    write_json(config.report_json, 0)
    return 0


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """`tb` without the frames of raximport, runpy and importlib."""
    frames = []
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (is_raximport_file(filename) or is_import_machinery(filename)):
            frames.append(tb)
        tb = tb.tb_next
    rebuilt = None
    for entry in reversed(frames):
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


def print_user_exception(exc: BaseException, config: Config, exit_code: int = 1) -> None:
    """Print `exc` as a report: what went wrong at the user's line and how to fix it (explain.py),
    after its traceback with the frames of jax, jaxtyping, beartype and raximport collapsed; the
    report also goes to the --report-json file. `--verbose` / RAX_TRACEBACK=full: Python's own,
    complete traceback. A custom `sys.excepthook` set by the script is honoured."""
    if sys.excepthook is not sys.__excepthook__:
        _strip_raximport_frames(exc)
        sys.stderr.flush()
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return
    from raximport.report import Report, show
    from raximport.tracebacks import format_exception

    failure = None
    try:
        from raximport.explain import explain

        report = explain(exc)
    except Exception as error:  # the explanation must never hide the error itself
        failure = error
        report = Report(kind="error", title=f"{type(exc).__name__}: {exc}", extra={"explain_failed": repr(error)})
    known = report.kind not in ("error", "nan-detected")
    full = config.full_tracebacks
    lines = format_exception(exc, full=full, last_only=known and not full, first_line_only=known and not full)
    show(report, lines, json_path=config.report_json)
    write_json(config.report_json, exit_code)
    if failure is not None:
        stepped_aside("the report", type(exc).__name__, failure, config)


def _strip_raximport_frames(exc: BaseException) -> None:
    """Drop raximport's, runpy's and importlib's frames from `exc` and the exceptions it chains."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = user_traceback(current.__traceback__)
        pending += [current.__cause__, current.__context__]
