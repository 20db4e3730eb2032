"""The runtime side of the rewrite: lazy jaxtyping+beartype checks.

Decorating with `jaxtyped(typechecker=beartype)` costs about a millisecond per function, which
would be paid on every start for every annotated function. `check` instead returns a trampoline
(a few microseconds) and builds the checked function on its first call. Under `jax.jit` the first
call happens while tracing, so a compiled step never pays for checks.

Under jit a numpy argument arrives as a tracer, a jax.Array; outside jit it arrives as itself. So
that a call is checked the same way in and out of jit, an annotation over `jax.Array` also accepts
numpy arrays and scalars, checked with the shape and the dtype JAX gives them (float64 is float32
unless x64 is on).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
import warnings
from typing import Any, Callable, TypeVar

from raximport.errors import RaxWarning

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T", bound=type)


Locate = Callable[[], "tuple[str, int]"]


def _build_checked(fn: Callable[..., Any], locate: Locate | None) -> Callable[..., Any]:
    """jaxtyped(typechecker=beartype)(fn), or `fn` itself with one warning if the checker refuses it."""
    from beartype import beartype
    from jaxtyping import jaxtyped

    try:
        # beartype's deprecation notes about the user's hint style (typing.Callable...) exist only
        # because raximport checks: they must not fail a run that turns warnings into errors
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return jaxtyped(_accepting_numpy(fn), typechecker=beartype)
    except Exception as exc:  # the checker's own limits must never stop the user's code
        filename, lineno = locate() if locate else (fn.__code__.co_filename, fn.__code__.co_firstlineno)
        message = (
            f"raximport: {fn.__qualname__} runs unchecked: jaxtyping+beartype cannot check its "
            f"annotations ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
        warnings.warn_explicit(message, RaxWarning, filename, lineno, module=fn.__module__)
        return fn


@functools.cache
def _numpy_tolerant() -> tuple[type, type]:
    """(the metaclass of the widened jaxtyping types, their array type): made on the first check."""
    import jax
    import numpy as np
    from jaxtyping import AbstractArray

    class AsTraced:
        """A numpy value as jit sees it: its shape, and its dtype as JAX canonicalizes it."""

        def __init__(self, value: Any) -> None:
            self.shape = value.shape
            self.dtype = jax.dtypes.canonicalize_dtype(value.dtype)

    class ArrayMeta(type):
        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, (jax.Array, AsTraced))

    class Array(metaclass=ArrayMeta):
        """jax.Array, or a numpy value that JAX converts on the way in."""

    Array.__module__, Array.__qualname__ = "jax", "Array"  # as messages name it: <class 'jax.Array'>

    class NumpyTolerant(type(AbstractArray)):  # type: ignore[misc]
        def __instancecheck_str__(cls, obj: Any) -> str:
            if isinstance(obj, (np.ndarray, np.generic)):
                obj = AsTraced(obj)
            return super().__instancecheck_str__(obj)

    return NumpyTolerant, Array


def _widen(hint: Any) -> Any:
    """`hint` with each jaxtyping type over jax.Array (inside unions, generics, Annotated and
    PyTree too) made to accept numpy values; `hint` itself if it holds none."""
    import jax
    from jaxtyping import AbstractArray, PyTree

    if isinstance(hint, type(AbstractArray)) and getattr(hint, "array_type", None) is jax.Array:
        meta, array = _numpy_tolerant()
        namespace = {k: v for k, v in vars(hint).items() if k not in ("__dict__", "__weakref__")}
        return meta(hint.__name__, hint.__bases__, namespace | {"array_type": array})
    if isinstance(hint, type(PyTree)) and hint is not PyTree:
        leaf = _widen(hint.leaftype)
        return hint if leaf is hint.leaftype else PyTree[(leaf, hint.structure) if hint.structure else leaf]
    args = typing.get_args(hint)
    widened = tuple(_widen(arg) for arg in args)
    if all(new is old for new, old in zip(widened, args)):
        return hint
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return typing.Annotated[(widened[0], *hint.__metadata__)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[widened]
    if isinstance(hint, types.GenericAlias):
        return types.GenericAlias(origin, widened)
    return hint.copy_with(widened) if hasattr(hint, "copy_with") else hint


def _accepting_numpy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, or a copy of it (same code, globals and closure) whose jax.Array annotations accept
    numpy values: the checker reads the copy's annotations, the user's function keeps its own."""
    annotations = getattr(fn, "__annotations__", None)
    if not isinstance(fn, types.FunctionType) or not annotations:
        return fn
    widened = {}
    for name, hint in annotations.items():
        try:  # a string (postponed annotations) is read as jaxtyping reads it, in the module's globals
            resolved = eval(hint, fn.__globals__) if isinstance(hint, str) else hint
        except Exception:
            continue
        try:  # an annotation it cannot rebuild (a Callable's argument list) keeps its own meaning
            new = _widen(resolved)
        except Exception:
            continue
        if new is not resolved:
            widened[name] = new
    if not widened:
        return fn
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__dict__.update(fn.__dict__)
    copy.__kwdefaults__, copy.__qualname__, copy.__module__ = fn.__kwdefaults__, fn.__qualname__, fn.__module__
    copy.__doc__, copy.__annotations__ = fn.__doc__, annotations | widened
    return copy


def check(fn: F, locate: Locate | None = None) -> F:
    """Return a trampoline that checks `fn`'s jaxtyping annotations, one memo scope per call."""
    if getattr(fn, "__no_type_check__", False) or not callable(fn):
        return fn
    checked: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def trampoline(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if not checked:
            checked.append(_build_checked(fn, locate))
        try:
            return checked[0](*args, **kwargs)
        except Exception as exc:
            if type(exc).__name__ == "TypeCheckError" and not hasattr(exc, "__rax_call__"):
                exc.__rax_call__ = (fn, args, kwargs)  # for the report: the function, its config arguments
            raise

    return trampoline  # type: ignore[return-value]


def _class_location(cls: type) -> tuple[str, int]:
    try:
        return inspect.getsourcefile(cls) or "<unknown>", inspect.findsource(cls)[1] + 1
    except (OSError, TypeError):
        return "<unknown>", 0


def check_class(cls: T) -> T:
    """Check a dataclass's jaxtyping-annotated fields when it is constructed."""
    if dataclasses.is_dataclass(cls) and "__init__" in cls.__dict__:
        init = cls.__dict__["__init__"]
        if not getattr(init, "__wrapped__", None):
            cls.__init__ = check(init, locate=lambda: _class_location(cls))  # type: ignore[misc]
    return cls
