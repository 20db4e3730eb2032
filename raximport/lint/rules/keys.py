"""PRNG keys (RAX2xx): a key is consumed once. A forward walk over each function's statements
tracks which key names have been consumed on the current control-flow path (branches merge, a
`return` ends a path, a loop body is walked twice so that a use in one iteration meets the use in
the next); rebinding a name (`key, sub = jax.random.split(key)`) makes it fresh again."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from raximport.lint.registry import Edit, Finding, Fix, rule
from raximport.lint.source import JIT_NAMES, Function, SourceFile, all_args, positional_params, stored_names

RANDOM = "jax.random."
# jax.random functions that take a key without consuming it: derivation and inspection.
NOT_CONSUMING = frozenset({"fold_in", "key_data", "key_impl", "wrap_key_data", "clone", "key", "PRNGKey"})
# jax.random functions whose result is a key (or keys).
KEY_MAKERS = frozenset({"key", "PRNGKey", "split", "fold_in", "clone", "wrap_key_data"})
# Transforms whose result runs the function it is given with the same arguments (`vmap` does not: it
# splits them).
TRANSFORMS = JIT_NAMES | {
    "jax.grad",
    "jax.value_and_grad",
    "jax.checkpoint",
    "jax.remat",
    "equinox.filter_grad",
    "equinox.filter_value_and_grad",
}
# Keyword arguments that carry a PRNG key by convention (equinox `key=`, haiku/flax `rng=`).
KEY_KEYWORDS = frozenset({"key", "rng", "prng_key", "rng_key", "prngkey"})
# Libraries whose `key=` keyword is a PRNG key (builtins' `sorted(key=...)` is not).
LIBRARIES = ("jax", "equinox", "flax", "haiku", "optax", "distrax")
KEY_LIBRARIES = tuple(f"{library}." for library in LIBRARIES)

State = dict[str, ast.Call]  # key name -> the call that consumed it on this path


def _random_fn(src: SourceFile, call: ast.Call) -> str | None:
    """`normal` for a call of `jax.random.normal` (however imported), else None."""
    name = src.qualname(call.func) or ""
    if name.startswith(RANDOM) and name.count(".") == 2:
        return name[len(RANDOM) :]
    return None


def _key_argument(call: ast.Call) -> ast.expr | None:
    """The key a jax.random call takes: its first argument or `key=`."""
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "key"), None)


def _is_key_annotation(annotation: ast.expr | None) -> bool:
    text = ast.unparse(annotation) if annotation is not None else ""
    return "PRNGKey" in text or "KeyArray" in text or "Key[" in text


class _Keys:
    """Which names hold PRNG keys, per function, from evidence only: a name given to a jax.random
    function as its key, bound from one that makes keys, annotated as a key, or passed to a
    parameter that a function of this module consumes as a key."""

    def __init__(self, src: SourceFile) -> None:
        self.src = src
        defs = (ast.FunctionDef, ast.AsyncFunctionDef)
        self.functions = {fn.name: fn for fn in src.tree.body if isinstance(fn, defs)}
        for stmt in src.tree.body:  # `step = jax.jit(train_step, ...)` calls train_step
            value = stmt.value if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
            if isinstance(value, ast.Call) and src.qualname(value.func) in JIT_NAMES and value.args:
                jitted = value.args[0]
                if isinstance(stmt.targets[0], ast.Name) and isinstance(jitted, ast.Name) and jitted.id in self.functions:
                    self.functions[stmt.targets[0].id] = self.functions[jitted.id]
        self.nodes: dict[ast.AST, list[ast.AST]] = {}  # scope -> its calls, assignments and loops
        for kind in (ast.Call, ast.Assign, ast.AnnAssign, ast.For, ast.comprehension):
            for node in src.nodes(kind):
                self.nodes.setdefault(src.enclosing_function(node) or src.tree, []).append(node)
        self._known: dict[ast.AST, set[str]] = {}
        self._consumed: dict[ast.AST, set[str]] = {}

    def local_callee(self, call: ast.Call) -> tuple[Function, list[str]] | None:
        """The function of this module a call runs (`f(...)`, `self.f(...)`) and the parameter
        names its positional arguments bind."""
        func = call.func
        fn: Function | None = None
        params: list[str] = []
        if isinstance(func, ast.Call) and self.src.qualname(func.func) in TRANSFORMS and func.args:
            func = func.args[0]  # `jax.grad(loss_fn)(params, key)` runs loss_fn
        if isinstance(func, ast.Name) and func.id not in self.src.imports:
            fn = self.functions.get(func.id)
            params = positional_params(fn) if fn else []
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
            cls = next((a for a in self.src.ancestors(call) if isinstance(a, ast.ClassDef)), None)
            methods = [s for s in cls.body if isinstance(s, ast.FunctionDef) and s.name == func.attr] if cls else []
            fn = methods[-1] if methods else None
            params = positional_params(fn)[1:] if fn else []
        return (fn, params) if fn else None

    def key_params(self, call: ast.Call) -> Iterator[tuple[ast.expr, str]]:
        """The arguments of `call` that a local callee takes as PRNG keys, with the parameter name."""
        callee = self.local_callee(call)
        if callee is None:
            return
        fn, params = callee
        keys = self.consumed(fn)
        for param, arg in zip(params, call.args):
            if isinstance(arg, ast.Starred):
                return
            if param in keys:
                yield arg, param
        for keyword in call.keywords:
            if keyword.arg in keys:
                yield keyword.value, keyword.arg

    def consumed(self, fn: Function) -> set[str]:
        """The parameters of `fn` that it consumes as keys (draws with, or hands to a consumer)."""
        if fn in self._consumed:
            return self._consumed[fn]
        self._consumed[fn] = names = set()  # guards recursion through mutually calling functions
        for node in self.nodes.get(fn, []):
            if not isinstance(node, ast.Call):
                continue
            random_fn = _random_fn(self.src, node)
            if random_fn is not None:
                given = [_key_argument(node)] if random_fn not in NOT_CONSUMING else []
            else:
                given = [arg for arg, _ in self.key_params(node)]
                if (self.src.qualname(node.func) or "").startswith(KEY_LIBRARIES):
                    given += [k.value for k in node.keywords if k.arg in KEY_KEYWORDS]
            names.update(arg.id for arg in given if isinstance(arg, ast.Name))
        names &= {a.arg for a in all_args(fn)}
        return names

    def known(self, scope: ast.AST) -> set[str]:
        """The names in `scope` (a function, or the module's own statements) that hold keys."""
        if scope in self._known:
            return self._known[scope]
        self._known[scope] = keys = set()  # guards recursion through mutually calling functions
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            keys.update(a.arg for a in all_args(scope) if _is_key_annotation(a.annotation))
        for node in self.nodes.get(scope, []):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
                if _random_fn(self.src, node.value) in KEY_MAKERS:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    keys.update(name for target in targets for name in stored_names(target))
            elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.iter, ast.Call):
                if _random_fn(self.src, node.iter) == "split":
                    keys.update(stored_names(node.target))
            elif isinstance(node, ast.Call):
                arg = _key_argument(node) if _random_fn(self.src, node) else None
                if isinstance(arg, ast.Name):
                    keys.add(arg.id)
                if (self.src.qualname(node.func) or "").startswith(KEY_LIBRARIES):
                    keys.update(
                        k.value.id for k in node.keywords if k.arg in KEY_KEYWORDS and isinstance(k.value, ast.Name)
                    )
                keys.update(arg.id for arg, _ in self.key_params(node) if isinstance(arg, ast.Name))
        return keys


def _merge(*states: State | None) -> State | None:
    """The state after paths join: a key consumed on any incoming path is consumed."""
    live = [s for s in states if s is not None]
    if not live:
        return None
    merged: State = {}
    for state in live:
        for name, call in state.items():
            merged.setdefault(name, call)
    return merged


class _KeyFlow:
    """The forward walk of one scope's statements for RAX201."""

    def __init__(self, src: SourceFile, keys: _Keys, scope: ast.AST) -> None:
        self.src = src
        self.keys = keys
        self.known = keys.known(scope)
        self.findings: dict[ast.AST, Finding] = {}
        self.loops: list[tuple[ast.AST, list[State], list[State]]] = []  # (loop, continue states, break states)

    # Statements -------------------------------------------------------------------------------

    def block(self, stmts: list[ast.stmt], state: State | None) -> State | None:
        for stmt in stmts:
            if state is None:
                return None
            state = self.stmt(stmt, state)
        return state

    def stmt(self, node: ast.stmt, state: State) -> State | None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return self.bind(state, [node.name])
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            if node.value is not None:
                self.expr(node.value, state)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                self.expr_loads(target, state)
            return self.bind(state, [n for t in targets for n in stored_names(t)])
        if isinstance(node, ast.Delete):
            return self.bind(state, [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)])
        if isinstance(node, ast.If):
            self.expr(node.test, state)
            return _merge(self.block(node.body, dict(state)), self.block(node.orelse, dict(state)))
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            return self.loop(node, state)
        if isinstance(node, (ast.Return, ast.Raise)):
            for child in ast.iter_child_nodes(node):
                self.expr(child, state)
            return None
        if isinstance(node, (ast.Break, ast.Continue)):
            if self.loops:
                self.loops[-1][2 if isinstance(node, ast.Break) else 1].append(dict(state))
            return None
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            body = self.block(node.body, dict(state))
            body = self.block(node.orelse, body)
            handlers = [self.block(h.body, self.bind(dict(state), [h.name] if h.name else [])) for h in node.handlers]
            after = _merge(body, *handlers)
            if after is None:
                self.block(node.finalbody, dict(state))
                return None
            return self.block(node.finalbody, after)
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr, state)
                if item.optional_vars is not None:
                    state = self.bind(state, stored_names(item.optional_vars))
            return self.block(node.body, state)
        if isinstance(node, ast.Match):
            self.expr(node.subject, state)
            cases = [self.block(case.body, dict(state)) for case in node.cases]
            return _merge(dict(state), *cases)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child, state)
        return state

    def loop(self, node: ast.For | ast.AsyncFor | ast.While, state: State) -> State | None:
        """Walk the body twice: the second walk starts where an iteration may end, so a key consumed
        in the body and not rebound there is found consumed again in the next iteration."""
        if isinstance(node, ast.While):
            self.expr(node.test, state)
        else:
            self.expr(node.iter, state)
        entry = dict(state)
        breaks: list[State] = []
        sweep = not isinstance(node, ast.While) and _is_sweep(self.src, node.iter)
        for _ in range(1 if sweep else 2):
            start = entry if isinstance(node, ast.While) else self.bind(dict(entry), stored_names(node.target))
            self.loops.append((node, [], breaks))
            end = self.block(node.body, start)
            continues = self.loops.pop()[1]
            back = _merge(end, *continues)
            if isinstance(node, ast.While) and back is not None:
                self.expr(node.test, back)
            entry = _merge(entry, back) or entry
        after = self.block(node.orelse, dict(entry))
        return _merge(after, *breaks)

    @staticmethod
    def bind(state: State, names: list[str]) -> State:
        for name in names:
            state.pop(name, None)
        return state

    # Expressions ------------------------------------------------------------------------------

    def expr_loads(self, target: ast.expr, state: State) -> None:
        """The expressions an assignment target evaluates (`x[f(key)] = ...`)."""
        for node in ast.iter_child_nodes(target):
            if isinstance(node, ast.expr) and not isinstance(node, ast.Name):
                self.expr(node, state)

    def expr(self, node: ast.AST, state: State) -> None:
        """Evaluate `node` in order, consuming keys as its calls run."""
        if isinstance(node, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return
        if isinstance(node, ast.IfExp):
            self.expr(node.test, state)
            branches = [dict(state), dict(state)]
            self.expr(node.body, branches[0])
            self.expr(node.orelse, branches[1])
            state.update(_merge(*branches) or {})
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            self.comprehension(node, state)
            return
        if isinstance(node, ast.NamedExpr):
            self.expr(node.value, state)
            self.bind(state, [node.target.id])
            return
        for child in ast.iter_child_nodes(node):
            self.expr(child, state)
        if isinstance(node, ast.Call):
            self.call(node, state)

    def comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp, state: State) -> None:
        """A comprehension is a loop: its element runs once per item."""
        first, *rest = node.generators
        self.expr(first.iter, state)
        elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        bound = [n for g in node.generators for n in stored_names(g.target)]
        outer = {name: state[name] for name in bound if name in state}
        self.loops.append((node, [], []))
        for _ in range(1 if any(_is_sweep(self.src, g.iter) for g in node.generators) else 2):
            self.bind(state, bound)
            for generator in node.generators:
                if generator is not first:
                    self.expr(generator.iter, state)
                for condition in generator.ifs:
                    self.expr(condition, state)
            for element in elements:
                self.expr(element, state)
        self.loops.pop()
        self.bind(state, bound)
        state.update(outer)

    def call(self, call: ast.Call, state: State) -> None:
        fn = _random_fn(self.src, call)
        if fn is not None:
            if fn not in NOT_CONSUMING:
                self.consume(_key_argument(call), call, state)
            return
        name = self.src.qualname(call.func) or ""
        given = [
            k.value
            for k in call.keywords
            if k.arg in KEY_KEYWORDS and (name.startswith(KEY_LIBRARIES) or _names(k.value) & self.known)
        ]
        given += [arg for arg, _ in self.keys.key_params(call) if all(arg is not g for g in given)]
        for arg in given:
            self.consume(arg, call, state)

    def consume(self, arg: ast.expr | None, call: ast.Call, state: State) -> None:
        if not isinstance(arg, ast.Name):
            return
        previous = state.get(arg.id)
        state[arg.id] = call
        if previous is None or arg in self.findings:
            return
        used = ast.unparse(previous.func)
        if (previous.lineno, previous.col_offset) >= (call.lineno, call.col_offset) and self.loops:
            loop = self.loops[-1][0]
            message = (
                f"PRNG key `{arg.id}` is consumed by `{ast.unparse(call.func)}` in every iteration of the loop "
                f"on line {loop.lineno}: split it in the loop (`{arg.id}, {_sub(arg.id)} = jax.random.split({arg.id})`)"
            )
        else:
            message = (
                f"PRNG key `{arg.id}` is reused: `{used}` on line {previous.lineno} already consumed it; "
                f"split it first (`{arg.id}, {_sub(arg.id)} = jax.random.split({arg.id})`)"
            )
        self.findings[arg] = Finding.at("RAX201", arg, message)


def _sub(name: str) -> str:
    """A name for the subkey split from `name`."""
    return "subkey" if name != "subkey" else "subkey2"


def _names(node: ast.expr) -> set[str]:
    return {node.id} if isinstance(node, ast.Name) else set()


@rule("RAX201", "prng-key-reuse", default=True)
def prng_key_reuse(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for a PRNG key consumed twice on one control-flow path: given to two random draws
    (`jax.random.normal(key, ...)`, `jax.random.split(key)`), or to two functions that take a key
    (`key=` of equinox/flax layers, or a function of this module that draws with it), with no
    `jax.random.split` or reassignment of the key in between. A key used in a loop body and not
    re-split there is reused in every iteration.

    ## Why is this bad?
    JAX's random numbers are a pure function of the key: the same key gives the same numbers.
    Reusing a key silently correlates what should be independent (two dropout masks, the noise of
    every training step, the initial weights of two layers), and nothing fails at run time.

    ## Example
    ```python
    key = jax.random.key(0)
    w = jax.random.normal(key, (3, 3))
    b = jax.random.normal(key, (3,))  # the same numbers as w's first row
    ```

    ## Use instead
    ```python
    key = jax.random.key(0)
    key, w_key, b_key = jax.random.split(key, 3)
    w = jax.random.normal(w_key, (3, 3))
    b = jax.random.normal(b_key, (3,))
    ```
    Deriving keys with `jax.random.fold_in(key, i)` is not consumption, nor is `jax.random.key_data`.
    """
    if not any(word in src.text for word in ("random", "key=", "rng=", "PRNGKey")) or not src.imports_any(*LIBRARIES):
        return  # the fast path: nothing here draws random numbers
    if not any(
        (src.qualname(call.func) or "").startswith(RANDOM) or any(k.arg in KEY_KEYWORDS for k in call.keywords)
        for call in src.nodes(ast.Call)
    ):
        return  # no jax.random, no `key=`: nothing here consumes a key
    keys = _Keys(src)
    for scope in [src.tree, *src.functions()]:
        if not keys.known(scope):
            continue
        flow = _KeyFlow(src, keys, scope)
        body = [s for s in scope.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        flow.block(body, {})
        yield from flow.findings.values()


def _constant(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp):
        return _constant(node.operand)
    return isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool)


def _is_sweep(src: SourceFile, iterable: ast.expr) -> bool:
    """A loop over a literal collection or an `itertools.product` grid (or a name bound only to
    one) is a sweep over settings: the same key for each setting may be the point."""
    if isinstance(iterable, ast.Name):
        values = [
            node.value
            for node in ast.walk(src.scope(iterable))
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == iterable.id for t in node.targets)
        ]
        return bool(values) and all(_is_settings(src, v) for v in values)
    return _is_settings(src, iterable)


def _is_settings(src: SourceFile, value: ast.expr) -> bool:
    if isinstance(value, ast.Call):
        return src.qualname(value.func) == "itertools.product"
    return isinstance(value, (ast.List, ast.Tuple, ast.Set))


def _enclosing_loop(src: SourceFile, node: ast.AST) -> ast.AST | None:
    """The innermost loop (statement or comprehension) that runs `node` once per iteration, within
    `node`'s own scope; None if there is none, or if it iterates over a literal collection (a sweep
    over settings, where the same key each time may be the point)."""
    child = node
    for ancestor in src.ancestors(node):
        if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return None
        if isinstance(ancestor, (ast.For, ast.AsyncFor)) and child in ancestor.body:
            return None if _is_sweep(src, ancestor.iter) else ancestor
        if isinstance(ancestor, ast.While) and child in ancestor.body:
            return ancestor
        if isinstance(ancestor, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            if child is not ancestor.generators[0].iter:
                return None if any(_is_sweep(src, g.iter) for g in ancestor.generators) else ancestor
        child = ancestor
    return None


def _folded(src: SourceFile, loop: ast.AST) -> set[str]:
    """Names given to `jax.random.fold_in` in `loop`: a constant key folded with the step varies."""
    return {
        node.args[0].id
        for node in ast.walk(loop)
        if isinstance(node, ast.Call) and _random_fn(src, node) == "fold_in" and node.args
        if isinstance(node.args[0], ast.Name)
    }


@rule("RAX202", "constant-key-in-loop", default=True)
def constant_key_in_loop(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for a PRNG key built from a constant seed (`jax.random.key(0)`, `jax.random.PRNGKey(42)`)
    inside a loop body or a comprehension. Loops over a literal list or tuple (a sweep over
    settings) and keys then varied with `jax.random.fold_in` are left alone.

    ## Why is this bad?
    Every iteration builds the same key, so every iteration draws the same numbers: the same
    dropout mask every step, the same "random" batch every epoch.

    ## Example
    ```python
    for step in range(num_steps):
        key = jax.random.key(0)
        noise = jax.random.normal(key, shape)
    ```

    ## Use instead
    ```python
    key = jax.random.key(0)
    for step in range(num_steps):
        key, noise_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, shape)
    ```
    """
    if ("key(" not in src.text and "PRNGKey(" not in src.text) or not src.imports_any("jax"):
        return
    for node in src.nodes(ast.Call):
        if not _is_constant_key(src, node):
            continue
        loop = _enclosing_loop(src, node)
        parent = src.parent(node)
        if loop is None or (isinstance(parent, ast.Call) and _random_fn(src, parent) == "fold_in"):
            continue
        if isinstance(parent, ast.Assign) and set(stored_names(parent.targets[0])) & _folded(src, loop):
            continue
        yield Finding.at(
            "RAX202",
            node,
            f"`{ast.unparse(node)}` builds the same key in every iteration of the loop on line "
            f"{loop.lineno}: create the key once before the loop and split it in the loop",
        )


def _is_constant_key(src: SourceFile, node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and _random_fn(src, node) in ("key", "PRNGKey")
        and bool(node.args)
        and all(_constant(a) for a in node.args)
        and all(_constant(k.value) for k in node.keywords)
    )


@rule("RAX203", "legacy-prng-key", default=False)
def legacy_prng_key(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for legacy uint32 keys made with `jax.random.PRNGKey(seed)`.

    ## Why is this bad?
    A legacy key is a plain `uint32[2]` array: it can be added to, reshaped, or passed where data is
    expected without any error. A typed key (`jax.random.key(seed)`, dtype `key<fry>`) cannot be
    mistaken for data, carries its PRNG implementation, and is what JAX recommends.

    ## Example
    ```python
    key = jax.random.PRNGKey(0)
    ```

    ## Use instead
    ```python
    key = jax.random.key(0)
    ```
    The fix is unsafe: a typed key has a different dtype and shape (`()` instead of `(2,)`), so code
    that indexes it, stores it as data, or serialises it needs `jax.random.key_data`/`wrap_key_data`.
    """
    if "PRNGKey" not in src.text:
        return
    for node in src.nodes(ast.Call):
        if _random_fn(src, node) != "PRNGKey":
            continue
        fix = None
        func = node.func
        if isinstance(func, ast.Attribute) and func.end_lineno is not None and func.end_col_offset is not None:
            start = func.end_col_offset - len("PRNGKey")
            edit = Edit(func.end_lineno, start, func.end_lineno, func.end_col_offset, "key")
            fix = Fix(f"Replace with `{ast.unparse(func.value)}.key`", (edit,), safe=False)
        yield Finding.at(
            "RAX203",
            node,
            f"`{ast.unparse(func)}` makes a legacy uint32 key: use a typed key, `jax.random.key`",
            fix,
        )
