"""raximport's jit: jax.jit with a watch on every trace, and auto-jit for pure entry points.

`jit` returns JAX's own jitted object (same API, same C++ dispatch, same cost per call); only
the traced function is wrapped, and a trace happens exactly once per compiled signature. That is
where checks run (checks.py) and where recompilations are noticed. `autojit` is what the rewrite
puts on annotated pure module-level functions nobody jitted: called from plain Python it jits them,
with static arguments detected from annotations and values; called inside a trace it steps aside.

JAX is imported on first use, never when this module is imported.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import re
import types
import typing
from typing import TYPE_CHECKING, Any, Callable

from raximport import jax_internals
from raximport.report import Report, function_name, note, short_repr, show, user_location

if TYPE_CHECKING:
    from raximport.config import Config

_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
RECOMPILES_BEFORE_REPORT = 4  # a train and an eval shape, a last partial batch: fine; more is churn


def bind(config: "Config", name: str) -> Callable[..., Any]:
    """`jit` or `autojit` bound to the config of the hook that instrumented a module (the rewrite
    calls this in the module's prologue), so its options hold for every later call."""
    if name == "jit":
        return functools.partial(jit, config=config)
    return functools.partial(autojit, config=config)


def jit(fun: Any = None, /, *, config: "Config | None" = None, **options: Any) -> Any:
    """Drop-in for `jax.jit` (same arguments, same returned object and API), watched at trace time.

    `config`: raximport's options for this function; by default, those of the environment and
    the main script's pyproject.toml.
    """
    if fun is None:
        return functools.partial(jit, config=config, **options)
    jitted = _jit(fun, config or default_config(), None, **options)
    jitted.__rax_static__ = (options.get("static_argnums"), options.get("static_argnames"))  # for the reports
    return jitted


_default: list["Config"] = []


def default_config() -> "Config":
    """The config for a jit that no hook bound: RAX_* variables and pyproject.toml, read once."""
    if not _default:
        from raximport.config import load_config
        from raximport.session import main_script_dir

        _default.append(load_config(root=main_script_dir()))
    return _default[0]


def static_parameters(jitted: Any) -> tuple[list[str], set[str]] | None:
    """(the positional parameters, the static ones) of a function made by `jit`, from its
    static_argnums, static_argnames and signature, read as JAX reads them (either one implies the
    other); None for any other callable: JAX's hashing error names no parameter, a report does."""
    spec = getattr(jitted, "__rax_static__", None)
    if spec is None:
        return None
    nums, names = spec
    nums = (nums,) if isinstance(nums, int) else tuple(nums or ())
    static = {names} if isinstance(names, str) else set(names or ())
    try:
        parameters = inspect.signature(inspect.unwrap(jitted)).parameters.values()
    except (TypeError, ValueError):
        return [], static
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional, static | {positional[i] for i in nums if -len(positional) <= i < len(positional)}


Churn = Callable[[list[tuple[str, Any, Any]]], bool]


def _jit(fun: Callable[..., Any], config: "Config", on_churn: Churn | None, **options: Any) -> Any:
    import jax

    from raximport.xla_cache import watch_cache_events, watch_compile_times

    watch_cache_events()  # count this run's persistent-cache hits from the first compile on
    watch_compile_times(config)  # a slow compile with the persistent cache off gets a report
    watch = _TraceWatch(fun, config, on_churn)

    @functools.wraps(fun)
    def traced(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        watch.on_trace(args, kwargs)
        from raximport import memory

        if config.memory_check and jax_internals.is_top_level_trace():
            return memory.traced_call(fun, options, args, kwargs, config)
        return fun(*args, **kwargs)

    return jax.jit(traced, **options)


class _TraceWatch:
    """Counts the traces of one jitted function and explains churn once.

    `on_churn(changes)` may handle churn instead (auto-jit traces a counter it had made static);
    `changes` are (argument, old, new) as `describe_call` gives them.
    """

    def __init__(self, fun: Callable[..., Any], config: "Config", on_churn: Churn | None = None) -> None:
        self.fun = fun
        self.config = config
        self.on_churn = on_churn
        self.traces = 0
        self.last: dict[str, tuple[str, Any]] | None = None
        self.reported = False

    def on_trace(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.traces += 1
        if self.reported:
            return
        signature = describe_call(self.fun, args, kwargs)
        last, self.last = self.last, signature
        if last is None or self.traces <= RECOMPILES_BEFORE_REPORT:
            return
        changed = [(name, last[name], signature[name]) for name in signature if name in last]
        explained = [(name, e) for name, old, new in changed if (e := explain_change(name, old, new))]
        if not explained:
            return
        self.reported = True
        if self.on_churn and self.on_churn([c for c in changed if c[0] in dict(explained)]):
            return
        show(recompile_report(self.fun, self.traces, [e for _, e in explained]), json_path=self.config.report_json)



def describe_call(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Each argument as ("traced", {path: aval string}) or ("static", value), by parameter name."""
    import jax

    try:
        bound = inspect.signature(fun).bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):
        bound = {f"arg{i}": a for i, a in enumerate(args)} | kwargs
    described: dict[str, tuple[str, Any]] = {}
    for name, value in bound.items():
        leaves = jax.tree_util.tree_leaves_with_path(value)
        if leaves and all(isinstance(leaf, jax.core.Tracer) for _, leaf in leaves):
            described[name] = ("traced", {jax.tree_util.keystr(path): str(leaf.aval) for path, leaf in leaves})
        else:
            described[name] = ("static", value)
    return described


def explain_change(name: str, old: tuple[str, Any], new: tuple[str, Any]) -> tuple[str, str] | None:
    """(what changed, how to fix it) for one argument between two traces, or None."""
    if old[0] == new[0] == "traced":
        for path, aval in new[1].items():
            if old[1].get(path) != aval:
                return (f"argument '{name}{path}' changed from {old[1].get(path)} to {aval}",
                        "keep input shapes fixed between calls (pad, or drop the last partial batch)")
        return None
    if old[0] == new[0] == "static":
        try:
            same = bool(old[1] == new[1])
        except Exception:
            same = old[1] is new[1]
        if same:
            return None
        if type(old[1]) is type(new[1]) and _ADDRESS.sub("", repr(old[1])) == _ADDRESS.sub("", repr(new[1])):
            return (f"static argument '{name}' is a new {type(new[1]).__name__} object on each call "
                    "(equal settings, but a different object, so a different compile)",
                    f"build '{name}' once, outside the loop, and pass that same object every time")
        return (f"static argument '{name}' changed from {short_repr(old[1])} to {short_repr(new[1])}",
                f"a static argument that changes recompiles: if '{name}' is not used as a shape, "
                "pass it as an array (jnp.asarray) so that it is traced instead")
    return (f"argument '{name}' switched between traced and static", f"pass '{name}' the same way on every call")


def recompile_report(fun: Callable[..., Any], traces: int, changes: list[tuple[str, str]]) -> Report:
    return Report(
        kind="recompilation",
        title=f"{function_name(fun)} has been compiled {traces} times",
        where=user_location(),
        details=tuple(what for what, _ in changes),
        fix="; ".join(dict.fromkeys(fix for _, fix in changes)),
        extra={"function": function_name(fun), "compiles": traces},
    )


# --- auto-jit -----------------------------------------------------------------------------------

STATIC, DYNAMIC, UNSUPPORTED = "static", "dynamic", "unsupported"
_STATIC_TYPES: tuple[type, ...] = (bool, int, str, bytes, enum.Enum, type(None), type, range, slice)
Layout = tuple[tuple[int, ...], tuple[str, ...]]  # (static_argnums, static_argnames)
Hints = tuple[inspect.Signature, dict[str, str]]  # the signature, a verdict per annotated parameter
_UNDECIDED = object()  # no layout decided yet for these argument types


class AutoJit:
    """The state of one auto-jitted function `fn` and its slow paths; `function()` is what stands in
    for `fn`: jitted when called from plain Python, run as is inside a trace, or for good once jit
    fails for a reason of its own (one report).

    The layout of static arguments is decided from the values of the first call with given argument
    types and kept by those types, so a call costs one dict lookup; a call whose contents disagree
    (a tuple of arrays where it was of ints: jit refuses it) is decided again from its values.
    A Python int that changes on every call (a step counter) is first static, like any int; once
    it has caused a few compiles it is traced instead, unless that fails (it is used as a shape).
    """

    def __init__(self, fn: Callable[..., Any], config: "Config") -> None:
        self.fn = fn
        self.config = config
        self.compiled: dict[Layout, Callable[..., Any]] = {}
        self.by_types: dict[tuple[Any, ...], Callable[..., Any] | None] = {}  # None: runs as plain Python
        self.eager = False
        self.traced_ints: set[str] = set()  # int parameters traced because they changed on every call
        self.trying: set[str] = set()  # the last of those, static again if tracing them fails

    def function(self) -> Callable[..., Any]:
        """The per-call path, as a plain function (a method call would cost more, and a function
        binds, pickles and prints like `fn`)."""
        fn, by_types = self.fn, self.by_types

        @functools.wraps(fn)
        def auto(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if self.eager or not _outside_trace():  # inside a trace: inlined
                return fn(*args, **kwargs)
            key = (*map(type, args), *kwargs, *map(type, kwargs.values()))
            jitted = by_types.get(key, _UNDECIDED)
            from_types = jitted is not _UNDECIDED
            while True:
                if jitted is _UNDECIDED:
                    jitted = self._decide(key, args, kwargs)
                if jitted is None:
                    return fn(*args, **kwargs)
                try:
                    return jitted(*args, **kwargs)
                except Exception as exc:
                    if not _introduced_by_jit(exc):
                        raise
                    if from_types:  # same types as an earlier call, other contents (a tuple of arrays, not of ints)
                        by_types.pop(key, None)
                    elif self.trying:  # the ints just made traced set a shape after all
                        self._keep_ints_static()
                    else:
                        self.eager = True
                        show(fallback_report(fn, exc), json_path=self.config.report_json)
                        return fn(*args, **kwargs)
                jitted, from_types = _UNDECIDED, False

        auto.__rax_autojit__ = True  # type: ignore[attr-defined]
        return auto

    def _decide(self, key: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        """The jitted function for this call's values (None: plain Python), kept for the calls with
        the same argument types; a None only when no argument is a container, whose contents may
        go through jit another time."""
        jitted = self._choose(args, kwargs)
        if jitted is not None or not any(isinstance(v, (tuple, list, dict)) for v in (*args, *kwargs.values())):
            self.by_types[key] = jitted
        return jitted

    def _choose(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        """The jitted function for this call's layout, or None if an argument cannot go through jit."""
        layout = _static_layout(self.hints, args, kwargs, self.traced_ints)
        if layout is None:
            return None
        if layout not in self.compiled:
            self.compiled[layout] = _jit(self.fn, self.config, self._on_churn, static_argnums=layout[0],
                                         static_argnames=layout[1])
            _announce(self.config, self.fn, layout, self.hints)
        return self.compiled[layout]

    @functools.cached_property
    def hints(self) -> Hints:
        """Read on the first call, not at decoration: annotations may name what is defined later."""
        return _annotation_hints(self.fn)

    def _on_churn(self, changes: list[tuple[str, Any, Any]]) -> bool:
        """Trace the ints that keep recompiling (all the changes must be such ints); `n: int` says:
        a Python int, keep it so."""
        pinned = self.hints[1]
        ints = {name for name, old, new in changes if old[0] == "static" and type(new[1]) is int and name not in pinned}
        if not ints or len(ints) != len(changes):
            return False
        self.traced_ints |= ints
        self.trying = ints
        self.by_types.clear()
        _verbose(self.config, f"{function_name(self.fn)}: {', '.join(sorted(ints))} changes on every call: "
                 "traced from now on")
        return True

    def _keep_ints_static(self) -> None:
        """The ints just made traced set a shape after all: static they stay, with a report; the
        calls are decided again."""
        names, self.trying = self.trying, set()
        self.traced_ints -= names
        self.by_types.clear()
        listed = ", ".join(f"'{n}'" for n in sorted(names))
        show(recompile_report(self.fn, RECOMPILES_BEFORE_REPORT + 1, [(
            f"{listed} changes on every call and sets a shape, so each new value compiles again",
            "keep it constant, or round it up to a few sizes")]), json_path=self.config.report_json)


def autojit(fn: Callable[..., Any], config: "Config | None" = None) -> Callable[..., Any]:
    """What the rewrite puts on annotated pure module-level functions that nobody jitted."""
    return AutoJit(fn, config or default_config()).function()


def _outside_trace() -> bool:
    """True outside any JAX trace. After the first call (JAX is imported by then) this name is JAX's
    own check: auto-jit asks on every call."""
    global _outside_trace
    _outside_trace = jax_internals.trace_state_clean_check()
    return _outside_trace()


def _annotation_hints(fn: Callable[..., Any]) -> Hints:
    """The signature, and a static/dynamic verdict for the parameters whose annotation decides it
    (that of `*args` holds for each of its entries, as their type checks do)."""
    target = inspect.unwrap(fn)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    signature = inspect.signature(target)
    verdicts: dict[str, str] = {}
    for name in signature.parameters:
        hint = hints.get(name)
        if hint is None:
            continue
        if getattr(hint, "dim_str", None) is not None or _is_array_type(hint):
            verdicts[name] = DYNAMIC
        elif _is_python_value_type(hint):  # `temperature: float` must stay a Python float to pass its check
            verdicts[name] = STATIC
    return signature, verdicts


_PYTHON_VALUES = (int, float, bool, str, type(None))


def _is_python_value_type(hint: Any) -> bool:
    """`int`, `float`, `bool`, `str`, an enum, or a union of those and None (`int | None`)."""
    if hint in _PYTHON_VALUES or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return True
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()
    return bool(members) and all(_is_python_value_type(m) for m in members)


def _is_array_type(hint: Any) -> bool:
    import jax

    return hint is jax.Array


_PYTREE_TYPES: dict[type, bool] = {}


def _is_pytree_node(value: Any) -> bool:
    """Whether JAX flattens `value` (a registered dataclass, an equinox module...), cached per type."""
    import jax

    cls = type(value)
    if cls not in _PYTREE_TYPES:
        leaves = jax.tree_util.tree_leaves(value, is_leaf=lambda x: x is not value)
        _PYTREE_TYPES[cls] = not (len(leaves) == 1 and leaves[0] is value)
    return _PYTREE_TYPES[cls]


def classify(value: Any, in_tuple: bool = False) -> str:
    """static: hashable configuration JAX must see as a Python value; dynamic: arrays and pytrees.

    A Python float alone is dynamic (a learning rate changes without a recompile); inside a
    tuple of Python values (a NamedTuple config) it is part of that static value.
    """
    import jax
    import numpy as np

    if in_tuple and isinstance(value, float):
        return STATIC
    if isinstance(value, (jax.Array, np.ndarray, np.generic, float, complex)):
        return DYNAMIC
    if isinstance(value, _STATIC_TYPES) or isinstance(value, np.dtype):
        return STATIC
    if isinstance(value, (dict, list)):
        leaves = jax.tree_util.tree_leaves(value)
        numeric = (jax.Array, np.ndarray, np.generic, int, float, complex)
        return DYNAMIC if all(isinstance(leaf, numeric) for leaf in leaves) else UNSUPPORTED
    if isinstance(value, tuple):
        kinds = {classify(v, in_tuple=True) for v in value}
        if kinds <= {STATIC}:  # a NamedTuple of numbers, an optax transformation, a shape
            return STATIC
        return DYNAMIC if UNSUPPORTED not in kinds else UNSUPPORTED
    if _is_pytree_node(value):
        return DYNAMIC
    if dataclasses.is_dataclass(value):
        return STATIC
    if callable(value):
        return STATIC
    return UNSUPPORTED


def _bound(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[int | str, str, Any]]:
    """Each argument of a call as (its position or keyword, the parameter it binds to, its value),
    bound as Python binds them: after `*xs`, `flag=` is keyword-only, never the second array.
    Raises TypeError for a call that Python would refuse."""
    bound = signature.bind(*args, **kwargs).arguments
    positional = [p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    arguments: list[tuple[int | str, str, Any]] = []
    for name, value in bound.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            arguments += [(len(positional) + i, name, entry) for i, entry in enumerate(value)]
        elif kind is inspect.Parameter.VAR_KEYWORD:
            arguments += [(key, name, entry) for key, entry in value.items()]
        elif name in kwargs and kind is not inspect.Parameter.POSITIONAL_ONLY:
            arguments.append((name, name, value))
        else:
            arguments.append((positional.index(name), name, value))
    return arguments


def _static_layout(hints: Hints, args: tuple[Any, ...], kwargs: dict[str, Any], traced: set[str]) -> Layout | None:
    """(static_argnums, static_argnames) for this call, or None if some argument cannot go through
    jit (or Python would refuse the call: plain Python then says why)."""
    signature, verdicts = hints
    try:
        arguments = _bound(signature, args, kwargs)
    except TypeError:
        return None
    static_nums: list[int] = []
    static_names: list[str] = []
    for where, name, value in arguments:
        kind = DYNAMIC if name in traced else verdicts.get(name) or classify(value)
        if kind == UNSUPPORTED:
            return None
        if kind == STATIC and isinstance(where, str) and where != name and where in signature.parameters:
            return None  # a `**kwargs` entry named like a positional-only parameter: jit refuses it as static
        if kind == STATIC:
            (static_nums if isinstance(where, int) else static_names).append(where)
    return tuple(static_nums), tuple(static_names)


def _verbose(config: "Config", message: str) -> None:
    if config.verbose:
        note(message)


def _announce(config: "Config", fn: Callable[..., Any], layout: Layout, hints: Hints) -> None:
    static = tuple(_argument_name(hints[0], i) for i in layout[0]) + layout[1]
    _verbose(config, f"jit {function_name(fn)}: static={static}")


def _argument_name(signature: inspect.Signature, index: int) -> str:
    """The name of the `index`th positional argument: its parameter's, or `xs[1]` inside `*xs`."""
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if index < len(positional):
        return positional[index].name
    rest = next(p.name for p in parameters if p.kind is p.VAR_POSITIONAL)  # bind checked there is one
    return f"{rest}[{index - len(positional)}]"


def _introduced_by_jit(exc: BaseException) -> bool:
    """Errors that tracing causes and plain Python would not: these make auto-jit step back."""
    import jax.errors as je
    from jaxtyping import TypeCheckError

    if isinstance(exc, TypeCheckError):
        return False
    if isinstance(exc, (je.ConcretizationTypeError, je.TracerArrayConversionError, je.TracerIntegerConversionError)):
        return True
    message = str(exc)
    return any(
        marker in message
        for marker in (
            "is not a valid JAX type",
            "Non-hashable static arguments",
            "must be static integers",
            "Shapes must be 1D sequences of concrete values",
            "as an abstract array",
        )
    )


def fallback_report(fn: Callable[..., Any], exc: BaseException) -> Report:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    return Report(
        kind="autojit-fallback",
        title=f"{function_name(fn)} runs without jit: it cannot be traced ({type(exc).__name__})",
        where=user_location(exc.__traceback__) or ((code.co_filename, code.co_firstlineno) if code else None),
        details=(first_line,),
        fix=(
            "results are the same, only slower. To make it jittable: use jnp.where / lax.cond instead of "
            "Python `if` on array values, keep shapes from Python ints (not arrays), return arrays only; "
            "or jit it yourself with static_argnames for the arguments used as Python values"
        ),
        extra={"function": function_name(fn), "error": type(exc).__name__},
    )
