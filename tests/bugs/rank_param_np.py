# One image where a batch of images is expected.
# expect: kind=shape-mismatch
# expect: function=normalize
# expect: parameter=images
# expect: got=float32[28,28]
# expect: extra.ndim=2
# expect: extra.expected_ndim=3
# expect~: suggestion=x[None]
import numpy as np
from jaxtyping import Float


def normalize(images: Float[np.ndarray, "batch h w"]) -> Float[np.ndarray, "batch h w"]:
    return images / 255.0


image = np.zeros((28, 28), dtype=np.float32)
normalize(image)  # <- report
