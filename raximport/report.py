"""Everything raximport shows a person goes through here."""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass, field
from types import FrameType, TracebackType

_RAXIMPORT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LIBRARY_DIRS = tuple(
    os.path.join(sysconfig.get_path(name), "") for name in ("stdlib", "platstdlib", "purelib", "platlib")
)


def is_user_file(filename: str) -> bool:
    """Not raximport, not the standard library or an installed package, not generated code."""
    return not (filename.startswith("<") or filename.startswith(_RAXIMPORT_DIR) or filename.startswith(_LIBRARY_DIRS)
                or "site-packages" in filename)


def user_location(tb: TracebackType | None = None) -> tuple[str, int] | None:
    """The innermost user frame of `tb`, or else the nearest user frame of the current stack."""
    found = None
    while tb is not None:
        if is_user_file(tb.tb_frame.f_code.co_filename):
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    if found:
        return found
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if is_user_file(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None


@dataclass(frozen=True)
class Report:
    """One finding: what happened, where in the user's code, and what to do about it."""

    kind: str
    title: str
    where: tuple[str, int] | None = None
    details: tuple[str, ...] = ()
    fix: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"raximport: {self.title}"]
        if self.where:
            lines.append(f"  at {self.where[0]}:{self.where[1]}")
        lines += [f"  {detail}" for detail in self.details]
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


def note(message: str) -> None:
    """One line of verbose or status output, on stderr so that it never mixes with the script's."""
    sys.stderr.write(f"raximport: {message}\n")
    sys.stderr.flush()


def show(report: Report) -> None:
    """Print a report on stderr."""
    sys.stderr.write(report.text() + "\n")
    sys.stderr.flush()
