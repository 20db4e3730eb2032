# A jitted function that returns a string.
# expect: kind=invalid-jax-type
# expect: function=describe
# expect: parameter=return value
# expect: got=str
# expect~: suggestion=return arrays only
import jax
import jax.numpy as jnp


@jax.jit
def describe(x):
    return "mean", x.mean()


describe(jnp.ones(3))  # <- report
