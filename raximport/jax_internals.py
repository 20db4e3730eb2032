"""The private JAX API raximport relies on, in one place, written for jax 0.10.2.

Only two questions need JAX's internals (`jax._src.core`): is any trace in progress (auto-jit asks
on every call), and was the jit being traced called from plain Python (the memory check asks once
per compiled signature). Each answer falls back on JAX's public API for libraries,
`jax.extend.core.take_current_trace`, which is slower (it swaps the current trace in and out). If
that has moved too, raximport warns once (RaxWarning) and steps aside: auto-jit runs functions as
plain Python, the memory check is skipped. JAX is imported on the first question, not before.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Callable

from raximport.errors import RaxWarning

WRITTEN_FOR = "0.10.2"  # the jax version whose private names these are


def is_top_level_trace() -> bool:
    """Whether the jit being traced was called from plain Python (not inside jit, grad or vmap)."""
    return _top_level_check()()


@functools.cache
def trace_state_clean_check() -> Callable[[], bool]:
    """The function that says True outside any JAX trace (jit, grad, vmap...): JAX's own, which a
    caller asking on every call (auto-jit) keeps, rather than calling through this module."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:
        return _public_check(_is_eval_trace, "jax._src.core.trace_state_clean",
                             "auto-jit is off (annotated functions run as plain Python)")
    return trace_state_clean


@functools.cache
def _top_level_check() -> Callable[[], bool]:
    try:
        from jax._src.core import EvalTrace, trace_ctx
    except ImportError:
        return _public_check(lambda trace: _is_eval_trace(getattr(trace, "parent_trace", None)),
                             "jax._src.core.trace_ctx", "the memory check before each new step is off")

    def private() -> bool:
        return isinstance(getattr(trace_ctx.trace, "parent_trace", None), EvalTrace)

    return private


def _is_eval_trace(trace: object) -> bool:
    """JAX's trace outside any transformation: operations run as they are called."""
    return type(trace).__name__ == "EvalTrace"


def _public_check(test: Callable[[object], bool], private_name: str, consequence: str) -> Callable[[], bool]:
    """`test` of the current trace through JAX's public API; if that has moved too, always False
    (the feature steps aside) and one warning saying what is off."""
    try:
        from jax.extend.core import take_current_trace
    except ImportError:
        version = getattr(sys.modules.get("jax"), "__version__", "?")
        warnings.warn(f"raximport was written for jax {WRITTEN_FOR}; jax {version} has neither {private_name} nor "
                      f"jax.extend.core.take_current_trace, so {consequence}. Upgrade raximport, or report it.",
                      RaxWarning, stacklevel=2)
        return lambda: False

    def check() -> bool:
        with take_current_trace() as trace:
            return test(trace)

    return check
