# A scan body that returns its carry with another shape than it was given.
# expect: kind=loop-carry
# expect: function=accumulate
# expect: parameter=total
# expect: expected=float32[]
# expect: got=float32[3]
# expect~: suggestion=jnp.zeros((3,), jnp.float32)
import jax
import jax.numpy as jnp


def accumulate(total, row):
    return total + row, row.sum()  # the sum of the rows, not a scalar: total + row.sum() was meant


totals, sums = jax.lax.scan(accumulate, jnp.zeros(()), jnp.ones((4, 3)))  # <- report
