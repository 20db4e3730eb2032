# A traced index into a Python list.
# expect: kind=tracer-integer-conversion
# expect: function=pick
# expect: parameter=i
# expect~: suggestion=jnp.asarray(the_list)[i]
import jax
import jax.numpy as jnp

SCALES = [0.5, 1.0, 2.0]


@jax.jit
def pick(x, i):
    return x * SCALES[i]  # <- report


pick(jnp.ones(2), jnp.array(1))
