# A mismatch raised while jit traces the step: the report points at the user's call, not at JAX.
# expect: kind=shape-mismatch
# expect: function=loss_fn
# expect: parameter=y
# expect: got=int32[8,17]
# expect: extra.dimension=seq
# expect: extra.bound_by=x
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def loss_fn(w: Float[Array, "embed"], x: Int[Array, "batch seq"], y: Int[Array, "batch seq"]) -> Float[Array, ""]:
    return jnp.mean(w[x] - y)


@jax.jit
def train_step(w, x, y):
    loss = loss_fn(w, x, y)  # <- report
    return w - 0.1 * jax.grad(loss_fn)(w, x, y), loss


x = jnp.zeros((8, 16), jnp.int32)
y = jnp.zeros((8, 17), jnp.int32)
train_step(jnp.ones(4), x, y)
