# A budget smaller than what the process already holds: no fix of the step can help; the report says
# so instead of offering one that cannot fit.
# args: --memory-limit 150MB
# expect: kind=out-of-memory
# expect: function=step
# expect~: suggestion=before this step allocates anything
# expect~: details=(not enough alone)
# requires: raximport.memory
import jax
import jax.numpy as jnp


@jax.jit
def step(w, x):
    h = jnp.sort(x @ w, axis=0)  # a temporary that XLA cannot fuse away
    return h[: x.shape[0] // 2].sum()


w = jnp.ones((512, 512))
x = jnp.ones((4096, 512))
print(step(w, x))  # <- report
