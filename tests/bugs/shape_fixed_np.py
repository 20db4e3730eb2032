# The same layout mistake outside jit, with a concrete numpy batch (the way equinox's MNIST example
# feeds its model): the same report as under jit, and 'y' bound the batch size first.
# expect: kind=shape-mismatch
# expect: function=CNN.__call__
# expect: parameter=x
# expect: expected=Float[Array, 'batch 1 28 28']
# expect: got=float32[8,28,28,1]
# expect: extra.axis=1
# expect~: details=axis 1: 28, expected 1
# expect~: details=batch=8: bound by 'y' (axis 0)
# expect~: suggestion=.transpose(0, 3, 1, 2)
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


class CNN:
    def __call__(self, y: Int[Array, " batch"], x: Float[Array, "batch 1 28 28"]) -> Float[Array, ""]:
        return jnp.mean(x) + jnp.mean(y)


images = np.zeros((8, 28, 28, 1), np.float32)
labels = np.zeros(8, np.int64)
CNN()(labels, images)  # <- report
