# numpy int64 ids where float32 is annotated: a dtype mismatch against one dtype, and the dtype JAX
# would compute with (int32: x64 is off), since numpy arrays are checked as jit sees them.
# expect: kind=dtype-mismatch
# expect: function=Scaler.apply
# expect: parameter=x
# expect: expected=Float32[Array, 'n']
# expect: got=int64[3]
# expect: extra.dtype=int32
# expect~: title='x' is int64, int32 once JAX takes it
import numpy as np
from jaxtyping import Array, Float32


class Scaler:
    def apply(self, x: Float32[Array, "n"]) -> Float32[Array, "n"]:
        return 2 * x


Scaler().apply(np.arange(3))  # <- report
