"""Refusing an out-of-memory step before it runs, with the batch size that fits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raximport.memory import (
    CPU_RUNTIME_OVERHEAD, Budget, Footprint, current_rss, find_batch_axes, host_free, predict_peak,
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


def test_the_batch_axis_comes_from_the_annotations() -> None:
    import jax.numpy as jnp
    from jaxtyping import Array, Float, Int

    def step(params, x: Int[Array, "batch seq"], y: Int[Array, "batch seq"], w: Float[Array, "seq batch"], z: Float[Array, "*b batch"]):
        pass

    args = (None, jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((3, 2)), jnp.ones((1, 2)))
    assert find_batch_axes(step, args, {}) == [(1, 0), (2, 0), (3, 1)]


@pytest.mark.slow
def test_refused_before_running_and_the_suggestion_fits(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "step.py", STEP)
    probe = run_python("-m", "raximport", "--memory-report", "step.py", "64", cwd=tmp_path)
    assert probe.returncode == 0 and "ran" in probe.stdout, probe.stderr
    peak_mb = float(re.search(r"step\s+\S+ \S+\s+\S+ \S+\s+([\d.]+) MB", probe.stderr).group(1))
    limit = f"{int(peak_mb + 150)}MB"  # room for about 150 MB of step: batch 8192 needs far more

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
