# x[:n] with a traced n.
# expect: kind=concrete-shape
# expect~: suggestion=dynamic_slice
import jax
import jax.numpy as jnp


def head(x, n):
    return x[:n]  # <- report


jax.jit(head)(jnp.arange(8), 3)
