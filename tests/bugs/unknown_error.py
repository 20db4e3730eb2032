# An error raximport knows nothing about: a clean traceback, the script's own message.
# expect: kind=error
# expect: error=ZeroDivisionError: integer division or modulo by zero
import jax.numpy as jnp


def steps_per_epoch(n_examples, batch_size):
    return n_examples // batch_size  # <- report


batch_size = 0
print(steps_per_epoch(jnp.arange(100).size, batch_size))
