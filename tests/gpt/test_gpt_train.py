"""gpt/train.py: config parsing, the loop (loss goes down, accumulation), exact resume,
Ctrl-C, and atomic checkpoints (gpt/checkpoint.py). Its guards are in test_gpt_guards.py."""

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import checkpoint
import data
import train

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "config" / "train_tiny.py"


def tiny(data_dir, out_dir, *overrides):
    return train.parse_config([str(TINY), f"--data_dir={data_dir}", f"--out_dir={out_dir}", *overrides])


def saved(out_dir):
    """The newest checkpoint in out_dir/latest: (its state, its meta)."""
    from model import GPTConfig, init_params

    ckpts = checkpoint.Checkpoints(out_dir, read_only=True)
    meta = ckpts.meta("latest")
    params = jax.eval_shape(partial(init_params, GPTConfig(**meta["model_args"])), jax.random.key(0))
    opt_state = jax.eval_shape(train.make_optimizer(meta["config"]).init, params)
    like = {"params": params, "opt_state": opt_state, "rng": {"key": jax.ShapeDtypeStruct((2,), jnp.uint32)}}
    return ckpts.restore("latest", like)


# ----------------------------------------------------------------------------- config


def test_config_file_then_overrides(tmp_path):
    cfg = train.parse_config([str(TINY), "--n_layer=3", "--learning_rate=3e-3", "--dataset=shakespeare"])
    assert cfg["n_layer"] == 3 and cfg["n_embd"] == 32 and cfg["learning_rate"] == 3e-3
    assert cfg["dataset"] == "shakespeare" and cfg["max_iters"] == 20
    assert train.parse_config(["--dropout=0"])["dropout"] == 0.0  # int where a float is expected: fine
    assert train.parse_config(["--bias=True"])["bias"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n_layers=3"], "unknown config key 'n_layers'"),
        (["--n_layer=3.5"], "'n_layer' (from --n_layer=3.5) must be int, got float"),
        (["--bias=1"], "'bias' (from --bias=1) must be bool"),
        (["--n_layer"], "expected --key=value"),
        (["no_such_config.py"], "config file not found"),
    ],
)
def test_bad_config_is_a_clear_error(args, message):
    with pytest.raises(train.ConfigError) as e:
        train.parse_config(args)
    assert message in str(e.value)
    if "key" in message:
        assert "valid keys: always_save_checkpoint, batch_size" in str(e.value)


def test_bad_config_file_key(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import math\nn_layer = 2\nlearnin_rate = math.pi\n")
    with pytest.raises(train.ConfigError, match=r"unknown config key 'learnin_rate' \(from .*bad.py\)"):
        train.parse_config([str(bad)])


def test_bad_config_exits_2_without_traceback():
    r = subprocess.run(
        [sys.executable, str(ROOT / "gpt" / "train.py"), str(TINY), "--max_iter=5"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unknown config key 'max_iter'" in r.stderr and "max_iters" in r.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_shows_usage_and_every_key_with_its_default_and_comment(flag, capsys):
    assert train.main([str(TINY), flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Train a GPT in plain JAX") and "python gpt/train.py config/" in out
    assert "  batch_size = 12  # micro-batch size\n" in out
    assert all(f"  {key} = " in out for key in train.DEFAULTS)


def test_resume_without_a_checkpoint_is_a_config_error_with_its_path(tmp_path, data_dir):
    with pytest.raises(train.ConfigError) as e:  # main() prints it and exits 2, as any config error
        train.train(tiny(data_dir, tmp_path, "--init_from=resume"))
    assert str(e.value) == f"init_from='resume': no checkpoint in {tmp_path / 'latest'}"


def test_all_configs_parse():
    for path in sorted((ROOT / "config").glob("train_*.py")):
        cfg = train.parse_config([str(path)])
        train.model_config_from(cfg, 65)  # a valid model


# ----------------------------------------------------------------------------- training


def test_training_reduces_loss(tmp_path, data_dir):
    summary = train.train(tiny(data_dir, tmp_path, "--max_iters=30", "--eval_interval=30"))
    evals = summary["evals"]
    assert evals[30]["val"] < evals[0]["val"] - 0.5
    assert summary["iter_num"] == 30
    assert checkpoint.Checkpoints(tmp_path, read_only=True).steps() == {"latest": [30], "best": [30], "good": [30]}


def test_resume_is_bit_for_bit(tmp_path, data_dir):
    over = ["--max_iters=12", "--eval_interval=6", "--dropout=0.1", "--lr_decay_iters=12"]
    full = train.train(tiny(data_dir, tmp_path / "full", *over))
    half = train.train(tiny(data_dir, tmp_path / "half", *over[1:], "--max_iters=6"))
    resumed = train.train(tiny(data_dir, tmp_path / "half", *over, "--init_from=resume"))
    assert half["iter_num"] == 6 and resumed["iter_num"] == 12
    got = {**half["losses"], **resumed["losses"]}
    assert got == full["losses"]  # floats compared exactly
    assert resumed["evals"][12] == full["evals"][12]
    (a, meta_a), (b, meta_b) = saved(tmp_path / "full"), saved(tmp_path / "half")
    assert meta_a["iter_num"] == meta_b["iter_num"] == 12 and meta_a["np_rng_state"] == meta_b["np_rng_state"]
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_gradient_accumulation_matches_a_big_batch():
    from model import GPTConfig, init_params

    mc = GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)
    cfg = dict(train.DEFAULTS, grad_clip=0.0)
    params = init_params(mc, jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 65, (8, 16)), jnp.int32)
    y = jnp.asarray(rng.integers(0, 65, (8, 16)), jnp.int32)
    results = []
    for accum in (1, 4):
        opt, step, _ = train.make_steps(mc, dict(cfg, gradient_accumulation_steps=accum))
        p = jax.tree_util.tree_map(jnp.copy, params)
        results.append(step(p, opt.init(p), jax.random.key(1), x, y))
    np.testing.assert_allclose(results[0][3]["loss"], results[1][3]["loss"], rtol=1e-5)
    np.testing.assert_allclose(results[0][3]["grad_norm"], results[1][3]["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(results[0][0]), jax.tree_util.tree_leaves(results[1][0])):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_lr_schedule():
    cfg = dict(train.DEFAULTS, learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    lr = lambda it: float(train.get_lr(it, cfg))  # noqa: E731
    assert lr(0) == pytest.approx(1 / 11) and lr(9) == pytest.approx(10 / 11)
    assert lr(10) == pytest.approx(1.0) and lr(60) == pytest.approx(0.55) and lr(110) == pytest.approx(0.1)
    assert lr(500) == pytest.approx(0.1)


def test_ctrl_c_saves_and_stops(tmp_path, data_dir, monkeypatch, capsys):
    out = tmp_path / ("long-output-directory-" * 4)  # a log line longer than 80 columns stays one line
    calls = {"n": 0}
    real = data.get_batch

    def get_batch(*args):
        calls["n"] += 1
        if calls["n"] == 3 + 2 * 2:  # 2 evals x eval_iters=2, then the third training batch
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(data, "get_batch", get_batch)
    summary = train.train(tiny(data_dir, out, "--max_iters=50", "--eval_interval=1000"))
    assert summary["interrupted"] and summary["iter_num"] == 3
    assert checkpoint.Checkpoints(out, read_only=True).meta("latest")["iter_num"] == 3
    assert f"interrupted: saved {out / 'latest' / '3'} at iteration 3\n" in capsys.readouterr().out


# ----------------------------------------------------------------------------- checkpoints


STATE = {"params": {"a": [np.arange(3, dtype=np.float32), {"b": np.ones((2, 2), np.float32)}], "h": np.ones((2,), jnp.bfloat16)},
         "opt_state": {"count": np.asarray(7, np.int32)}, "rng": {"key": np.asarray([1, 2], np.uint32)}}


def test_checkpoint_roundtrip_latest_best_good(tmp_path):
    ckpts = checkpoint.Checkpoints(tmp_path, keep_last=2)
    for step, val_loss in [(1, 3.0), (2, 1.0), (3, 2.0)]:
        for kind in ("latest", "best", "good"):
            assert ckpts.save(kind, step, STATE, {"iter_num": step, "big": 2**100}, val_loss)
    assert not ckpts.save("latest", 3, STATE, {})  # already saved: a resumed run evaluating where it stopped
    ckpts.wait()
    # latest keeps the last 2, best the lowest val loss, good the newest
    assert ckpts.steps() == {"latest": [2, 3], "best": [2], "good": [3]}
    reader = checkpoint.Checkpoints(tmp_path, read_only=True)
    got, meta = reader.restore("latest", STATE)
    assert meta == {"iter_num": 3, "big": 2**100}
    for a, b in zip(jax.tree_util.tree_leaves(STATE), jax.tree_util.tree_leaves(got)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert reader.meta("best")["iter_num"] == 2
    params, _ = reader.restore("good", {"params": STATE["params"]})  # one item, without the optimizer state
    np.testing.assert_array_equal(params["params"]["a"][0], np.arange(3.0))
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint .*latest/3 cannot be read"):
        reader.restore("latest", {"params": {"z": np.zeros(3, np.float32)}})


def test_all_finite():
    assert bool(checkpoint.all_finite(STATE))
    assert not bool(checkpoint.all_finite({**STATE, "x": jnp.asarray([1.0, jnp.inf])}))
    assert bool(checkpoint.all_finite({"count": jnp.asarray(3)}))  # no floating leaf: nothing to fail


KILLED_SAVE = """
import sys, os
sys.path.insert(0, {gpt!r})
import numpy as np
import checkpoint
from orbax.checkpoint._src.path import atomicity

ckpts = checkpoint.Checkpoints({out!r})
ckpts.save("latest", 1, {{"params": {{"w": np.zeros(1000)}}}}, {{"iter_num": 1}})
ckpts.wait()

async def die(*args, **kwargs):  # the data is written, the rename that would commit it never happens
    os._exit(9)

atomicity.AtomicRenameTemporaryPath.finalize = die
ckpts.save("latest", 2, {{"params": {{"w": np.ones(1000)}}}}, {{"iter_num": 2}})
ckpts.wait()
"""


def test_killed_save_leaves_previous_checkpoint(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SAVE.format(gpt=str(ROOT / "gpt"), out=str(tmp_path / "out")))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr[-3000:]
    assert any("tmp" in p.name for p in (tmp_path / "out" / "latest").iterdir())  # the half-done save is there
    ckpts = checkpoint.Checkpoints(tmp_path / "out")  # (and cleaned up when a run opens the folder again)
    assert ckpts.steps() == {"latest": [1]}
    state, meta = ckpts.restore("latest", {"params": {"w": np.zeros(1000)}})
    assert meta["iter_num"] == 1 and float(state["params"]["w"].sum()) == 0.0
    assert sorted(p.name for p in (tmp_path / "out" / "latest").iterdir()) == ["1"]
