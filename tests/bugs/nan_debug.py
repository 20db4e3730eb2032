# A NaN from the log of a negative number, found by --debug-nans at the op that made it.
# args: --debug-nans
# expect: kind=nan
# expect: function=log_likelihood
# expect: got=nan (from log)
# expect: extra.operation=log
# expect~: suggestion=jnp.maximum
import jax
import jax.numpy as jnp


@jax.jit
def log_likelihood(p):
    logp = jnp.log(p)  # <- report
    return logp.sum()


log_likelihood(jnp.array([0.5, -0.1, 0.6]))
