# A donated buffer used after the call.
# expect: kind=deleted-array
# expect: got=a deleted array (float32[16])
# expect~: suggestion=donate_argnums
import jax
import jax.numpy as jnp

update = jax.jit(lambda params: params * 0.9, donate_argnums=0)
params = jnp.ones(16)
new_params = update(params)
print((params - new_params).sum())  # <- report
