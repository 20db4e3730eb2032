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
from raximport.failsafe import stepped_aside
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
    if name == "library_jit":
        return functools.partial(library_jit, config=config)
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
    return static_names(inspect.unwrap(jitted), *spec)


def static_names(fun: Callable[..., Any], nums: Any, names: Any) -> tuple[list[str], set[str]]:
    """(the positional parameters, the static ones) of `fun` jitted with static_argnums `nums`
    and static_argnames `names`."""
    nums = (nums,) if isinstance(nums, int) else tuple(nums or ())
    static = {names} if isinstance(names, str) else set(names or ())
    try:
        parameters = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return [], static
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional, static | {positional[i] for i in nums if -len(positional) <= i < len(positional)}


Churn = Callable[[list[tuple[str, Any, Any]]], bool]


def library_jit(library_jit: Callable[..., Any], /, *, config: "Config | None" = None) -> Callable[..., Any]:
    """A library's jit (`eqx.filter_jit`, `nnx.jit`: built on jax.jit, which traces the user's
    function with the user's own arguments) made to watch its traces as `jit` does: checks,
    recompilation reports, the memory check of each compiled signature, slow compiles. It returns
    the library's own object; a callable that is not a plain function (an `eqx.Module` whose arrays
    the library traces) is handed over as it is."""

    @functools.wraps(library_jit)
    def watched_library_jit(fun: Any = None, /, **options: Any) -> Any:
        if fun is None:  # `@eqx.filter_jit(donate="all")`, `partial(nnx.jit, static_argnums=0)`
            return functools.partial(watched_library_jit, **options)
        if not inspect.isfunction(fun):
            return library_jit(fun, **options)
        settings = config or default_config()
        if library_jit.__module__.startswith("flax."):  # nnx.jit re-lowers the step for the memory check
            watched = _watched(fun, settings, None, options, library_jit)
        else:  # equinox's filter_jit would hold stand-ins static: the check re-lowers with jax.jit on
            # arguments cut as filter_jit cuts them (memory.Step.trace), the same program
            watched = _watched(fun, settings, None, {})
        if settings.nan_guard:
            from raximport.nan_guard import guard_library

            return guard_library(library_jit, watched, fun, settings, options)
        return library_jit(watched, **options)

    return watched_library_jit


def _jit(fun: Callable[..., Any], config: "Config", on_churn: Churn | None, **options: Any) -> Any:
    import jax

    traced = _watched(fun, config, on_churn, options)
    if config.nan_guard:
        from raximport.nan_guard import guard

        return guard(traced, fun, config, options)
    return jax.jit(traced, **options)


def _watched(fun: Callable[..., Any], config: "Config", on_churn: Churn | None, options: dict[str, Any],
             relower: Callable[..., Any] | None = None) -> Any:
    """`fun` as a jit traces it: each trace is watched (checks run inside `fun`, the watch compares
    signatures) and, traced from plain Python, its compiled program is memory-checked before it
    runs. The memory check re-lowers with `relower` (default jax.jit) and its `options`."""
    from raximport.xla_cache import watch_cache_events, watch_compile_times

    watch_cache_events()  # count this run's persistent-cache hits from the first compile on
    watch_compile_times(config)  # a slow compile with the persistent cache off gets a report
    watch = _TraceWatch(fun, config, on_churn)

    @functools.wraps(fun)
    def traced(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        try:
            watch.on_trace(args, kwargs)
        except Exception as exc:  # a value the watch cannot describe: the trace goes on unwatched
            stepped_aside("the recompilation watch", function_name(fun), exc, config)
        if (config.memory_check or config.dump_ir) and jax_internals.is_top_level_trace():
            if config.dump_ir:
                from raximport.ir import capture

                capture.expect_compile(traced, fun, options, args, kwargs, config)
            if config.memory_check:
                from raximport import memory

                memory.expect_compile(traced, fun, options, args, kwargs, config, relower)
        return fun(*args, **kwargs)

    return traced


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



def arguments_by_name(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name (`arg0`, `arg1`, ... where the call does not bind to
    the signature as written)."""
    try:
        return dict(inspect.signature(fun).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {f"arg{i}": a for i, a in enumerate(args)} | kwargs


def describe_call(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Each argument as ("traced", ({path: aval string}, {path: static part})) or ("static", value),
    by parameter name. A traced argument's static parts are what jit holds static inside it: a
    module's attributes that are not arrays (nnx), the leaves equinox's filter_jit does not trace."""
    import jax

    described: dict[str, tuple[str, Any]] = {}
    for name, value in arguments_by_name(fun, args, kwargs).items():
        if type(value) is _Cut:  # auto-jit's cut pytree: as the user passed it (a new _Cut each call)
            value = value.whole()
        leaves = jax.tree_util.tree_leaves_with_path(value)
        if any(isinstance(leaf, jax.core.Tracer) for _, leaf in leaves):  # all, but under filter_jit
            avals = {jax.tree_util.keystr(path): str(leaf.aval) for path, leaf in leaves
                     if isinstance(leaf, jax.core.Tracer)}
            described[name] = ("traced", (avals, _static_parts(value)))
        else:
            described[name] = ("static", value)
    return described


def _static_parts(value: Any, path: str = "") -> dict[str, Any]:
    """The parts of a traced argument that jit holds static, by path: the attributes of a module
    that are not arrays (an nnx.Optimizer's `.tx`), whose change recompiles as a static one does."""
    import jax

    if isinstance(value, jax.core.Tracer):
        return {}
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value)):
        return {path: value}
    if isinstance(value, dict):
        children = [(f"[{key!r}]", child) for key, child in value.items()]
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        children = [(f".{field}", child) for field, child in zip(value._fields, value)]
    elif isinstance(value, (list, tuple)):
        children = [(f"[{i}]", child) for i, child in enumerate(value)]
    else:
        children = [(f".{key}", child) for key, child in vars(value).items() if not key.startswith("_")] \
            if hasattr(value, "__dict__") else []
    return {part: static for step, child in children for part, static in _static_parts(child, path + step).items()}


def explain_change(name: str, old: tuple[str, Any], new: tuple[str, Any]) -> tuple[str, str] | None:
    """(what changed, how to fix it) for one argument between two traces, or None."""
    if old[0] == new[0] == "traced":
        (old_avals, old_static), (new_avals, new_static) = old[1], new[1]
        for path, aval in new_avals.items():
            if old_avals.get(path) != aval:
                return (f"argument '{name}{path}' changed from {old_avals.get(path)} to {aval}",
                        "keep input shapes fixed between calls (pad, or drop the last partial batch)")
        for path, now in new_static.items():
            if path in old_static and not _equal(old_static[path], now):
                return _static_change(name, path, old_static[path], now)
        return None
    if old[0] == new[0] == "static":
        if _equal(old[1], new[1]):
            return None
        return _static_change(name, "", old[1], new[1])
    return (f"argument '{name}' switched between traced and static", f"pass '{name}' the same way on every call")


def _static_change(name: str, at: str, old: Any, new: Any) -> tuple[str, str]:
    """(what changed, how to fix it) for a static argument `name`, or the part of it at `at` that jit
    holds static in a traced one (a module's attribute), that differs from the last trace."""
    path, was, now = _difference(old, new)
    path = at + path
    part = name + path
    subject = f"static part '{part}' of argument '{name}'" if at else f"static argument '{name}'"
    if _same_but_identity(was, now):
        return (f"{subject}{f': {part}' if path and not at else ''} is a new {type(now).__name__} object on "
                "each call (equal settings, but a different object, so a different compile)",
                f"build '{part}' once, outside the loop, and pass that same object every time")
    was_text, now_text = _contrast(was, now)
    what = f"{subject} changed" + (f": {part}" if path and not at else "") + f" from {was_text} to {now_text}"
    if not isinstance(now, (int, float)) or isinstance(now, bool):
        return what, f"a static argument that changes recompiles: keep '{part}' to a few values"
    if path:
        return what, (f"'{name}' is static, so each new {part} compiles again: pass {part} as an argument "
                      "of its own, traced (jnp.asarray), if it is not used as a shape")
    return what, (f"a static argument that changes recompiles: if '{name}' is not used as a shape, "
                  "pass it as an array (jnp.asarray) so that it is traced instead")


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
SPLIT = "split"  # a pytree holding leaves jit cannot trace (a module's activation function): cut in two
_STATIC_TYPES: tuple[type, ...] = (bool, int, str, bytes, enum.Enum, type(None), type, range, slice)
_NUMBERS = (int, float, complex)  # bool too
Cuts = tuple[tuple[int | str, bool], ...]  # (position or keyword, its numbers static) of each SPLIT argument
Layout = tuple[tuple[int, ...], tuple[str, ...], Cuts]  # (static_argnums, static_argnames, cuts)
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
    A pytree argument holding leaves jit cannot trace (an equinox module's activation function) is
    cut, as equinox's filter_jit does: its arrays and numbers traced, the rest static. Its Python
    numbers are traced as jax.jit would, and static once tracing fails (`Dropout.inference` steers
    Python code). Its results are cut the same way (a step returns the updated module), from the
    start where an argument is cut, else once jit has refused a result that is not an array.
    """

    def __init__(self, fn: Callable[..., Any], config: "Config") -> None:
        self.fn = fn
        self.config = config
        self.compiled: dict[Layout, Callable[..., Any]] = {}
        self.by_types: dict[tuple[Any, ...], Callable[..., Any] | None] = {}  # None: runs as plain Python
        self.eager = False
        self.traced_ints: set[str] = set()  # int parameters traced because they changed on every call
        self.trying: set[str] = set()  # the last of those, static again if tracing them fails
        self.static_numbers: set[str] = set()  # parameters whose pytrees' Python numbers are static
        self.said: set[str] = set()  # why calls run as plain Python, each said once under --verbose
        self.cut_results = False  # a result held a leaf that is not an array: results are cut

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
                    if not (isinstance(exc, _CannotJit) or _introduced_by_jit(exc)):
                        raise
                    if from_types:  # same types as an earlier call, other contents (a tuple of arrays, not of ints)
                        by_types.pop(key, None)
                    elif self.trying:  # the ints just made traced set a shape after all
                        self._keep_ints_static()
                    elif self._hold_numbers(args, kwargs):  # a module's flag steers Python code
                        pass
                    elif not self.cut_results and _BAD_RESULT.search(str(exc)):  # it returns a module
                        self._cut_results(exc)
                    else:
                        self.eager = True
                        arguments = [(_label(self.hints[0], where), value)
                                     for where, _, value in _bound(self.hints[0], args, kwargs)]
                        show(fallback_report(fn, exc, arguments), json_path=self.config.report_json)
                        return fn(*args, **kwargs)
                jitted, from_types = _UNDECIDED, False

        auto.__rax_autojit__ = True  # type: ignore[attr-defined]
        return auto

    def _decide(self, key: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        """The jitted function for this call's values (None: plain Python), kept for the calls with
        the same argument types; a None only when no argument is a pytree (a container, a module),
        whose contents may go through jit another time."""
        try:
            jitted = self._choose(args, kwargs)
        except Exception as exc:  # static detection's own failure: this function runs as plain Python
            stepped_aside("auto-jit's static detection", function_name(self.fn), exc, self.config)
            jitted = None
        if jitted is not None or not any(map(_is_pytree_node, (*args, *kwargs.values()))):
            self.by_types[key] = jitted
        return jitted

    def _choose(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        """The jitted function for this call's layout, or None if an argument cannot go through jit
        (said once under --verbose)."""
        try:
            layout = _static_layout(self.hints, args, kwargs, self.traced_ints, self.static_numbers)
        except _CannotJit as why:
            if str(why) not in self.said:
                self.said.add(str(why))
                _verbose(self.config, f"{function_name(self.fn)} runs as plain Python: {why}")
            return None
        if layout not in self.compiled:
            static_argnums, static_argnames, cuts = layout
            if cuts or self.cut_results:
                jitted = _jit(whole(self.fn), self.config, self._on_churn, static_argnums=static_argnums,
                              static_argnames=static_argnames)
                self.compiled[layout] = _cutting(jitted, cuts)
            else:
                self.compiled[layout] = _jit(self.fn, self.config, self._on_churn, static_argnums=static_argnums,
                                             static_argnames=static_argnames)
            _announce(self.config, self.fn, layout, self.hints)
        return self.compiled[layout]

    def _hold_numbers(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """After a failed trace: hold static the Python numbers in this call's pytree arguments
        (equinox's rule) and decide again; False if there are none left to hold."""
        import jax

        names = {
            name for _, name, value in _bound(self.hints[0], args, kwargs)
            if name not in self.static_numbers and _is_pytree_node(value) and classify(value) in (DYNAMIC, SPLIT)
            and any(isinstance(leaf, _NUMBERS) for leaf in jax.tree_util.tree_leaves(value))
        }
        if not names:
            return False
        self.static_numbers |= names
        self.by_types.clear()
        _verbose(self.config, f"{function_name(self.fn)}: the Python numbers in {', '.join(sorted(names))} "
                 "are static from now on (tracing them failed)")
        return True

    def _cut_results(self, exc: BaseException) -> None:
        """jit refused a result that is not an array: cut results from now on, as arguments are."""
        self.cut_results = True
        self.by_types.clear()
        self.compiled.clear()
        found = _BAD_RESULT.search(str(exc))
        _verbose(self.config, f"{function_name(self.fn)} returns a {found[1].rsplit('.', 1)[-1]} at {found[2]}, "  # type: ignore[index]
                 "which is not an array: its results are cut from now on")

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


def classify(value: Any, in_tuple: bool = False, numbers_static: bool = False) -> str:
    """static: hashable configuration JAX must see as a Python value; dynamic: arrays and pytrees of
    arrays and numbers; split: pytrees also holding other leaves (see `_cut`).

    A Python float alone is dynamic (a learning rate changes without a recompile); inside a
    tuple of Python values (a NamedTuple config) it is part of that static value.
    """
    import numpy as np

    if in_tuple and isinstance(value, float):
        return STATIC
    if isinstance(value, (*_array_types(), float, complex)):
        return DYNAMIC
    if isinstance(value, _STATIC_TYPES) or isinstance(value, np.dtype):
        return STATIC
    if isinstance(value, tuple) and all(classify(v, in_tuple=True) == STATIC for v in value):
        return STATIC  # a NamedTuple of numbers, an optax transformation, a shape
    if _is_pytree_node(value):
        try:
            cut = _cut(value, numbers_static)
        except _CannotJit:
            return UNSUPPORTED
        return SPLIT if any(leaf is not None for leaf in cut.rest.leaves) else DYNAMIC
    if dataclasses.is_dataclass(value):
        return STATIC
    if callable(value):
        return STATIC
    return UNSUPPORTED


@functools.cache
def _array_types() -> tuple[type, ...]:
    """What jit traces as it is: JAX's arrays and numpy's (JAX imported on first use)."""
    import jax
    import numpy as np

    return jax.Array, np.ndarray, np.generic


class _CannotJit(Exception):
    """This call cannot go through jit; the message says why (for --verbose)."""


_STATIC_LEAF: dict[type, bool] = {}


def _cut(value: Any, numbers_static: bool) -> "_Cut":
    """`value` cut for jit, as equinox's filter_jit cuts its arguments: arrays (and Python numbers,
    unless `numbers_static`) traced; the other leaves static, with the tree's structure, so they must
    be hashable: functions by identity, strings and numbers by value. Raises _CannotJit for a leaf
    that should not be frozen into a compile (a numpy Generator) or cannot be hashed."""
    import jax

    _register_cut()
    traced_types = _array_types() if numbers_static else (*_array_types(), *_NUMBERS)
    leaves, treedef = jax.tree_util.tree_flatten(value)
    traced: list[Any] = []
    static: list[Any] = []
    for leaf in leaves:
        if isinstance(leaf, traced_types):
            traced.append(leaf)
            static.append(None)  # never a leaf: JAX's None is an empty subtree
            continue
        kind = _STATIC_LEAF.get(type(leaf))
        if kind is None:
            kind = _STATIC_LEAF[type(leaf)] = isinstance(leaf, _NUMBERS) or classify(leaf) == STATIC
        if not kind:
            raise _CannotJit(f"holds a {type(leaf).__name__} at {_path_of(value, leaf)}, which jit can neither "
                             "trace nor hold static")
        static.append(leaf)
    rest = _Rest(treedef, tuple(static))
    try:
        hash(rest)
    except TypeError:
        unhashable = [leaf for leaf in static if not _hashable(leaf)]
        where = f"a {type(unhashable[0]).__name__} at {_path_of(value, unhashable[0])}" if unhashable else "a node"
        raise _CannotJit(f"holds {where} that jit would hold static, and it cannot be hashed") from None
    return _Cut(tuple(traced), rest)


def _cut_result(result: Any) -> Any:
    """A result of the function, cut while tracing if some leaf is not an array (`_cutting` puts it
    back together): its arrays returned by jit, the rest as they were made at trace time."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(result)
    arrays = _array_types()
    if all(isinstance(leaf, arrays) for leaf in leaves):
        return result
    _register_cut()
    static = tuple(None if isinstance(leaf, arrays) else leaf for leaf in leaves)
    return _Cut(tuple(leaf for leaf in leaves if isinstance(leaf, arrays)), _Rest(treedef, static))


def _path_of(tree: Any, leaf: Any) -> str:
    import jax

    return next(jax.tree_util.keystr(path) for path, found in jax.tree_util.tree_leaves_with_path(tree) if found is leaf)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class _Rest:
    """What a cut leaves static: the tree's structure and its other leaves (None where traced).
    jit hashes and compares an argument's on every call: the hash is computed once, and the
    leaves' types count (a static `1` is not `True`); a result's is never hashed."""

    __slots__ = ("treedef", "leaves", "key", "hash")

    def __init__(self, treedef: Any, leaves: tuple[Any, ...]) -> None:
        self.treedef = treedef
        self.leaves = leaves
        self.key = (treedef, leaves, tuple(map(type, leaves)))
        self.hash: int | None = None

    def __hash__(self) -> int:
        if self.hash is None:
            self.hash = hash(self.key)
        return self.hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rest) and self.hash == other.hash and self.key == other.key


class _Cut:
    """A pytree argument cut for jit: its traced leaves are this pytree node's children, the rest its
    static aux data. `whole()` puts it back together (while tracing, with tracers)."""

    __slots__ = ("traced", "rest")

    def __init__(self, traced: tuple[Any, ...], rest: _Rest) -> None:
        self.traced = traced
        self.rest = rest

    def whole(self) -> Any:
        import jax

        merged = iter(self.traced)
        leaves = [next(merged) if leaf is None else leaf for leaf in self.rest.leaves]
        return jax.tree_util.tree_unflatten(self.rest.treedef, leaves)


@functools.cache
def _register_cut() -> None:
    """Register _Cut as a pytree node, with the paths of its traced leaves in the whole tree as keys
    (the recompilation report says `model.layers[0].weight`)."""
    import jax

    def with_keys(cut: _Cut) -> tuple[list[tuple[str, Any]], _Rest]:
        paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(cut.whole())]
        traced = [path for path, leaf in zip(paths, cut.rest.leaves) if leaf is None]
        return list(zip(traced, cut.traced)), cut.rest

    jax.tree_util.register_pytree_with_keys(
        _Cut, with_keys, lambda rest, traced: _Cut(tuple(traced), rest), lambda cut: (cut.traced, cut.rest))


def cut_stand_ins(value: Any) -> Any:
    """A pytree mixing ShapeDtypeStruct stand-ins with other leaves (an equinox module's activation,
    as eqx.filter_jit took it) cut so that jit traces the stand-ins and holds the rest static, as
    the library did; anything else as it is. The memory check re-lowers a step with these."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(value)
    stand_ins = [isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves]
    if all(stand_ins) or not any(stand_ins):
        return value
    _register_cut()
    return _Cut(tuple(leaf for leaf, s in zip(leaves, stand_ins) if s),
                _Rest(treedef, tuple(None if s else leaf for leaf, s in zip(leaves, stand_ins))))


def whole(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` for jit to trace with cut arguments (see `_cutting`): it gets them whole, and its result
    is cut."""

    @functools.wraps(fn)
    def whole(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        return _cut_result(fn(*[a.whole() if type(a) is _Cut else a for a in args],
                              **{k: v.whole() if type(v) is _Cut else v for k, v in kwargs.items()}))

    return whole


def _cutting(jitted: Callable[..., Any], cuts: Cuts) -> Callable[..., Any]:
    """`jitted` called with the arguments at `cuts` cut, on every call: their contents may differ
    between calls of the same types (a _CannotJit then has the call decided again); its result
    whole again."""
    positions = [(where, numbers) for where, numbers in cuts if isinstance(where, int)]
    keywords = [(where, numbers) for where, numbers in cuts if isinstance(where, str)]

    def call(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if positions:
            args = list(args)  # type: ignore[assignment]
            for index, numbers in positions:
                args[index] = _cut(args[index], numbers)  # type: ignore[index]
        for name, numbers in keywords:
            kwargs[name] = _cut(kwargs[name], numbers)
        result = jitted(*args, **kwargs)
        return result.whole() if type(result) is _Cut else result

    return call


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


def _static_layout(
    hints: Hints, args: tuple[Any, ...], kwargs: dict[str, Any], traced: set[str], numbers_static: set[str]
) -> Layout:
    """(static_argnums, static_argnames, cuts) for this call; raises _CannotJit if some argument
    cannot go through jit (or Python would refuse the call: plain Python then says why)."""
    signature, verdicts = hints
    try:
        arguments = _bound(signature, args, kwargs)
    except TypeError as exc:
        raise _CannotJit(str(exc)) from None
    static_nums: list[int] = []
    static_names: list[str] = []
    cuts: list[tuple[int | str, bool]] = []
    for where, name, value in arguments:
        kind = classify(value, numbers_static=name in numbers_static)
        if verdicts.get(name) == STATIC:
            kind = STATIC
        elif (name in traced or verdicts.get(name) == DYNAMIC) and isinstance(value, _NUMBERS):
            kind = DYNAMIC  # a Python number jit can trace: for an array annotation, or a step counter
        label = _label(signature, where)
        if kind == UNSUPPORTED:
            why = f"is a {type(value).__name__}, which jit can neither trace nor hold static"
            if _is_pytree_node(value):
                try:
                    _cut(value, name in numbers_static)
                except _CannotJit as cannot:
                    why = str(cannot)
            raise _CannotJit(f"argument '{label}' {why}")
        if kind == STATIC and isinstance(where, str) and where != name and where in signature.parameters:
            raise _CannotJit(f"argument '{where}' goes to **{name}, and jit cannot hold it static under that name")
        if kind == STATIC:
            (static_nums if isinstance(where, int) else static_names).append(where)
        elif kind == SPLIT:
            cuts.append((where, name in numbers_static))
    return tuple(static_nums), tuple(static_names), tuple(cuts)


def _verbose(config: "Config", message: str) -> None:
    if config.verbose:
        note(message)


def _announce(config: "Config", fn: Callable[..., Any], layout: Layout, hints: Hints) -> None:
    static = tuple(_argument_name(hints[0], i) for i in layout[0]) + layout[1]
    cut = tuple(_label(hints[0], where) for where, _ in layout[2])
    _verbose(config, f"jit {function_name(fn)}: static={static}" + (f", static leaves in {cut}" if cut else ""))


def _label(signature: inspect.Signature, where: int | str) -> str:
    """How a report names the argument at a position or keyword."""
    return _argument_name(signature, where) if isinstance(where, int) else where


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


_BAD_RESULT = re.compile(r"returned a value of type <class '([\w.]+)'> at output component (\S+), which is not a valid JAX type")
_BAD_ARGUMENT = re.compile(r"problematic value is of type <class '([\w.]+)'> and was passed to the function at path (\S+)\.(?:\s|$)")
_UNHASHABLE = re.compile(r"Non-hashable static arguments .* an object of type <class '([\w.]+)'>")
_YOURSELF = "or jit it yourself with static_argnames for the arguments it uses as Python values"


def fallback_report(fn: Callable[..., Any], exc: BaseException, arguments: list[tuple[str, Any]]) -> Report:
    """The report for a function that jit cannot trace; `arguments`: its call's, as (label, value)."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    return Report(
        kind="autojit-fallback",
        title=f"{function_name(fn)} runs without jit: it cannot be traced ({type(exc).__name__})",
        where=user_location(exc.__traceback__) or ((code.co_filename, code.co_firstlineno) if code else None),
        details=(first_line,),
        fix=f"results are the same, only slower. To make it jittable: {_fix(exc, arguments)}",
        extra={"function": function_name(fn), "error": type(exc).__name__},
    )


def _fix(exc: BaseException, arguments: list[tuple[str, Any]]) -> str:
    """What to change, for the cause that `exc` names."""
    import jax.errors as je

    message = str(exc)
    if found := _BAD_ARGUMENT.search(message):
        return (f"argument leaf {found[2]} is a {found[1].rsplit('.', 1)[-1]}, not an array, and jit traces "
                f"arrays: pass an array there, {_YOURSELF}")
    if found := _UNHASHABLE.search(message):
        kind = found[1].rsplit(".", 1)[-1]
        names = [label for label, value in arguments if type(value).__name__ == kind and not _hashable(value)]
        which = f"argument '{names[0]}'" if names else "a static argument"
        return (f"{which} is held static (jit compiles its value in), so it must be hashable, and a {kind} is "
                "not: make it a frozen dataclass (@dataclass(frozen=True)) or a NamedTuple, or pass its arrays")
    if isinstance(exc, je.TracerBoolConversionError):
        return f"it branches in Python (`if`, `while`, `and`, bool()) on an array: use jnp.where or lax.cond, {_YOURSELF}"
    if isinstance(exc, je.TracerArrayConversionError):
        return "it calls numpy on an array: use jax.numpy there"
    if isinstance(exc, (je.ConcretizationTypeError, je.TracerIntegerConversionError)) or any(
            marker in message for marker in ("must be static integers", "1D sequences of concrete values")):
        return ("it makes a Python number or a shape from an array (int(), .item(), range(), jnp.zeros(n)): "
                f"keep shapes and counts Python ints, {_YOURSELF}")
    return f"pass arrays where it traces and hashable Python values where it needs them, {_YOURSELF}"
