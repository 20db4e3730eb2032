# A dict as one of two static arguments, passed by position and declared by static_argnums.
# expect: kind=non-hashable-static-argument
# expect: function=scale
# expect: parameter=factors
# expect: got=dict {'a': 2.0}
# expect~: suggestion=factors
import jax
import jax.numpy as jnp


def scale(x, mode, factors):
    return x * factors["a"] if mode == "mul" else x


scale = jax.jit(scale, static_argnums=(1, 2))
mode = "mul"
scale(jnp.ones(3), mode, {"a": 2.0})  # <- report
