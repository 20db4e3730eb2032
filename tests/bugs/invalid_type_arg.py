# A string passed to a jitted function without marking it static.
# expect: kind=invalid-jax-type
# expect: function=activate
# expect: parameter=kind
# expect: got=str
# expect~: suggestion=static_argnames=('kind',)
import jax
import jax.numpy as jnp


@jax.jit
def activate(x, kind):
    return jax.nn.relu(x) if kind == "relu" else jnp.tanh(x)


activate(jnp.ones(3), "relu")  # <- report
