"""Train PyTorch nanoGPT and gpt/ side by side: same initial weights, same batches, same schedule.

    python scripts/parity_nanogpt.py /path/to/nanoGPT                 # CPU config, 2000 iterations
    python scripts/parity_nanogpt.py /path/to/nanoGPT --iters 200 --seed 1

Why: two trainers that draw their initial weights and batches from different random streams
end 2000 iterations apart by as much as +-0.01 in val loss from the draw alone, so comparing
their printed losses cannot say whether gpt/ trains as well as nanoGPT. Here both start from
nanoGPT's initial weights (torch seed --seed, converted to gpt/'s pytree) and take the same
batches (numpy seed --seed) at nanoGPT's learning rate schedule (its train.py's get_lr, written
out in nanogpt_side.py; gpt/ uses its own get_lr through optax). Every --print_every iterations it prints
both losses, their difference and both models' mean loss over the window; at the end, the loss
over the whole val split (scripts/eval_whole_split.py) of both models.

Needs torch and a karpathy/nanoGPT checkout (only its model.py is imported). Data: gpt/'s
prepared shakespeare_char under --data_dir (the same bytes as nanoGPT's prepare.py writes).
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "gpt"))
sys.path.insert(0, str(ROOT / "scripts"))
import data  # noqa: E402
import train  # noqa: E402
import nanogpt_side  # noqa: E402
from eval_whole_split import nanogpt_params, whole_split_loss  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nanogpt", type=Path, help="a karpathy/nanoGPT checkout")
    p.add_argument("--config", type=Path, default=ROOT / "config" / "train_shakespeare_char_cpu.py")
    p.add_argument("--data_dir", default="data", help="where gpt/data.py prepared shakespeare_char (default: data)")
    p.add_argument("--iters", type=int, default=None, help="default: the config's max_iters")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the initial weights, numpy seed of the batches")
    p.add_argument("--print_every", type=int, default=100)
    args = p.parse_args()

    import torch

    nanogpt = nanogpt_side.load(args.nanogpt)
    cfg = train.parse_config([str(args.config), f"--data_dir={args.data_dir}"])
    dataset_dir = data.ensure_prepared(cfg["dataset"], cfg["data_dir"])
    splits = {s: data.load_split(dataset_dir, s) for s in ("train", "val")}
    config = train.model_config_from(cfg, data.load_meta(dataset_dir)["vocab_size"])
    iters = cfg["max_iters"] if args.iters is None else args.iters
    if cfg["dropout"] > 0.0 or cfg["gradient_accumulation_steps"] != 1:
        sys.exit("parity needs dropout=0 and gradient_accumulation_steps=1 (the random streams must not matter)")

    torch_model, torch_opt = nanogpt_side.build(nanogpt, config, cfg, args.seed)
    params = jax.tree_util.tree_map(jnp.asarray, nanogpt_params(torch_model.state_dict(), config))
    optimizer, train_step, _ = train.make_steps(config, cfg, train.make_mesh(1))
    opt_state, key = optimizer.init(params), jax.random.key(0)

    rng = np.random.default_rng(args.seed)
    window = np.zeros(2)
    for it in range(iters):
        x, y = data.get_batch(splits["train"], cfg["batch_size"], config.block_size, rng)
        tx, ty = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        loss = nanogpt_side.train_iteration(torch_model, torch_opt, tx, ty, nanogpt_side.lr_at(it, cfg), cfg["grad_clip"])
        params, opt_state, key, stats = train_step(params, opt_state, key, x, y)
        losses = np.array([loss.item(), float(stats["loss"])])
        window += losses
        if (it + 1) % args.print_every == 0 or it + 1 == iters:
            n = (it % args.print_every) + 1
            print(
                f"iter {it + 1:5d}: nanoGPT {losses[0]:.5f}  gpt/ {losses[1]:.5f}  diff {losses[1] - losses[0]:+.5f}"
                f"   last {n} mean: {window[0] / n:.4f} / {window[1] / n:.4f}",
                flush=True,
            )
            window[:] = 0.0
    torch_params = nanogpt_params(torch_model.state_dict(), config)
    val = [whole_split_loss(p, config, splits["val"]) for p in (torch_params, params)]
    print(f"whole val split after {iters} iterations: nanoGPT {val[0]:.5f}  gpt/ {val[1]:.5f}  diff {val[1] - val[0]:+.5f}")


if __name__ == "__main__":
    main()
