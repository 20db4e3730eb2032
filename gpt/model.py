"""A GPT language model in plain JAX, after karpathy/nanoGPT's model.py.

Parameters are a plain pytree of nested dicts (and one list, the blocks) of
arrays; every function is pure. Shapes are spelled with jaxtyping using one
naming convention throughout:

    batch, seq, vocab, embed, heads, head_dim, hidden

References:
1) the official GPT-2 TensorFlow implementation released by OpenAI:
   https://github.com/openai/gpt-2/blob/master/src/model.py
2) karpathy/nanoGPT: https://github.com/karpathy/nanoGPT/blob/master/model.py
"""

import math
from functools import partial
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

Params = dict[str, Any]  # {"wte", "wpe", "h": [block, ...], "ln_f"}; see init_params
KVCache = dict[str, Any]  # {"k": [per layer], "v": [per layer]}, (batch, seq, heads, head_dim) each


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False: a bit better and faster
    dtype: str = "float32"  # compute dtype of the matmuls: "float32" or "bfloat16" (params stay float32)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', not {self.dtype!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- init


def init_params(config: GPTConfig, key: PRNGKeyArray) -> Params:
    """GPT-2 init: N(0, 0.02) weights, residual projections N(0, 0.02/sqrt(2*n_layer)),
    zero biases, LayerNorm scales one. Linear weights are stored (in, out): y = x @ w."""
    c = config
    std = 0.02
    proj_std = 0.02 / math.sqrt(2 * c.n_layer)
    keys = iter(jax.random.split(key, 2 + 4 * c.n_layer))
    E = c.n_embd

    def layer_norm() -> dict[str, Array]:
        p = {"scale": jnp.ones((E,), jnp.float32)}
        if c.bias:
            p["bias"] = jnp.zeros((E,), jnp.float32)
        return p

    def linear(n_in: int, n_out: int, s: float) -> dict[str, Array]:
        p = {"w": s * jax.random.normal(next(keys), (n_in, n_out), jnp.float32)}
        if c.bias:
            p["b"] = jnp.zeros((n_out,), jnp.float32)
        return p

    return {
        "wte": std * jax.random.normal(next(keys), (c.vocab_size, E), jnp.float32),  # tied with the LM head
        "wpe": std * jax.random.normal(next(keys), (c.block_size, E), jnp.float32),
        "h": [
            {
                "ln_1": layer_norm(),
                "attn": {"c_attn": linear(E, 3 * E, std), "c_proj": linear(E, E, proj_std)},
                "ln_2": layer_norm(),
                "mlp": {"c_fc": linear(E, 4 * E, std), "c_proj": linear(4 * E, E, proj_std)},
            }
            for _ in range(c.n_layer)
        ],
        "ln_f": layer_norm(),
    }


def decay_mask(params: Params) -> Params:
    """True for the parameters that get weight decay: matmul weights and embeddings (the 2-D
    tensors of nanoGPT), not biases nor LayerNorm scales."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key in ("w", "wte", "wpe"), params)


def num_params(params: Params, non_embedding: bool = True) -> int:
    """Parameter count; like nanoGPT, position embeddings are excluded by default
    (token embeddings count because they are tied to the LM head)."""
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    if non_embedding:
        n -= params["wpe"].size
    return int(n)


# --------------------------------------------------------------------------- layers


def layer_norm(
    x: Float[Array, "batch seq embed"], p: dict[str, Array], eps: float = 1e-5
) -> Float[Array, "batch seq embed"]:
    """LayerNorm in float32 whatever the compute dtype, cast back to x's dtype."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps) * p["scale"]
    if "bias" in p:
        y = y + p["bias"]
    return y.astype(x.dtype)


def linear(x: Float[Array, "batch seq _"], p: dict[str, Array]) -> Float[Array, "batch seq _"]:
    """x @ w + b, with w cast to x's dtype; feature sizes vary (embed, 3*embed, hidden): unnamed.

    The matmul is written on a 2-D (batch*seq, features) view: XLA:CPU then computes the weight
    gradient x^T @ dy without fusing a slow transposed copy into the backward pass (1.8x faster
    train step than a 3-D x @ w on the CPU config)."""
    B, T, C = x.shape
    y = (x.reshape(B * T, C) @ p["w"].astype(x.dtype)).reshape(B, T, -1)  # noqa: RAX402 deliberate 2-D view (docstring)
    if "b" in p:
        y = y + p["b"].astype(x.dtype)
    return y


def gelu(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """Exact GELU, x * Phi(x), as nanoGPT's nn.GELU(). Written with erf: jax.nn.gelu's exact form
    uses erfc, which XLA:CPU computes about 4x slower (same values to 5e-7)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def dropout(x: Float[Array, "..."], rate: float, key: PRNGKeyArray | None) -> Float[Array, "..."]:
    """Inverted dropout; a no-op when key is None (eval) or rate == 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def attention(
    q: Float[Array, "batch seq heads head_dim"],
    k: Float[Array, "batch seq heads head_dim"],
    v: Float[Array, "batch seq heads head_dim"],
    dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "batch seq heads head_dim"]:
    """Causal scaled dot-product attention (softmax in float32)."""
    if key is None or dropout_rate == 0.0:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    T, hd = q.shape[1], q.shape[3]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(hd)
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))
    scores = jnp.where(causal, scores, -jnp.inf)
    probs = dropout(jax.nn.softmax(scores, axis=-1), dropout_rate, key).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def split_heads(x: Float[Array, "batch seq embed"], n_head: int) -> Float[Array, "batch seq heads head_dim"]:
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head)


def merge_heads(x: Float[Array, "batch seq heads head_dim"]) -> Float[Array, "batch seq embed"]:
    B, T, H, D = x.shape
    return x.reshape(B, T, H * D)


def mlp(
    x: Float[Array, "batch seq embed"], p: dict[str, Any], config: GPTConfig, key: PRNGKeyArray | None
) -> Float[Array, "batch seq embed"]:
    h: Float[Array, "batch seq hidden"] = gelu(linear(x, p["c_fc"]))
    return dropout(linear(h, p["c_proj"]), config.dropout, key)


def block(
    x: Float[Array, "batch seq embed"], p: dict[str, Any], config: GPTConfig, key: PRNGKeyArray | None
) -> Float[Array, "batch seq embed"]:
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
    k_attn, k_resid, k_mlp = jax.random.split(key, 3) if key is not None else (None, None, None)
    q, k, v = jnp.split(linear(layer_norm(x, p["ln_1"]), p["attn"]["c_attn"]), 3, axis=-1)
    y = attention(
        split_heads(q, config.n_head), split_heads(k, config.n_head), split_heads(v, config.n_head),
        config.dropout, k_attn,
    )
    x = x + dropout(linear(merge_heads(y), p["attn"]["c_proj"]), config.dropout, k_resid)
    x = x + mlp(layer_norm(x, p["ln_2"]), p["mlp"], config, k_mlp)
    return x


def embed(
    params: Params, idx: Int[Array, "batch seq"], config: GPTConfig, start: Int[Array, ""] | int = 0
) -> Float[Array, "batch seq embed"]:
    """Token + position embeddings for positions start .. start+seq-1, in the compute dtype."""
    T = idx.shape[1]
    pos = jax.lax.dynamic_slice_in_dim(params["wpe"], start, T, axis=0)
    return (params["wte"][idx] + pos).astype(config.dtype)


def lm_head(
    params: Params, x: Float[Array, "batch seq embed"]
) -> Float[Array, "batch seq vocab"]:
    """Final LayerNorm, then logits through the tied token embedding, in float32."""
    x = layer_norm(x, params["ln_f"])
    return jnp.einsum("bte,ve->btv", x, params["wte"].astype(x.dtype), preferred_element_type=jnp.float32)


def cross_entropy(
    logits: Float[Array, "batch seq vocab"], targets: Int[Array, "batch seq"]
) -> Float[Array, ""]:
    """Mean token cross-entropy; targets == -1 are ignored (like nanoGPT's ignore_index)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    valid = targets >= 0
    nll = -jnp.take_along_axis(logp, jnp.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def forward(
    params: Params,
    idx: Int[Array, "batch seq"],
    config: GPTConfig,
    targets: Int[Array, "batch seq"] | None = None,
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "batch seq vocab"], Float[Array, ""] | None]:
    """Logits for every position and, given targets, the mean cross-entropy loss.
    Dropout is active iff a PRNG key is given (training)."""
    T = idx.shape[1]
    if T > config.block_size:
        raise ValueError(f"Cannot forward sequence of length {T}, block size is only {config.block_size}")
    keys = jax.random.split(key, config.n_layer + 1) if key is not None else [None] * (config.n_layer + 1)
    x = dropout(embed(params, idx, config), config.dropout, keys[0])
    for p, k in zip(params["h"], keys[1:]):
        x = block(x, p, config, k)
    logits = lm_head(params, x)
    loss = cross_entropy(logits, targets) if targets is not None else None
    return logits, loss


def loss_fn(
    params: Params,
    x: Int[Array, "batch seq"],
    y: Int[Array, "batch seq"],
    config: GPTConfig,
    key: PRNGKeyArray | None = None,
) -> Float[Array, ""]:
    return forward(params, x, config, y, key)[1]


# --------------------------------------------------------------------------- KV-cache decoding


def prefill(
    params: Params, idx: Int[Array, "batch seq"], config: GPTConfig
) -> tuple[Float[Array, "batch seq vocab"], KVCache]:
    """Forward over a full window (seq == block_size; the tail may be padding: causality keeps
    it from affecting earlier positions) returning logits and every layer's keys and values."""
    x = embed(params, idx, config)
    cache: KVCache = {"k": [], "v": []}
    for p in params["h"]:
        q, k, v = jnp.split(linear(layer_norm(x, p["ln_1"]), p["attn"]["c_attn"]), 3, axis=-1)
        q, k, v = (split_heads(t, config.n_head) for t in (q, k, v))
        cache["k"].append(k)
        cache["v"].append(v)
        x = x + linear(merge_heads(attention(q, k, v)), p["attn"]["c_proj"])
        x = x + mlp(layer_norm(x, p["ln_2"]), p["mlp"], config, None)
    return lm_head(params, x), cache


def decode_step(
    params: Params,
    tok: Int[Array, "batch"],
    pos: Int[Array, ""],
    cache: KVCache,
    config: GPTConfig,
) -> tuple[Float[Array, "batch vocab"], KVCache]:
    """One token per sequence at position pos: attend to cache[:pos] and itself, write its
    keys/values at pos, return its next-token logits and the updated cache."""
    visible = jnp.arange(config.block_size) <= pos
    x = embed(params, tok[:, None], config, pos)  # (batch, 1, embed)
    new: KVCache = {"k": [], "v": []}
    for p, kc, vc in zip(params["h"], cache["k"], cache["v"]):
        q, k, v = jnp.split(linear(layer_norm(x, p["ln_1"]), p["attn"]["c_attn"]), 3, axis=-1)
        q, k, v = (split_heads(t, config.n_head) for t in (q, k, v))
        kc = jax.lax.dynamic_update_slice_in_dim(kc, k.astype(kc.dtype), pos, axis=1)
        vc = jax.lax.dynamic_update_slice_in_dim(vc, v.astype(vc.dtype), pos, axis=1)
        new["k"].append(kc)
        new["v"].append(vc)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, kc).astype(jnp.float32) / math.sqrt(config.head_dim)
        scores = jnp.where(visible, scores, -jnp.inf)
        y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1).astype(vc.dtype), vc)
        x = x + linear(merge_heads(y), p["attn"]["c_proj"])
        x = x + mlp(layer_norm(x, p["ln_2"]), p["mlp"], config, None)
    return lm_head(params, x)[:, 0, :], new


def sample_logits(
    logits: Float[Array, "batch vocab"], key: PRNGKeyArray, temperature: float, top_k: int | None
) -> Int[Array, "batch"]:
    """Next tokens from logits: greedy if temperature == 0, else softmax(logits / temperature)
    restricted to the top_k most likely tokens (all if top_k is None)."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def window_shift(config: GPTConfig) -> int:
    """When the context window is full, generation drops this many of its oldest tokens and
    re-encodes the rest once (absolute position embeddings forbid a sliding KV cache)."""
    return max(1, config.block_size // 4)


@partial(jax.jit, static_argnames=("config", "max_new_tokens", "temperature", "top_k"))
def _generate(
    params: Params,
    window: Int[Array, "batch seq"],
    length: Int[Array, ""],
    key: PRNGKeyArray,
    config: GPTConfig,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
) -> Int[Array, "batch _"]:
    shift = window_shift(config)
    logits, cache = prefill(params, window, config)
    last = jax.lax.dynamic_index_in_dim(logits, length - 1, axis=1, keepdims=False)

    def step(carry, _):
        window, pos, cache, last, key = carry
        key, sub = jax.random.split(key)
        tok = sample_logits(last, sub, temperature, top_k)

        def slide(window, pos, cache):
            window = jnp.roll(window, -shift, axis=1)  # the tail is stale but causally invisible
            return window, pos - shift, prefill(params, window, config)[1]

        window, pos, cache = jax.lax.cond(
            pos == config.block_size, slide, lambda w, p, c: (w, p, c), window, pos, cache
        )
        window = jax.lax.dynamic_update_slice_in_dim(window, tok[:, None], pos, axis=1)
        last, cache = decode_step(params, tok, pos, cache, config)
        return (window, pos + 1, cache, last, key), tok

    carry = (window, length, cache, last, key)
    _, toks = jax.lax.scan(step, carry, None, length=max_new_tokens)
    return toks.T


def generate(
    params: Params,
    prompt: Int[Array, "batch seq"],
    config: GPTConfig,
    max_new_tokens: int,
    key: PRNGKeyArray,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> Int[Array, "batch _"]:
    """max_new_tokens new tokens per prompt row, with a KV cache: the prompt (its last block_size
    tokens) is encoded once, then one jitted lax.scan runs single-token decode steps."""
    B, T = prompt.shape
    if T == 0:
        raise ValueError("the prompt must hold at least one token")
    prompt = prompt[:, -config.block_size :].astype(jnp.int32)
    T = prompt.shape[1]
    window = jnp.zeros((B, config.block_size), jnp.int32).at[:, :T].set(prompt)
    return _generate(
        params, window, jnp.asarray(T, jnp.int32), key, config, max_new_tokens, float(temperature), top_k
    )
