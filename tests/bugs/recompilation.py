# A step compiled again for every new batch shape: reported while running.
# exit: 0
# expect: kind=recompilation
# expect: function=step
# expect~: suggestion=keep input shapes fixed
import jax
import jax.numpy as jnp


@jax.jit
def step(x):
    return (x * 2).sum()


for n in range(1, 8):
    step(jnp.ones(n))  # <- report
