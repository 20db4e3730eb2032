# A Python bool flag passed to a jitted function becomes a traced array.
# expect: kind=tracer-bool-conversion
# expect: function=forward
# expect: parameter=training
# expect~: suggestion=static_argnames=('training',)
import jax
import jax.numpy as jnp


def forward(x, training):
    if training:  # <- report
        x = x * 0.9
    return x.sum()


step = jax.jit(forward)
step(jnp.ones(3), True)
