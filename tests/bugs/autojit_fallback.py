# An annotated pure function that auto-jit cannot trace: it runs as plain Python, with one report.
# exit: 0
# expect: kind=autojit-fallback
# expect: function=relu_or_tanh
# expect~: suggestion=jnp.where
import jax.numpy as jnp
from jaxtyping import Array, Float


def relu_or_tanh(x: Float[Array, "n"]) -> Float[Array, "n"]:
    if x.sum() > 0:  # <- report
        return jnp.maximum(x, 0.0)
    return jnp.tanh(x)


print(relu_or_tanh(jnp.ones(3)))
