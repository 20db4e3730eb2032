"""Refuse an out-of-memory step before it runs, and say which batch size fits.

On the first trace of each top-level compiled signature (see jit.py), the same function is lowered
and compiled with abstract inputs, and XLA's `memory_analysis()` of that executable is held against
the budget: the device's `bytes_limit`, or on CPU what the process may still take (available
memory, the cgroup limit, `--memory-limit`). A step that would not fit raises
`RaxOutOfMemoryError` before anything executes: donated inputs are still alive. The fixes are found
by compiling again at other sizes of the axis the annotations call `batch` (temporaries are affine
in it for a fixed sequence length): two sizes, solve, then verify the answer with one more compile.
With the persistent compilation cache each of those compiles is cheap on the next run.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import threading
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from raximport import jax_internals
from raximport.errors import RaxOutOfMemoryError
from raximport.failsafe import stepped_aside
from raximport.report import Report, function_name, user_location

if TYPE_CHECKING:
    from raximport.config import Config

MiB = 2**20
# Measured on CPU (FACTS.md, and scripts/bench_memory.py): the first execution of a step adds
# 16-55 MiB beyond temp + output - alias (allocator pools, thread stacks, runtime buffers).
CPU_RUNTIME_OVERHEAD = 32 * MiB
# A step is refused when its predicted peak is above this fraction of the budget: it covers the
# spread of that overhead and of the allocator (bench_memory.py measures the prediction's error).
SAFETY_FRACTION = 0.97
BATCH_NAMES = ("batch",)


def format_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# --- the budget ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What a step may use: `limit` bytes in all, of which `in_use` are already held."""

    limit: int
    in_use: int
    source: str
    platform: str = "cpu"

    @property
    def usable(self) -> int:
        return int(self.limit * SAFETY_FRACTION)


def current_rss() -> int:
    """This process's resident memory now (not its peak)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: peak is the best we have
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def host_free() -> tuple[int, str]:
    """Bytes the host can still give this process: MemAvailable, and the cgroup's headroom if lower."""
    free, source = 0, "MemAvailable"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        source = "free physical pages"
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2**60 and limit - usage < free:
            free, source = max(0, limit - usage), "the container's memory limit (cgroup)"
    return free, source


def budget(config: "Config", device: Any) -> Budget:
    """The budget for one device: an explicit limit wins (named by where it was set: install(),
    RAX_MEMORY_LIMIT, pyproject.toml or --memory-limit); else the device's own, else the host's."""
    platform = device.platform
    stats = device.memory_stats() if platform != "cpu" else None
    in_use = stats.get("bytes_in_use", 0) if stats else current_rss()
    if config.memory_limit is not None:
        return Budget(config.memory_limit, in_use, f"memory_limit from {config.origin('memory_limit')}", platform)
    if stats and stats.get("bytes_limit"):
        return Budget(stats["bytes_limit"], in_use, f"{device.device_kind} bytes_limit", platform)
    free, source = host_free()
    return Budget(in_use + free, in_use, source, platform)


# --- what a step needs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """XLA's memory analysis of one executable, per device, in bytes."""

    arguments: int
    outputs: int
    aliased: int
    temps: int
    code: int

    @classmethod
    def of(cls, compiled: Any) -> "Footprint":
        m = jax_internals.memory_stats(compiled)
        return cls(m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                   m.temp_size_in_bytes, m.generated_code_size_in_bytes)

    @property
    def step(self) -> int:
        """Bytes the step adds to what is live before it: temporaries and new outputs."""
        return self.temps + self.outputs - self.aliased + self.code


def predict_peak(budget: Budget, footprint: Footprint, devices: int = 1) -> int:
    """Peak memory during the step. The footprint is per device: an accelerator has its own budget,
    while on CPU this process's `devices` devices (forced host devices) share the one host budget."""
    if budget.platform != "cpu":
        return budget.in_use + footprint.step
    return budget.in_use + footprint.step * devices + CPU_RUNTIME_OVERHEAD


# --- the check ----------------------------------------------------------------------------------


@dataclass
class Analysis:
    """One compiled signature held against its budget (the rows of --memory-report)."""

    function: str
    footprint: Footprint
    budget: Budget
    peak: int
    devices: int = 1

    @property
    def headroom(self) -> float:
        return 1.0 - self.peak / self.budget.limit


ANALYSES: list[Analysis] = []


@dataclass
class Step:
    """A jitted function at its first trace: how to compile it again at other input shapes."""

    fun: Callable[..., Any]
    options: dict[str, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    batch_axes: list[tuple[int | str, int]] = field(default_factory=list)
    batch_multiple: int = 1  # batch sizes must divide by this: the shards of the batch axis (mesh data axis)

    def compile(self, batch: int | None = None) -> Any:
        import jax

        args, kwargs = abstract_inputs(self.args, self.kwargs, self.batch_axes, batch)
        return jax.jit(self.fun, **self.options).lower(*args, **kwargs).compile()

    @property
    def batch(self) -> int | None:
        for where, axis in self.batch_axes:
            value = self.args[where] if isinstance(where, int) else self.kwargs[where]
            return int(value.shape[axis])
        return None


def abstract_inputs(
    args: tuple[Any, ...], kwargs: dict[str, Any], batch_axes: list[tuple[int | str, int]], batch: int | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Traced values as ShapeDtypeStructs (static ones as they are), with the batch axis set to `batch`."""
    import jax

    def abstract(value: Any, axis: int | None) -> Any:
        if not isinstance(value, (jax.core.Tracer, jax.ShapeDtypeStruct)):
            return value
        aval = value if isinstance(value, jax.ShapeDtypeStruct) else value.aval
        if not hasattr(aval, "shape") or not hasattr(aval, "dtype"):
            return None  # a value with no array type (a hijax Variable): nothing to re-lower with
        shape = list(aval.shape)
        if axis is not None and batch is not None:
            shape[axis] = batch
        return jax.ShapeDtypeStruct(tuple(shape), aval.dtype, weak_type=getattr(aval, "weak_type", False))

    axes = dict(batch_axes)
    new_args = tuple(jax.tree_util.tree_map(lambda v, i=i: abstract(v, axes.get(i)), a) for i, a in enumerate(args))
    new_kwargs = {k: jax.tree_util.tree_map(lambda v, k=k: abstract(v, axes.get(k)), v) for k, v in kwargs.items()}
    return new_args, new_kwargs


def find_batch_axes(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[int | str, int]]:
    """(argument position or name, axis) of every array argument whose annotation names a `batch` axis."""
    target = inspect.unwrap(fun)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = getattr(target, "__annotations__", {})
    try:
        names = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return []
    found: list[tuple[int | str, int]] = []
    for where, name in [*enumerate(names[: len(args)]), *((k, k) for k in kwargs)]:
        hint = hints.get(name)
        dims = getattr(hint, "dim_str", None)
        if isinstance(hint, str):  # a postponed annotation that could not be resolved: read its shape string
            quoted = re.findall(r"""["']([^"']*)["']""", hint)
            dims = quoted[-1] if quoted else None
        if not isinstance(dims, str):
            continue
        tokens = dims.split()
        for axis, token in enumerate(tokens):
            if token in BATCH_NAMES and not any(t.startswith(("*", "...")) for t in tokens[:axis]):
                found.append((where, axis))
    return found


@dataclass
class Expected:
    """A top-level trace whose program JAX is about to compile: checked when that compile is done."""

    name: str  # JAX's name for the program: "jit(step)"
    fun: Callable[..., Any]
    options: dict[str, Any]
    args: tuple[Any, ...]  # traced values as ShapeDtypeStructs, static ones as they are
    kwargs: dict[str, Any]
    config: "Config"


_expected = threading.local()


def expect_compile(traced: Callable[..., Any], fun: Callable[..., Any], options: dict[str, Any],
                   args: tuple[Any, ...], kwargs: dict[str, Any], config: "Config") -> None:
    """Called while `jax.jit(traced)` traces a new signature from plain Python: when JAX then
    compiles that program for the call (or loads it from its persistent cache), its memory is held
    against the budget before it runs. Nothing is traced or compiled again, so the program checked
    is the one that runs: its shardings, Refs, donation and layouts are JAX's own."""
    if not jax_internals.on_compile(_on_compile):
        return
    try:
        abstract_args, abstract_kwargs = abstract_inputs(args, kwargs, [], None)
    except Exception as exc:  # raximport's failure is never the user's: the step runs unchecked
        stepped_aside("the memory check (reading the arguments)", function_name(fun), exc, config)
        return
    name = f"jit({getattr(traced, '__name__', '')})"
    _expected.value = Expected(name, fun, options, abstract_args, abstract_kwargs, config)


def _on_compile(name: str, executable: Any) -> None:
    expected = getattr(_expected, "value", None)
    if expected is None or expected.name != name:
        return  # another program (an eager op, a jit raximport did not make)
    _expected.value = None
    try:
        footprint = Footprint.of(executable)
    except Exception:
        return  # the check is a service: if XLA cannot analyse the program, it runs as is
    try:
        check_compiled(expected.fun, expected.options, expected.args, expected.kwargs, footprint,
                       _device_count(executable), expected.config)
    except RaxOutOfMemoryError:
        raise
    except Exception as exc:  # raximport's failure is never the user's: the step runs unchecked
        stepped_aside("the memory check", function_name(expected.fun), exc, expected.config)


def check_compiled(fun: Callable[..., Any], options: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                   footprint: Footprint, devices: int, config: "Config") -> Analysis:
    """Hold one compiled signature against the budget; raise RaxOutOfMemoryError if it cannot fit.
    `args` and `kwargs` are the call's, traced values as ShapeDtypeStructs."""
    import jax

    plan = budget(config, jax.devices()[0])
    analysis = Analysis(function_name(fun), footprint, plan, predict_peak(plan, footprint, devices), devices)
    ANALYSES.append(analysis)
    if analysis.peak <= plan.usable:
        return analysis
    step = Step(fun, options, args, kwargs, find_batch_axes(fun, args, kwargs))
    step.batch_multiple = _batch_shards(step)
    fixes = find_fixes(step, analysis, args, kwargs)
    raise RaxOutOfMemoryError(oom_report(analysis, fixes, step, args, kwargs), analysis, fixes)


def _device_count(executable: Any) -> int:
    """This process's devices that the executable runs on (the footprint is per device)."""
    import jax

    try:
        shardings = jax_internals.input_shardings(executable)
        local = [{d for d in s.device_set if d.process_index == jax.process_index()} for s in shardings]
        return max((len(devices) for devices in local), default=1) or 1
    except Exception:
        return 1


def _batch_shards(step: Step) -> int:
    """How many pieces the batch axis is split into (the data axis of a mesh): a batch size must
    divide by it. 1 when unsharded or unknown. Only a refused step asks (from a compile of its own)."""
    import jax

    if not step.batch_axes:
        return 1
    try:
        args_shardings, kwargs_shardings = step.compile().input_shardings
        for where, axis in step.batch_axes:
            value = step.args[where] if isinstance(where, int) else step.kwargs[where]
            sharding = args_shardings[where] if isinstance(where, int) else kwargs_shardings[where]
            if not isinstance(sharding, jax.sharding.Sharding):
                continue
            shape = tuple(value.shape)
            return max(1, shape[axis] // sharding.shard_shape(shape)[axis])
    except Exception:
        pass
    return 1



# --- fixes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fix:
    """One way to fit, with the memory it is predicted to need (None: not estimated)."""

    action: str
    predicted: int | None
    exact: bool = True
    batch_size: int | None = None


class BatchFit:
    """Predicted peak as a function of the batch size: affine, from compiles at two sizes."""

    def __init__(self, step: Step, analysis: Analysis) -> None:
        self.step, self.analysis = step, analysis
        self.batch = step.batch or 0
        self.multiple = max(1, step.batch_multiple)  # every size tried divides by the data axis
        self.peaks: dict[int, int] = {self.batch: analysis.peak}
        self.small = self.round_down(max(self.multiple, self.batch // 8))
        self.slope = (self.peak(self.batch) - self.peak(self.small)) / (self.batch - self.small)

    def peak(self, b: int) -> int:
        """The predicted peak at batch `b`, from a real compile."""
        if b not in self.peaks:
            footprint = Footprint.of(self.step.compile(b))
            self.peaks[b] = predict_peak(self.analysis.budget, footprint, self.analysis.devices)
        return self.peaks[b]

    def estimate(self, b: int) -> int:
        """The predicted peak at batch `b`, from the fit alone."""
        return int(self.peaks[self.small] + self.slope * (b - self.small))

    def round_down(self, b: int) -> int:
        """b rounded down to a batch size the data axis divides."""
        return b // self.multiple * self.multiple

    def largest_fitting(self) -> int | None:
        """Solve the fit for the budget, then verify with a compile (stepping down if it disagrees).
        Only multiples of the data-axis size are tried: a sharded batch must split evenly."""
        usable = self.analysis.budget.usable
        if self.slope <= 0 or self.small >= self.batch:
            return None
        guess = self.round_down(
            min(self.batch - 1, math.floor(self.small + (usable - self.peaks[self.small]) / self.slope)))
        for _ in range(4):
            if guess < 1:
                return None
            if self.peak(guess) <= usable:
                return guess
            guess = self.round_down(min(guess - 1, math.floor(guess - (self.peak(guess) - usable) / self.slope)))
        return None


def find_fixes(step: Step, analysis: Analysis, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Fix]:
    fixes: list[Fix] = []
    fp = analysis.footprint
    if step.batch_axes and (step.batch or 0) >= 2:
        fit = BatchFit(step, analysis)
        best = fit.largest_fitting()
        if best:
            fixes.append(Fix(f"batch_size {step.batch} -> {best}", fit.peak(best), batch_size=best))
            accum = next((k for k in range(2, step.batch + 1) if step.batch % k == 0 and step.batch // k <= best
                          and (step.batch // k) % fit.multiple == 0), None)
        if best and accum:
            micro = step.batch // accum
            gradient_sums = _bytes_of(args[0]) if args else 0  # the accumulated gradients, like the params
            fixes.append(Fix(f"batch_size {step.batch} -> {micro} with gradient_accumulation_steps={accum} "
                             f"(the same {step.batch} samples per update)", fit.estimate(micro) + gradient_sums,
                             exact=False))
    if fp.aliased == 0:
        saved = _donatable_bytes(step, args, kwargs)
        if saved:
            fixes.append(Fix("donate the parameters and optimizer state (jax.jit(..., donate_argnums=...)) so "
                             "their updated copies reuse the same buffers", analysis.peak - saved, exact=False))
    if fp.temps:  # both act on the temporaries (activations) alone
        fixes.append(Fix("compute in bfloat16, keeping parameters in float32 (activations take about half)",
                         analysis.peak - fp.temps // 2, exact=False))
        fixes.append(Fix("rematerialise: jax.checkpoint around each block recomputes activations in the backward "
                         "pass instead of storing them", None, exact=False))
    return fixes


def _bytes_of(tree: Any) -> int:
    import jax

    return sum(int(math.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "dtype"))


def _donatable_bytes(step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Bytes of inputs that come back as outputs of the same shape and dtype (params, optimizer state)."""
    import jax

    try:
        out = jax.jit(step.fun, **step.options).eval_shape(*abstract_inputs(args, kwargs, [], None)[0], **kwargs)
    except Exception:
        return 0
    outs: dict[tuple[Any, ...], int] = {}
    for leaf in jax.tree_util.tree_leaves(out):
        outs[(leaf.shape, leaf.dtype)] = outs.get((leaf.shape, leaf.dtype), 0) + 1
    saved = 0
    for leaf in jax.tree_util.tree_leaves((args, kwargs)):
        key = (getattr(leaf, "shape", None), getattr(leaf, "dtype", None))
        if isinstance(leaf, jax.ShapeDtypeStruct) and outs.get(key, 0) > 0:
            outs[key] -= 1
            saved += int(math.prod(leaf.shape)) * leaf.dtype.itemsize
    return saved


# --- the report ---------------------------------------------------------------------------------

_CATEGORIES = (("parameters", re.compile("param|weight", re.I)), ("optimizer state", re.compile("opt", re.I)))


def breakdown(step: Step, footprint: Footprint, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, int]:
    """Where the bytes go: inputs by kind (from parameter names and batch axes), temporaries, outputs."""
    try:
        names = list(inspect.signature(inspect.unwrap(step.fun)).parameters)
    except (TypeError, ValueError):
        names = []
    batch_places = {where for where, _ in step.batch_axes}
    parts: dict[str, int] = {}
    for where, value in [*enumerate(args), *kwargs.items()]:
        name = names[where] if isinstance(where, int) and where < len(names) else str(where)
        kind = "batch" if where in batch_places else next(
            (label for label, pattern in _CATEGORIES if pattern.search(name)), "other inputs")
        parts[kind] = parts.get(kind, 0) + _bytes_of(value)
    parts["temporaries"] = footprint.temps
    parts["outputs (not reusing inputs)"] = footprint.outputs - footprint.aliased
    return {k: v for k, v in parts.items() if v}


def oom_report(analysis: Analysis, fixes: list[Fix], step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Report:
    plan = analysis.budget
    limit = format_bytes(plan.limit)
    details = [
        f"predicted peak {format_bytes(analysis.peak)} > budget {limit} ({plan.source}; "
        f"{format_bytes(plan.in_use)} already in use)",
        "where the bytes go:",
        *(f"  {kind}: {format_bytes(size)}" for kind, size in breakdown(step, analysis.footprint, args, kwargs).items()),
        *(["fixes:"] if fixes else []),
        *(f"  {fix.action}: {'about ' if not fix.exact else ''}{format_bytes(fix.predicted)} of {limit}"
          + ("" if fix.predicted <= plan.usable else " (not enough alone)")
          if fix.predicted is not None else f"  {fix.action}" for fix in fixes),
    ]
    best = next((f for f in fixes if f.batch_size), None)
    return Report(
        kind="out-of-memory",
        title=f"{analysis.function} would run out of memory: refused before running it",
        where=user_location(),
        details=tuple(details),
        fix=_main_fix(fixes, best, step, plan),
        extra={
            "function": analysis.function,
            "predicted_peak": analysis.peak,
            "budget": plan.limit,
            "in_use": plan.in_use,
            "budget_source": plan.source,
            "temps": analysis.footprint.temps,
            "outputs": analysis.footprint.outputs,
            "aliased": analysis.footprint.aliased,
            "arguments": analysis.footprint.arguments,
            "batch_size": step.batch,
            "suggested_batch_size": best.batch_size if best else None,
            "fixes": [{"action": f.action, "predicted": f.predicted, "exact": f.exact} for f in fixes],
        },
    )


def _main_fix(fixes: list[Fix], best: Fix | None, step: Step, plan: Budget) -> str:
    """The one fix to lead with: the batch that fits, else the first fix predicted to fit, else
    what no fix of the step can change (memory already held), else the first fix to combine."""
    limit = format_bytes(plan.limit)
    if best:
        return f"batch_size {step.batch} -> {best.batch_size} fits: {format_bytes(best.predicted or 0)} of {limit}"
    fitting = next((f for f in fixes if f.predicted is not None and f.predicted <= plan.usable), None)
    if fitting:
        return fitting.action
    if plan.in_use >= plan.usable:
        return (f"the process already holds {format_bytes(plan.in_use)}, more than the budget of {limit}, before "
                "this step allocates anything: free the arrays it no longer needs (del them, or donate them to "
                "the jitted step), or give it more memory (--memory-limit)")
    if not fixes:
        return ""
    return f"no single fix is predicted to fit: combine them, starting with: {fixes[0].action}"


def memory_table() -> Report:
    """--memory-report: every compiled function against its budget, as one table. Temps and outputs
    are per device; the peak is for the budget's owner: one accelerator, or on CPU the host, which
    holds every (forced) host device's share."""
    rows = [
        f"{a.function:<28} {format_bytes(a.footprint.temps):>10} {format_bytes(a.footprint.outputs - a.footprint.aliased):>10} "
        f"{format_bytes(a.peak):>10} {format_bytes(a.budget.limit):>10} {a.headroom * 100:>8.0f}% {a.devices:>8}"
        for a in ANALYSES
    ]
    header = (f"{'function':<28} {'temps':>10} {'outputs':>10} {'peak':>10} {'budget':>10} {'headroom':>9} "
              f"{'devices':>8}")
    multi = [a for a in ANALYSES if a.devices > 1]
    note = ((f"temps and outputs per device; on CPU the peak counts all {max(a.devices for a in multi)} host "
             "devices against the one host budget",) if multi else ())
    return Report(kind="memory-report", title="memory of each compiled function (predicted peak vs budget)",
                  details=(header, *rows, *note),
                  extra={"functions": [{"function": a.function, "temps": a.footprint.temps, "peak": a.peak,
                                        "budget": a.budget.limit, "headroom": a.headroom, "devices": a.devices,
                                        "in_use": a.budget.in_use,
                                        "step_per_device": a.footprint.step} for a in ANALYSES]})
