"""The flagship case of the memory check: gpt's train step, too large for a memory limit, is refused
before it runs; the batch size raximport suggests then runs under the same limit; 25% more does not."""

import re
import sys
from pathlib import Path

import pytest

from tests.helpers import write

ROOT = Path(__file__).resolve().parents[2]
DRIVER = f"""
import sys
sys.path.insert(0, {str(ROOT / "gpt")!r})
import jax, jax.numpy as jnp
import train
from model import init_params

cfg = train.parse_config([{str(ROOT / "config" / "train_tiny.py")!r}, "--n_embd=64", "--block_size=64", "--n_layer=2"])
model_config = train.model_config_from(cfg, vocab_size=65)
optimizer, train_step, _ = train.make_steps(model_config, cfg)
key = jax.random.key(0)
params = init_params(model_config, key)
opt_state = optimizer.init(params)
x = jnp.zeros((int(sys.argv[1]), 64), jnp.int32)
try:
    params, opt_state, key, stats = train_step(params, opt_state, key, x, x)
except MemoryError as exc:
    print("suggested", exc.suggested_batch_size, "alive", not x.is_deleted() and not jax.tree_util.tree_leaves(params)[0].is_deleted())
    raise
print("ran", float(stats["loss"]))
"""


@pytest.mark.slow
def test_gpt_step_over_the_limit_is_refused_and_the_suggestion_fits(run_python, tmp_path: Path) -> None:
    write(tmp_path / "driver.py", DRIVER)
    run = lambda batch, *flags: run_python("-m", "raximport", "--path", str(ROOT / "gpt"), *flags, "driver.py", str(batch), cwd=tmp_path)
    probe = run(8, "--memory-report")
    assert probe.returncode == 0 and "ran" in probe.stdout, probe.stderr
    peak_mb = float(re.search(r"train_step\s+\S+ \S+\s+\S+ \S+\s+([\d.]+) MB", probe.stderr).group(1))
    limit = f"{int(peak_mb + 200)}MB"

    refused = run(4096, "--memory-limit", limit)
    assert refused.returncode == 1 and "ran" not in refused.stdout, refused.stderr
    assert "train_step would run out of memory: refused before running it" in refused.stderr
    match = re.search(r"suggested (\d+) alive True", refused.stdout)
    assert match, refused.stdout + refused.stderr
    suggested = int(match.group(1))
    assert 8 < suggested < 4096

    assert run(suggested, "--memory-limit", limit).returncode == 0
    larger = run(int(suggested * 1.25), "--memory-limit", limit)
    assert larger.returncode == 1 and "refused before running it" in larger.stderr
