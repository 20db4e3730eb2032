"""gpt/model.py: init, forward, dropout keys, bf16, and its jaxtyping annotations at runtime."""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from model import GPTConfig, attention, init_params, num_params

forward = jax.jit(model.forward, static_argnames="config")  # eager op-by-op is slow on CPU

GPT_DIR = Path(__file__).resolve().parents[2] / "gpt"
CFG = GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)


def batch(config=CFG, b=3, t=16, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, config.vocab_size, (b, t)), jnp.int32)


def test_config_is_frozen_and_hashable():
    with pytest.raises(Exception):
        CFG.n_layer = 3
    assert hash(CFG) == hash(GPTConfig(**CFG.to_dict()))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)


def test_gpt2_init():
    cfg = GPTConfig(block_size=16, vocab_size=65, n_layer=4, n_head=2, n_embd=128, bias=True)
    p = init_params(cfg, jax.random.key(0))
    assert p["wte"].shape == (65, 128) and p["wpe"].shape == (16, 128) and len(p["h"]) == 4
    blk = p["h"][0]
    assert blk["attn"]["c_attn"]["w"].shape == (128, 384) and blk["mlp"]["c_fc"]["w"].shape == (128, 512)
    assert abs(float(jnp.std(blk["mlp"]["c_fc"]["w"])) - 0.02) < 0.002
    assert abs(float(jnp.std(blk["mlp"]["c_proj"]["w"])) - 0.02 / math.sqrt(8)) < 0.001
    assert abs(float(jnp.std(blk["attn"]["c_proj"]["w"])) - 0.02 / math.sqrt(8)) < 0.001
    assert float(jnp.abs(blk["attn"]["c_attn"]["b"]).max()) == 0.0
    assert bool(jnp.all(blk["ln_1"]["scale"] == 1.0)) and bool(jnp.all(p["ln_f"]["bias"] == 0.0))
    nobias = init_params(GPTConfig(**{**cfg.to_dict(), "bias": False}), jax.random.key(0))
    assert "b" not in nobias["h"][0]["attn"]["c_attn"] and "bias" not in nobias["ln_f"]
    mask = model.decay_mask(p)  # weight decay on matmul weights and embeddings only
    assert mask["wte"] and mask["wpe"] and mask["h"][1]["mlp"]["c_fc"]["w"]
    assert not mask["h"][1]["mlp"]["c_fc"]["b"] and not mask["h"][0]["ln_1"]["scale"] and not mask["ln_f"]["bias"]
    assert num_params(p) == sum(x.size for x in jax.tree_util.tree_leaves(p)) - 16 * 128


def test_forward_shapes_and_initial_loss():
    p = init_params(CFG, jax.random.key(0))
    x = batch()
    logits, loss = forward(p, x, CFG, jnp.roll(x, -1, axis=1))
    assert logits.shape == (3, 16, 65) and logits.dtype == jnp.float32
    assert abs(float(loss) - math.log(65)) < 0.1  # near-uniform predictions at init
    logits2, none = forward(p, x[:, :5], CFG)
    assert none is None and logits2.shape == (3, 5, 65)
    np.testing.assert_allclose(logits2, logits[:, :5], atol=1e-5)  # causal: a prefix sees only itself
    with pytest.raises(ValueError, match="block size"):
        forward(p, batch(t=17), CFG)


def test_loss_ignores_negative_targets():
    p = init_params(CFG, jax.random.key(0))
    x = batch()
    y = jnp.roll(x, -1, axis=1)
    _, full = forward(p, x[:, :8], CFG, y[:, :8])
    _, masked = forward(p, x, CFG, y.at[:, 8:].set(-1))
    np.testing.assert_allclose(masked, full, rtol=1e-5)


def test_dropout_needs_a_key_and_each_key_differs():
    cfg = GPTConfig(**{**CFG.to_dict(), "dropout": 0.3})
    p = init_params(cfg, jax.random.key(0))
    x = batch()
    a = forward(p, x, cfg)[0]
    np.testing.assert_array_equal(a, forward(p, x, cfg)[0])  # eval: deterministic
    k1, k2 = jax.random.split(jax.random.key(1))
    d1 = forward(p, x, cfg, key=k1)[0]
    assert not np.allclose(d1, a)
    assert not np.allclose(d1, forward(p, x, cfg, key=k2)[0])
    np.testing.assert_array_equal(d1, forward(p, x, cfg, key=k1)[0])  # noqa: RAX201 (same key: same dropout)


def test_attention_matches_manual_softmax():
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 10, 4, 8))
    got = attention(q, k, v)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8)
    s = jnp.where(jnp.tril(jnp.ones((10, 10), bool)), s, -jnp.inf)
    want = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
    cfg16 = GPTConfig(**{**CFG.to_dict(), "dtype": "bfloat16"})
    p = init_params(cfg16, jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(p))
    x = batch()
    y = jnp.roll(x, -1, axis=1)
    l32 = forward(p, x, CFG, y)[1]
    l16 = forward(p, x, cfg16, y)[1]
    assert l16.dtype == jnp.float32 and abs(float(l16) - float(l32)) < 0.05
    grads = jax.jit(jax.grad(lambda p: model.forward(p, x, cfg16, y)[1]))(p)
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))


HOOKED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {gpt_dir!r})
    import jaxtyping
    with jaxtyping.install_import_hook(["model", "train", "checkpoint"], "beartype.beartype"):
        import model, train
    import jax, jax.numpy as jnp
    for dtype, dropout in [("float32", 0.1), ("bfloat16", 0.0)]:
        cfg = model.GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32,
                              dropout=dropout, dtype=dtype)
        params = model.init_params(cfg, jax.random.key(0))
        x = jnp.zeros((2, 16), jnp.int32)
        fwd = jax.jit(model.forward, static_argnames="config")
        logits, loss = fwd(params, x, cfg, x, jax.random.key(1))
        assert logits.shape == (2, 16, 65)
        tcfg = dict(train.DEFAULTS, gradient_accumulation_steps=2, dtype=dtype)
        opt = train.make_optimizer(tcfg)
        step = train.make_train_step(cfg, opt, 2)
        params, state, key, loss = step(params, opt.init(params), jax.random.key(2), jnp.zeros((4, 16), jnp.int32),
                                        jnp.zeros((4, 16), jnp.int32))
        assert loss["loss"].shape == () and loss["finite"].dtype == jnp.bool_
        train.make_eval_step(cfg)(params, x, x)
        toks = model.generate(params, x[:, :3], cfg, 20, jax.random.key(3), temperature=0.8, top_k=5)
        assert toks.shape == (2, 20)
    # and the checks are live: a wrong shape is refused
    try:
        fwd(params, jnp.zeros((2, 16), jnp.float32), cfg)
    except jaxtyping.TypeCheckError:
        print("REFUSED")
    print("OK")
    """
)


def test_annotations_pass_jaxtyping_beartype_at_runtime():
    code = HOOKED.format(gpt_dir=str(GPT_DIR))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "REFUSED" in r.stdout and "OK" in r.stdout


def test_gelu_is_exact_gelu():
    x = jnp.linspace(-8.0, 8.0, 10_001)
    assert jnp.max(jnp.abs(model.gelu(x) - jax.nn.gelu(x, approximate=False))) < 2e-6
    grad = jax.vmap(jax.grad(model.gelu))(x)
    assert jnp.max(jnp.abs(grad - jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x))) < 2e-6
