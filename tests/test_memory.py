"""Refusing an out-of-memory step before it runs, with the batch size that fits."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from raximport import memory
from raximport.memory import (
    CPU_RUNTIME_OVERHEAD, Analysis, Budget, Footprint, Step, breakdown, current_rss, find_batch_axes, find_fixes,
    format_bytes, host_free, oom_report, predict_peak,
)
from tests.helpers import write

STEP = """
import sys
import jax, jax.numpy as jnp, optax
from jaxtyping import Array, Float

def loss(params, x: Float[Array, "batch d"]) -> Float[Array, ""]:
    h = jnp.tanh(x @ params["w1"])
    return ((h @ params["w2"]) ** 2).mean()

opt = optax.adamw(1e-3)

@jax.jit
def step(params, opt_state, x: Float[Array, "batch d"]):
    grads = jax.grad(loss)(params, x)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

params = {"w1": jnp.full((256, 2048), 0.01), "w2": jnp.full((2048, 256), 0.01)}
state = opt.init(params)
x = jnp.ones((int(sys.argv[1]), 256))
try:
    params, state = step(params, state, x)
except MemoryError as exc:
    print("alive", not params["w1"].is_deleted(), "suggested", exc.suggested_batch_size, "peak", exc.predicted_peak, "budget", exc.budget)
    raise
print("ran", float(params["w1"][0, 0]))
"""


# no annotations at all: the batch is a dict whose arrays share a leading axis the parameters do not
DICT_STEP = """
import sys
import jax, jax.numpy as jnp, optax

opt = optax.adam(1e-3)

def loss(params, batch):
    images = batch["image"].reshape(batch["image"].shape[0], -1)
    logits = jax.nn.relu(images @ params["w1"] + params["b1"]) @ params["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

@jax.jit
def train_step(params, opt_state, batch):
    grads = jax.grad(loss)(params, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

params = {"w1": jnp.full((784, 4096), 0.01), "b1": jnp.zeros(4096), "w2": jnp.zeros((4096, 10))}
state = opt.init(params)
n = int(sys.argv[1])
batch = {"image": jnp.ones((n, 28, 28, 1)), "label": jnp.zeros((n,), jnp.int32)}
try:
    params, state = train_step(params, state, batch)
except MemoryError as exc:
    print("suggested", exc.suggested_batch_size)
    raise
print("ran", float(params["w1"][0, 0]))
"""


def test_budget_and_prediction_arithmetic() -> None:
    assert current_rss() > 10 * 2**20
    free, source = host_free()
    assert free > 0 and source
    fp = Footprint(arguments=100, outputs=40, aliased=30, temps=500, code=0)
    assert fp.step == 510
    assert predict_peak(Budget(10**9, 1000, "test", "gpu"), fp) == 1510
    # per device: each accelerator has its own budget; forced CPU devices all share the host's
    assert predict_peak(Budget(10**9, 1000, "test", "gpu"), fp, devices=4) == 1510
    assert predict_peak(Budget(10**9, 1000, "test", "cpu"), fp, devices=4) == 1000 + 4 * 510 + CPU_RUNTIME_OVERHEAD
    assert Budget(1000, 0, "test").usable == 970


def test_a_smaller_compile_of_the_call_counts_its_own_arguments_not_the_analysed_ones() -> None:
    # the call's arguments (the batch among them) are held before it: at half the batch, half the data is
    at_full = Footprint(arguments=300, outputs=40, aliased=0, temps=500, code=0)
    at_half = Footprint(arguments=200, outputs=40, aliased=0, temps=250, code=0)
    plan = Budget(10**9, 1000, "test", "gpu")
    analysis = Analysis("step", at_full, plan, predict_peak(plan, at_full))
    assert analysis.peak_with(at_half) == (1000 - 100) + 290
    on_cpu = Budget(10**9, 1000, "test", "cpu")  # two forced host devices: both shares are this process's
    analysis = Analysis("step", at_full, on_cpu, predict_peak(on_cpu, at_full, 2), 2)
    assert analysis.peak_with(at_half) == (1000 - 2 * 100) + 2 * 290 + CPU_RUNTIME_OVERHEAD


@pytest.mark.skipif(memory._malloc_trim() is None, reason="glibc's malloc_trim")
def test_resident_memory_leaves_out_heap_that_malloc_keeps_after_free() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    before = current_rss()
    blocks = [libc.malloc(4000) for _ in range(25_000)]  # 100 MB of small blocks, as a compile leaves
    for block in blocks:
        ctypes.memset(block, 1, 4000)
    for block in blocks[:-1]:  # freed, but the last block keeps the heap's top: malloc keeps the pages
        libc.free(block)
    after = current_rss()
    libc.free(blocks[-1])
    assert after - before < 20 * 2**20


def test_the_batch_axis_comes_from_the_annotations() -> None:
    import jax.numpy as jnp
    from jaxtyping import Array, Float, Int

    def step(params, x: Int[Array, "batch seq"], y: Int[Array, "batch seq"], w: Float[Array, "seq batch"], z: Float[Array, "*b batch"]):
        pass

    args = (None, jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((3, 2)), jnp.ones((1, 2)))
    assert find_batch_axes(step, args, {}) == [(1, 0), (2, 0), (3, 1)]


def limit_with_room(run_python, tmp_path: Path, source: str, function: str) -> str:
    """Write `source` as step.py, run it at batch 64 with --memory-report, and return a memory limit
    with room for about 150 MB of step above its peak: batch 8192 needs far more."""
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "step.py", source)
    probe = run_python("-m", "raximport", "--memory-report", "step.py", "64", cwd=tmp_path)
    assert probe.returncode == 0 and "ran" in probe.stdout, probe.stderr
    peak_mb = float(re.search(rf"{function}\s+\S+ \S+\s+\S+ \S+\s+([\d.]+) MB", probe.stderr).group(1))
    return f"{int(peak_mb + 150)}MB"


@pytest.mark.slow
def test_refused_before_running_and_the_suggestion_fits(run_python, tmp_path: Path) -> None:
    limit = limit_with_room(run_python, tmp_path, STEP, "step")

    refused = run_python("-m", "raximport", "--memory-limit", limit, "step.py", "8192", cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "alive True" in refused.stdout  # refused before running: donated buffers untouched
    assert "ran" not in refused.stdout
    assert "would run out of memory: refused before running it" in refused.stderr
    suggested = int(re.search(r"suggested (\d+)", refused.stdout).group(1))
    assert 64 < suggested < 8192
    assert re.search(rf"batch_size 8192 -> {suggested} fits: [\d.]+ MB of {limit[:-2]}", refused.stderr.replace(" MB of", " MB of"))
    for part in ("parameters", "optimizer state", "batch", "temporaries", "gradient_accumulation_steps"):
        assert part in refused.stderr

    fits = run_python("-m", "raximport", "--memory-limit", limit, "step.py", str(suggested), cwd=tmp_path)
    assert fits.returncode == 0 and "ran" in fits.stdout, fits.stderr
    larger = run_python("-m", "raximport", "--memory-limit", limit, "step.py", str(int(suggested * 1.25)), cwd=tmp_path)
    assert larger.returncode == 1 and "refused before running it" in larger.stderr


def test_memory_report_table(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "step.py", STEP)
    result = run_python("-m", "raximport", "--memory-report", "step.py", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = result.stderr[result.stderr.index("memory of each compiled function"):]
    assert re.search(r"step\s+[\d.]+ [KMG]?B\s+[\d.]+ [KMG]?B\s+[\d.]+ [KMG]?B\s+[\d.]+ [KMG]?B\s+\d+%", table), table


def _analysis(limit: int, in_use: int, footprint: Footprint, platform: str = "cpu", devices: int = 1) -> Analysis:
    plan = Budget(limit, in_use, "memory_limit from --memory-limit", platform)
    return Analysis("step", footprint, plan, predict_peak(plan, footprint, devices), devices)


def _step(batch_axes: list[tuple[int | str, int]] | None = None) -> Step:
    import jax
    import jax.numpy as jnp

    def step(params, opt_state, x):
        grads = jax.grad(lambda p: jnp.tanh(x @ p["w"]).sum())(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), opt_state

    params = {"w": jax.ShapeDtypeStruct((1000, 1000), jnp.float32)}  # 4 MB
    opt_state = (params, params)  # 8 MB
    x = jax.ShapeDtypeStruct((512, 1000), jnp.float32)  # 2 MB
    return Step(step, {}, (params, opt_state, x), {}, [(2, 0)] if batch_axes is None else batch_axes)


def _bytes(line: str) -> float:
    number, unit = re.search(r"([\d.]+) (GB|MB|KB|B)$", line).groups()
    return float(number) * {"GB": 1e9, "MB": 1e6, "KB": 1e3, "B": 1}[unit]


def test_the_headline_states_the_rule_and_the_bytes_add_up_to_the_peak() -> None:
    fp = Footprint(arguments=14_000_000, outputs=12_000_000, aliased=0, temps=70_000_000, code=300_000)
    analysis = _analysis(330_000_000, 213_445_000, fp)
    assert format_bytes(analysis.peak) == "329.3 MB"  # fits the limit, not its 97%
    details = oom_report(analysis, [], _step(), _step().args, {}).details
    assert details[0] == "predicted peak 329.3 MB > 97% of the budget 330.0 MB (320.1 MB)"
    assert "on CPU it bounds the whole process" in details[1]
    # every line of where the bytes go, the memory already held and the CPU reserve among them, adds up to the peak
    assert sum(breakdown(analysis).values()) == analysis.peak
    start = details.index("where the bytes go:")
    parts = [line for line in details[start + 1:] if re.match(r"  \w", line)]
    assert parts[0] == "  held by the process before the step (resident memory): 213.4 MB"
    assert parts[-1] == f"  CPU runtime reserve (allocator pools, thread stacks): {format_bytes(CPU_RUNTIME_OVERHEAD)}"
    assert sum(_bytes(line) for line in parts) == pytest.approx(analysis.peak, rel=1e-3)
    assert details[start + 1 + len(parts) + 1] == "  = predicted peak 329.3 MB"
    # the step's inputs are among what is held, not added to it
    assert details[start + 2] == "    of which the step's inputs: parameters 4.0 MB, optimizer state 8.0 MB, batch 2.0 MB"


def test_on_a_gpu_the_budget_is_the_device_and_forced_cpu_devices_share_the_host() -> None:
    fp = Footprint(arguments=0, outputs=10, aliased=0, temps=1000, code=0)
    gpu = _analysis(10**6, 5000, fp, platform="gpu", devices=4)
    assert sum(breakdown(gpu).values()) == gpu.peak == 6010
    assert "on gpu it bounds the device's memory" in oom_report(gpu, [], _step(), (), {}).details[1]
    cpu = _analysis(10**6, 5000, fp, devices=4)
    assert breakdown(cpu)["temporaries (4 devices)"] == 4000
    assert sum(breakdown(cpu).values()) == cpu.peak


class FakeCompiled:
    """A compiled step whose temporaries are `fixed + per_row * batch` bytes (no XLA compile)."""

    def __init__(self, batch: int, fixed: int, per_row: int) -> None:
        self.temps = fixed + per_row * batch

    def memory_analysis(self) -> SimpleNamespace:
        return SimpleNamespace(argument_size_in_bytes=0, output_size_in_bytes=0, alias_size_in_bytes=0,
                               temp_size_in_bytes=self.temps, generated_code_size_in_bytes=0)


def _faked(step: Step, fixed: int, per_row: int) -> Step:
    step.compile = lambda batch=None: FakeCompiled(step.batch if batch is None else batch, fixed, per_row)  # type: ignore[method-assign]
    return step


def test_when_the_fixed_part_does_not_fit_no_batch_is_suggested_and_nothing_says_combine() -> None:
    """250 MB held + 32 MiB CPU reserve + 30 MB of the step that does not shrink with the batch > 97% of 300 MB."""
    step = _faked(_step(), fixed=30_000_000, per_row=100_000)
    analysis = _analysis(300_000_000, 250_000_000, Footprint.of(step.compile()))
    fixes = find_fixes(step, analysis, step.args, {})
    assert not any(f.batch_size for f in fixes)
    report = oom_report(analysis, fixes, step, step.args, {})
    assert "combine" not in report.fix
    assert report.fix.startswith("no batch size fits: the process holds 250.0 MB before this step allocates anything")
    assert "313.6 MB, over 97% of the budget (291.0 MB)" in report.fix
    for remedy in ("--memory-limit", "del them", "sharding the parameters and optimizer state"):
        assert remedy in report.fix
    assert report.extra["suggested_batch_size"] is None
    assert step.fixed_peak == report.extra["fixed_peak"] == 250_000_000 + CPU_RUNTIME_OVERHEAD + 30_000_000


def _init_step() -> Step:
    """A step with no batch and no backward pass: gpt's `init_params(config, key)`."""
    import jax

    def init(key):
        a, b = jax.random.split(key)
        return {"w": jax.random.normal(a, (512, 1000)) @ jax.random.normal(b, (1000, 1000))}

    return Step(init, {}, (jax.ShapeDtypeStruct((), jax.random.key(0).dtype),), {}, [])


def test_a_step_without_a_batch_is_not_told_about_batch_sizes() -> None:
    """Refused under a tight --memory-limit, gpt's `init_params` was told "no batch size fits"."""
    step = _init_step()
    analysis = _analysis(300_000_000, 270_000_000, Footprint(arguments=0, outputs=0, aliased=0, temps=10**6, code=0))
    report = oom_report(analysis, find_fixes(step, analysis, step.args, {}), step, step.args, {})
    assert report.fix.startswith("no change to the step can fit: the process holds 270.0 MB"), report.fix
    assert "batch" not in report.fix


def test_fixes_are_ordered_by_bytes_saved() -> None:
    step = _faked(_step(), fixed=0, per_row=100_000)
    analysis = _analysis(150_000_000, 40_000_000, Footprint.of(step.compile()))
    fixes = find_fixes(step, analysis, step.args, {})
    estimated = [f.predicted for f in fixes if f.predicted is not None]
    assert len(estimated) >= 3 and estimated == sorted(estimated)
    assert fixes[-1].predicted is None  # not estimated: last
    # the batch size that fits leads the report even where other fixes save more
    assert not fixes[0].batch_size
    report = oom_report(analysis, fixes, step, step.args, {})
    assert report.fix.startswith(f"batch_size 512 -> {report.extra['suggested_batch_size']} fits")


def test_rematerialising_is_suggested_only_to_a_step_with_a_backward_pass() -> None:
    """gpt's `init_params(config, key)` refused under a tight --memory-limit was told to put
    jax.checkpoint around each block "to recompute activations in the backward pass": it has none."""
    analysis = _analysis(10**8, 10**8, Footprint(arguments=0, outputs=4, aliased=0, temps=10**6, code=0))
    for step, suggested in ((_init_step(), False), (_step(), True)):
        actions = [f.action for f in find_fixes(step, analysis, step.args, {})]
        assert any(a.startswith("rematerialise") for a in actions) == suggested, actions


def _dtype_step(params_dtype: Any, compute_dtype: Any) -> Step:
    import jax
    import jax.numpy as jnp

    def step(params, x):
        h = jnp.tanh(x.astype(compute_dtype) @ params["w"].astype(compute_dtype))
        return (h.astype(jnp.float32) ** 2).mean()

    params = {"w": jax.ShapeDtypeStruct((256, 256), params_dtype)}
    return Step(step, {}, (params, jax.ShapeDtypeStruct((64, 256), compute_dtype)), {}, [])


@pytest.mark.parametrize("params_dtype, compute_dtype, suggested", [
    ("float32", "float32", True), ("bfloat16", "bfloat16", False),
    ("float32", "bfloat16", False),  # mixed precision: float32 parameters, bfloat16 matmuls (gpt's dtype=bfloat16)
])
def test_bfloat16_is_never_suggested_to_a_step_that_computes_in_it(params_dtype: str, compute_dtype: str, suggested: bool) -> None:
    import jax.numpy as jnp

    step = _dtype_step(getattr(jnp, params_dtype), getattr(jnp, compute_dtype))
    analysis = _analysis(10**8, 10**8, Footprint(arguments=0, outputs=4, aliased=0, temps=10**6, code=0))
    actions = [f.action for f in find_fixes(step, analysis, step.args, {})]
    assert any("bfloat16" in a for a in actions) == suggested, actions


def test_the_batch_axis_is_inferred_from_an_unannotated_call() -> None:
    import jax
    import jax.numpy as jnp

    S = jax.ShapeDtypeStruct
    params = {"w1": S((784, 128), jnp.float32), "b1": S((128,), jnp.float32), "w2": S((128, 10), jnp.float32)}
    opt_state = (S((), jnp.int32), params, params)
    batch = {"image": S((128, 28, 28, 1), jnp.float32), "label": S((128,), jnp.int32)}

    def train_step(params, opt_state, batch):
        pass

    # the leading axis both of batch's arrays have and params' and opt_state's do not all have
    assert find_batch_axes(train_step, (params, opt_state, batch), {}) == [(2, 0)]
    [guess] = memory.batch_guesses(train_step, (params, opt_state, batch), {})
    assert guess.describe() == ("axis 0 of batch['image'], batch['label'] (size 128), inferred from the call: "
                                "the leading axis the data shares, and params, opt_state do not")
    assert find_batch_axes(train_step, (params, opt_state), {"batch": batch}) == [("batch", 0)]

    def step(w, x):
        pass

    # one array each: the data-like name first (the other guess stays, for when this one does not compile)
    assert find_batch_axes(step, (S((1024, 4096), jnp.float32), S((4096, 1024), jnp.float32)), {}) == [(1, 0)]


def test_a_guess_that_does_not_compile_at_another_size_is_dropped_and_a_whole_split_is_evaluated_in_batches() -> None:
    """f(c, a): the later argument `a` is guessed first, but `c @ a` does not compile with fewer rows of
    `a`; the rows of `c` are the batch. Nothing comes back updated and the output is a scalar: an
    evaluation, so the fix is to evaluate in batches, at a size that was compiled and fits."""
    import jax
    import jax.numpy as jnp

    def f(c, a):
        return jnp.sort(c @ a, axis=0)[0].sum()  # a sort XLA cannot fuse away: temporaries grow with c's rows

    seen: dict[str, Any] = {}

    def call(c, a):
        step = Step(f, {}, (c, a), {}, find_batch_axes(f, (c, a), {}))
        seen["guessed"] = list(step.batch_axes)
        footprint = Footprint.of(step.compile())
        # the arguments are held before the call; half the step's own bytes fit beside them
        plan = Budget(int((footprint.arguments + footprint.step / 2) / 0.97), footprint.arguments, "test", "gpu")
        analysis = Analysis("f", footprint, plan, predict_peak(plan, footprint))
        seen["fixes"] = find_fixes(step, analysis, step.args, {})
        seen["report"] = oom_report(analysis, seen["fixes"], step, step.args, {})
        seen["step"], seen["usable"] = step, plan.usable
        return f(c, a)

    jax.eval_shape(call, jax.ShapeDtypeStruct((4096, 64), jnp.float32), jax.ShapeDtypeStruct((64, 256), jnp.float32))
    step, report = seen["step"], seen["report"]
    assert seen["guessed"] == [(1, 0)] and step.batch_axes == [(0, 0)]
    assert any(line.startswith("batch axis: axis 0 of c (size 4096), inferred from the call") for line in report.details)
    best = report.extra["suggested_batch_size"]
    assert 4096 // 8 < best < 4096
    assert report.fix.startswith(f"evaluate in batches of {best}: ")
    assert not any("gradient_accumulation" in f.action or "rematerialise" in f.action for f in seen["fixes"])
    at_best = Footprint.of(step.compile(best))  # compiled at that size, beside its own arguments: it fits
    assert at_best.arguments + at_best.step <= seen["usable"]


@pytest.mark.slow
def test_an_unannotated_step_with_dict_batches_gets_a_batch_size_that_fits(run_python, tmp_path: Path) -> None:
    limit = limit_with_room(run_python, tmp_path, DICT_STEP, "train_step")

    refused = run_python("-m", "raximport", "--memory-limit", limit, "step.py", "8192", cwd=tmp_path)
    assert refused.returncode == 1 and "ran" not in refused.stdout, refused.stderr
    suggested = int(re.search(r"suggested (\d+)", refused.stdout).group(1))
    assert 64 < suggested < 8192
    assert ("batch axis: axis 0 of batch['image'], batch['label'] (size 8192), inferred from the call: the leading "
            "axis the data shares, and params, opt_state do not; checked by compiling the step at 1024") in refused.stderr
    assert re.search(rf"fix: batch_size 8192 -> {suggested} fits: [\d.]+ MB of {limit[:-2]}", refused.stderr)

    fits = run_python("-m", "raximport", "--memory-limit", limit, "step.py", str(suggested), cwd=tmp_path)
    assert fits.returncode == 0 and "ran" in fits.stdout, fits.stderr
    larger = run_python("-m", "raximport", "--memory-limit", limit, "step.py", str(int(suggested * 1.25)), cwd=tmp_path)
    assert larger.returncode == 1 and "refused before running it" in larger.stderr
