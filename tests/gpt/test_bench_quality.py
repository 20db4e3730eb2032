"""scripts/bench_quality.py: a config trained from several seeds, each run's val losses and their
summary (gpt/ only here: nanoGPT's side needs torch)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_quality.py"


@pytest.mark.slow
def test_each_seed_trains_and_the_summary_counts_them(data_dir, tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(ROOT / "config" / "train_tiny.py"),
                        f"--data_dir={data_dir}", "--seeds=0-1,5", f"--out={tmp_path}", "--threshold=3.9",
                        "--", "--max_iters=6", "--eval_interval=3", "--lr_decay_iters=6"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    runs, summary = got["runs"]["gpt/"], got["summary"]["gpt/"]
    assert sorted(runs) == ["0", "1", "5"]
    assert all((tmp_path / f"gpt-seed{s}" / "latest").is_dir() for s in runs)
    printed = [run["printed"] for run in runs.values()]
    assert len(set(printed)) == 3  # each seed its own weights and batches
    assert all(2.0 < run["whole"] < 4.2 for run in runs.values())  # below ln(65) = 4.17: it learned
    assert summary["runs"] == 3 and summary["printed"][0] == pytest.approx(sum(printed) / 3)
    assert summary["at_or_below"] == sum(x <= 3.9 for x in printed)
    assert "val loss at iteration 6" in r.stdout and "seed 5 gpt/" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--", "--max_iter=3"], "unknown config key 'max_iter'"),
    (["--nanogpt", "/nonexistent"], "--nanogpt"),  # no torch here, or no model.py there
])
def test_bad_input_is_a_usage_error_before_any_training(args, message, tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), f"--data_dir={tmp_path}", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # nothing prepared
