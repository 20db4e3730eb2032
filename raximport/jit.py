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
from raximport.provenance import is_user_file
from raximport.report import Report, defined_at, function_name, note, short_repr, show, user_location

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


def _is_users(fun: Any) -> bool:
    """Whether `fun`, as jit got it, is defined in the user's code (under the checks' trampoline, or
    partial). A library's own jitted function (equinox's filter_jit under -p equinox) has parameters
    the user never wrote, so a report naming them could not be acted on."""
    while isinstance(fun, functools.partial):
        fun = fun.func
    target = inspect.unwrap(fun)
    where = defined_at(target) or defined_at(getattr(type(target), "__call__", None))
    return where is not None and is_user_file(where[0])


class _TraceWatch:
    """Counts the traces of one jitted function of the user's and explains churn once.

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
        self.users = _is_users(fun)  # a library's jit is watched for auto-jit's counters, never reported

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
        if self.users:
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
        if _equal(old[1], new[1]):
            return None
        path, was, now = _difference(old[1], new[1])
        part = name + path
        if _same_but_identity(was, now):
            return (f"static argument '{name}'{f': {part}' if path else ''} is a new {type(now).__name__} object on "
                    "each call (equal settings, but a different object, so a different compile)",
                    f"build '{part}' once, outside the loop, and pass that same object every time")
        was_text, now_text = _contrast(was, now)
        what = f"static argument '{name}' changed" + (f": {part}" if path else "") + f" from {was_text} to {now_text}"
        if not isinstance(now, (int, float)) or isinstance(now, bool):
            return what, f"a static argument that changes recompiles: keep '{part}' to a few values"
        if path:
            return what, (f"'{name}' is static, so each new {part} compiles again: pass {part} as an argument "
                          "of its own, traced (jnp.asarray), if it is not used as a shape")
        return what, (f"a static argument that changes recompiles: if '{name}' is not used as a shape, "
                      "pass it as an array (jnp.asarray) so that it is traced instead")
    return (f"argument '{name}' switched between traced and static", f"pass '{name}' the same way on every call")


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays, objects whose == raises: only the same object is the same
        return a is b


def _same_but_identity(a: Any, b: Any) -> bool:
    """Two objects that print the same but for their addresses: equal settings, another object."""
    return type(a) is type(b) and _ADDRESS.sub("", repr(a)) == _ADDRESS.sub("", repr(b))


def _difference(old: Any, new: Any) -> tuple[str, Any, Any]:
    """Where two unequal values first differ: the path into them (".lr", "['name']", "[2]") and the
    two parts there; a report shows those, not two reprs cut to the same text."""
    if type(old) is not type(new) or _same_but_identity(old, new):
        return "", old, new
    if dataclasses.is_dataclass(old) and not isinstance(old, type):
        parts = [(f".{f.name}", getattr(old, f.name), getattr(new, f.name)) for f in dataclasses.fields(old)]
    elif isinstance(old, tuple) and hasattr(old, "_fields"):
        parts = [(f".{field}", a, b) for field, a, b in zip(old._fields, old, new)]
    elif isinstance(old, (tuple, list)) and len(old) == len(new):
        parts = [(f"[{i}]", a, b) for i, (a, b) in enumerate(zip(old, new))]
    elif isinstance(old, dict) and old.keys() == new.keys():
        parts = [(f"[{key!r}]", old[key], new[key]) for key in old]
    else:
        parts = []
    for step, a, b in parts:
        if not _equal(a, b):
            path, was, now = _difference(a, b)
            return step + path, was, now
    return "", old, new


def _contrast(old: Any, new: Any) -> tuple[str, str]:
    """The two values as a report line shows them, made to differ: where their short forms read the
    same, the stretch of each repr from a little before the first difference."""
    was, now = short_repr(old), short_repr(new)
    if was != now:
        return was, now
    old_text, new_text = repr(old), repr(new)
    first = next((i for i, (a, b) in enumerate(zip(old_text, new_text)) if a != b), min(len(old_text), len(new_text)))
    start = max(0, first - 20)

    def cut(text: str) -> str:
        return ("..." if start else "") + text[start:start + 50] + ("..." if len(text) > start + 50 else "")

    return cut(old_text), cut(new_text)


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
    def hints(self) -> tuple[list[str], dict[str, str]]:
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


def _annotation_hints(fn: Callable[..., Any]) -> tuple[list[str], dict[str, str]]:
    """Parameter names in order, and a static/dynamic verdict for those whose annotation decides it."""
    target = inspect.unwrap(fn)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    names = list(inspect.signature(target).parameters)
    verdicts: dict[str, str] = {}
    for name in names:
        hint = hints.get(name)
        if hint is None:
            continue
        if getattr(hint, "dim_str", None) is not None or _is_array_type(hint):
            verdicts[name] = DYNAMIC
        elif _is_python_value_type(hint):  # `temperature: float` must stay a Python float to pass its check
            verdicts[name] = STATIC
    return names, verdicts


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


def _static_layout(
    hints: tuple[list[str], dict[str, str]], args: tuple[Any, ...], kwargs: dict[str, Any], traced: set[str]
) -> Layout | None:
    """(static_argnums, static_argnames) for this call, or None if some argument cannot go through jit."""
    names, verdicts = hints
    static_nums = []
    for index, value in enumerate(args):
        name = names[index] if index < len(names) else None
        kind = DYNAMIC if name in traced else (verdicts.get(name) if name else None) or classify(value)
        if kind == UNSUPPORTED:
            return None
        if kind == STATIC:
            static_nums.append(index)
    static_names = []
    for name, value in kwargs.items():
        kind = DYNAMIC if name in traced else verdicts.get(name) or classify(value)
        if kind == UNSUPPORTED:
            return None
        if kind == STATIC:
            static_names.append(name)
    return tuple(static_nums), tuple(static_names)


def _verbose(config: "Config", message: str) -> None:
    if config.verbose:
        note(message)


def _announce(config: "Config", fn: Callable[..., Any], layout: Layout, hints: tuple[list[str], dict[str, str]]) -> None:
    names = hints[0]
    static = tuple(names[i] if i < len(names) else f"arg{i}" for i in layout[0]) + layout[1]
    _verbose(config, f"jit {function_name(fn)}: static={static}")


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
