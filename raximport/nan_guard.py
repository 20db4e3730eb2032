"""--nan-guard: stop at the first call of a jitted function whose outputs hold a NaN or an Inf.

The check is part of the compiled program: the traced function also returns one small int vector
(whether any floating output holds NaN or Inf, an id of the traced signature and, per floating
output leaf, a code: 1 NaN, 2 +Inf, 4 -Inf, or'd together), so nothing is traced or compiled twice. `guard` puts a thin function around that jitted
program: it hands the user their outputs, counts the call, remembers the caller's line, and reads
the vector of the previous call, which by then has finished or is about to: the device already
holds this call's work, so waiting for the previous one never leaves it idle, and dispatch stays
asynchronous. The last call of each function is read when the script ends. Unlike
`jax_debug_nans`, which re-runs the failing computation op by op to find the operation, the guard
only looks at outputs, so it costs a few reductions per step; the report says how to find the op.

JAX is imported by `guard`, on the first jit under the guard; the runner asks `check_pending`
only if this module was imported.
"""

from __future__ import annotations

import atexit
import functools
import sys
import weakref
from types import CodeType
from typing import TYPE_CHECKING, Any, Callable

from raximport import jax_internals
from raximport.errors import RaxNonFiniteError
from raximport.failsafe import stepped_aside
from raximport.provenance import RAXIMPORT_DIR
from raximport.report import Report, defined_at, function_name, show

if TYPE_CHECKING:
    from raximport.config import Config

NAN, POS_INF, NEG_INF = 1, 2, 4
_WHAT = ((NAN, "NaN"), (POS_INF, "+Inf"), (NEG_INF, "-Inf"))
LEAVES_SHOWN = 8


class _Watch:
    """The calls of one guarded function: how many, the last one not read yet, and the output paths
    of each traced signature (the vector's second entry says which)."""

    def __init__(self, fun: Callable[..., Any], config: "Config") -> None:
        self.fun = fun
        self.config = config
        self.calls = 0
        self.pending: tuple[Any, int, CodeType, int] | None = None  # (flags, call number, code, lasti)
        self.signatures: list[list[str]] = []  # per traced signature: its floating output leaves' paths
        self.on_host = True  # the flags live in host memory (CPU): no asynchronous copy to ask for

    def flags(self, out: Any, updated: dict[str, Any] | None = None) -> Any:
        """The vector for `out` and the `updated` state of modules the call changed in place (by
        argument name), in the program being traced: [any bad, signature id, code per floating
        leaf]; the host looks at its first entry only, unless that says to read on.
        One sum per leaf is all a healthy step pays: a sum is finite when every element is, so the
        codes are worked out only when a sum is not (lax.cond runs one branch), and they alone say
        whether the call was bad: a sum that overflowed costs that branch, never a false report.
        (The sums of `x * 0`, never overflowing, cost 40% more on XLA CPU: a multiply-reduce loop
        where a plain sum is a library reduction.)"""
        import jax
        import jax.numpy as jnp
        from jax import lax

        paths, leaves = [], []
        named = [("", out), *(updated or {}).items()]
        for name, tree in named:
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
                try:
                    dtype = jnp.result_type(leaf)
                except TypeError:  # not a JAX value: jit itself says so
                    continue
                if jnp.issubdtype(dtype, jnp.inexact):
                    paths.append(name + _path(path) if name else _path(path))
                    leaves.append(jnp.asarray(leaf))
        self.signatures.append(paths)
        signature = jnp.array([len(self.signatures) - 1], jnp.int32)
        if not leaves:
            return jnp.concatenate([jnp.zeros(1, jnp.int32), signature])
        sums = [jnp.sum(leaf, dtype=jnp.promote_types(leaf.dtype, jnp.float32)) for leaf in leaves]
        suspect = ~jnp.isfinite(jnp.stack(sums)).all()
        codes = lax.cond(suspect, lambda xs: jnp.stack([_code(x) for x in xs]),
                         lambda xs: jnp.zeros(len(xs), jnp.int32), leaves)
        bad = (codes != 0).any()
        return jnp.concatenate([bad.astype(jnp.int32)[None], signature, codes])

    def read(self, entry: tuple[Any, int, CodeType, int]) -> None:
        """Raise for a call whose outputs were not all finite."""
        import numpy as np

        flags, call, code, lasti = entry
        try:
            values = np.asarray(flags)
        except RuntimeError:  # spans other processes' devices: replicated, so this process's copy is whole
            values = np.asarray(flags.addressable_data(0))
        if values[0]:
            self.pending = None
            paths = self.signatures[int(values[1])]
            bad = [(paths[i], int(c)) for i, c in enumerate(values[2:]) if c]
            raise RaxNonFiniteError(nonfinite_report(self.fun, call, bad, len(paths), (code.co_filename, _line(code, lasti))))

    def finish(self) -> None:
        """Read the last call, if not read yet."""
        entry, self.pending = self.pending, None
        if entry is not None:
            self.read(entry)


_WATCHES: "weakref.WeakSet[_Watch]" = weakref.WeakSet()


def guard(traced: Callable[..., Any], fun: Callable[..., Any], config: "Config", options: dict[str, Any]) -> Callable[..., Any]:
    """`traced`, jitted with `options`, guarded: a function with the jitted object's API (`lower`,
    `trace`, `eval_shape` are those of the same jit without the guard, so what they return is the
    user's program)."""
    import jax

    watch = _Watch(fun, config)
    plain = jax.jit(traced, **options)
    if "out_shardings" in options:  # the vector: unspecified (replicated), the user's outputs as given
        options = {**options, "out_shardings": (options["out_shardings"], None)}
    jitted = jax.jit(_flagged(traced, watch), **options)
    guarded = _calling(jitted, watch)

    def clear_cache() -> None:
        jitted.clear_cache()
        plain.clear_cache()

    guarded.__wrapped__ = traced  # type: ignore[attr-defined]  # as JAX's own object: inspect.unwrap reaches fun
    guarded.lower = plain.lower  # type: ignore[attr-defined]
    guarded.trace = plain.trace  # type: ignore[attr-defined]
    guarded.eval_shape = plain.eval_shape  # type: ignore[attr-defined]
    guarded.clear_cache = clear_cache  # type: ignore[attr-defined]
    guarded._cache_size = jitted._cache_size  # type: ignore[attr-defined]  # the programs that run, one per signature
    return guarded


def guard_library(library_jit: Callable[..., Any], traced: Callable[..., Any], fun: Callable[..., Any],
                  config: "Config", options: dict[str, Any]) -> Callable[..., Any]:
    """`traced` under a library's jit (`eqx.filter_jit`, `nnx.jit`), guarded. Under nnx.jit a step
    updates its modules in place: their new state is checked with the outputs."""
    watch = _Watch(fun, config)
    guarded = _calling(library_jit(_flagged(traced, watch, modules=True), **options), watch)
    guarded.__wrapped__ = traced  # type: ignore[attr-defined]
    return guarded


def _flagged(traced: Callable[..., Any], watch: _Watch, modules: bool = False) -> Callable[..., Any]:
    """`traced`, also returning the guard's vector for its outputs (and, with `modules`, for the
    state of the Flax NNX modules among its arguments, as the call left them)."""

    @functools.wraps(traced)
    def flagged(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        out = traced(*args, **kwargs)
        try:
            return out, watch.flags(out, _module_states(watch.fun, args, kwargs) if modules else None)
        except Exception as exc:  # outputs the guard cannot read: this signature runs unguarded
            import jax.numpy as jnp

            stepped_aside("the NaN guard", function_name(watch.fun), exc, watch.config)
            return out, jnp.zeros(2, jnp.int32)

    return flagged


def _module_states(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The state of each Flax NNX module or optimizer among the arguments, by parameter name."""
    nnx = sys.modules.get("flax.nnx")
    is_node = getattr(getattr(nnx, "graph", None), "is_graph_node", None)
    if is_node is None:
        return {}
    from raximport.jit import arguments_by_name

    named = arguments_by_name(fun, args, kwargs)
    spread = {}  # `*args` and `**kwargs` parameters: their items, each by its own name
    for name, value in named.items():
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (tuple, list)) else ()
        spread.update({f"{name}[{key!r}]": item for key, item in items} or {name: value})
    return {name: nnx.state(value) for name, value in spread.items() if is_node(value)}


def _calling(jitted: Callable[..., Any], watch: _Watch) -> Callable[..., Any]:
    """The function the user calls: runs `jitted` (which returns the outputs and the guard's vector),
    counts the call, and reads the previous call's vector."""
    outside_trace = jax_internals.trace_state_clean_check()
    _check_at_exit_registered()
    _WATCHES.add(watch)

    @functools.wraps(watch.fun)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if not outside_trace():  # inside jit, grad, vmap: part of that program, not a call of its own
            return jitted(*args, **kwargs)[0]
        out, flags = jitted(*args, **kwargs)
        frame = sys._getframe(1)
        while frame.f_code.co_filename.startswith(RAXIMPORT_DIR) and frame.f_back is not None:  # auto-jit's
            frame = frame.f_back
        watch.calls += 1
        previous, watch.pending = watch.pending, (flags, watch.calls, frame.f_code, frame.f_lasti)
        if not watch.on_host:
            flags.copy_to_host_async()
        elif watch.calls == 1:
            watch.on_host = all(d.platform == "cpu" for d in flags.devices())
        if previous is not None:
            watch.read(previous)
        if flags.is_ready():  # finished already (a small step on CPU): no need to wait for the next call
            watch.pending = None
            watch.read((flags, watch.calls, frame.f_code, frame.f_lasti))
        return out

    return guarded


def check_pending() -> None:
    """Read the last call of every guarded function (the script has ended): raise for a bad one."""
    for watch in list(_WATCHES):
        watch.finish()


@functools.cache
def _check_at_exit_registered() -> None:
    atexit.register(_check_at_exit)


def _check_at_exit() -> None:
    """For a script run without raximport's runner (raximport.install() in it): report at exit."""
    for watch in list(_WATCHES):
        try:
            watch.finish()
        except RaxNonFiniteError as exc:
            show(exc.report, json_path=watch.config.report_json)
            return


def _code(x: Any) -> Any:
    """NAN | POS_INF | NEG_INF, as found anywhere in `x` (one fused pass over it)."""
    import jax.numpy as jnp
    from jax import lax

    if jnp.iscomplexobj(x):
        return _code(x.real) | _code(x.imag)
    codes = jnp.where(jnp.isfinite(x), 0, jnp.where(jnp.isnan(x), NAN, jnp.where(x > 0, POS_INF, NEG_INF)))
    return lax.reduce(codes.astype(jnp.int32), jnp.int32(0), lax.bitwise_or, tuple(range(codes.ndim)))


def _path(path: tuple[Any, ...]) -> str:
    import jax

    try:
        return jax.tree_util.keystr(path) or "(the output)"
    except Exception:  # a node whose keys keystr cannot print
        return "".join(f"[{key!r}]" for key in path)


def _line(code: CodeType, lasti: int) -> int:
    """The line of the instruction at `lasti` (the call), read only for a report."""
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def nonfinite_report(fun: Callable[..., Any], call: int, bad: list[tuple[str, int]], floating: int,
                     where: tuple[str, int]) -> Report:
    """The report for the `call`th call of `fun`, whose output leaves `bad` (path, code) were not finite."""
    found = [(path, ", ".join(word for bit, word in _WHAT if code & bit)) for path, code in bad]
    kinds = ", ".join(word for bit, word in _WHAT if any(code & bit for _, code in bad))
    lines = [f"{path}: {what}" for path, what in found[:LEAVES_SHOWN]]
    if len(found) > LEAVES_SHOWN:
        lines.append(f"... and {len(found) - LEAVES_SHOWN} more")
    name = function_name(fun)
    earlier = f"its {call - 1} earlier call{'s' if call > 2 else ''} returned finite values; " if call > 1 else ""
    return Report(
        kind="non-finite",
        title=f"{name} returned {kinds} at its {ordinal(call)} call",
        where=where,
        function=name,
        defined_at=defined_at(fun),
        explanation=(f"--nan-guard checks the outputs of every call of a jitted function: {earlier}this one has "
                     f"{len(found)} of {floating} floating output{'s' if floating > 1 else ''} with {kinds}:"),
        details=tuple(lines),
        fix=("in a training step this is usually divergence: lower the learning rate, clip gradients "
             "(optax.clip_by_global_norm), or look for a NaN or Inf in that call's inputs (the data, a "
             "division by zero, log of 0). To find the operation that made it, run again with --debug-nans "
             "(JAX then re-runs op by op and stops at the first NaN: slow, for finding, not for training)"),
        extra={"function": name, "call": call, "leaves": dict(found)},
    )
