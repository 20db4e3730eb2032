"""tf.random.set_seed: the seed tf.data's shuffles draw from."""

import os

_global_seed = None
_ops = 0


def set_seed(seed):
    global _global_seed, _ops
    _global_seed = int(seed)
    _ops = 0


def next_op_seed():
    """The seed of a new shuffle: (global seed, number of the op), as TF derives op seeds."""
    global _ops
    _ops += 1
    base = _global_seed if _global_seed is not None else int(os.environ.get("RAXCHECK_SEED", "0"))
    return [base, _ops]
