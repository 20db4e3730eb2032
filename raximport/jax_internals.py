"""The private JAX API raximport relies on, in one place, written for jax 0.10.2.

Two questions need JAX's internals (`jax._src.core`): is any trace in progress (auto-jit asks on
every call), and was the jit being traced called from plain Python (the memory check and IR
capture ask once per compiled signature). Each answer falls back on JAX's public API for
libraries, `jax.extend.core.take_current_trace`, which is slower (it swaps the current trace in
and out). Three sights have no public equivalent: the program JAX has just compiled for a call,
before it runs (`pxla.MeshComputation.compile`), which the memory check and IR capture read; the
jaxpr JAX lowered that program from (`pxla.lower_sharding_computation`); and a `jax.export`
artifact built from that same lowering (`_export._export_lowered`), which IR records hold; and
JAX's MLIR context factory (`mlir.make_ir_context`), which `rax ir generate` shares. If
what a feature needs has moved, raximport warns once (RaxWarning) and the feature steps aside:
auto-jit runs functions as plain Python, the memory check is skipped, the IR records lack the
jaxpr or the export. JAX is imported on the first question, not before.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

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


def _moved(names: str, consequence: str) -> None:
    version = getattr(sys.modules.get("jax"), "__version__", "?")
    warnings.warn(f"raximport was written for jax {WRITTEN_FOR}; jax {version} lacks {names}, so "
                  f"{consequence}. Upgrade raximport, or report it.", RaxWarning, stacklevel=3)


def _public_check(test: Callable[[object], bool], private_name: str, consequence: str) -> Callable[[], bool]:
    """`test` of the current trace through JAX's public API; if that has moved too, always False
    (the feature steps aside) and one warning saying what is off."""
    try:
        from jax.extend.core import take_current_trace
    except ImportError:
        _moved(f"{private_name} and jax.extend.core.take_current_trace", consequence)
        return lambda: False

    def check() -> bool:
        with take_current_trace() as trace:
            return test(trace)

    return check


# --- the programs JAX compiles ----------------------------------------------------------------

@dataclass(frozen=True)
class Compilation:
    """A program JAX has just compiled for a call (or loaded from its persistent cache)."""

    name: str  # JAX's: "jit(step)"
    computation: Any  # the MeshComputation compiled: its StableHLO module and compile arguments
    executable: Any  # the MeshExecutable that will run
    seconds: float  # how long the compile (or the cache load) took


CompileListener = Callable[[Compilation], None]
_compile_listeners: list[CompileListener] = []


def on_compile(listener: CompileListener) -> bool:
    """Call `listener(compilation)` each time JAX has compiled a program (or loaded it from its
    persistent cache) and before it runs: the one compile JAX makes for a call, never a second.
    An exception from the listener propagates to the call, so the memory check can refuse a step.
    Listeners are told in the order they were added. False, with one warning, if JAX's compile
    step has moved."""
    if listener in _compile_listeners:
        return True
    try:
        from jax._src.interpreters.pxla import MeshComputation
    except ImportError:
        _moved("jax._src.interpreters.pxla.MeshComputation", "the memory check and IR capture are off")
        return False
    if not _compile_listeners:
        compile_program = MeshComputation.compile

        @functools.wraps(compile_program)
        def compile_and_tell(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            executable = compile_program(self, *args, **kwargs)
            compilation = Compilation(getattr(self, "_name", ""), self, executable, time.perf_counter() - start)
            for tell in tuple(_compile_listeners):
                tell(compilation)
            return executable

        MeshComputation.compile = compile_and_tell
    _compile_listeners.append(listener)
    return True


T = TypeVar("T")


class NextCompile(Generic[T]):
    """What a compile listener expects of the next program this thread compiles: set while JAX
    traces a top-level call, taken by the compile of the program of that name (JAX's "jit(step)");
    another program's compile (an eager op, a jit raximport did not make) leaves it."""

    def __init__(self) -> None:
        self._local = threading.local()

    def expect(self, name: str, value: T) -> None:
        self._local.held = (name, value)

    def take(self, name: str) -> T | None:
        held = getattr(self._local, "held", None)
        if held is None or held[0] != name:
            return None
        self._local.held = None
        return held[1]


_lowered_from: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


@functools.cache
def remember_jaxprs() -> bool:
    """From now on, remember the ClosedJaxpr JAX lowers each jit program from, for `jaxpr_of`:
    JAX's own trace of the call, not a second one. False, with one warning, if that step moved."""
    try:
        from jax._src.interpreters import pxla

        lower = pxla.lower_sharding_computation
    except (ImportError, AttributeError):
        _moved("jax._src.interpreters.pxla.lower_sharding_computation", "IR records have no jaxpr")
        return False

    @functools.wraps(lower)
    def lower_and_remember(closed_jaxpr: Any, *args: Any, **kwargs: Any) -> Any:
        computation = lower(closed_jaxpr, *args, **kwargs)
        _lowered_from[computation] = closed_jaxpr
        return computation

    pxla.lower_sharding_computation = lower_and_remember
    return True


def jaxpr_of(computation: Any) -> Any:
    """The ClosedJaxpr `computation` was lowered from, if `remember_jaxprs` saw it; else None."""
    return _lowered_from.get(computation)


def input_avals(computation: Any) -> list[Any]:
    """The abstract values of a lowered program's flat inputs, unused ones included."""
    return list(computation.compile_args["all_args_info"].in_avals)


def export_artifact(computation: Any, jaxpr: Any) -> bytes | None:
    """`jax.export`'s serialized artifact of the program JAX lowered for a call, built from that
    lowering (no second trace, lowering or compile). Its inputs are the program's flat array
    inputs and it returns the flat outputs as a tuple. None, with one warning, if JAX's export
    internals moved."""
    try:
        from jax._src import stages, tree_util
    except ImportError:
        _moved("jax._src.stages", "IR records have no jax.export artifact")
        return None
    avals = input_avals(computation)
    in_tree = tree_util.tree_structure((tuple(avals), {}))
    args_info = in_tree.unflatten([stages.ArgInfo(aval, False) for aval in avals])
    out_tree = tree_util.tree_structure(tuple(computation.compile_args["global_out_avals"]))
    exported = export_lowered(stages.Lowered(computation, args_info, out_tree), jaxpr, computation._name)
    return None if exported is None else exported.serialize()


def export_lowered(lowered: Any, jaxpr: Any, name: str) -> Any:
    """The `jax.export.Exported` of a lowering JAX has made (`jax.stages.Lowered`), where
    `jax.export.export` would trace and lower the function again. None, with one warning, if
    JAX's export internals moved."""
    try:
        from jax._src.export._export import _export_lowered
    except ImportError:
        _moved("jax._src.export._export._export_lowered",
               "IR records have no jax.export artifact, or are exported by a second trace and lowering")
        return None
    return _export_lowered(lowered, jaxpr, name)


@contextlib.contextmanager
def shared_ir_contexts(uses: int) -> Iterator[None]:
    """Within the block, JAX's lowerings share one MLIR context, `uses` lowerings at a time, where
    each would load every dialect into a context of its own (JAX makes one to lower a program and
    another for `jax.export` to copy it into: ~10 ms a program on a 2-core CPU, which a generator of
    thousands of small programs pays thousands of times). A context keeps every attribute and type
    it has seen, hence the renewal. Only for a single-threaded process that lowers nothing else
    meanwhile: JAX's own contexts are per lowering so that threads do not share them. Without
    the private name (moved), lowerings make their own contexts, with one warning."""
    try:
        from jax._src.interpreters import mlir
    except ImportError:
        _moved("jax._src.interpreters.mlir", "each lowering makes its own MLIR context")
        yield
        return
    make = mlir.make_ir_context
    held: list[Any] = []
    served = itertools.count()

    def shared() -> Any:
        if next(served) % uses == 0:
            held[:] = [make()]
        return held[0]

    mlir.make_ir_context = shared
    try:
        yield
    finally:
        mlir.make_ir_context = make


def memory_stats(executable: Any) -> Any:
    """XLA's memory analysis of a compiled program (what `Compiled.memory_analysis()` returns)."""
    if hasattr(executable, "memory_analysis"):
        return executable.memory_analysis()
    return executable.xla_extension_executable().get_compiled_memory_stats()


def input_shardings(executable: Any) -> list[Any]:
    """The shardings of the inputs of a program `on_compile` was told of, flat."""
    return list(getattr(executable, "_in_shardings", ()))
