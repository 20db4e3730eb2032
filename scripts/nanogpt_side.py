"""PyTorch nanoGPT beside gpt/, for the scripts that compare the two (parity_nanogpt.py, bench_gpt.py,
bench_quality.py).

Only the model.py of a karpathy/nanoGPT checkout is imported (its train.py runs at module level);
what its train.py does per iteration is written out here: the learning rate, the batch, forward,
backward, gradient clipping, the optimizer step; and its whole loop from scratch with its evals,
its random draws in its order.
"""

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from model import GPTConfig


def load(checkout: Path) -> ModuleType:
    """nanoGPT's model.py, as module `nanogpt_model` (gpt/'s own `model` stays importable)."""
    path = Path(checkout) / "model.py"
    if not path.is_file():
        raise FileNotFoundError(f"no nanoGPT model.py in {checkout}")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(nanogpt: ModuleType, config: GPTConfig, cfg: dict[str, Any], seed: int):
    """(model, optimizer) as nanoGPT's train.py makes them from scratch, torch seeded with seed."""
    import torch

    torch.manual_seed(seed)
    model = nanogpt.GPT(nanogpt.GPTConfig(
        block_size=config.block_size, vocab_size=config.vocab_size, n_layer=config.n_layer,
        n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout, bias=config.bias,
    ))
    optimizer = model.configure_optimizers(cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]), "cpu")
    return model, optimizer


def lr_at(it: int, cfg: dict[str, Any]) -> float:
    """nanoGPT's train.py get_lr: linear warmup, cosine decay to min_lr."""
    lr, min_lr, warmup, decay = cfg["learning_rate"], cfg["min_lr"], cfg["warmup_iters"], cfg["lr_decay_iters"]
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / (decay - warmup))) * (lr - min_lr)


def get_batch(path: Path, batch_size: int, block_size: int):
    """nanoGPT's get_batch on a CPU: a fresh memmap, torch.randint window starts, int64 rows."""
    import torch

    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    ix = torch.randint(len(tokens) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(tokens[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(tokens[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    return x, y


def train_iteration(model, optimizer, x, y, lr: float, grad_clip: float):
    """One optimizer step of nanoGPT's loop (gradient_accumulation_steps=1, float32): the loss tensor."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    loss.backward()
    if grad_clip > 0.0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def estimate_loss(model, dataset_dir: Path, batch_size: int, block_size: int, eval_iters: int) -> dict[str, float]:
    """nanoGPT's estimate_loss: the mean loss of eval_iters fresh random batches per split,
    drawn from torch's global generator (so an eval moves the training batches that follow)."""
    import torch

    model.eval()
    with torch.no_grad():
        out = {
            split: float(np.mean([
                model(*get_batch(dataset_dir / f"{split}.bin", batch_size, block_size))[1].item()
                for _ in range(eval_iters)
            ]))
            for split in ("train", "val")
        }
    model.train()
    return out


def train_from_scratch(nanogpt: ModuleType, config: GPTConfig, cfg: dict[str, Any], seed: int, dataset_dir: Path):
    """nanoGPT's train.py from torch seed `seed`, its random draws in its order: the weights, the
    first batch, then an eval every eval_interval iterations and a new batch after each step.
    Returns (the model at max_iters, {iteration: {"train": loss, "val": loss}})."""
    model, optimizer = build(nanogpt, config, cfg, seed)
    batch = (cfg["batch_size"], config.block_size)
    x, y = get_batch(dataset_dir / "train.bin", *batch)
    evals = {}
    for it in range(cfg["max_iters"] + 1):
        if it % cfg["eval_interval"] == 0 or it == cfg["max_iters"]:
            evals[it] = estimate_loss(model, dataset_dir, *batch, cfg["eval_iters"])
        if it == cfg["max_iters"]:
            return model, evals
        train_iteration(model, optimizer, x, y, lr_at(it, cfg), cfg["grad_clip"])
        x, y = get_batch(dataset_dir / "train.bin", *batch)
