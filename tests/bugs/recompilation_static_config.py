# A static config whose learning rate changes every step: the report names the field that differs
# (two reprs cut to the same 60 characters said nothing) and a fix that applies to a field.
# exit: 0
# expect: kind=recompilation
# expect: function=step
# expect~: details=static argument 'cfg' changed: cfg.lr from 0.4 to 0.5
# expect~: suggestion=pass cfg.lr as an argument of its own
from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class TrainConfig:
    run_name: str = "mnist-cnn-baseline-with-a-long-descriptive-name-for-the-dashboard"
    lr: float = 0.1


def step(w, cfg):
    return w - cfg.lr * w


train_step = jax.jit(step, static_argnums=1)
w = jnp.ones(3)
for lr in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
    w = train_step(w, TrainConfig(lr=lr))  # <- report
