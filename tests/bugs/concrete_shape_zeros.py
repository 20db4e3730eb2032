# jnp.zeros(n) with a traced n.
# expect: kind=concrete-shape
# expect: function=pad_to
# expect: parameter=n
# expect~: suggestion=static_argnames=('n',)
import jax
import jax.numpy as jnp


@jax.jit
def pad_to(x, n):
    return jnp.concatenate([x, jnp.zeros(n)])  # <- report


pad_to(jnp.ones(3), 5)
