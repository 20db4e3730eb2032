"""Mean loss over a whole split, for gpt/ checkpoints and PyTorch nanoGPT's, with one evaluator.

    python scripts/eval_whole_split.py out-a /path/to/nanoGPT/out-b/ckpt.pt --data_dir=data   # out-a: gpt/'s out_dir

train.py's and nanoGPT's eval estimate the loss from eval_iters random batches; at 20 batches
that estimate moves by +-0.015 from run to run. This script instead averages the loss over every
non-overlapping window of block_size tokens of the split, so two models can be compared to the
third decimal. A nanoGPT checkpoint (ckpt.pt; reading it needs torch) is converted into gpt/'s
parameter pytree: same architecture, Linear weights transposed to (in, out).
"""

import argparse
import sys
from functools import partial
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "gpt"))

import checkpoint  # noqa: E402
import data  # noqa: E402
from model import GPTConfig, Params, init_params, loss_fn  # noqa: E402


def from_nanogpt(path: Path) -> tuple[Params, GPTConfig]:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    args = ckpt["model_args"]
    config = GPTConfig(**{k: args[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")})
    return nanogpt_params(ckpt["model"], config), config


def nanogpt_params(state_dict: dict, config: GPTConfig) -> Params:
    """A nanoGPT state_dict (torch tensors) as gpt/'s parameter pytree of numpy arrays."""
    sd = {k.removeprefix("_orig_mod."): v.detach().float().numpy() for k, v in state_dict.items()}

    def linear(name: str) -> dict[str, np.ndarray]:
        p = {"w": sd[name + ".weight"].T}
        if config.bias:
            p["b"] = sd[name + ".bias"]
        return p

    def norm(name: str) -> dict[str, np.ndarray]:
        return {"scale": sd[name + ".weight"], **({"bias": sd[name + ".bias"]} if config.bias else {})}

    h = [
        {
            "ln_1": norm(f"transformer.h.{i}.ln_1"),
            "attn": {"c_attn": linear(f"transformer.h.{i}.attn.c_attn"), "c_proj": linear(f"transformer.h.{i}.attn.c_proj")},
            "ln_2": norm(f"transformer.h.{i}.ln_2"),
            "mlp": {"c_fc": linear(f"transformer.h.{i}.mlp.c_fc"), "c_proj": linear(f"transformer.h.{i}.mlp.c_proj")},
        }
        for i in range(config.n_layer)
    ]
    return {"wte": sd["transformer.wte.weight"], "wpe": sd["transformer.wpe.weight"], "h": h, "ln_f": norm("transformer.ln_f")}


def from_gpt(out_dir: Path, kind: str = "latest") -> tuple[Params, GPTConfig]:
    """The parameters of gpt/train.py's newest `kind` checkpoint in out_dir (not its optimizer state)."""
    ckpts = checkpoint.Checkpoints(out_dir, read_only=True)
    config = GPTConfig(**ckpts.meta(kind)["model_args"])
    template = jax.eval_shape(partial(init_params, config), jax.random.key(0))
    return ckpts.restore(kind, {"params": template})[0]["params"], config


_loss = jax.jit(loss_fn, static_argnums=3)  # one compile per config and batch shape, across models and splits


def whole_split_loss(params: Params, config: GPTConfig, tokens: np.ndarray, batch: int = 128) -> float:
    """Mean cross-entropy over all full windows tokens[i*T : (i+1)*T] (targets shifted by one)."""
    T = config.block_size
    n = (len(tokens) - 1) // T
    x = np.asarray(tokens[: n * T], np.int32).reshape(n, T)
    y = np.asarray(tokens[1 : n * T + 1], np.int32).reshape(n, T)
    total = 0.0
    for i in range(0, n, batch):  # the last batch may be smaller: one more compile, every window counted
        total += float(_loss(params, x[i : i + batch], y[i : i + batch], config)) * len(x[i : i + batch])
    return total / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path, help="gpt/ out_dirs (their latest checkpoint) or nanoGPT ckpt.pt files")
    p.add_argument("--data_dir", default="data", help="where gpt/data.py prepared the dataset (default: data)")
    p.add_argument("--dataset", default="shakespeare_char")
    p.add_argument("--splits", default="train,val")
    args = p.parse_args()
    dataset_dir = Path(args.data_dir) / args.dataset
    splits = {s: data.load_split(dataset_dir, s) for s in args.splits.split(",")}
    for path in args.checkpoints:
        params, config = from_nanogpt(path) if path.suffix == ".pt" else from_gpt(path)
        losses = "  ".join(f"{s} {whole_split_loss(params, config, t):.4f}" for s, t in splits.items())
        print(f"{path}: {losses}", flush=True)


if __name__ == "__main__":
    main()
