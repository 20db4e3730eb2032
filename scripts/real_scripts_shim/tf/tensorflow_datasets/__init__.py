"""check_real_scripts.py's stand-in for tensorflow_datasets: `load` and `builder` for 'mnist' and
'binarized_mnist', returning the stand-in tf.data.Dataset of small seeded random examples with
the real features' shapes and dtypes ('mnist': image uint8 (28, 28, 1) and label int64;
'binarized_mnist': image uint8 (28, 28, 1) of 0/1), RAXCHECK_TRAIN_EXAMPLES and
RAXCHECK_TEST_EXAMPLES of them (default 512 and 128), seeded by RAXCHECK_SEED and the split."""

import os as _os
import types as _types

import numpy as _np
from tensorflow import data as _data

__version__ = "0+raxcheck"


class Split:
    TRAIN = "train"
    TEST = "test"
    VALIDATION = "validation"


def _sizes():
    return {
        "train": int(_os.environ.get("RAXCHECK_TRAIN_EXAMPLES", "512")),
        "test": int(_os.environ.get("RAXCHECK_TEST_EXAMPLES", "128")),
    }


def _examples(name, split):
    sizes = _sizes()
    if split not in sizes:
        raise ValueError(f"the check's stand-in for tensorflow_datasets has splits {sorted(sizes)}, not {split!r}")
    n = sizes[split]
    rng = _np.random.default_rng([int(_os.environ.get("RAXCHECK_SEED", "0")), sorted(sizes).index(split)])
    if name == "mnist":
        images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=_np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=_np.int64)
        return {"image": images, "label": labels}
    if name == "binarized_mnist":
        return {"image": (rng.random((n, 28, 28, 1)) < 0.2).astype(_np.uint8)}
    raise ValueError(f"the check's stand-in for tensorflow_datasets knows 'mnist' and 'binarized_mnist', not {name!r}")


class _Builder:
    def __init__(self, name):
        self.name = name
        _examples(name, "train")  # an unknown name fails here, as tfds.builder would
        splits = {split: _types.SimpleNamespace(num_examples=n) for split, n in _sizes().items()}
        self.info = _types.SimpleNamespace(name=name, splits=splits)

    def download_and_prepare(self, *args, **kwargs):
        return None

    def as_dataset(self, split, shuffle_files=False, **kwargs):
        return _data.Dataset.from_tensor_slices(_examples(self.name, split))


def builder(name, **kwargs):
    return _Builder(name)


def load(name, split=None, **kwargs):
    b = _Builder(name)
    if split is None:
        return {s: b.as_dataset(s) for s in _sizes()}
    return b.as_dataset(split)


def as_numpy(dataset):
    return dataset
