# int() of a traced value to size a slice.
# expect: kind=concretization
# expect: function=first_n
# expect: parameter=n
# expect~: suggestion=static_argnames=('n',)
import jax
import jax.numpy as jnp


@jax.jit
def first_n(x, n):
    return x[: int(n)].sum()  # <- report


first_n(jnp.arange(10.0), 3)
