# The same PRNG key used for two draws, found by --debug-keys.
# args: --debug-keys
# expect: kind=key-reuse
# expect~: suggestion=jax.random.split(key)
# expect~: explanation=--debug-keys
import jax

key = jax.random.key(0)
noise = jax.random.normal(key, (3,))
dropout_mask = jax.random.bernoulli(key, 0.5, (3,))  # <- report
