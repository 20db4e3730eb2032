"""The main job, small: train the tiny config and sample from it under `python -m raximport`,
with every annotated gpt function checked and the train step's jit routed through raximport."""

import re
from pathlib import Path

import pytest

import data
from tests.helpers import write

ROOT = Path(__file__).resolve().parents[2]
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east.\n\n" * 60


@pytest.mark.slow
def test_train_then_sample_under_raximport_matches_plain_python(run_python, tmp_path: Path) -> None:
    write(tmp_path / "input.txt", TEXT)
    data.prepare("shakespeare_char", tmp_path / "data", input_path=tmp_path / "input.txt")
    train_args = [str(ROOT / "gpt" / "train.py"), str(ROOT / "config" / "train_tiny.py"), "--max_iters=8",
                  f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'out'}"]
    checked = run_python("-m", "raximport", "--verbose", *train_args, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "instrumenting model" in checked.stderr and "instrumenting train" not in checked.stderr  # train.py is __main__
    assert "has been compiled" not in checked.stderr  # get_lr(it, cfg) per logged iteration: `it` is traced
    plain = run_python(*train_args[:-1], f"--out_dir={tmp_path / 'plain'}", cwd=tmp_path)  # (not over the checkpoints)
    losses = lambda out: re.findall(r"(?:iter|step) \d+: .*loss [\d.]+", out)
    assert losses(checked.stdout) == losses(plain.stdout) and len(losses(plain.stdout)) >= 4

    sample = run_python("-m", "raximport", str(ROOT / "gpt" / "sample.py"), f"--out_dir={tmp_path / 'out'}",
                        "--num_samples=1", "--max_new_tokens=40", "--start=ROMEO:", cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert sample.stdout.startswith("ROMEO:") and len(sample.stdout) > 40
