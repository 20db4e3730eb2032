"""Batch work that makes millions of short-lived objects (ast.parse for `rax lint`, JAX tracing and
lowering for `rax ir generate`): reference counting frees them, and CPython's cyclic GC, run every
700 new objects by default, would walk them again and again for nothing (mypy raises it too)."""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

GC_THRESHOLD = 200_000  # young objects between two collections while collecting rarely


@contextlib.contextmanager
def collecting_rarely() -> Iterator[None]:
    """Run the cyclic GC every GC_THRESHOLD new objects rather than every 700, then as before."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
