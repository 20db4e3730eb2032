"""gpt/train.py: config parsing, the loop (loss goes down, accumulation), exact resume,
Ctrl-C, and atomic checkpoints (gpt/checkpoint.py)."""

import os
import signal
import subprocess
import sys
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
    assert str(e.value) == f"init_from='resume' but there is no checkpoint at {tmp_path / 'last.npz'}"


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
    assert (tmp_path / "last.npz").exists() and (tmp_path / "best.npz").exists()


def test_resume_is_bit_for_bit(tmp_path, data_dir):
    over = ["--max_iters=12", "--eval_interval=6", "--dropout=0.1", "--lr_decay_iters=12"]
    full = train.train(tiny(data_dir, tmp_path / "full", *over))
    half = train.train(tiny(data_dir, tmp_path / "half", *over[1:], "--max_iters=6"))
    resumed = train.train(tiny(data_dir, tmp_path / "half", *over, "--init_from=resume"))
    assert half["iter_num"] == 6 and resumed["iter_num"] == 12
    got = {**half["losses"], **resumed["losses"]}
    assert got == full["losses"]  # floats compared exactly
    assert resumed["evals"][12] == full["evals"][12]
    a = np.load(tmp_path / "full" / "last.npz")
    b = np.load(tmp_path / "half" / "last.npz")
    for name in a.files:
        if name != "__meta__":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


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
    np.testing.assert_allclose(results[0][3], results[1][3], rtol=1e-5)
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
    assert checkpoint.load_meta(out / "last.npz")["iter_num"] == 3
    assert f"interrupted: saved {out / 'last.npz'} at iteration 3\n" in capsys.readouterr().out


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip(tmp_path):
    tree = {"a": [np.arange(3.0), {"b": np.ones((2, 2), np.float32)}], "k": jnp.asarray([1, 2], jnp.uint32),
            "h": jnp.ones((2,), jnp.bfloat16)}
    checkpoint.save(tmp_path / "c.npz", tree, {"iter_num": 7, "big": 2**100})
    got, meta = checkpoint.load(tmp_path / "c.npz", tree)
    assert meta == {"iter_num": 7, "big": 2**100}
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(got)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    sub, _ = checkpoint.load(tmp_path / "c.npz", {"b": 0}, prefix="['a'][1]")
    np.testing.assert_array_equal(sub["b"], np.ones((2, 2)))
    with pytest.raises(ValueError, match="does not match"):
        checkpoint.load(tmp_path / "c.npz", {"a": 0})


def test_killed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    checkpoint.save(path, {"w": np.zeros(1000)}, {"iter_num": 1})
    real_savez = np.savez

    def dying_savez(f, **arrays):  # writes part of the file, then the process "dies"
        real_savez(f, **arrays)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"w": np.ones(1000)}, {"iter_num": 2})
    monkeypatch.undo()
    tree, meta = checkpoint.load(path, {"w": np.zeros(1000)})
    assert meta["iter_num"] == 1 and float(tree["w"].sum()) == 0.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]  # no temp file left behind


@pytest.mark.slow
def test_a_diverged_loss_stops_training(tmp_path, data_dir, capsys):
    summary = train.train(tiny(data_dir, tmp_path, "--max_iters=50", "--eval_interval=1000", "--log_interval=2",
                               "--learning_rate=1e30", "--warmup_iters=0"))
    assert summary["diverged"] and summary["iter_num"] < 50
    assert f"iter {summary['iter_num']}: loss is nan, stopping" in capsys.readouterr().out
