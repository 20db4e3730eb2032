"""raximport's own exception and warning types."""

from __future__ import annotations

from typing import Any


class RaxWarning(UserWarning):
    """Something raximport could not do; the code runs on, unchecked where it says so."""


class RaxInternalError(RuntimeError):
    """raximport's own machinery failed and `strict` is on (otherwise it is a note and the code
    runs as plain JAX would)."""


class RaxOutOfMemoryError(MemoryError):
    """A compiled step would not fit in memory; raised before it runs (donated inputs are intact).

    Attributes: `report` (what to show), `predicted_peak`, `budget`, `in_use` (bytes),
    `suggested_batch_size` (None when no batch axis is found or no batch size fits), `fixes`.
    """

    def __init__(self, report: Any, analysis: Any, fixes: list[Any]) -> None:
        super().__init__(report.title)
        self.report = report
        self.analysis = analysis
        self.fixes = fixes
        self.predicted_peak: int = analysis.peak
        self.budget: int = analysis.budget.limit
        self.in_use: int = analysis.budget.in_use
        self.suggested_batch_size: int | None = report.extra.get("suggested_batch_size")

    def __str__(self) -> str:
        """One line: the report itself is rendered beside the traceback."""
        return f"{self.report.title}; {self.report.fix}" if self.report.fix else self.report.title


class RaxNonFiniteError(FloatingPointError):
    """--nan-guard: a call of a jitted function returned NaN or Inf. `report` names the function,
    which call, the output leaves and what they held, the user's line and the fix."""

    def __init__(self, report: Any) -> None:
        super().__init__(report.title)
        self.report = report
