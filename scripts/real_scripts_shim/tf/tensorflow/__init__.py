"""check_real_scripts.py's stand-in for TensorFlow: only what flax's mnist and vae examples use
for their input pipelines, TensorBoard summaries and export, in numpy, with no TF installed.

- `tf.data.Dataset`: a small in-memory pipeline (map, shuffle, batch, cache, repeat, prefetch,
  as_numpy_iterator) over numpy examples, seeded: shuffles draw from `tf.random.set_seed`'s seed
  (else RAXCHECK_SEED) and the shuffle's number, like TF's op-level seeds;
- `tf.cast`, `tf.reshape`, dtypes, `tf.TensorSpec`, `tf.convert_to_tensor`, `tf.constant`: numpy;
- `tf.io.gfile`: the local file system; `tf.errors.NotFoundError`;
- `tf.summary`: writers and summaries that record nothing;
- `tf.config.experimental.set_visible_devices`: nothing to hide.

The examples' model and training code never touch it: they use JAX and flax.
"""

import os as _os

import numpy as _np

from . import data, io, random  # noqa: F401  (tf.data, tf.io, tf.random)
from . import config, errors, summary  # noqa: F401

__version__ = "0+raxcheck"

float16 = _np.float16
float32 = _np.float32
float64 = _np.float64
int32 = _np.int32
int64 = _np.int64
uint8 = _np.uint8
bool = _np.bool_  # noqa: A001


def cast(x, dtype):
    return _np.asarray(x).astype(dtype)


def reshape(x, shape):
    return _np.reshape(_np.asarray(x), shape)


def convert_to_tensor(value, dtype=None):
    return _np.asarray(value, dtype=dtype)


def constant(value, dtype=None):
    return _np.asarray(value, dtype=dtype)


class TensorSpec:
    def __init__(self, shape, dtype=float32, name=None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name

    def __repr__(self):
        return f"TensorSpec(shape={self.shape}, dtype={_np.dtype(self.dtype).name}, name={self.name!r})"
