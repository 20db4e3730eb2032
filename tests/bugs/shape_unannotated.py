# No annotations: the shapes of the failing line's operands, as the user's code names them.
# expect: kind=shape-error
# expect: function=step
# expect: extra.operands.pred=float32[8,1]
# expect: extra.operands.y=float32[9,1]
# expect: extra.observation.kind=off-by-one
# expect: extra.jitted_arguments.x=float32[8,4]
# expect~: title=axis 0 of 'y' is 9, one more than 'pred' (8)
# expect~: details=sub got incompatible shapes for broadcasting
import jax
import jax.numpy as jnp


@jax.jit
def step(w, x, y):
    pred = x @ w
    return jnp.mean((pred - y) ** 2)  # <- report


print(step(jnp.zeros((4, 1)), jnp.zeros((8, 4)), jnp.zeros((9, 1))))
