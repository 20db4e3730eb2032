# MNIST images in channels-last layout where the model wants channels first, found while jit traces:
# a shape mismatch on axis 1, not "a DynamicJaxprTracer is not Float[Array, ...]".
# expect: kind=shape-mismatch
# expect: function=loss
# expect: parameter=x
# expect: expected=Float[Array, 'batch 1 28 28']
# expect: got=float32[64,28,28,1]
# expect: extra.axis=1
# expect: extra.size=28
# expect: extra.expected_size=1
# expect~: title=axis 1 of 'x' is 28, the annotation says 1
# expect~: details=axis 1: 28, expected 1
# expect~: details=batch=64: bound by 'x' (axis 0)
# expect~: suggestion=.transpose(0, 3, 1, 2)
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def loss(w: Float[Array, "784 10"], x: Float[Array, "batch 1 28 28"], y: Int[Array, " batch"]) -> Float[Array, ""]:
    logits = x.reshape(x.shape[0], -1) @ w
    return -jnp.mean(jnp.take_along_axis(logits, y[:, None], axis=1))


@jax.jit
def step(w, x, y):
    return loss(w, x, y)  # <- report


step(jnp.zeros((784, 10)), jnp.zeros((64, 28, 28, 1)), jnp.zeros(64, jnp.int32))
