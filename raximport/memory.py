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

import ctypes
import functools
import inspect
import math
import os
import re
import typing
from collections.abc import Container, Iterator
from dataclasses import dataclass, field, replace
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
RUN_TO_RUN_DRIFT = 8 * 2**20  # how much a CPU process's resident memory before a step differs between runs


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

    @property
    def suggestible(self) -> int:
        """The peak a suggested fix aims under: on CPU a process's resident memory before the step
        differs by a few MB from run to run, so a fix sized to the last byte of `usable` may be
        refused when the user applies it; an accelerator's memory in use does not drift."""
        return self.usable - (max(self.limit // 100, RUN_TO_RUN_DRIFT) if self.platform == "cpu" else 0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


def current_rss() -> int:
    """This process's resident memory now (not its peak). Heap that glibc keeps after a compile frees
    it is handed back first: the step's buffers would reuse it, and how much of it stays resident
    varies by 10+ MB from run to run, which a prediction sized near the limit cannot absorb."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
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

    def peak_with(self, footprint: Footprint) -> int:
        """The predicted peak of this call compiled again at other shapes. The call's own arguments are
        part of the memory in use before it: this compile's arguments replace the analysed one's."""
        moved = _host_share(self) * (footprint.arguments - self.footprint.arguments)
        return predict_peak(replace(self.budget, in_use=self.budget.in_use + moved), footprint, self.devices)


ANALYSES: list[Analysis] = []


@dataclass
class Step:
    """A jitted function at its first trace: how to trace and compile it again at other input shapes."""

    fun: Callable[..., Any]
    options: dict[str, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    batch_axes: list[tuple[int | str, int]] = field(default_factory=list)
    batch_multiple: int = 1  # batch sizes must divide by this: the shards of the batch axis (mesh data axis)
    batch_origin: str = ""  # how the batch axis was found and checked, for the report (set by find_fixes)
    fixed_peak: int | None = None  # the predicted peak no batch size can lower (set by find_fixes)
    # the jit that traces the step again: jax.jit, or a library's own (nnx.jit: its program also
    # returns the modules the step updates in place, so its memory is the library's program's)
    jit: Callable[..., Any] | None = None
    _traces: dict[Any, Any] = field(default_factory=dict, repr=False)

    def trace(self, batch: int | None = None) -> Any:
        """The step traced at batch size `batch` (None: as called), once per size and batch axes:
        each trace runs the user's Python again."""
        import jax

        from raximport.jit import cut_stand_ins, whole

        key = None if batch is None else (tuple(self.batch_axes), batch)
        if key not in self._traces:
            args, kwargs = abstract_inputs(self.args, self.kwargs, self.batch_axes, batch)
            args, kwargs = tuple(map(cut_stand_ins, args)), {k: cut_stand_ins(v) for k, v in kwargs.items()}
            self._traces[key] = (self.jit or jax.jit)(whole(self.fun), **self.options).trace(*args, **kwargs)
        return self._traces[key]

    def compile(self, batch: int | None = None) -> Any:
        return self.trace(batch).lower().compile()

    @property
    def batch(self) -> int | None:
        """The batch size of the call: the first batch axis's size (an argument may be a dict of arrays)."""
        import jax

        for where, axis in self.batch_axes:
            value = self.args[where] if isinstance(where, int) else self.kwargs[where]
            for leaf in jax.tree_util.tree_leaves(value):
                if len(getattr(leaf, "shape", ())) > axis:
                    return int(leaf.shape[axis])
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
        if axis is not None and batch is not None and axis < len(shape):  # a scalar beside the batch stays
            shape[axis] = batch
        return jax.ShapeDtypeStruct(tuple(shape), aval.dtype, weak_type=getattr(aval, "weak_type", False))

    axes = dict(batch_axes)
    new_args = tuple(jax.tree_util.tree_map(lambda v, i=i: abstract(v, axes.get(i)), a) for i, a in enumerate(args))
    new_kwargs = {k: jax.tree_util.tree_map(lambda v, k=k: abstract(v, axes.get(k)), v) for k, v in kwargs.items()}
    return new_args, new_kwargs


def find_batch_axes(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[int | str, int]]:
    """(argument position or name, axis) of the batch: every axis the annotations call `batch`, else
    the likeliest axis inferred from the call (batch_guesses), which find_fixes checks by compiling."""
    annotated = annotated_batch_axes(fun, args, kwargs)
    if annotated:
        return annotated
    guesses = batch_guesses(fun, args, kwargs)
    return guesses[0].axes if guesses else []


def annotated_batch_axes(fun: Callable[..., Any], args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> list[tuple[int | str, int]]:
    """(argument position or name, axis) of every array argument whose annotation names a `batch` axis."""
    target = inspect.unwrap(fun)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = getattr(target, "__annotations__", {})
    names = _parameter_names(fun)
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


def _parameter_names(fun: Callable[..., Any]) -> list[str]:
    """The names of `fun`'s parameters, to name its arguments in reports (none if it has no signature)."""
    try:
        return list(inspect.signature(inspect.unwrap(fun)).parameters)
    except (TypeError, ValueError):
        return []


# names that mark an argument as parameters or state rather than data, for ranking batch guesses
_PARAMETER_NAMES = re.compile(r"param|weight|^w\d*$|opt|state|model|key|rng", re.I)


@dataclass(frozen=True)
class BatchGuess:
    """A leading axis that some arguments' arrays all share (the data) and the other arguments'
    arrays do not all share (the parameters): the batch axis of an unannotated step."""

    size: int
    data: tuple[int | str, ...]  # argument positions or names
    leaves: tuple[str, ...]  # the data's arrays as the user writes them: batch['image']
    others: tuple[str, ...]  # the arguments with arrays but without that axis: params, opt_state

    @property
    def axes(self) -> list[tuple[int | str, int]]:
        return [(where, 0) for where in self.data]

    def describe(self) -> str:
        others = f", and {', '.join(self.others)} {'do' if len(self.others) > 1 else 'does'} not" if self.others else ""
        return (f"axis 0 of {', '.join(self.leaves)} (size {self.size}), inferred from the call: the leading axis "
                f"the data shares{others}")


def batch_guesses(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[BatchGuess]:
    """Every leading size that all the arrays of some arguments share, likeliest batch first: data-like
    names before parameter-like ones (params, opt_state, key), more arrays first, later arguments first
    (data usually comes after the parameters). Scalars and static values are neither."""
    import jax

    names = _parameter_names(fun)
    places = [*enumerate(args), *kwargs.items()]
    labels: dict[int | str, str] = {}
    by_size: dict[int, list[int | str]] = {}
    leaf_names: dict[int | str, list[str]] = {}
    for where, value in places:
        label = names[where] if isinstance(where, int) and where < len(names) else str(where)
        flat = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]
                if len(getattr(leaf, "shape", ())) >= 1]
        if not flat:
            continue
        labels[where] = label
        sizes = {int(leaf.shape[0]) for _, leaf in flat}
        if len(sizes) == 1 and (size := sizes.pop()) >= 2:
            by_size.setdefault(size, []).append(where)
            leaf_names[where] = [label + jax.tree_util.keystr(path) for path, _ in flat]
    order = {where: i for i, (where, _) in enumerate(places)}
    guesses = [BatchGuess(size, tuple(data), tuple(n for w in data for n in leaf_names[w]),
                          tuple(labels[w] for w in labels if w not in data)) for size, data in by_size.items()]
    return sorted(guesses, key=lambda g: (sum(bool(_PARAMETER_NAMES.search(labels[w])) for w in g.data),
                                          -len(g.leaves), -max(order[w] for w in g.data)))


@dataclass
class Expected:
    """A top-level trace whose program JAX is about to compile: checked when that compile is done."""

    fun: Callable[..., Any]
    options: dict[str, Any]
    args: tuple[Any, ...]  # traced values as ShapeDtypeStructs, static ones as they are
    kwargs: dict[str, Any]
    config: "Config"
    jit: Callable[..., Any] | None  # see Step.jit


_expected: "jax_internals.NextCompile[Expected]" = jax_internals.NextCompile()


def expect_compile(traced: Callable[..., Any], fun: Callable[..., Any], options: dict[str, Any],
                   args: tuple[Any, ...], kwargs: dict[str, Any], config: "Config",
                   jit: Callable[..., Any] | None = None) -> None:
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
    _expected.expect(f"jit({getattr(traced, '__name__', '')})",
                     Expected(fun, options, abstract_args, abstract_kwargs, config, jit))


def _on_compile(compilation: jax_internals.Compilation) -> None:
    expected = _expected.take(compilation.name)
    if expected is None:
        return
    try:
        footprint = Footprint.of(compilation.executable)
    except Exception:
        return  # the check is a service: if XLA cannot analyse the program, it runs as is
    try:
        check_compiled(expected.fun, expected.options, expected.args, expected.kwargs, footprint,
                       _device_count(compilation.executable), expected.config, expected.jit)
    except RaxOutOfMemoryError:
        raise
    except Exception as exc:  # raximport's failure is never the user's: the step runs unchecked
        stepped_aside("the memory check", function_name(expected.fun), exc, expected.config)


def check_compiled(fun: Callable[..., Any], options: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                   footprint: Footprint, devices: int, config: "Config", jit: Callable[..., Any] | None = None
                   ) -> Analysis:
    """Hold one compiled signature against the budget; raise RaxOutOfMemoryError if it cannot fit.
    `args` and `kwargs` are the call's, traced values as ShapeDtypeStructs."""
    import jax

    plan = budget(config, jax.devices()[0])
    analysis = Analysis(function_name(fun), footprint, plan, predict_peak(plan, footprint, devices), devices)
    ANALYSES.append(analysis)
    if analysis.peak <= plan.usable:
        return analysis
    step = Step(fun, options, args, kwargs, find_batch_axes(fun, args, kwargs), jit=jit)
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
            # the first array of the argument (a dict batch: its first entry) and its sharding
            leaves = jax.tree_util.tree_leaves(value)
            at = next(i for i, x in enumerate(leaves) if len(getattr(x, "shape", ())) > axis)
            leaf, first = leaves[at], jax.tree_util.tree_leaves(sharding)[at]
            if not isinstance(first, jax.sharding.Sharding):
                continue
            shape = tuple(leaf.shape)
            return max(1, shape[axis] // first.shard_shape(shape)[axis])
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
        self.arguments: dict[int, int] = {self.batch: analysis.footprint.arguments}
        self.small = self.round_down(max(self.multiple, self.batch // 8))
        self.slope = (self.peak(self.batch) - self.peak(self.small)) / (self.batch - self.small)

    def peak(self, b: int) -> int:
        """The predicted peak at batch `b`, from a real compile."""
        if b not in self.peaks:
            footprint = Footprint.of(self.step.compile(b))
            self.peaks[b], self.arguments[b] = self.analysis.peak_with(footprint), footprint.arguments
        return self.peaks[b]

    def estimate(self, b: int) -> int:
        """The predicted peak at batch `b`, from the fit alone."""
        return int(self.peaks[self.small] + self.slope * (b - self.small))

    def batch_arguments(self) -> int:
        """Bytes (per device) of the analysed call's arguments that scale with the batch: the data."""
        grown = self.arguments[self.batch] - self.arguments[self.small]
        return grown * self.batch // (self.batch - self.small)

    def round_down(self, b: int) -> int:
        """b rounded down to a batch size the data axis divides."""
        return b // self.multiple * self.multiple

    def largest_fitting(self) -> int | None:
        """Solve the fit for the budget, then verify with a compile (stepping down if it disagrees).
        Only multiples of the data-axis size are tried: a sharded batch must split evenly."""
        usable = self.analysis.budget.suggestible
        if self.slope <= 0 or self.small >= self.batch:
            return None
        guess = self.round_down(
            min(self.batch - 1, math.floor(self.small + (usable - self.peaks[self.small]) / self.slope)))
        for _ in range(4):
            if guess < 1:
                return None
            try:
                peak = self.peak(guess)
            except Exception:  # a size the step does not compile at (a reshape that needs another multiple)
                return None
            if peak <= usable:
                return guess
            guess = self.round_down(min(guess - 1, math.floor(guess - (peak - usable) / self.slope)))
        return None


def find_fixes(step: Step, analysis: Analysis, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Fix]:
    """Every fix with its predicted peak, the most bytes saved first. Settles the step's batch axis
    (checked by compiling) and sets step.batch_origin and step.fixed_peak, the peak no batch size lowers."""
    fp, share = analysis.footprint, _host_share(analysis)
    fixes: list[Fix] = []
    fit = _batch_fit(step, analysis)
    step.fixed_peak = _fixed_peak(analysis, fit)
    outputs = _traced_outputs(step)
    evaluation = _is_evaluation(step, outputs, fp)
    best = fit.largest_fitting() if fit else None
    if fit:
        compiled = [str(b) for b in sorted(fit.peaks) if b != fit.batch]
        step.batch_origin += f"; checked by compiling the step at {' and '.join(compiled)}"
    if fit and best and evaluation:
        fixes.append(Fix(f"evaluate in batches of {best}: {analysis.function} on {best} rows of {_data_names(step)} "
                         "at a time, combining the results (add sums, weight means by rows)",
                         fit.peak(best), batch_size=best))
    elif fit and best:
        fixes.append(Fix(f"batch_size {fit.batch} -> {best}", fit.peak(best), batch_size=best))
        accum = next((k for k in range(2, fit.batch + 1) if fit.batch % k == 0 and fit.batch // k <= best
                      and (fit.batch // k) % fit.multiple == 0), None)
        if accum:
            micro = fit.batch // accum
            gradient_sums = _bytes_of(_parameters(step))  # the accumulated gradients, like the parameters
            fixes.append(Fix(f"batch_size {fit.batch} -> {micro} with gradient_accumulation_steps={accum} "
                             f"(the same {fit.batch} samples per update)", fit.estimate(micro) + gradient_sums,
                             exact=False))
    if fp.aliased == 0 and outputs is not None:
        saved = _donatable_bytes(step, outputs)
        if saved:
            fixes.append(Fix("donate the parameters and optimizer state (jax.jit(..., donate_argnums=...)) so "
                             "their updated copies reuse the same buffers", analysis.peak - saved, exact=False))
    if fp.temps:  # both act on the temporaries (activations) alone
        dtype = _compute_dtype(step)
        if dtype is not None and dtype.itemsize >= 4:  # never a dtype the step already computes in
            fixes.append(Fix(f"compute in bfloat16, keeping parameters in float32 (the step computes in {dtype}: "
                             "activations take about half)", analysis.peak - share * fp.temps // 2, exact=False))
        if not evaluation and _has_backward_pass(step):  # else there is nothing to recompute
            fixes.append(Fix("rematerialise: jax.checkpoint around each block recomputes activations in the "
                             "backward pass instead of storing them", None, exact=False))
    return sorted(fixes, key=lambda f: (f.predicted is None, f.predicted or 0))


def _batch_fit(step: Step, analysis: Analysis) -> BatchFit | None:
    """The fit along the step's batch axis, kept only if the step compiles at a smaller size and needs
    less there; an inferred axis that does not is dropped for the next guess. Sets step.batch_axes to
    the axis kept (none: empty) and step.batch_origin to how it was found."""
    annotated = annotated_batch_axes(step.fun, step.args, step.kwargs)
    choices: list[tuple[list[tuple[int | str, int]], BatchGuess | str]] = (
        [(annotated, "named `batch` by the annotations")] if annotated
        else [(g.axes, g) for g in batch_guesses(step.fun, step.args, step.kwargs)])
    if step.batch_axes not in [axes for axes, _ in choices]:
        choices.insert(0, (step.batch_axes, "as given"))
    choices.sort(key=lambda choice: choice[0] != step.batch_axes)  # the step's own first (the sort is stable)
    for axes, reason in choices:
        step.batch_axes = axes
        if not axes or (step.batch or 0) <= max(1, step.batch_multiple):
            continue
        try:
            fit = BatchFit(step, analysis)
        except Exception:  # not the batch after all: the step does not compile at another size
            continue
        if fit.slope > 0:
            step.batch_origin = reason.describe() if isinstance(reason, BatchGuess) else (
                f"axis {', '.join(f'{axis} of {name}' for name, axis in _axis_names(step))} (size {step.batch}), "
                f"{reason}")
            return fit
    step.batch_axes = []
    return None


def _axis_names(step: Step) -> list[tuple[str, int]]:
    """(argument name, axis) of each batch axis, for the report."""
    names = _parameter_names(step.fun)
    return [(names[w] if isinstance(w, int) and w < len(names) else str(w), axis) for w, axis in step.batch_axes]


def _data_names(step: Step) -> str:
    """The arguments holding the batch, as the user named them: what to slice."""
    return ", ".join(dict.fromkeys(name for name, _ in _axis_names(step)))


def _parameters(step: Step) -> Any:
    """The first argument with arrays besides the data: the parameters, by the usual order of a step's arguments."""
    data = {where for where, _ in step.batch_axes}
    places = [*enumerate(step.args), *step.kwargs.items()]
    return next((value for where, value in places if where not in data and _arrays(value)), None)


def _is_evaluation(step: Step, outputs: Any, footprint: Footprint) -> bool:
    """A single call over a whole split, as in evaluation: no argument but the data comes back (no
    parameter updated) and the outputs are much smaller than the data (a loss, an accuracy, a few logits).
    The compiled program's outputs count too: under nnx.jit a step updates its modules in place, so
    the function returns only the loss while the program returns the new parameters."""
    if outputs is None or not step.batch_axes:
        return False
    if footprint.outputs + footprint.aliased >= _bytes_of(_parameters(step)) > 0:
        return False
    data = {where for where, _ in step.batch_axes}
    data_bytes = sum(_bytes_of(step.args[w] if isinstance(w, int) else step.kwargs[w]) for w in data)
    return _donatable_bytes(step, outputs, skip=data) == 0 and 8 * _bytes_of(outputs) <= data_bytes


def _fixed_peak(analysis: Analysis, fit: BatchFit | None) -> int:
    """The predicted peak that no batch size lowers: what is held before the step (but, with a fit, the
    batch's own arrays), the CPU reserve, the code, and, with a fit, the part of the step that does not
    grow with the batch (its intercept)."""
    plan = analysis.budget
    floor = plan.in_use + _host_share(analysis) * analysis.footprint.code
    floor += CPU_RUNTIME_OVERHEAD if plan.platform == "cpu" else 0
    return max(floor - _host_share(analysis) * fit.batch_arguments(), fit.estimate(0)) if fit else floor


def _bytes_of(tree: Any) -> int:
    return sum(int(math.prod(x.shape)) * x.dtype.itemsize for x in _arrays(tree))


def _arrays(tree: Any) -> list[Any]:
    """The leaves of `tree` with a shape and a dtype: arrays, tracers, ShapeDtypeStructs."""
    import jax

    return [x for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape") and hasattr(x, "dtype")]


def _traced_outputs(step: Step) -> Any:
    """The step's outputs as traced (ShapeDtypeStructs), or None if it cannot be traced again."""
    try:
        return step.trace().out_info
    except Exception:
        return None


def _donatable_bytes(step: Step, outputs: Any, skip: Container[int | str] = ()) -> int:
    """Bytes of inputs (but those in `skip`) that come back as outputs of the same shape and dtype
    (params, optimizer state); scalars left out: donating them saves nothing."""
    outs: dict[tuple[Any, ...], int] = {}
    for leaf in _arrays(outputs):
        outs[(tuple(leaf.shape), leaf.dtype)] = outs.get((tuple(leaf.shape), leaf.dtype), 0) + 1
    saved = 0
    for where, value in [*enumerate(step.args), *step.kwargs.items()]:
        if where in skip:
            continue
        for leaf in _arrays(value):
            key = (tuple(leaf.shape), leaf.dtype)
            if leaf.shape and outs.get(key, 0) > 0:
                outs[key] -= 1
                saved += _bytes_of(leaf)
    return saved


def _compute_dtype(step: Step) -> Any:
    """The floating dtype the step computes in: the one holding most bytes of its matmuls' results
    (dot_general, convolutions) as traced, else of all its float values, else of its float arguments
    (when it cannot be traced again); None when it has no floats. A mixed-precision step keeps float32
    parameters and still computes in bfloat16."""
    import jax.numpy as jnp
    import numpy as np

    matmuls: dict[Any, int] = {}
    floats: dict[Any, int] = {}
    try:
        _float_bytes(step.trace().jaxpr.jaxpr, matmuls, floats)
    except Exception:
        pass
    arguments: dict[Any, int] = {}
    for leaf in _arrays((step.args, step.kwargs)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            arguments[leaf.dtype] = arguments.get(leaf.dtype, 0) + _bytes_of(leaf)
    counts = matmuls or floats or arguments
    return np.dtype(max(counts, key=counts.__getitem__)) if counts else None


_MATMULS = ("dot_general", "conv_general_dilated")


def _float_bytes(jaxpr: Any, matmuls: dict[Any, int], floats: dict[Any, int]) -> None:
    """Add the bytes of every floating-point value `jaxpr` computes (nested jaxprs included) by dtype."""
    import jax.numpy as jnp

    for eqn in _equations(jaxpr):
        for var in eqn.outvars:
            aval = var.aval
            if hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.floating):
                size = int(math.prod(aval.shape)) * aval.dtype.itemsize
                floats[aval.dtype] = floats.get(aval.dtype, 0) + size
                if eqn.primitive.name in _MATMULS:
                    matmuls[aval.dtype] = matmuls.get(aval.dtype, 0) + size


def _has_backward_pass(step: Step) -> bool:
    """Whether the step differentiates (JAX names what transposing emits `transpose(...)`): only then
    has jax.checkpoint activations to recompute. True where the step cannot be traced again."""
    try:
        jaxpr = step.trace().jaxpr.jaxpr
    except Exception:
        return True
    return any("transpose(" in str(eqn.source_info.name_stack) for eqn in _equations(jaxpr))


def _equations(jaxpr: Any) -> Iterator[Any]:
    """The equations of `jaxpr` and of the jaxprs nested in them (a jit's, a scan's body)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


# --- the report ---------------------------------------------------------------------------------

_CATEGORIES = (("parameters", re.compile("param|weight", re.I)), ("optimizer state", re.compile("opt", re.I)))


def _host_share(analysis: Analysis) -> int:
    """How many times the per-device footprint counts against the budget: on CPU every (forced) host
    device's share is the one process's memory; an accelerator's budget is its own."""
    return analysis.devices if analysis.budget.platform == "cpu" else 1


def _held(plan: Budget) -> str:
    """The breakdown's first line: what the budget's owner holds before the step."""
    return ("held by the process before the step (resident memory)" if plan.platform == "cpu"
            else "in use on the device before the step")


def breakdown(analysis: Analysis) -> dict[str, int]:
    """Where the predicted peak goes, adding up to it as predict_peak does, so that the reader sees
    which part a fix can shrink: what is held before the step, the step's own bytes, the reserve."""
    fp, plan, share = analysis.footprint, analysis.budget, _host_share(analysis)
    each = f" ({share} devices)" if share > 1 else ""
    parts = {
        _held(plan): plan.in_use,
        f"temporaries{each}": share * fp.temps,
        f"outputs (not reusing inputs){each}": share * (fp.outputs - fp.aliased),
        f"generated code{each}": share * fp.code,
        "CPU runtime reserve (allocator pools, thread stacks)": CPU_RUNTIME_OVERHEAD if plan.platform == "cpu" else 0,
    }
    return {k: v for k, v in parts.items() if v}


def _input_kinds(step: Step) -> dict[str, int]:
    """The step's inputs by kind (from parameter names and batch axes): they are part of what is held."""
    try:
        names = list(inspect.signature(inspect.unwrap(step.fun)).parameters)
    except (TypeError, ValueError):
        names = []
    batch_places = {where for where, _ in step.batch_axes}
    parts: dict[str, int] = {}
    for where, value in [*enumerate(step.args), *step.kwargs.items()]:
        name = names[where] if isinstance(where, int) and where < len(names) else str(where)
        kind = "batch" if where in batch_places else next(
            (label for label, pattern in _CATEGORIES if pattern.search(name)), "other inputs")
        parts[kind] = parts.get(kind, 0) + _bytes_of(value)
    return {k: v for k, v in parts.items() if v}


def _where_the_bytes_go(analysis: Analysis, step: Step) -> list[str]:
    """The breakdown as report lines, the step's inputs under what is held (they are among it), then the sum."""
    parts = breakdown(analysis)
    inputs = _input_kinds(step)
    lines = ["where the bytes go:"]
    for kind, size in parts.items():
        lines.append(f"  {kind}: {format_bytes(size)}")
        if kind == _held(analysis.budget) and inputs:
            among = "of which" if sum(inputs.values()) <= size else "all devices together:"
            kinds = ", ".join(f"{k} {format_bytes(v)}" for k, v in inputs.items())
            lines.append(f"    {among} the step's inputs: {kinds}")
    lines.append(f"  = predicted peak {format_bytes(sum(parts.values()))}")
    return lines


def _scope(plan: Budget) -> str:
    """What the budget bounds, so that a limit is not read as the step's alone."""
    if plan.platform == "cpu":
        return "on CPU it bounds the whole process (its resident memory: every array, the runtime, Python)"
    return f"on {plan.platform} it bounds the device's memory (each device has its own)"


def oom_report(analysis: Analysis, fixes: list[Fix], step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Report:
    plan = analysis.budget
    limit = format_bytes(plan.limit)
    details = [
        f"predicted peak {format_bytes(analysis.peak)} > {SAFETY_FRACTION:.0%} of the budget {limit} "
        f"({format_bytes(plan.usable)})",
        f"budget: {limit}, {plan.source}; {_scope(plan)}",
        *([f"batch axis: {step.batch_origin}"] if step.batch_origin else []),
        *_where_the_bytes_go(analysis, step),
        *(["fixes, most bytes saved first:"] if fixes else []),
        *(_fix_line(fix, analysis) for fix in fixes),
    ]
    best = next((f for f in fixes if f.batch_size), None)
    return Report(
        kind="out-of-memory",
        title=f"{analysis.function} would run out of memory: refused before running it",
        where=user_location(),
        details=tuple(details),
        fix=_main_fix(analysis, fixes, step),
        extra={
            "function": analysis.function,
            "predicted_peak": analysis.peak,
            "budget": plan.limit,
            "usable": plan.usable,
            "in_use": plan.in_use,
            "budget_source": plan.source,
            "breakdown": breakdown(analysis),
            "temps": analysis.footprint.temps,
            "outputs": analysis.footprint.outputs,
            "aliased": analysis.footprint.aliased,
            "arguments": analysis.footprint.arguments,
            "batch_size": step.batch,
            "suggested_batch_size": best.batch_size if best else None,
            "fixed_peak": step.fixed_peak,
            "fixes": [{"action": f.action, "predicted": f.predicted, "exact": f.exact, "batch_size": f.batch_size}
                      for f in fixes],
        },
    )


def _fix_line(fix: Fix, analysis: Analysis) -> str:
    if fix.predicted is None:
        return f"  {fix.action}"
    enough = "" if fix.predicted <= analysis.budget.usable else " (not enough alone)"
    return (f"  {fix.action}: {'about ' if not fix.exact else ''}{format_bytes(fix.predicted)}, "
            f"{format_bytes(analysis.peak - fix.predicted)} less{enough}")


def _main_fix(analysis: Analysis, fixes: list[Fix], step: Step) -> str:
    """The one fix to lead with: the batch size that fits, else the fix predicted to fit that saves
    most; else, when what is held plus what the step needs at any batch size is over the budget,
    that no change to the batch fits and what does; else the largest saving, said to be not enough."""
    plan = analysis.budget
    fitting = [f for f in fixes if f.predicted is not None and f.predicted <= plan.usable]
    best = next((f for f in fitting if f.batch_size), fitting[0] if fitting else None)
    if best and best.predicted is not None:
        about = "" if best.exact else "about "
        return f"{best.action} fits: {about}{format_bytes(best.predicted)} of {format_bytes(plan.limit)}"
    usable = f"over {SAFETY_FRACTION:.0%} of the budget ({format_bytes(plan.usable)})"
    owner = "process" if plan.platform == "cpu" else "device"
    held = f"the {owner} holds {format_bytes(plan.in_use)} before this step allocates anything"
    if plan.in_use > plan.usable:
        return f"no change to the step can fit: {held}, {usable}. What fits: {_what_fits(analysis)}"
    fixed = step.fixed_peak
    if fixed is not None and fixed > plan.usable:
        parts = ["code"] + (["the CPU runtime reserve"] if plan.platform == "cpu" else [])
        if step.batch_axes:  # the fit's intercept: what the temporaries and outputs hold at any batch size
            parts.insert(0, "gradients, updated parameters and optimizer state")
        lead, needs = (("no batch size fits", "what the step needs at any batch size") if step.batch_axes
                       else ("no change to the step can fit", "what the step needs besides its arrays"))
        return (f"{lead}: {held}, and {needs} ({', '.join(parts)}) brings that to {format_bytes(fixed)}, "
                f"{usable}. What fits: {_what_fits(analysis)}")
    saving = next(((f.action, f.predicted) for f in fixes if f.predicted is not None), None)  # fixes: most saved first
    largest = f"the largest saving, {saving[0]}, leaves {format_bytes(saving[1])}; " if saving else ""
    return f"no fix of the step is predicted to fit alone: {largest}what fits: {_what_fits(analysis)}"


def _what_fits(analysis: Analysis) -> str:
    """What fits when nothing about the step does: more memory, fewer arrays held, or the state spread
    over more memory (on CPU forced host devices share this process's memory, so other machines)."""
    plan = analysis.budget
    need = format_bytes(math.ceil(analysis.peak / SAFETY_FRACTION))
    free = "freeing the arrays it holds and no longer needs (del them, or donate them to the jitted step)"
    if plan.platform == "cpu":
        return (f"a budget of at least {need} for the whole process (--memory-limit, or more free memory), {free}, "
                "or sharding the parameters and optimizer state across machines (jax.distributed)")
    return (f"a device with at least {need}, {free}, or sharding the parameters and optimizer state over more "
            "devices (jax.sharding)")


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
