"""scripts/bench_gpt.py runs end to end on a prepared dataset (a few iterations, no nanoGPT)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_gpt.py"


@pytest.mark.slow
def test_per_core_floor_runs_one_pinned_process_per_core_on_its_share(data_dir):
    r = subprocess.run([sys.executable, str(SCRIPT), f"--data_dir={data_dir}", "--iters=3", "--warmup=1",
                        "--no-first-iter", "--per-core"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    floor, jax_run = results["jax per core, no exchange"], results["jax"]
    cores = max(n for n in range(1, len(os.sched_getaffinity(0)) + 1) if 12 % n == 0)
    assert len(floor["each_ms_per_iter"]) == cores
    assert floor["ms_per_iter"] == max(floor["each_ms_per_iter"])
    # each core ran its share of the same 12 x 64 batch: together, the whole batch per iteration
    assert floor["tokens_per_s"] * floor["ms_per_iter"] / 1000 == pytest.approx(12 * 64)
    assert jax_run["tokens_per_iter"] == 12 * 64
    assert "jax per core, no exchange" in r.stdout
