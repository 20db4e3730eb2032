"""Tracing (RAX3xx): what a jitted function may do with the values JAX traces.

A small intraprocedural taint: the non-static parameters of a jitted function are traced, and so is
whatever a statement computes from them with arithmetic, comparisons, `jax.numpy`/`lax`/`nn` calls or
array methods; static facts (`.shape`, `.ndim`, `.dtype`, `len()`) are not. The walk goes through the
statements in order, joining branches, twice through loops; a name rebound to a static value is
static again. Functions nested in a jitted function see its traced names (their own parameters are
left unknown, so not flagged).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from raximport.lint.registry import Edit, Finding, Fix, rule
from raximport.lint.source import ARRAY_TYPES, Function, JitSpec, SourceFile, all_args, stored_names

Scope = Function | ast.Lambda

ALIAS, ARITH, COMPUTED = 0, 1, 2  # a parameter itself, arithmetic on parameters, anything else traced


@dataclass(frozen=True)
class Origin:
    """Where a traced value comes from: the parameters it depends on, and how (ALIAS/ARITH/COMPUTED)."""

    kind: int
    params: frozenset[str]

    def __or__(self, other: Origin | None) -> Origin:
        if other is None:
            return self
        return Origin(max(self.kind, other.kind), self.params | other.params)

    def at_least(self, kind: int) -> Origin:
        return Origin(max(self.kind, kind), self.params)


def _join(*origins: Origin | None) -> Origin | None:
    result: Origin | None = None
    for origin in origins:
        if origin is not None:
            result = origin | result
    return result


ARRAY_MODULES = ("jax.numpy.", "jax.lax.", "jax.nn.", "jax.scipy.", "jax.random.", "jax.image.")
# What a transformed function returns is traced: `jax.grad(f)(x)`, `jax.vmap(f)(x)`, `eqx.filter_grad(f)(x)`.
TRANSFORMS = ("jax.", "equinox.filter_", "flax.nnx.")
ARRAY_ATTRS = frozenset({"T", "mT", "real", "imag", "at"})
# jax.numpy/numpy functions that read only static facts (shape, dtype) and so work on tracers.
STATIC_FUNCTIONS = frozenset(
    f"{module}.{name}"
    for module in ("jax.numpy", "numpy")
    for name in (
        "shape",
        "ndim",
        "size",
        "result_type",
        "dtype",
        "issubdtype",
        "iscomplexobj",
        "isrealobj",
        "isscalar",
        "promote_types",
        "finfo",
        "iinfo",
        "can_cast",
    )
)
ARITH_BUILTINS = frozenset({"abs", "sum", "round", "pow", "max", "min", "divmod"})
NOT_ARRAY_METHODS = frozenset({"tolist", "item", "tobytes", "keys"})


def _is_free(src: SourceFile, func: ast.expr, names: frozenset[str]) -> bool:
    return isinstance(func, ast.Name) and func.id in names and func.id not in src.imports


class Taint:
    """The traced names of one jitted function, recorded at each of their loads."""

    def __init__(self, src: SourceFile, fn: Scope, spec: JitSpec) -> None:
        self.src = src
        self.fn = fn
        self.names: dict[ast.Name, Origin] = {}
        static = spec.static_params(fn)
        defaults = _defaulted(fn)
        state = {
            a.arg: Origin(ALIAS, frozenset({a.arg}))
            for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)
            if a.arg not in static and a.arg not in defaults and a.arg not in ("self", "cls")
        }
        _Walk(self.record, self.origin, must=False).scope(fn, state)

    def record(self, node: ast.AST, state: dict[str, Origin]) -> None:
        """Record the origin of every name `node` loads, with `state` the traced names before it runs."""
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            origin = state.get(node.id)
            if origin is not None:
                self.names[node] = _join(origin, self.names.get(node)) or origin
            return
        if isinstance(node, ast.Lambda):
            inner = {k: v for k, v in state.items() if k not in {a.arg for a in all_args(node)}}
            self.record(node.body, inner)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = dict(state)
            for generator in node.generators:
                self.record(generator.iter, inner)
                origin = self.origin(generator.iter)
                for name in stored_names(generator.target):
                    if origin is None:
                        inner.pop(name, None)
                    else:
                        inner[name] = origin.at_least(ARITH)
                for condition in generator.ifs:
                    self.record(condition, inner)
            for element in [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]:
                self.record(element, inner)
            return
        for child in ast.iter_child_nodes(node):
            self.record(child, state)

    def origin(self, node: ast.AST) -> Origin | None:
        """Whether `node` evaluates to a traced value, and from which parameters; None if static."""
        if isinstance(node, ast.Name):
            return self.names.get(node)
        if isinstance(node, ast.Attribute):
            if node.attr in ARRAY_ATTRS:
                origin = self.origin(node.value)
                return origin.at_least(ARITH) if origin else None
            return None
        if isinstance(node, ast.Subscript):
            return self.origin(node.value)
        if isinstance(node, ast.Starred | ast.NamedExpr):
            return self.origin(node.value)
        if isinstance(node, ast.BinOp):
            origin = _join(self.origin(node.left), self.origin(node.right))
            return origin.at_least(ARITH) if origin else None
        if isinstance(node, ast.UnaryOp):
            origin = self.origin(node.operand)
            return origin.at_least(ARITH) if origin and not isinstance(node.op, ast.Not) else None
        if isinstance(node, ast.Compare):
            if all(isinstance(op, (ast.Is, ast.IsNot, ast.In, ast.NotIn)) for op in node.ops):
                return None
            origin = _join(*map(self.origin, [node.left, *node.comparators]))
            return origin.at_least(ARITH) if origin else None
        if isinstance(node, ast.BoolOp):
            return _join(*map(self.origin, node.values))
        if isinstance(node, ast.IfExp):
            return _join(self.origin(node.body), self.origin(node.orelse))
        if isinstance(node, (ast.Tuple, ast.List)):
            origin = _join(*map(self.origin, node.elts))
            return origin.at_least(ARITH) if origin else None
        if isinstance(node, ast.Call):
            return self._call(node)
        return None

    def _call(self, call: ast.Call) -> Origin | None:
        arguments = _join(*map(self.origin, [*call.args, *(k.value for k in call.keywords)]))
        if arguments is None and not isinstance(call.func, ast.Attribute):
            return None
        if _is_free(self.src, call.func, ARITH_BUILTINS):
            return arguments.at_least(ARITH) if arguments else None
        name = self.src.qualname(call.func) or ""
        if name.startswith(ARRAY_MODULES) and name not in STATIC_FUNCTIONS:
            return arguments.at_least(COMPUTED) if arguments else None
        if isinstance(call.func, ast.Call) and (self.src.qualname(call.func.func) or "").startswith(TRANSFORMS):
            return arguments.at_least(COMPUTED) if arguments else None  # `jax.value_and_grad(f)(params)`
        if isinstance(call.func, ast.Attribute) and call.func.attr not in NOT_ARRAY_METHODS:
            receiver = self.origin(call.func.value)
            return receiver.at_least(COMPUTED) if receiver else None
        return None


def _defaulted(fn: Scope) -> set[str]:
    """Parameters with a default: JAX binds a default the caller leaves out as a plain Python value."""
    positional = [*fn.args.posonlyargs, *fn.args.args]
    names = {a.arg for a in positional[len(positional) - len(fn.args.defaults) :]}
    return names | {a.arg for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None}


class _Walk:
    """A forward walk over a function's statements. The state maps names to facts (an Origin, or
    True); `record(node, state)` sees each expression with the state before it runs, `fact(expr)`
    says what an assignment binds (None: nothing). Paths join by union (`must=False`: a fact that
    may hold) or by intersection (`must=True`: a fact that holds on every path)."""

    def __init__(self, record: Callable, fact: Callable, *, must: bool) -> None:
        self.record = record
        self.fact = fact
        self.must = must

    def scope(self, fn: Scope | ast.Module, state: dict) -> dict | None:
        if isinstance(fn, ast.Lambda):
            self.record(fn.body, state)
            return state
        return self.block(fn.body, state)

    def join(self, *states: dict | None) -> dict | None:
        live = [s for s in states if s is not None]
        if not live:
            return None
        if self.must:
            return {k: v for k, v in live[0].items() if all(k in s for s in live[1:])}
        joined: dict = {}
        for state in live:
            for name, fact in state.items():
                joined[name] = _join(joined.get(name), fact)
        return joined

    def block(self, stmts: list[ast.stmt], state: dict | None) -> dict | None:
        for stmt in stmts:
            if state is None:
                return None
            state = self.stmt(stmt, state)
        return state

    def bind(self, state: dict, names: list[str], fact: object) -> dict:
        state = dict(state)
        for name in names:
            if fact is None:
                state.pop(name, None)
            else:
                state[name] = fact
        return state

    def stmt(self, node: ast.stmt, state: dict) -> dict | None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for expr in [*node.decorator_list, *node.args.defaults, *(d for d in node.args.kw_defaults if d)]:
                self.record(expr, state)
            self.scope(node, {k: v for k, v in state.items() if k not in {a.arg for a in all_args(node)}})
            return self.bind(state, [node.name], None)
        if isinstance(node, ast.ClassDef):
            return self.bind(state, [node.name], None)
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            if node.value is None:
                return state
            self.record(node.value, state)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if not isinstance(target, ast.Name):
                    self.record(target, state)
            fact = self.fact(node.value)
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                prior = state.get(node.target.id)  # `x += v` keeps an array an array
                fact = prior if self.must else _join(fact, prior)
            return self.bind(state, [n for t in targets for n in stored_names(t)], fact)
        if isinstance(node, ast.If):
            self.record(node.test, state)
            return self.join(self.block(node.body, state), self.block(node.orelse, state))
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            return self.loop(node, state)
        if isinstance(node, (ast.Return, ast.Raise)):
            for child in ast.iter_child_nodes(node):
                self.record(child, state)
            return None
        if isinstance(node, (ast.Break, ast.Continue)):
            return None
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            body = self.block(node.orelse, self.block(node.body, state))
            handlers = [self.block(h.body, self.bind(state, [h.name] if h.name else [], None)) for h in node.handlers]
            after = self.join(body, *handlers)
            if after is None:
                self.block(node.finalbody, state)
                return None
            return self.block(node.finalbody, after)
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.record(item.context_expr, state)
                if item.optional_vars is not None:
                    state = self.bind(state, stored_names(item.optional_vars), None)
            return self.block(node.body, state)
        if isinstance(node, ast.Match):
            self.record(node.subject, state)
            return self.join(state, *(self.block(case.body, state) for case in node.cases))
        for child in ast.iter_child_nodes(node):
            self.record(child, state)
        return state

    def loop(self, node: ast.For | ast.AsyncFor | ast.While, state: dict) -> dict | None:
        """The body runs zero or more times: walk it twice, the second time from what the first left."""
        entry = state
        for _ in range(2):
            if isinstance(node, ast.While):
                self.record(node.test, entry)
                start = entry
            else:
                self.record(node.iter, entry)
                start = self.bind(entry, stored_names(node.target), self.fact(node.iter))
            end = self.block(node.body, start)
            entry = self.join(entry, end) or entry
        return self.join(self.block(node.orelse, entry), entry)


class _Analysis:
    """Per file: the taint of every jitted function, and which functions run under jit."""

    def __init__(self, src: SourceFile) -> None:
        self.src = src
        self.taints: list[Taint] = []
        self.under_jit: dict[Scope, str] = {}  # function or lambda -> the jitted function it is in
        for fn, spec in src.jitted().items():
            name = getattr(fn, "name", "<lambda>")
            for node in ast.walk(fn):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    self.under_jit.setdefault(node, name)
            if not any(option.startswith("static") for option in spec.dynamic):
                self.taints.append(Taint(src, fn, spec))

    def jitted_name(self, node: ast.AST) -> str | None:
        """The jitted function `node` runs in, if any."""
        fn = self.src.enclosing_function(node)
        return self.under_jit.get(fn) if fn is not None else None


def analysis(src: SourceFile) -> _Analysis:
    return src.shared(_Analysis)


def _own(fn: Scope) -> Iterator[ast.AST]:
    """The nodes of a jitted function, the functions nested in it included."""
    yield from ast.walk(fn.body if isinstance(fn, ast.Lambda) else ast.Module(body=fn.body, type_ignores=[]))


def _fn_name(taint: Taint) -> str:
    return getattr(taint.fn, "name", "<lambda>")


def _param_list(params: frozenset[str]) -> str:
    return ", ".join(f"`{p}`" for p in sorted(params))


# RAX301 --------------------------------------------------------------------------------------------

SHAPE_ARGUMENTS: dict[str, tuple[int, ...]] = {
    **{f"jax.numpy.{n}": (0,) for n in ("zeros", "ones", "empty", "full", "eye", "identity", "tri")},
    "jax.numpy.arange": (0, 1, 2),
    "jax.numpy.linspace": (2,),
    "jax.numpy.reshape": (1,),
    "jax.numpy.broadcast_to": (1,),
    "jax.numpy.tile": (1,),
    "jax.lax.dynamic_slice": (2,),
    **{f"jax.random.{n}": (1,) for n in ("normal", "uniform", "randint", "bits", "gumbel", "rademacher")},
}
SHAPE_METHODS = frozenset({"reshape", "broadcast_to", "tile"})


def _python_value_uses(src: SourceFile, taint: Taint) -> Iterator[tuple[ast.expr, str]]:
    """The expressions of a jitted function that must be Python values, with what needs them."""
    local = _bound_in(taint.fn)
    for node in _own(taint.fn):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id not in local:
            if _is_container(src, node.value.id, (ast.List, ast.Tuple)):
                yield node.slice, f"an index into the Python sequence `{node.value.id}`"
        if isinstance(node, ast.Subscript):
            for part in node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]:
                if isinstance(part, ast.Slice):
                    for bound in (part.lower, part.upper, part.step):
                        if bound is not None:
                            yield bound, "a slice bound"
        if not isinstance(node, ast.Call):
            continue
        if _is_free(src, node.func, frozenset({"range", "int", "float"})):
            for arg in node.args:
                yield arg, f"an argument of `{node.func.id}()`"
            continue
        name = src.qualname(node.func) or ""
        for index in SHAPE_ARGUMENTS.get(name, ()):
            if index < len(node.args):
                yield node.args[index], f"a shape for `{ast.unparse(node.func)}`"
        if isinstance(node.func, ast.Attribute) and node.func.attr in SHAPE_METHODS and taint.origin(node.func.value):
            for arg in node.args:
                yield arg, f"a shape for `.{node.func.attr}()`"
        for keyword in node.keywords:
            if keyword.arg in ("shape", "axis", "axes", "num") and name.startswith(ARRAY_MODULES):
                yield keyword.value, f"`{keyword.arg}=` of `{ast.unparse(node.func)}`"


@rule("RAX301", "traced-python-value", default=True)
def traced_python_value(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for a parameter of a jitted function used where Python needs a concrete value, a shape
    (`jnp.zeros(n)`, `x.reshape(n, -1)`), `range(n)`, `int(n)`, a slice bound (`x[:n]`) or an
    `axis=`, when the parameter is not static (`static_argnums`/`static_argnames`). Parameters with
    a default are left alone (JAX binds a default the caller leaves out as a Python value).

    ## Why is this bad?
    Under `jax.jit` every non-static argument is a tracer: an abstract array with a shape and dtype
    but no value. Using it as a Python value raises `ConcretizationTypeError` (or
    `TracerIntegerConversionError`) the first time the function runs.

    ## Example
    ```python
    @jax.jit
    def pad(x, n):
        return jnp.concatenate([x, jnp.zeros(n)])
    ```

    ## Use instead
    ```python
    @functools.partial(jax.jit, static_argnames=("n",))
    def pad(x, n):
        return jnp.concatenate([x, jnp.zeros(n)])
    ```
    """
    seen: set[ast.AST] = set()
    for taint in analysis(src).taints:
        for expr, use in _python_value_uses(src, taint):
            origin = taint.origin(expr)
            if origin is None or origin.kind == COMPUTED or expr in seen:
                continue
            seen.add(expr)
            params = _param_list(origin.params)
            yield Finding.at(
                "RAX301",
                expr,
                f"{params} of jitted `{_fn_name(taint)}` is used as {use} but is not static: "
                f"add it to `static_argnames`{' (or use `jax.lax.dynamic_slice`)' if use == 'a slice bound' else ''}",
            )


# RAX302 --------------------------------------------------------------------------------------------


def _array_valued(taint: Taint, expr: ast.expr) -> Origin | None:
    """The origin of `expr` if it is certainly traced: computed from the arguments, or a parameter
    used only as a flag. A parameter used as a container (indexed, its attributes read, iterated,
    compared with `is`/`in`) may be a pytree or None, whose truth Python knows: not flagged."""
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        return _array_valued(taint, expr.operand)
    if isinstance(expr, ast.BoolOp):
        return _join(*(_array_valued(taint, v) for v in expr.values))
    origin = taint.origin(expr)
    if origin is None:
        return None
    if origin.kind == ALIAS:
        flag = isinstance(expr, ast.Name) and expr.id in origin.params and not _used_as_container(taint.fn, expr.id)
        return origin.at_least(ARITH) if flag else None
    return origin


def _used_as_container(fn: Scope, name: str) -> bool:
    """Whether `fn` uses `name` as a pytree or maybe-None: indexes it, reads an attribute, iterates
    or unpacks it, takes its `len`, or compares it with `is`/`in`."""
    for node in _own(fn):
        if isinstance(node, (ast.Subscript, ast.Attribute)) and _is_name(node.value, name):
            return True
        if isinstance(node, (ast.For, ast.comprehension)) and _is_name(node.iter, name):
            return True
        if isinstance(node, ast.Assign) and _is_name(node.value, name) and not isinstance(node.targets[0], ast.Name):
            return True
        if isinstance(node, ast.Compare) and any(_is_name(e, name) for e in [node.left, *node.comparators]):
            if any(isinstance(op, (ast.Is, ast.IsNot, ast.In, ast.NotIn)) for op in node.ops):
                return True
        if isinstance(node, ast.Call) and any(_is_name(a, name) for a in node.args) and _is_name(node.func, "len"):
            return True
        if isinstance(node, ast.Starred) and _is_name(node.value, name):
            return True
    return False


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _tests(src: SourceFile, taint: Taint) -> Iterator[tuple[ast.expr, str, str]]:
    """Every place a jitted function asks Python for a truth value: (expression, what, instead)."""
    for node in _own(taint.fn):
        if isinstance(node, ast.If):
            yield node.test, "`if`", "`jnp.where` or `jax.lax.cond`"
        elif isinstance(node, ast.While):
            yield node.test, "`while`", "`jax.lax.while_loop`"
        elif isinstance(node, ast.IfExp):
            yield node.test, "a conditional expression", "`jnp.where`"
        elif isinstance(node, ast.Assert):
            yield node.test, "`assert`", "`equinox.error_if` or `checkify`"
        elif isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            for value in node.values[:-1]:
                yield value, f"`{op}`", f"`jnp.logical_{op}`"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node.operand, "`not`", "`jnp.logical_not`"
        elif isinstance(node, ast.Call) and _is_free(src, node.func, frozenset({"bool"})) and node.args:
            yield node.args[0], "`bool()`", "`jnp.where` or `jax.lax.cond`"
        elif isinstance(node, ast.Call) and _is_free(src, node.func, frozenset({"max", "min"})) and len(node.args) > 1:
            for arg in node.args:
                yield arg, f"`{node.func.id}()`", f"`jnp.{node.func.id}imum`"


@rule("RAX302", "traced-control-flow", default=True)
def traced_control_flow(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for Python control flow on a value computed from the traced arguments of a jitted
    function: `if`, `while`, a conditional expression, `assert`, `and`/`or`/`not`, `bool()`,
    `max()`/`min()` of such a value. Static facts (`x.shape`, `x.ndim`, `x.dtype`, `len(x)`, `x is
    None`, `"w" in params`) and static parameters are fine; so is a bare parameter (it may be a
    pytree or None).

    ## Why is this bad?
    Under `jax.jit` the value is a tracer: Python cannot know whether it is true, and JAX raises
    `TracerBoolConversionError` the first time the function runs.

    ## Example
    ```python
    @jax.jit
    def relu(x):
        if x > 0:
            return x
        return 0.0
    ```

    ## Use instead
    ```python
    @jax.jit
    def relu(x):
        return jnp.where(x > 0, x, 0.0)
    ```
    (or `jax.lax.cond`/`jax.lax.while_loop`, or make the argument static if it is a setting).
    """
    seen: set[ast.AST] = set()
    for taint in analysis(src).taints:
        for expr, what, instead in _tests(src, taint):
            origin = _array_valued(taint, expr)
            if origin is None or expr in seen:
                continue
            seen.update(ast.walk(expr))
            static = f", or make {_param_list(origin.params)} static" if _is_setting_test(taint, expr) else ""
            yield Finding.at(
                "RAX302",
                expr,
                f"{what} on `{_short(expr)}`, a traced value in jitted `{_fn_name(taint)}`: use {instead}{static}",
            )


def _is_setting_test(taint: Taint, expr: ast.expr) -> bool:
    """`training`, `mode == "train"`: a parameter used as a flag, or compared with a string, is a
    Python setting, never an array."""
    while isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        expr = expr.operand
    if isinstance(expr, ast.Name):
        origin = taint.origin(expr)
        return origin is not None and origin.kind == ALIAS
    if not isinstance(expr, ast.Compare):
        return False
    operands = [expr.left, *expr.comparators]
    strings = [e for e in operands if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    names = [e for e in operands if isinstance(e, ast.Name)]
    return (
        bool(strings)
        and len(names) + len(strings) == len(operands)
        and all((o := taint.origin(n)) is not None and o.kind == ALIAS for n in names)
    )


def _short(expr: ast.AST, limit: int = 40) -> str:
    text = ast.unparse(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# RAX303 --------------------------------------------------------------------------------------------

TRACE_TIME_CALLS = ("time.", "random.", "numpy.random.", "datetime.datetime.now", "datetime.date.today")
IO_BUILTINS = {"print": "`jax.debug.print`", "open": "a host callback (`jax.debug.callback`)",
               "input": "an argument", "breakpoint": "`jax.debug.breakpoint`"}
HOST_CALLBACKS = frozenset(
    {"jax.debug.callback", "jax.pure_callback", "jax.experimental.io_callback", "jax.experimental.host_callback.call",
     "jax.experimental.host_callback.id_tap"}
)
CONTAINERS = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
CONTAINER_TYPES = frozenset({"list", "dict", "set"}) | {
    f"collections.{name}" for name in ("defaultdict", "OrderedDict", "deque", "Counter")
}
MUTATORS = frozenset({"append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "clear", "remove"})


def _bound_in(fn: Scope) -> set[str]:
    """Every name a function (its nested functions included) binds: parameters and assignments."""
    names: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            names.update(a.arg for a in all_args(node))
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not fn:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _host_callbacks(src: SourceFile, fn: Scope) -> set[ast.AST]:
    """The functions and lambdas in `fn` handed to a host callback (`jax.debug.callback`,
    `jax.pure_callback`...): they run on the host at run time, where side effects are the point."""
    given: set[str] = set()
    found: set[ast.AST] = set()
    for node in _own(fn):
        if isinstance(node, ast.Call) and (src.qualname(node.func) or "") in HOST_CALLBACKS and node.args:
            callback = node.args[0]
            if isinstance(callback, ast.Lambda):
                found.add(callback)
            elif isinstance(callback, ast.Name):
                given.add(callback.id)
    found.update(
        node for node in _own(fn) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in given
    )
    return found


def _prints_traced(taint: Taint | None, call: ast.Call) -> bool:
    """Whether a `print` shows a traced value (directly or in an f-string); True when the static
    arguments are unknown."""
    if taint is None:
        return True
    values = [*call.args, *(k.value for k in call.keywords)]
    shown = [v.value for arg in values for v in ast.walk(arg) if isinstance(v, ast.FormattedValue)]
    return any(taint.origin(v) is not None for v in [*values, *shown])


def _root(expr: ast.expr) -> str | None:
    """The name a dotted expression starts from (`np` for `np.random.normal`)."""
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _is_container(src: SourceFile, name: str, kinds: tuple[type, ...] = CONTAINERS) -> bool:
    """Whether every assignment of `name` in the file makes a list, dict or set (so `.update()` is
    a dict's, not an optimizer's), or the `kinds` of literal asked for."""
    values = [
        node.value
        for node in ast.walk(src.tree)
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and node.value is not None
        and any(_is_name(t, name) for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
    ]
    made = CONTAINER_TYPES if kinds is CONTAINERS else frozenset()  # `list()`, `defaultdict(...)`
    return bool(values) and all(
        isinstance(v, kinds) or (isinstance(v, ast.Call) and (src.qualname(v.func) or "") in made) for v in values
    )


@rule("RAX303", "side-effect-in-jit", default=True)
def side_effect_in_jit(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for side effects inside a jitted function: `print`, `open`/`input`, the clock
    (`time.time()`), Python's or numpy's random numbers, `global`/`nonlocal` rebinding, and mutating
    a list, dict or set that lives outside the function (`history.append(x)`).

    ## Why is this bad?
    A jitted function's Python body runs once, while JAX traces it; the compiled function then runs
    without it. The print shows a tracer, once; the clock and the random numbers are frozen into
    the compiled code as constants; an outside list receives tracers, which leak.

    ## Example
    ```python
    losses = []

    @jax.jit
    def step(params, batch):
        loss = loss_fn(params, batch)
        print("loss", loss)
        losses.append(loss)
        return loss
    ```

    ## Use instead
    ```python
    @jax.jit
    def step(params, batch):
        loss = loss_fn(params, batch)
        jax.debug.print("loss {}", loss)
        return loss

    losses.append(step(params, batch))
    ```
    """
    jitted = {fn: getattr(fn, "name", "<lambda>") for fn in src.jitted()}
    for fn, fn_name in jitted.items():
        if any(outer in jitted for outer in src.ancestors(fn)):
            continue  # nested in another jitted function: reported there
        local = _bound_in(fn)
        on_host = _host_callbacks(src, fn)
        taint = next((t for t in analysis(src).taints if t.fn is fn), None)
        for node in _own(fn):
            if on_host and any(a in on_host for a in src.ancestors(node)):
                continue
            if isinstance(node, ast.Global):  # (a `nonlocal` counter is how tests count traces: left alone)
                yield Finding.at(
                    "RAX303",
                    node,
                    f"jitted `{fn_name}` rebinds the global {_param_list(frozenset(node.names))}: this runs once, "
                    f"at trace time; return the value instead",
                )
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = src.qualname(func) or ""
            builtin = next((b for b in IO_BUILTINS if src.is_builtin(func, b) and b not in local), None)
            if builtin == "print" and not _prints_traced(taint, node):
                continue  # printing shapes or a message at trace time is deliberate
            if builtin:
                yield Finding.at(
                    "RAX303",
                    node,
                    f"`{builtin}()` in jitted `{fn_name}` runs once, at trace time: use {IO_BUILTINS[builtin]}",
                )
            elif isinstance(func, ast.Attribute) and name.startswith(TRACE_TIME_CALLS) and _root(func) in src.imports:
                yield Finding.at(
                    "RAX303",
                    node,
                    f"`{ast.unparse(func)}()` in jitted `{fn_name}` runs once, at trace time, and its result is "
                    f"frozen into the compiled function: pass it in as an argument (or use `jax.random`)",
                )
            elif (
                isinstance(func, ast.Attribute)
                and func.attr in MUTATORS
                and isinstance(func.value, ast.Name)
                and func.value.id not in local
                and _is_container(src, func.value.id)
            ):
                yield Finding.at(
                    "RAX303",
                    node,
                    f"`{ast.unparse(func)}()` in jitted `{fn_name}` mutates `{func.value.id}` from outside the "
                    f"function once, at trace time (it receives tracers): return the value instead",
                )


# RAX304 --------------------------------------------------------------------------------------------

JAX_ANNOTATIONS = frozenset({"jax.Array", "jax.numpy.ndarray", "jaxtyping.Array", "chex.Array"})
ITEM_ASSIGNMENT = re.compile(r"\]\s*(?:[-+*/]|\*\*)?=(?!=)")
TRACED = "traced"  # a traced parameter: an array, or a pytree of them
UPDATE_METHODS = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide", ast.Pow: "power"}


class _JaxArrays:
    """The names that hold a JAX array on every path to each item assignment of one scope."""

    def __init__(self, src: SourceFile, scope: Function | ast.Module, initial: dict[str, object]) -> None:
        self.src = src
        self.before: dict[ast.Subscript, dict] = {}  # an assigned item -> the JAX array names then
        self.state: dict = {}
        _Walk(self.record, self.fact, must=True).scope(scope, initial)

    def record(self, node: ast.AST, state: dict) -> None:
        self.state = state
        if isinstance(node, ast.Subscript):
            seen = self.before.get(node)
            self.before[node] = state if seen is None else {k: v for k, v in seen.items() if k in state}

    def fact(self, expr: ast.expr) -> bool | None:
        return True if self.is_jax(expr) else None

    def _traced(self, expr: ast.AST) -> bool:
        return isinstance(expr, ast.Name) and self.state.get(expr.id) is TRACED

    def is_jax(self, expr: ast.AST) -> bool:
        if isinstance(expr, ast.Name):
            return self.state.get(expr.id) is True
        if isinstance(expr, ast.Attribute):
            return expr.attr in ARRAY_ATTRS and self.is_jax(expr.value)
        if isinstance(expr, ast.Subscript):
            return self.is_jax(expr.value)
        if isinstance(expr, ast.BinOp):  # arithmetic on a traced argument: an array, not a pytree
            return any(self.is_jax(e) or self._traced(e) for e in (expr.left, expr.right))
        if isinstance(expr, ast.UnaryOp) and not isinstance(expr.op, ast.Not):
            return self.is_jax(expr.operand) or self._traced(expr.operand)
        if isinstance(expr, ast.IfExp):
            return self.is_jax(expr.body) and self.is_jax(expr.orelse)
        if isinstance(expr, ast.Call):
            name = self.src.qualname(expr.func) or ""
            if (name.startswith(ARRAY_MODULES) and name not in STATIC_FUNCTIONS) or name == "jax.device_put":
                return True
            func = expr.func
            return isinstance(func, ast.Attribute) and func.attr not in NOT_ARRAY_METHODS and self.is_jax(func.value)
        return False


def _jax_params(src: SourceFile, fn: Function, spec: JitSpec | None) -> set[str]:
    """Parameters annotated as JAX arrays (`jax.Array`, `Float[Array, "..."]`, optionally `| None`),
    or, in a jitted function, as any array (numpy's too: it arrives traced)."""
    static = spec.static_params(fn) if spec else set()
    return {
        arg.arg
        for arg in all_args(fn)
        if _is_array_type(src, arg.annotation, jax_only=spec is None or arg.arg in static)
    }


def _is_array_type(src: SourceFile, annotation: ast.expr | None, *, jax_only: bool) -> bool:
    """Whether an annotation says "an array" itself (not a container of one, `Variable[jax.Array]`)."""
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        sides = [annotation.left, annotation.right]
        arrays = [s for s in sides if not (isinstance(s, ast.Constant) and s.value is None)]
        return len(arrays) == 1 and _is_array_type(src, arrays[0], jax_only=jax_only)
    if isinstance(annotation, ast.Subscript):
        dtype = src.qualname(annotation.value) or ""
        array = annotation.slice.elts[0] if isinstance(annotation.slice, ast.Tuple) and annotation.slice.elts else None
        return dtype.startswith("jaxtyping.") and array is not None and _is_array_type(src, array, jax_only=jax_only)
    name = src.qualname(annotation) if isinstance(annotation, (ast.Name, ast.Attribute)) else None
    return name in JAX_ANNOTATIONS or (not jax_only and name in ARRAY_TYPES)


def _traced_params(fn: Function, spec: JitSpec | None) -> set[str]:
    if spec is None:
        return set()
    return {a.arg for a in all_args(fn)} - spec.static_params(fn) - _defaulted(fn) - {"self", "cls"}


def _array_index(index: ast.expr) -> bool:
    """An index only an array takes: a tuple with a slice, `...` or `None` (`x[:, 0]`)."""
    return isinstance(index, ast.Tuple) and any(
        isinstance(e, ast.Slice) or (isinstance(e, ast.Constant) and e.value in (None, Ellipsis)) for e in index.elts
    )


def _update_fix(src: SourceFile, node: ast.Assign | ast.AugAssign, name: str) -> Fix | None:
    """`x[i] = v` -> `x = x.at[i].set(v)`; `x[i] += v` -> `x = x.at[i].add(v)` (and -, *, /, **)."""
    target = node.targets[0] if isinstance(node, ast.Assign) else node.target
    method = "set" if isinstance(node, ast.Assign) else UPDATE_METHODS.get(type(node.op))
    index = ast.get_source_segment(src.text, target.slice)
    value = ast.get_source_segment(src.text, node.value)
    if method is None or index is None or value is None or node.end_lineno is None or node.end_col_offset is None:
        return None
    text = f"{name} = {name}.at[{index}].{method}({value})"
    edit = Edit(node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, text)
    return Fix(f"Replace with `{name} = {name}.at[...].{method}(...)`", (edit,), safe=True)


@rule("RAX304", "jax-array-item-assignment", default=True)
def jax_array_item_assignment(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for in-place item assignment (`x[i] = v`, `x[i] += v`) on a JAX array: a name bound on
    every path from `jax.numpy`/`jax.random`/`jax.lax` (or from arithmetic or methods on a JAX
    array), a parameter annotated `jax.Array`, or a traced array parameter of a jitted function.
    Numpy arrays, lists and dicts are left alone.

    ## Why is this bad?
    JAX arrays are immutable: item assignment raises `TypeError`, under jit or not.

    ## Example
    ```python
    x = jnp.zeros(3)
    x[0] = 1.0
    x[1] += 2.0
    ```

    ## Use instead
    ```python
    x = jnp.zeros(3)
    x = x.at[0].set(1.0)
    x = x.at[1].add(2.0)
    ```
    The fix is safe: the original raised, and the functional update rebinds the same name.
    """
    if not ITEM_ASSIGNMENT.search(src.text) or not src.imports_any("jax"):
        return  # the fast path: no `x[...] = ` anywhere, or no JAX to make an array
    by_scope: dict[ast.AST, list[ast.Assign | ast.AugAssign]] = {}
    for node in [*src.nodes(ast.Assign), *src.nodes(ast.AugAssign)]:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if len(targets) == 1 and isinstance(targets[0], ast.Subscript) and isinstance(targets[0].value, ast.Name):
            by_scope.setdefault(src.enclosing_function(node) or src.tree, []).append(node)
    jitted = src.jitted()
    for scope, assignments in by_scope.items():
        if isinstance(scope, ast.Lambda):
            continue
        initial: dict[str, object] = {}
        if not isinstance(scope, ast.Module):
            spec = jitted.get(scope)
            initial = dict.fromkeys(_traced_params(scope, spec), TRACED)
            initial.update(dict.fromkeys(_jax_params(src, scope, spec), True))
        arrays = _JaxArrays(src, scope, initial)
        for node in sorted(assignments, key=lambda n: (n.lineno, n.col_offset)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            name = target.value.id
            held = arrays.before.get(target, {}).get(name)
            if held is not True and not (held is TRACED and _array_index(target.slice)):
                continue
            fix = _update_fix(src, node, name)
            instead = fix.message.removeprefix("Replace with ") if fix else "`x.at[i].set(v)`"
            yield Finding.at(
                "RAX304",
                target,
                f"`{name}` is a JAX array, which is immutable: item assignment raises TypeError; use {instead}",
                fix,
            )


# RAX307 --------------------------------------------------------------------------------------------


@rule("RAX307", "numpy-on-traced", default=True)
def numpy_on_traced(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for numpy functions (`np.sum`, `np.asarray`, `np.float32`...) called on a traced value
    inside a jitted function. numpy functions that read only static facts (`np.shape`, `np.ndim`,
    `np.result_type`) are fine.

    ## Why is this bad?
    numpy needs a concrete array: given a tracer it raises `TracerArrayConversionError`, or, for
    functions that accept any object, builds an object array of tracers.

    ## Example
    ```python
    @jax.jit
    def norm(x):
        return np.sqrt(np.sum(x**2))
    ```

    ## Use instead
    ```python
    @jax.jit
    def norm(x):
        return jnp.sqrt(jnp.sum(x**2))
    ```
    """
    seen: set[ast.AST] = set()
    for taint in analysis(src).taints:
        for node in _own(taint.fn):
            if not isinstance(node, ast.Call) or node in seen:
                continue
            name = src.qualname(node.func) or ""
            if not name.startswith("numpy.") or name in STATIC_FUNCTIONS or name.startswith("numpy.random."):
                continue
            traced = next((a for a in [*node.args, *(k.value for k in node.keywords)] if taint.origin(a)), None)
            if traced is None:
                continue
            seen.add(node)
            yield Finding.at(
                "RAX307",
                node,
                f"`{ast.unparse(node.func)}` on traced `{_short(traced)}` in jitted `{_fn_name(taint)}`: "
                f"numpy needs a concrete value; use `jnp.{name.removeprefix('numpy.')}`",
            )
