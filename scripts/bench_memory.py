"""Predicted vs measured peak memory of the gpt train step, and the batch-size suggestion vs the truth.

For each (batch, seq) point a fresh process builds gpt's train step (the CPU config's model,
4 layers x 128, at that block size) under raximport, compiles it (which records raximport's
prediction from XLA's memory analysis), then runs it once and measures the real peak: on CPU the
process's peak RSS during the step (VmHWM, reset just before), on GPU `peak_bytes_in_use`.

Then, for a memory limit, it asks raximport for the largest batch that fits (from a refused run)
and finds the true largest batch whose measured peak stays under the limit by bisection.

    python scripts/bench_memory.py                       # the default sweep and a 1.5 GB limit
    python scripts/bench_memory.py --batches 8,64 --seqs 64 --limit 1GB --fit-seq 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(batch: int, seq: int, limit: str | None) -> None:
    """Runs inside the measured process: prints one JSON line."""
    import raximport

    raximport.install(paths=[str(ROOT / "gpt")], memory_limit=limit)
    sys.path.insert(0, str(ROOT / "gpt"))
    import jax
    import jax.numpy as jnp

    import train
    from model import init_params
    from raximport import memory

    cfg = train.parse_config([str(ROOT / "config" / "train_shakespeare_char_cpu.py"), f"--block_size={seq}"])
    model_config = train.model_config_from(cfg, vocab_size=65)
    optimizer, train_step, _ = train.make_steps(model_config, cfg)
    key = jax.random.key(0)
    params = init_params(model_config, key)
    opt_state = optimizer.init(params)
    x = jnp.zeros((batch, seq), jnp.int32)
    try:
        compiled = train_step.lower(params, opt_state, key, x, x).compile()  # raximport's check runs here
    except MemoryError as exc:
        print(json.dumps({"refused": True, "suggested": exc.suggested_batch_size}))
        return
    analysis = memory.ANALYSES[-1]
    device = jax.devices()[0]
    if device.platform == "cpu":
        before = memory.current_rss()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM, the peak RSS
        jax.block_until_ready(compiled(params, opt_state, key, x, x))
        measured = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
    else:
        before = device.memory_stats()["bytes_in_use"]
        jax.block_until_ready(compiled(params, opt_state, key, x, x))
        measured = device.memory_stats()["peak_bytes_in_use"]
    predicted = memory.predict_peak(memory.Budget(analysis.budget.limit, before, "", device.platform), analysis.footprint)
    print(json.dumps({"refused": False, "predicted": predicted, "measured": measured, "before": before,
                      "temps": analysis.footprint.temps, "platform": device.platform}))


def measure(batch: int, seq: int, limit: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")}
    out = subprocess.run([sys.executable, __file__, "--worker", str(batch), str(seq), limit or ""],
                         capture_output=True, text=True, env=env, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"worker failed for batch {batch}, seq {seq}:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="8,32,64,128,256", help="comma-separated batch sizes")
    parser.add_argument("--seqs", default="64,128,256", help="comma-separated sequence lengths")
    parser.add_argument("--limit", default="1.5GB", help="memory limit for the batch-size suggestion check")
    parser.add_argument("--fit-seq", type=int, default=128, help="sequence length of the suggestion check")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        batch, seq, limit = args.worker
        worker(int(batch), int(seq), limit or None)
        return

    print(f"{'batch':>6} {'seq':>5} {'before MiB':>11} {'predicted MiB':>14} {'measured MiB':>13} {'error':>7}")
    worst = 0.0
    for seq in map(int, args.seqs.split(",")):
        for batch in map(int, args.batches.split(",")):
            r = measure(batch, seq)
            error = (r["predicted"] - r["measured"]) / r["measured"]
            worst = max(worst, abs(error))
            print(f"{batch:>6} {seq:>5} {mib(r['before']):>11} {mib(r['predicted']):>14} {mib(r['measured']):>13} {error * 100:>+6.1f}%",
                  flush=True)
    print(f"worst error of the predicted peak: {worst * 100:.1f}% (goal: within 10%)")

    from raximport.config import parse_size

    limit_bytes = parse_size(args.limit)
    huge = measure(4096, args.fit_seq, args.limit)
    if not huge.get("refused"):
        print(f"batch 4096 fits under {args.limit}: raise the batch or lower the limit for the suggestion check")
        return
    suggested = huge["suggested"]
    low, high = 1, 4096  # the true largest batch whose measured peak stays under the limit
    while high - low > 1:
        mid = (low + high) // 2
        r = measure(mid, args.fit_seq)
        low, high = (mid, high) if r["measured"] <= limit_bytes else (low, mid)
        print(f"  batch {mid}: measured {mib(r['measured']).strip()} MiB", flush=True)
    print(f"limit {args.limit}, seq {args.fit_seq}: raximport suggests batch {suggested}; the true largest is {low} "
          f"({(suggested - low) / low * 100:+.1f}%, goal: within 10%)")


if __name__ == "__main__":
    main()
