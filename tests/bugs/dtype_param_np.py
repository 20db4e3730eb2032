# Token ids passed as floats.
# expect: kind=dtype-mismatch
# expect: function=lookup
# expect: parameter=tokens
# expect: expected=Int[ndarray, 'batch seq']
# expect: got=float64[2,8]
# expect~: suggestion=astype(jnp.int32)
import numpy as np
from jaxtyping import Float, Int


def lookup(table: Float[np.ndarray, "vocab embed"], tokens: Int[np.ndarray, "batch seq"]) -> Float[np.ndarray, "batch seq embed"]:
    return table[tokens]


tokens = np.zeros((2, 8)) / 2
lookup(np.ones((10, 4)), tokens)  # <- report
