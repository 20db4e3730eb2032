"""Tracebacks a user can read: their own frames with source lines, library internals collapsed.

Frames inside jax, jaxlib, equinox, flax, optax, jaxtyping, beartype and raximport (and importlib's)
are folded into one line such as `… 7 frames in jax, jaxtyping hidden`; everything else is shown
as Python shows it. `full=True` (--verbose, RAX_TRACEBACK=full) gives Python's own, complete traceback. Builds text
only: report.py prints it.
"""

from __future__ import annotations

import linecache
import traceback
from types import TracebackType

from raximport.provenance import SILENT, hidden_owner

JAX_NOTE = "For simplicity, JAX has removed its internal frames"
SHOW_ALL_HINT = "--verbose or RAX_TRACEBACK=full shows them"


def chain(exc: BaseException, last_only: bool = False) -> list[BaseException]:
    """The exceptions Python would print for `exc`, oldest first; JAX's unfiltered copies left out."""
    found: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ != "UnfilteredStackTrace":
            found.append(current)
        if last_only:
            break
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    return found[::-1]


def exception_only(exc: BaseException, first_line_only: bool = False) -> list[str]:
    """`Type: message` (and notes) as Python prints them, without JAX's note about its frames."""
    notes = getattr(exc, "__notes__", None)
    kept = [n for n in notes if not (isinstance(n, str) and JAX_NOTE in n)] if isinstance(notes, list) else None
    if kept is not None:
        exc.__notes__ = kept
    try:
        lines = traceback.format_exception_only(type(exc), exc)
    finally:
        if kept is not None:
            exc.__notes__ = notes
    text = "".join(lines).rstrip("\n")
    if first_line_only and not isinstance(exc, SyntaxError):
        text = text.splitlines()[0] if text else type(exc).__name__
    return text.splitlines()


def frames(tb: TracebackType | None) -> list[str]:
    """One traceback's frames: user frames with their source line, hidden runs collapsed."""
    lines: list[str] = []
    run: list[str] = []
    hinted = False
    shown_any = False

    def flush() -> None:
        nonlocal hinted
        if not run:
            return
        owners = ", ".join(dict.fromkeys(run))
        count = len(run)
        hint = "" if hinted else f" ({SHOW_ALL_HINT})"
        hinted = True
        lines.append(f"  … {count} frame{'s' if count > 1 else ''} in {owners} hidden{hint}")
        run.clear()

    for frame, lineno in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        owner = hidden_owner(filename)
        if owner is not None:
            if shown_any and owner != SILENT:
                run.append(owner)
            continue
        flush()
        shown_any = True
        lines.append(f'  File "{filename}", line {lineno}, in {frame.f_code.co_name}')
        source = linecache.getline(filename, lineno, frame.f_globals).strip()
        if source:
            lines.append(f"    {source}")
    flush()
    return lines


def format_exception(exc: BaseException, *, full: bool = False, last_only: bool = False,
                     first_line_only: bool = False) -> list[str]:
    """The lines to print for `exc`: Python's own if `full`, else collapsed.

    last_only: only `exc`, not the exceptions it was raised from (raximport's report explains it);
    first_line_only: only the first line of its message (the report says the rest).
    """
    if full:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n").splitlines()
    lines: list[str] = []
    exceptions = [e for e in chain(exc, last_only) if e is exc or frames(e.__traceback__)]  # not pure internals
    for index, current in enumerate(exceptions):
        if index:
            cause = exceptions[index].__cause__ is exceptions[index - 1]
            lines += ["", "The above exception was the direct cause of the following exception:" if cause
                      else "During handling of the above exception, another exception occurred:", ""]
        body = frames(current.__traceback__)
        if body:
            lines.append("Traceback (most recent call last):")
            lines += body
        lines += exception_only(current, first_line_only and current is exc)
    return lines
