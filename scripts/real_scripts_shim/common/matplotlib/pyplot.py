"""A pyplot that draws nothing (see matplotlib/__init__.py)."""

import numpy as _np


def _consume(args, kwargs):
    for value in list(args) + list(kwargs.values()):
        if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
            _np.asarray(value)


class _Anything:
    """Any attribute, any call, returns another _Anything (figures, axes, lines...)."""

    def __call__(self, *args, **kwargs):
        _consume(args, kwargs)
        return _Anything()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()

    def __iter__(self):
        return iter(())


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Anything()


def subplots(*args, **kwargs):
    return _Anything(), _Anything()


def show(*args, **kwargs):
    return None
