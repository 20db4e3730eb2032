# A jitted step that cannot fit the memory budget: refused before it runs (raximport's memory check).
# args: --memory-limit 64MB
# expect: kind=out-of-memory
# expect: function=step
# requires: raximport.memory
import jax
import jax.numpy as jnp


@jax.jit
def step(w, x):
    h = jnp.tanh(x @ w)
    return (h @ w.T).sum()


batch_size = 4096
w = jnp.ones((1024, 4096))
x = jnp.ones((batch_size, 1024))
print(step(w, x))  # <- report
