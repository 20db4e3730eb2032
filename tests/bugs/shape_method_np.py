# A method of a small model class, called with the wrong feature size.
# expect: kind=shape-mismatch
# expect: function=Linear.__call__
# expect: parameter=x
# expect: extra.dimension=d_in
# expect: extra.size=3
# expect: extra.expected_size=4
# expect: extra.bound_by=w
import numpy as np
from jaxtyping import Float


class Linear:
    def __init__(self) -> None:
        self.w = np.ones((4, 2))

    def __call__(self, w: Float[np.ndarray, "d_in d_out"], x: Float[np.ndarray, "batch d_in"]) -> Float[np.ndarray, "batch d_out"]:
        return x @ w


layer = Linear()
layer(layer.w, np.ones((10, 3)))  # <- report
