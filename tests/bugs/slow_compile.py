# A compile slower than the threshold with the persistent cache off (the threshold is 0 s here).
# args: --no-xla-cache
# env: RAX_SLOW_COMPILE_SECS=0
# exit: 0
# expect: kind=slow-compile
# expect: function=step
# expect~: suggestion=--no-xla-cache
import jax
import jax.numpy as jnp


@jax.jit
def step(x):
    return jnp.tanh(x @ x.T).sum()


step(jnp.ones((4, 4)))  # <- report
