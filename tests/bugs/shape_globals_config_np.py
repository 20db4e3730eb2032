# nanoGPT-style configuration globals: the weights were built with another n_embd.
# expect: kind=shape-mismatch
# expect: function=attention_scores
# expect: parameter=k
# expect: extra.dimension=embed
# expect: extra.size=64
# expect: extra.expected_size=32
# expect: extra.config=n_embd
# expect: extra.config_value=32
# expect: extra.config_source=n_embd
import numpy as np
from jaxtyping import Float

n_embd = 32
batch_size = 2


def attention_scores(q: Float[np.ndarray, "seq embed"], k: Float[np.ndarray, "seq embed"]) -> Float[np.ndarray, "seq seq"]:
    return q @ k.T


def run() -> None:
    q = np.ones((5, n_embd))
    k = np.ones((5, 64))
    attention_scores(q, k)  # <- report


run()
