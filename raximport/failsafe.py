"""raximport's own failure is never the user's failure.

Where raximport's machinery cannot act (the rewrite, static detection, auto-jit, the recompilation
watch, the memory check, building a report), the program goes on as plain JAX would run it and one
note names the stage; `strict` (`--strict`, for CI) turns that note into a `RaxInternalError`, so
that a check that silently did not happen fails the build instead. Stdlib only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raximport.errors import RaxInternalError
from raximport.report import note_once

if TYPE_CHECKING:
    from raximport.config import Config


def stepped_aside(stage: str, what: str, exc: BaseException, config: "Config") -> None:
    """`stage` failed for `what`, which goes on without it: say so once per stage (the first
    failure stands for the rest), or raise under strict."""
    message = f"{stage} failed for {what}, which runs as plain JAX ({type(exc).__name__}: {exc})"
    if config.strict:
        raise RaxInternalError(f"{message}; --strict makes this an error") from exc
    note_once(message, key=stage)
