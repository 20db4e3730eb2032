# A dataclass whose fields must share a dimension.
# expect: kind=shape-mismatch
# expect: function=Batch.__init__
# expect: parameter=y
# expect: extra.dimension=batch
# expect: extra.size=7
# expect: extra.expected_size=8
# expect: extra.bound_by=x
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int


@dataclass
class Batch:
    x: Float[np.ndarray, "batch features"]
    y: Int[np.ndarray, "batch"]


Batch(np.zeros((8, 3)), np.zeros(7, dtype=np.int64))  # <- report
