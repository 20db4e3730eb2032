"""The runtime side of the rewrite: lazy jaxtyping+beartype checks.

Decorating with `jaxtyped(typechecker=beartype)` costs about a millisecond per function, which
would be paid on every start for every annotated function. `check` instead returns a trampoline
(a few microseconds) and builds the checked function on its first call. Under `jax.jit` the first
call happens while tracing, so a compiled step never pays for checks.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
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
        return jaxtyped(fn, typechecker=beartype)
    except Exception as exc:  # the checker's own limits must never stop the user's code
        filename, lineno = locate() if locate else (fn.__code__.co_filename, fn.__code__.co_firstlineno)
        message = (
            f"raximport: {fn.__qualname__} runs unchecked: jaxtyping+beartype cannot check its "
            f"annotations ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
        warnings.warn_explicit(message, RaxWarning, filename, lineno, module=fn.__module__)
        return fn


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
