# A side effect leaks a traced value out of jit.
# expect: kind=unexpected-tracer
# expect: function=step
# expect~: details=the leaked value was created at
# expect~: suggestion=return the value
import jax
import jax.numpy as jnp

history = []


@jax.jit
def step(x):
    y = x * 2
    history.append(y)
    return y + 1


step(jnp.ones(3))
print(history[-1] + 1)  # <- report
