# An allocation larger than the machine: XLA's RESOURCE_EXHAUSTED.
# expect: kind=out-of-memory
# expect~: suggestion=--memory-limit
# expect~: suggestion=batch_size
# expect: extra.requested_bytes=70368744177664
import jax.numpy as jnp

batch_size, features = 2**22, 2**22
activations = jnp.zeros((batch_size, features))  # <- report
