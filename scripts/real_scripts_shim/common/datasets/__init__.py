"""check_real_scripts.py's stand-in for Hugging Face `datasets`: load_dataset('mnist') returns
small seeded random 28x28 uint8 images with integer labels, as columns of plain lists, in place
of the download (RAXCHECK_SEED, RAXCHECK_TRAIN_EXAMPLES, RAXCHECK_TEST_EXAMPLES)."""

import os

import numpy as _np

__version__ = "0+raxcheck"

_SHAPES = {"mnist": (28, 28), "fashion_mnist": (28, 28)}


def load_dataset(name, *args, **kwargs):
    if name not in _SHAPES:
        raise ValueError(f"the check's stand-in for datasets knows only {sorted(_SHAPES)}, not {name!r}")
    seed = int(os.environ.get("RAXCHECK_SEED", "0"))
    sizes = {
        "train": int(os.environ.get("RAXCHECK_TRAIN_EXAMPLES", "512")),
        "test": int(os.environ.get("RAXCHECK_TEST_EXAMPLES", "128")),
    }
    out = {}
    for i, (split, n) in enumerate(sizes.items()):
        rng = _np.random.default_rng([seed, i])
        images = rng.integers(0, 256, size=(n, *_SHAPES[name]), dtype=_np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=_np.int64)
        out[split] = {"image": list(images), "label": [int(v) for v in labels]}
    return out
