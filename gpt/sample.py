"""Sample from a trained model, after karpathy/nanoGPT's sample.py.

    python gpt/sample.py --out_dir=out-shakespeare-char-cpu --start="ROMEO:" --num_samples=3

Options are given like train.py's (defaults below, a config file, --key=value). Generation uses a
KV cache: the prompt is encoded once, then a jitted lax.scan decodes one token per step.
"""

import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import checkpoint
from model import GPTConfig, generate, init_params
from tokenizer import load_tokenizer
from train import ConfigError, parse_config, print_help_if_asked

# ----------------------------------------------------------------------------- defaults
out_dir = "out"  # where train.py saved its checkpoints
ckpt = "best"  # 'best', 'latest' or 'good' (see train.py); best falls back to latest when there is none
start = "\n"  # or "<|endoftext|>" or etc. Can also specify a file, use as: "FILE:prompt.txt"
num_samples = 10  # number of samples to draw (decoded together, as one batch)
max_new_tokens = 500  # number of tokens generated in each sample
temperature = 0.8  # 1.0 = no change, < 1.0 = less random, > 1.0 = more random, 0.0 = greedy
top_k = 200  # retain only the top_k most likely tokens, clamp others to have 0 probability (0: all)
seed = 1337
dtype = "float32"  # 'float32' or 'bfloat16' compute
# -----------------------------------------------------------------------------
DEFAULTS: dict[str, Any] = {
    k: v for k, v in globals().items() if not k.startswith("_") and type(v) in (int, float, bool, str)
}


def load_model(out: str | Path, which: str = "best", dtype: str | None = None) -> tuple[dict, GPTConfig, dict]:
    """(params, model config, checkpoint metadata) from the newest checkpoint of kind `which`
    in out (best falls back to latest); the optimizer state is not read."""
    if which not in checkpoint.KINDS:
        raise ConfigError(f"ckpt must be one of {', '.join(map(repr, checkpoint.KINDS))}, got {which!r}")
    ckpts = checkpoint.Checkpoints(out, read_only=True)
    found = ckpts.steps()
    kind = "latest" if which == "best" and "best" not in found else which
    if kind not in found:
        tried = f"{Path(out) / 'best'} nor {Path(out) / 'latest'}" if which == "best" else f"{Path(out) / which}"
        raise checkpoint.CheckpointError(f"no checkpoint in {tried}: train first (python gpt/train.py ... --out_dir={out})")
    meta = ckpts.meta(kind)
    config = GPTConfig(**{**meta["model_args"], **({"dtype": dtype} if dtype else {})})
    template = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    params, _ = ckpts.restore(kind, {"params": template})
    return jax.tree_util.tree_map(jnp.asarray, params["params"]), config, meta


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if print_help_if_asked(argv, __file__, __doc__):
        return 0
    try:
        cfg = parse_config(argv, DEFAULTS)
        params, config, meta = load_model(cfg["out_dir"], cfg["ckpt"], cfg["dtype"])
        prompt = cfg["start"]
        if prompt.startswith("FILE:"):
            prompt = Path(prompt[5:]).read_text(encoding="utf-8")
        tok = load_tokenizer(meta["data_meta"])
        ids = tok.encode(prompt)
    except (ConfigError, checkpoint.CheckpointError, OSError) as e:
        print(f"sample.py: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # the prompt holds text the tokenizer cannot encode
        print(f"sample.py: error: the prompt cannot be encoded: {e}", file=sys.stderr)
        return 2
    x = jnp.asarray(np.tile(np.asarray(ids, np.int32)[None], (cfg["num_samples"], 1)))
    out = generate(
        params, x, config, cfg["max_new_tokens"], jax.random.key(cfg["seed"]),
        temperature=cfg["temperature"], top_k=cfg["top_k"] or None,
    )
    for row in np.asarray(out):
        print(prompt + tok.decode(row.tolist()))
        print("---------------")
    return 0


if __name__ == "__main__":
    sys.exit(main())
