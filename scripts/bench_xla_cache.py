"""Time to first result of a jitted transformer train step under `python -m raximport`: a cold
first process (empty cache) against a warm second one, which loads the executables XLA compiled
for the first from raximport's persistent compilation cache.

    .venv/bin/python scripts/bench_xla_cache.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = """\
import time
t0 = time.perf_counter()
import json
import jax, jax.numpy as jnp, optax

V, T, D, H, L, B = 256, 64, 128, 4, 2, 8

def init(key):
    ks = iter(jax.random.split(key, 4 + 4 * L))
    dense = lambda i, o: jax.random.normal(next(ks), (i, o)) * i ** -0.5
    blocks = [dict(qkv=dense(D, 3 * D), proj=dense(D, D), up=dense(D, 4 * D), down=dense(4 * D, D),
                   g1=jnp.ones(D), g2=jnp.ones(D)) for _ in range(L)]
    return dict(emb=dense(V, D), pos=dense(T, D), blocks=blocks, gf=jnp.ones(D))

def norm(x, g):
    return g * x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6)

def forward(p, tokens):
    x = p["emb"][tokens] + p["pos"]
    mask = jnp.tril(jnp.ones((T, T), bool))
    for b in p["blocks"]:
        q, k, v = jnp.split(norm(x, b["g1"]) @ b["qkv"], 3, -1)
        heads = lambda t: t.reshape(B, T, H, D // H).transpose(0, 2, 1, 3)
        att = jnp.where(mask, heads(q) @ heads(k).transpose(0, 1, 3, 2) / (D // H) ** 0.5, -1e9)
        y = (jax.nn.softmax(att, -1) @ heads(v)).transpose(0, 2, 1, 3).reshape(B, T, D)
        x = x + y @ b["proj"]
        x = x + jax.nn.gelu(norm(x, b["g2"]) @ b["up"]) @ b["down"]
    return norm(x, p["gf"]) @ p["emb"].T

def loss_fn(p, tokens, targets):
    logits = forward(p, tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

opt = optax.adamw(3e-4)

@jax.jit
def train_step(p, state, tokens, targets):
    loss, grads = jax.value_and_grad(loss_fn)(p, tokens, targets)
    updates, state = opt.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

t_imported = time.perf_counter()
key = jax.random.PRNGKey(0)
params = init(key)
state = opt.init(params)
data = jax.random.randint(key, (B, T + 1), 0, V)
params, state, loss = train_step(params, state, data[:, :-1], data[:, 1:])
loss = float(loss)
t_done = time.perf_counter()
print(json.dumps({"loss": loss, "import_s": t_imported - t0, "first_step_s": t_done - t_imported,
                  "script_s": t_done - t0}))
"""


def run_once(script: Path, cache_dir: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAX_", "JAX_", "_RAXIMPORT"))}
    env.update({"RAX_CACHE_DIR": str(cache_dir), "JAX_PLATFORMS": "cpu"})
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raximport", str(script)], env=env, cwd=script.parent,
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cold/warm pairs, each with a fresh cache")
    ns = parser.parse_args()
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "train.py"
        script.write_text(TRAIN)
        for i in range(ns.repeats):
            cache = Path(tmp) / f"cache{i}"
            cold.append(run_once(script, cache))
            warm.append(run_once(script, cache))
            last = json.loads((cache / "xla-last-run.json").read_text())
            assert cold[-1]["loss"] == warm[-1]["loss"], "a cached executable gave a different loss"
            print(f"pair {i}: cold {cold[-1]['process_s']:.2f} s, warm {warm[-1]['process_s']:.2f} s "
                  f"(warm run: {last['hits']} hits, {last['misses']} misses)")
    for key, what in (("first_step_s", "first train step (compile + run)"),
                      ("process_s", "whole process to first result")):
        c = statistics.median(r[key] for r in cold)
        w = statistics.median(r[key] for r in warm)
        print(f"{what}: cold {c:.2f} s, warm {w:.2f} s, warm/cold = {w / c:.2f}x")


if __name__ == "__main__":
    main()
