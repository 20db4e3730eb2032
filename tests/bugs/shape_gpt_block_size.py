# The gpt model with a config whose block_size does not match the data batch's sequence length.
# expect: kind=shape-mismatch
# expect: function=loss_fn
# expect: parameter=y
# expect: got=int32[4,32]
# expect: extra.dimension=seq
# expect: extra.size=32
# expect: extra.expected_size=16
# expect: extra.bound_by=x
# expect: extra.config=block_size
# expect: extra.config_value=16
# expect: extra.config_source=config.block_size
# expect~: suggestion=block_size
# expect: extra.culprit=block_size
# expect~: details=also seen: block_size = 32
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from gpt.model import GPTConfig, init_params, loss_fn  # noqa: E402

config = GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=16)
params = init_params(config, jax.random.key(0))
data = jnp.arange(200, dtype=jnp.int32) % 65
x = data[None, :16].repeat(4, axis=0)       # windows of block_size
block_size = 32                              # the data loader's setting, not the model's
y = data[None, 1:1 + block_size].repeat(4, axis=0)
loss_fn(params, x, y, config)  # <- report
