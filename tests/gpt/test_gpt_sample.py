"""gpt/sample.py and model.generate: the KV-cache decoder against full recomputation."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import checkpoint
import model
from model import GPTConfig, generate, init_params, window_shift

ROOT = Path(__file__).resolve().parents[2]
CFG = GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, bias=True)


@pytest.fixture(scope="module")
def params():
    # a random model with a sharpened head, so that greedy choices are not near-ties
    p = jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))
    p["wte"] = p["wte"] * 20.0
    return p


@jax.jit
def _logits(p, window, length):  # one compile for every context length: pad to block_size
    return jax.lax.dynamic_index_in_dim(model.forward(p, window, CFG)[0], length - 1, axis=1, keepdims=False)


def greedy_by_recomputation(params, prompt, n):
    """Full forward over the whole context for every token, with generate's window policy:
    when the context exceeds block_size, drop its oldest window_shift tokens."""
    ctx = np.asarray(prompt)[:, -CFG.block_size :]
    out = []
    for _ in range(n):
        window = np.zeros((ctx.shape[0], CFG.block_size), np.int32)
        window[:, : ctx.shape[1]] = ctx
        tok = np.argmax(np.asarray(_logits(params, jnp.asarray(window), ctx.shape[1])), axis=-1)
        out.append(tok)
        ctx = np.concatenate([ctx, tok[:, None]], axis=1)
        if ctx.shape[1] > CFG.block_size:
            ctx = ctx[:, window_shift(CFG) :]
    return np.stack(out, axis=1)


@pytest.mark.parametrize("prompt_len, n", [(1, 15), (5, 11), (3, 40), (16, 9)])
def test_kv_cache_greedy_equals_recomputation(params, prompt_len, n):
    prompt = jnp.asarray(np.random.default_rng(prompt_len).integers(0, 65, (3, prompt_len)), jnp.int32)
    got = generate(params, prompt, CFG, n, jax.random.key(0), temperature=0.0)
    assert got.shape == (3, n)
    np.testing.assert_array_equal(np.asarray(got), greedy_by_recomputation(params, prompt, n))


def test_top_k_1_is_greedy_and_sampling_uses_the_key(params):
    prompt = jnp.ones((4, 3), jnp.int32)
    greedy = generate(params, prompt, CFG, 12, jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(greedy, generate(params, prompt, CFG, 12, jax.random.key(5), 1.0, top_k=1))
    a = generate(params, prompt, CFG, 12, jax.random.key(1), temperature=3.0)
    b = generate(params, prompt, CFG, 12, jax.random.key(2), temperature=3.0)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, generate(params, prompt, CFG, 12, jax.random.key(1), temperature=3.0))


def test_sample_script(tmp_path, params, capsys):
    chars = [chr(ord(" ") + i) for i in range(65)]
    opt_state = {"mu": jax.tree_util.tree_map(jnp.zeros_like, params)}
    meta = {"iter_num": 1, "model_args": CFG.to_dict(),
            "data_meta": {"tokenizer": "char", "vocab_size": 65, "chars": chars}}
    ckpts = checkpoint.Checkpoints(tmp_path)
    ckpts.save("latest", 1, {"params": params, "opt_state": opt_state}, meta)
    ckpts.wait()
    r = subprocess.run(
        [sys.executable, str(ROOT / "gpt" / "sample.py"), f"--out_dir={tmp_path}", "--start=ABC",
         "--num_samples=2", "--max_new_tokens=30", "--temperature=0.0"],
        capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    samples = r.stdout.split("---------------\n")
    assert len(samples) == 3 and samples[0] == samples[1] and samples[0].startswith("ABC")
    assert len(samples[0].rstrip("\n")) == 33
    r = subprocess.run([sys.executable, str(ROOT / "gpt" / "sample.py"), "--top=3"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown config key 'top'" in r.stderr
    import sample  # a prompt the vocabulary cannot spell: a clear error, not a KeyError traceback

    assert sample.main([f"--out_dir={tmp_path}", "--start=A\u00e9B\u00e9"]) == 2
    err = capsys.readouterr().err
    assert "the prompt cannot be encoded: 1 character not in the vocabulary: '\u00e9'" in err and "Traceback" not in err


def test_help_and_a_missing_checkpoint(tmp_path, capsys):
    import sample

    assert sample.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Sample from a trained model") and "  temperature = 0.8  # " in out
    assert all(f"  {key} = " in out for key in sample.DEFAULTS)
    assert sample.main([f"--out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint in {tmp_path / 'best'} nor {tmp_path / 'latest'}: train first" in err
