# A list as a static argument.
# expect: kind=non-hashable-static-argument
# expect: function=mlp
# expect: parameter=sizes
# expect: got=list [4, 8, 2]
# expect~: suggestion=tuple
# expect~: title=static argument 'sizes' of mlp()
from functools import partial

import jax
import jax.numpy as jnp


@partial(jax.jit, static_argnames=("sizes",))
def mlp(x, sizes):
    for size in sizes:
        x = jnp.tanh(x[..., :1] * jnp.ones(size))
    return x


mlp(jnp.ones(3), sizes=[4, 8, 2])  # <- report
