# The function returns the wrong shape: a missing transpose.
# expect: kind=shape-mismatch
# expect: function=project
# expect: parameter=return value
# expect: expected=Float[ndarray, 'batch out']
# expect: got=float64[3,5]
# expect~: suggestion=return annotation
import numpy as np
from jaxtyping import Float


def project(x: Float[np.ndarray, "batch inp"], w: Float[np.ndarray, "inp out"]) -> Float[np.ndarray, "batch out"]:
    return (x @ w).T


def main() -> None:
    project(np.ones((5, 4)), np.ones((4, 3)))  # <- report


main()
