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


@pytest.mark.slow
def test_side_by_side_trainer_child_answers_turns_of_iterations(data_dir, tmp_path):
    """The protocol --nanogpt's turns rely on, with the JAX trainer (the PyTorch ones need torch):
    set up and first iteration, then one answer of N times for each line N."""
    log = open(tmp_path / "child.log", "w+")  # a file, not a pipe nobody reads until the end
    child = subprocess.Popen([sys.executable, str(SCRIPT), f"--data_dir={data_dir}", "--warmup=1", "--trainer=jax"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        first = json.loads(child.stdout.readline())
        assert first["tokens_per_iter"] == 12 * 64 and first["first_iter_s"] > 0 and first["devices"] >= 1
        for n in (3, 2):
            child.stdin.write(f"{n}\n")
            child.stdin.flush()
            times = json.loads(child.stdout.readline())
            assert len(times) == n and all(0 < t < 60 for t in times)
        child.stdin.close()
        assert child.wait(timeout=120) == 0, (tmp_path / "child.log").read_text()[-3000:]
    finally:
        child.kill()
        log.close()


@pytest.mark.slow
def test_guards_prints_the_paired_guard_ratio_and_the_time_a_save_blocks(data_dir):
    r = subprocess.run([sys.executable, str(SCRIPT), f"--data_dir={data_dir}", "--guards", "--iters=4", "--chunk=2",
                        "--warmup=1", "--saves=2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])["guards"]
    assert got["turns"] == 2 and 0.3 < got["guard_ratio_paired"] < 3
    assert 0 < got["save_blocks_ms_median"] <= got["save_blocks_ms_max"]
    assert got["save_blocks_in_steps"] == pytest.approx(got["save_blocks_ms_median"] / got["guarded_ms_per_iter"])
    assert "step with guards / plain step (paired median)" in r.stdout and "a save blocks the loop" in r.stdout
