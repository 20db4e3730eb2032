# A fori_loop body that returns its carry with another dtype than it was given.
# expect: kind=loop-carry
# expect: function=halve
# expect: parameter=count
# expect: expected=int32[]
# expect: got=float32[]
# expect~: suggestion=.astype(jnp.int32)
import jax
import jax.numpy as jnp


def halve(i, count):
    return count / 2  # true division makes a float of the int count


jax.lax.fori_loop(0, 3, halve, jnp.int32(1000))  # <- report
