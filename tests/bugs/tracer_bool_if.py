# Python `if` on an array value inside jit.
# expect: kind=tracer-bool-conversion
# expect: function=clip_grad
# expect: parameter=g
# expect~: suggestion=jnp.where
import jax
import jax.numpy as jnp


@jax.jit
def clip_grad(g):
    if jnp.linalg.norm(g) > 1.0:  # <- report
        return g / jnp.linalg.norm(g)
    return g


clip_grad(jnp.ones(4))
