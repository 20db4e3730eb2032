# numpy inside jit.
# expect: kind=tracer-array-conversion
# expect: function=normalize
# expect: parameter=x
# expect~: suggestion=jax.numpy
import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def normalize(x):
    return x / np.linalg.norm(x)  # <- report


normalize(jnp.ones(3))
