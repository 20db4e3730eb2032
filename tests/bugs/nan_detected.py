# The training loop notices a NaN loss: the report offers --debug-nans.
# expect: kind=nan-detected
# expect~: suggestion=--debug-nans
import jax
import jax.numpy as jnp


@jax.jit
def loss(w):
    return jnp.sqrt(w - 2.0).sum()


value = loss(jnp.ones(3))
if jnp.isnan(value):
    raise FloatingPointError(f"loss is nan at step 0: {value}")  # <- report
