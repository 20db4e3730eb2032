"""Everything raximport shows a person goes through here.

A `Report` is one finding: what happened, where in the user's code, and what to do about it. It is
shown on stderr, rich-formatted when stderr is a terminal (or FORCE_COLOR is set), as plain text
when it is not or NO_COLOR is set, and every report of the run is also written, as a JSON list, to
the file named by `--report-json PATH` / RAX_REPORT_JSON. Rich is imported only when a report is
rendered for a terminal: raximport's start never imports it.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, Sequence, TextIO

from raximport.provenance import is_user_file

JSON_VERSION = 1


def function_name(fun: object) -> str:
    """`train_step` for a function defined inside `make_train_step`, `Model.forward` for a method."""
    name = getattr(fun, "__qualname__", None) or getattr(fun, "__name__", None) or repr(fun)
    return name.rsplit("<locals>.", 1)[-1]


def defined_at(fn: Any) -> tuple[str, int] | None:
    """Where `fn` is defined; for a generated method (a dataclass's __init__), its class."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    if not code.co_filename.startswith("<"):
        return code.co_filename, code.co_firstlineno
    owner: Any = sys.modules.get(getattr(fn, "__module__", "") or "")
    for part in getattr(fn, "__qualname__", "").split(".")[:-1]:
        owner = getattr(owner, part, None)
    if not isinstance(owner, type):
        return None
    try:
        return inspect.getsourcefile(owner) or "", inspect.findsource(owner)[1] + 1
    except (OSError, TypeError):
        return None


def short_repr(value: Any) -> str:
    """`repr(value)`, cut to fit on a report's line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def innermost_user_entry(tb: TracebackType | None) -> TracebackType | None:
    """The innermost entry of `tb` in the user's code: the line a report is about, and its frame."""
    found = None
    while tb is not None:
        if is_user_file(tb.tb_frame.f_code.co_filename):
            found = tb
        tb = tb.tb_next
    return found


def user_location(tb: TracebackType | None = None) -> tuple[str, int] | None:
    """The innermost user frame of `tb`, or else the nearest user frame of the current stack."""
    entry = innermost_user_entry(tb)
    if entry is not None:
        return entry.tb_frame.f_code.co_filename, entry.tb_lineno
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if is_user_file(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None


@dataclass(frozen=True)
class Report:
    """One finding: what happened, where in the user's code, and what to do about it.

    kind: a stable identifier (`shape-mismatch`, `tracer-bool-conversion`, `recompilation`...).
    where: the user's line the report is about (a call site, the offending line).
    details: further lines, shown as they are. fix: the suggestion, one sentence or two.
    function, defined_at, parameter, expected, got, bindings: what a type-check report names
    (the function and its definition, the parameter or "return value", the annotation, what was
    received, the named dimensions' sizes); explanation: what the error means.
    error: "Type: first line" of the exception behind the report, if any.
    """

    kind: str
    title: str
    where: tuple[str, int] | None = None
    details: tuple[str, ...] = ()
    fix: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    function: str = ""
    defined_at: tuple[str, int] | None = None
    parameter: str = ""
    expected: str = ""
    got: str = ""
    bindings: tuple[tuple[str, int], ...] = ()
    explanation: str = ""
    error: str = ""

    def fields(self) -> list[tuple[str, str]]:
        """(label, value) rows shown under the title, in order, empty ones left out."""
        rows = []
        if self.function:
            defined = f"  (defined at {self.defined_at[0]}:{self.defined_at[1]})" if self.defined_at else ""
            rows.append(("function", self.function + defined))
        rows += [("parameter", self.parameter), ("expected", self.expected), ("got", self.got)]
        if self.bindings:
            rows.append(("dimensions", ", ".join(f"{name}={size}" for name, size in self.bindings)))
        return [(label, value) for label, value in rows if value]

    def text(self) -> str:
        lines = [f"raximport: {self.title}"]
        if self.where:
            lines.append(f"  at {self.where[0]}:{self.where[1]}")
        rows = self.fields()
        width = max((len(label) for label, _ in rows), default=0) + 1
        lines += [f"  {label + ':':<{width}} {value}" for label, value in rows]
        if self.explanation:
            lines.append(f"  {self.explanation}")
        lines += [f"  {detail}" for detail in self.details]
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form written by --report-json."""
        function = self.function or str(self.extra.get("function", "") or "")
        return {
            "kind": self.kind,
            "title": self.title,
            "function": function,
            "file": self.where[0] if self.where else None,
            "line": self.where[1] if self.where else None,
            "defined_at": {"file": self.defined_at[0], "line": self.defined_at[1]} if self.defined_at else None,
            "parameter": self.parameter,
            "expected": self.expected,
            "got": self.got,
            "bindings": dict(self.bindings),
            "explanation": self.explanation,
            "details": list(self.details),
            "suggestion": self.fix,
            "error": self.error,
            "extra": _jsonable(self.extra),
        }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        return repr(value)


# --- where reports go ---------------------------------------------------------------------------

# Every report of the run, by the --report-json file it goes to (the config that made it names it).
_shown: dict[str, list[dict[str, Any]]] = {}
_exit_code: list[int] = []


def write_json(path: str | None, exit_code: int | None = None) -> None:
    """Write every report of this run for `path` to that file (atomically; again after each report)."""
    if exit_code is not None:
        _exit_code[:] = [exit_code]
    if not path:
        return
    reports = _shown.setdefault(path, [])
    document = {"version": JSON_VERSION, "exit_code": _exit_code[0] if _exit_code else None, "reports": reports}
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        # mkstemp: a new file (O_EXCL), so a symlink planted at a guessable name redirects nothing.
        fd, temp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        try:
            if hasattr(os, "fchmod"):  # mkstemp's 0600 -> the mode open() would give, for CI to read
                umask = os.umask(0o077)  # read it; meanwhile other threads' new files are only stricter
                os.umask(umask)
                os.fchmod(fd, 0o666 & ~umask)
            with os.fdopen(fd, "w") as fh:
                json.dump(document, fh, indent=2)
                fh.write("\n")
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError as exc:
        note(f"cannot write the report file {path}: {exc}")


def record(json_path: str | None, *reports: Report | dict[str, Any]) -> None:
    """Add reports to the JSON file `json_path` without showing them: a test's report, which pytest
    shows in the test's failure section, and a pytest-xdist worker's reports, which arrive as JSON."""
    if json_path:
        _shown.setdefault(json_path, []).extend(r.to_json() if isinstance(r, Report) else r for r in reports)
        write_json(json_path)


def recorded(json_path: str) -> list[dict[str, Any]]:
    """The reports of this process for the JSON file `json_path` so far (a pytest-xdist worker's, for
    the controller's file)."""
    return list(_shown.get(json_path, []))


def use_rich(stream: TextIO | None = None) -> bool:
    """Rich formatting on a terminal; plain text when `stream` (stderr by default) is not one or
    NO_COLOR is set."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return (stream or sys.stderr).isatty()
    except (AttributeError, ValueError):
        return False


# Every note of this process, for the pytest plugin to repeat after the run: pytest's output
# capture hides what was printed while modules were collected.
_notes: list[str] = []


def note(message: str) -> None:
    """One line of verbose or status output, on stderr so that it never mixes with the script's."""
    _notes.append(message)
    sys.stderr.write(f"raximport: {message}\n")
    sys.stderr.flush()


def notes() -> list[str]:
    """The notes of this process so far."""
    return list(_notes)


_noted: set[str] = set()


def note_once(message: str, key: str | None = None) -> None:
    """`note`, at most once per `key` (default: the message) in a process: a failure that would
    repeat at every step, or for every function, is said once."""
    key = message if key is None else key
    if key not in _noted:
        _noted.add(key)
        note(message)


def show(report: Report, traceback_lines: Sequence[str] = (), *, json_path: str | None = None) -> None:
    """Print a report on stderr (after the traceback behind it, if any) and record it for the JSON
    file `json_path` (the --report-json of the config that made the report).

    A report of kind "error" (an exception raximport has nothing to add to) shows the traceback only.
    """
    if json_path:
        _shown.setdefault(json_path, []).append(report.to_json())
    sys.stdout.flush()
    sys.stderr.flush()
    body = report.kind != "error"
    if use_rich():
        try:
            _show_rich(report if body else None, traceback_lines)
        except Exception:  # a broken terminal library must not hide the report
            _show_plain(report if body else None, traceback_lines)
    else:
        _show_plain(report if body else None, traceback_lines)
    write_json(json_path)


def _show_plain(report: Report | None, traceback_lines: Sequence[str]) -> None:
    text = "".join(line if line.endswith("\n") else line + "\n" for line in traceback_lines)
    if report is not None:
        text += ("\n" if traceback_lines else "") + report.text() + "\n"
    sys.stderr.write(text)
    sys.stderr.flush()


def _show_rich(report: Report | None, traceback_lines: Sequence[str]) -> None:
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console(stderr=True, highlight=False, soft_wrap=False)
    for line in traceback_lines:
        line = line.rstrip("\n")
        stripped = line.lstrip()
        if stripped.startswith("File "):
            console.print(Text(line, style="cyan"))
        elif stripped.startswith("…"):
            console.print(Text(line, style="dim italic"))
        elif line and not line.startswith(" "):
            console.print(Text(line, style="bold red" if ":" in line and not line.startswith("Traceback") else "bold"))
        else:
            console.print(Text(line))
    if report is None:
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    if report.where:
        grid.add_row("at", Text(f"{report.where[0]}:{report.where[1]}", style="cyan"))
    for label, value in report.fields():
        grid.add_row(label, Text(value, style="yellow" if label in ("got", "expected") else ""))
    parts: list[Any] = [grid]
    if report.explanation:
        parts.append(Text(report.explanation))
    if report.details:
        parts.append(Text("\n".join(report.details), style="dim"))
    if report.fix:
        parts.append(Text.assemble(("fix: ", "bold green"), (report.fix, "green")))
    console.print(Panel(Group(*parts), title=Text(f"raximport: {report.title}", style="bold red"),
                        title_align="left", subtitle=report.kind, subtitle_align="right", border_style="red"))
