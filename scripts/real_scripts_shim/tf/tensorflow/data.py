"""A small tf.data.Dataset over numpy examples (dicts of arrays, or arrays)."""

import numpy as _np

from . import random as _random

AUTOTUNE = -1


def _stack(elements):
    first = elements[0]
    if isinstance(first, dict):
        return {key: _stack([e[key] for e in elements]) for key in first}
    if isinstance(first, tuple):
        return tuple(_stack([e[i] for e in elements]) for i in range(len(first)))
    return _np.stack([_np.asarray(e) for e in elements])


class Dataset:
    """Each method returns a new Dataset; iterating one runs the pipeline from its source."""

    def __init__(self, make_iterator):
        self._make_iterator = make_iterator

    @staticmethod
    def from_tensor_slices(tensors):
        if isinstance(tensors, dict):
            n = len(next(iter(tensors.values())))
            return Dataset(lambda: ({k: _np.asarray(v)[i] for k, v in tensors.items()} for i in range(n)))
        array = _np.asarray(tensors)
        return Dataset(lambda: iter(array))

    def __iter__(self):
        return iter(self._make_iterator())

    def as_numpy_iterator(self):
        return iter(self)

    def map(self, fn, num_parallel_calls=None, deterministic=None):
        return Dataset(lambda: (fn(e) for e in self))

    def filter(self, predicate):
        return Dataset(lambda: (e for e in self if predicate(e)))

    def take(self, count):
        def gen():
            for i, e in enumerate(self):
                if i >= count:
                    return
                yield e

        return Dataset(gen)

    def cache(self, filename=""):
        cached = []

        def gen():
            if cached:
                yield from cached
                return
            items = list(self)
            cached.extend(items)
            yield from items

        return Dataset(gen)

    def repeat(self, count=None):
        def gen():
            n = 0
            while count is None or count < 0 or n < count:
                yield from self
                n += 1

        return Dataset(gen)

    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True):
        op_seed = [int(seed)] if seed is not None else _random.next_op_seed()
        epochs = [0]

        def gen():
            rng = _np.random.default_rng(op_seed + [epochs[0]] if reshuffle_each_iteration else op_seed)
            epochs[0] += 1
            buffer = []
            for e in self:
                buffer.append(e)
                if len(buffer) >= buffer_size:
                    i = int(rng.integers(len(buffer)))
                    buffer[i], buffer[-1] = buffer[-1], buffer[i]
                    yield buffer.pop()
            while buffer:
                i = int(rng.integers(len(buffer)))
                buffer[i], buffer[-1] = buffer[-1], buffer[i]
                yield buffer.pop()

        return Dataset(gen)

    def batch(self, batch_size, drop_remainder=False, num_parallel_calls=None, deterministic=None):
        def gen():
            chunk = []
            for e in self:
                chunk.append(e)
                if len(chunk) == batch_size:
                    yield _stack(chunk)
                    chunk = []
            if chunk and not drop_remainder:
                yield _stack(chunk)

        return Dataset(gen)

    def prefetch(self, buffer_size):
        return self
