# A file name passed where the array belongs.
# expect: kind=type-mismatch
# expect: function=mean_loss
# expect: parameter=losses
# expect: got=str 'losses.npy'
# expect~: suggestion=asarray
import numpy as np
from jaxtyping import Float


def mean_loss(losses: Float[np.ndarray, "n"]) -> float:
    return float(losses.mean())


mean_loss("losses.npy")  # <- report
