"""Val loss of the CPU config at max_iters over several seeds: gpt/, and PyTorch nanoGPT beside it.

    python scripts/bench_quality.py --seeds 0-7 --input ../shared/data/tinyshakespeare.txt
    python scripts/bench_quality.py --seeds 0-7 --nanogpt /tmp/nanoGPT --input tinyshakespeare.txt

Why: one run's val loss depends on its seed (initial weights and batches) by about +-0.01 and
the printed estimate (eval_iters=20 random batches) adds +-0.016 of its own, so one run per
trainer cannot say whether gpt/ trains as well as nanoGPT, nor how often either ends below a
threshold such as issue #3's 1.90. For every seed this trains gpt/ (train.py's train(), the
config as given) and, with --nanogpt PATH (a karpathy/nanoGPT checkout; needs torch), nanoGPT's
model through its own train.py loop from torch seed `seed` (scripts/nanogpt_side.py: its batch
and eval draws from torch's generator, in its order). For each run it records the val loss both
trainers print at max_iters and the mean loss over every window of the whole val split (one
evaluator for both, scripts/eval_whole_split.py); then, per trainer, mean +- standard error and
how many runs printed <= --threshold, and gpt/ minus nanoGPT with its standard error (Welch).
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "gpt"))
sys.path.insert(0, str(ROOT / "scripts"))
CPU_CONFIG = ROOT / "config" / "train_shakespeare_char_cpu.py"


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += range(int(lo), int(hi or lo) + 1)
    return seeds


def mean_se(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan"))


def summarise(runs: dict[int, dict[str, float]], threshold: float) -> dict:
    """Per trainer: (mean, standard error) of the printed and whole-split losses, the printed
    range, and how many runs printed <= threshold."""
    printed = [r["printed"] for r in runs.values()]
    return {
        "runs": len(runs), "printed": mean_se(printed), "whole": mean_se([r["whole"] for r in runs.values()]),
        "printed_min": min(printed), "printed_max": max(printed), "at_or_below": sum(x <= threshold for x in printed),
    }


def run_gpt(cfg: dict, seed: int, out_dir: Path, splits: dict) -> dict[str, float]:
    from rich.console import Console

    import train
    from eval_whole_split import from_gpt, whole_split_loss

    run_cfg = {**cfg, "seed": seed, "out_dir": str(out_dir / f"gpt-seed{seed}"), "overwrite": True}  # a re-run replaces it
    with open(os.devnull, "w") as quiet:
        summary = train.train(run_cfg, console=Console(file=quiet))
    params, config = from_gpt(Path(run_cfg["out_dir"]))
    return {"printed": summary["evals"][cfg["max_iters"]]["val"], "whole": whole_split_loss(params, config, splits["val"])}


def run_nanogpt(nanogpt, cfg: dict, seed: int, dataset_dir: Path, splits: dict) -> dict[str, float]:
    import data
    import nanogpt_side
    import train
    from eval_whole_split import nanogpt_params, whole_split_loss

    config = train.model_config_from(cfg, data.load_meta(dataset_dir)["vocab_size"])
    model, evals = nanogpt_side.train_from_scratch(nanogpt, config, cfg, seed, dataset_dir)
    params = nanogpt_params(model.state_dict(), config)
    return {"printed": evals[cfg["max_iters"]]["val"], "whole": whole_split_loss(params, config, splits["val"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-7"), help="e.g. 0-7 or 1337,0,1 (default 0-7)")
    p.add_argument("--config", type=Path, default=CPU_CONFIG, help="default: the CPU config")
    p.add_argument("overrides", nargs="*", help="--key=value overrides for the config (after --), e.g. -- --max_iters=500")
    p.add_argument("--nanogpt", type=Path, help="a karpathy/nanoGPT checkout: train its model too (torch)")
    p.add_argument("--data_dir", default=str(Path(tempfile.gettempdir()) / "bench_gpt_data"))
    p.add_argument("--input", help="text file for shakespeare_char (else data.py's default source)")
    p.add_argument("--threshold", type=float, default=1.90, help="count runs printing <= this (default %(default)s)")
    p.add_argument("--out", type=Path, help="keep gpt/'s checkpoints here (default: a temporary directory)")
    args = p.parse_args()

    import data
    import train
    from rich.console import Console
    from rich.table import Table

    console = Console()
    trainers = {"gpt/": None}
    if args.nanogpt:
        import importlib.util

        import nanogpt_side

        if importlib.util.find_spec("torch") is None:
            p.error("--nanogpt needs PyTorch in this environment (its CPU build is enough)")
        try:
            trainers["nanoGPT"] = nanogpt_side.load(args.nanogpt)
        except FileNotFoundError as e:
            p.error(f"--nanogpt: {e}")

    try:
        cfg = train.parse_config([str(args.config), f"--data_dir={args.data_dir}", *args.overrides])
    except train.ConfigError as e:
        p.error(str(e))
    train.use_cpu_cores(cfg)
    dataset_dir = data.ensure_prepared(cfg["dataset"], cfg["data_dir"], input_path=args.input)
    splits = {s: data.load_split(dataset_dir, s) for s in ("train", "val")}
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in trainers}
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp)
        for i, seed in enumerate(args.seeds):
            for name, nanogpt in trainers.items():
                t0 = time.perf_counter()
                r = run_gpt(cfg, seed, out_dir, splits) if nanogpt is None else run_nanogpt(nanogpt, cfg, seed, dataset_dir, splits)
                results[name][seed] = r
                console.print(f"[{i + 1}/{len(args.seeds)}] seed {seed} {name}: val loss printed {r['printed']:.4f}, "
                              f"whole split {r['whole']:.4f} ({time.perf_counter() - t0:.0f} s)")

    summary = {name: summarise(runs, args.threshold) for name, runs in results.items()}
    table = Table(title=f"{args.config.name}, val loss at iteration {cfg['max_iters']}, seeds {args.seeds}")
    for col in ("trainer", "runs", "printed, mean +- se", "min - max", f"<= {args.threshold}", "whole split, mean +- se"):
        table.add_column(col, justify="right")
    for name, m in summary.items():
        table.add_row(name, str(m["runs"]), f"{m['printed'][0]:.4f} +- {m['printed'][1]:.4f}",
                      f"{m['printed_min']:.4f} - {m['printed_max']:.4f}", str(m["at_or_below"]),
                      f"{m['whole'][0]:.4f} +- {m['whole'][1]:.4f}")
    console.print(table)
    if args.nanogpt:
        for kind in ("printed", "whole"):
            (m1, s1), (m2, s2) = summary["gpt/"][kind], summary["nanoGPT"][kind]
            console.print(f"gpt/ - nanoGPT, {kind}: {m1 - m2:+.4f} +- {math.hypot(s1, s2):.4f}")
    print(json.dumps({"runs": {name: {str(s): r for s, r in runs.items()} for name, runs in results.items()},
                      "summary": summary}))

if __name__ == "__main__":
    main()
