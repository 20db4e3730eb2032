"""Image.fromarray(array).save(fp): writes the raw uint8 array (numpy .npy format), not a PNG."""

import numpy as _np


class Image:
    def __init__(self, array):
        self._array = _np.asarray(array)
        self.size = (self._array.shape[1], self._array.shape[0]) if self._array.ndim >= 2 else (0, 0)

    def save(self, fp, format=None, **kwargs):
        if isinstance(fp, (str, bytes)) or hasattr(fp, "__fspath__"):
            with open(fp, "wb") as f:
                _np.save(f, self._array)
        else:
            _np.save(fp, self._array)


def fromarray(array, mode=None):
    return Image(array)
