"""Jitting (RAX305, RAX306): what a jit costs when it is applied without the options or in the
place it needs. Both rules flag only patterns whose cost is certain: a step that returns the very
parameters it updated, a jit of a function object made afresh each time."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from raximport.lint.registry import Edit, Finding, Fix, rule
from raximport.lint.source import JIT_NAMES, PARTIAL_NAMES, Function, JitSpec, SourceFile, all_args, all_params

GRADIENTS = ("grad", "value_and_grad", "filter_grad", "filter_value_and_grad")
TREE_MAPS = frozenset({"jax.tree_util.tree_map", "jax.tree.map", "jax.tree_map", "optax.tree_utils.tree_map"})
LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _own_nodes(fn: Function) -> Iterator[ast.AST]:
    """The nodes of `fn`'s body, not those of functions nested in it."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not isinstance(child, FUNCTIONS))


def _returned(node: ast.expr | None) -> Iterator[ast.expr]:
    """The values a return carries: itself, or inside tuples, lists, dict values, constructor keywords."""
    if isinstance(node, (ast.Tuple, ast.List)):
        for element in node.elts:
            yield from _returned(element)
    elif isinstance(node, ast.Dict):
        for value in node.values:
            yield from _returned(value)
    elif isinstance(node, ast.Call) and node.keywords and not node.args:
        for keyword in node.keywords:
            yield from _returned(keyword.value)
    if node is not None:
        yield node


def _update_of(src: SourceFile, call: ast.Call, params: set[str], takes_gradient: bool) -> str | None:
    """The parameter whose updated value `call` computes: `optax.apply_updates(params, ...)`,
    `state.apply_gradients(...)`, or, in a function that takes a gradient, `state.replace(...)` or
    a tree_map over the parameters."""
    name = src.qualname(call.func) or ""
    first = call.args[0].id if call.args and isinstance(call.args[0], ast.Name) else None
    func = call.func
    owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
    if name.split(".")[0] in ("optax", "equinox") and name.endswith(".apply_updates") and first in params:
        return first
    if isinstance(func, ast.Attribute) and owner in params and (
        func.attr == "apply_gradients" or func.attr in ("replace", "_replace") and takes_gradient
    ):
        return owner
    if name in TREE_MAPS and takes_gradient and len(call.args) >= 3:
        tree = call.args[1]
        return tree.id if isinstance(tree, ast.Name) and tree.id in params else None
    return None


def _updated(src: SourceFile, fn: Function, params: set[str]) -> set[str]:
    """The parameters whose updated values `fn` returns, by an optimizer's update (`_update_of`, or
    `updates, opt_state = tx.update(grads, opt_state, ...)`), directly or through a local name."""
    nodes = list(_own_nodes(fn))
    takes_gradient = any(
        isinstance(n, ast.Call) and (src.qualname(n.func) or "").rsplit(".", 1)[-1] in GRADIENTS for n in nodes
    )
    names: dict[str, str] = {}
    for node in nodes:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Call)):
            continue
        call, target = node.value, node.targets[0]
        if isinstance(target, ast.Name):
            param = _update_of(src, call, params, takes_gradient)
            if param:
                names[target.id] = param
        elif isinstance(target, ast.Tuple) and len(target.elts) == 2 and isinstance(call.func, ast.Attribute) \
                and call.func.attr == "update" and len(call.args) >= 2:
            state, new_state = call.args[1], target.elts[1]
            if isinstance(state, ast.Name) and state.id in params and isinstance(new_state, ast.Name):
                names[new_state.id] = state.id
    updated: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Return):
            for value in _returned(node.value):
                if isinstance(value, ast.Name) and value.id in names:
                    updated.add(names[value.id])
                elif isinstance(value, ast.Call):
                    updated.add(_update_of(src, value, params, takes_gradient) or "")
    return updated - {""}


def _donation_fix(src: SourceFile, spec: JitSpec, names: list[str]) -> Fix | None:
    """`donate_argnames=(...)` added to a jax.jit decorator or call (unsafe: the caller must not
    use the donated arrays after the call)."""
    if spec.via != "jax.jit":
        return None
    quoted = ", ".join(f'"{n}"' for n in names)
    value = f"donate_argnames=({quoted}{',' if len(names) == 1 else ''})"
    node = spec.node
    end_row, end_col = node.end_lineno or node.lineno, node.end_col_offset or 0
    if not isinstance(node, ast.Call):
        text = f"({value})"
    else:
        end_col -= 1  # before the closing parenthesis
        before = src.lines[end_row - 1].encode()[:end_col].rstrip()
        empty = not node.args and not node.keywords
        text = value if empty else f" {value}" if before.endswith(b",") else f", {value}"
    message = f"Add `{value}`"
    return Fix(message, (Edit(end_row, end_col, end_row, end_col, text),), safe=False)


@rule("RAX305", "undonated-train-step", default=True)
def undonated_train_step(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Flags a jitted training step that returns the parameters or optimizer state it updated (from
    `optax.apply_updates`, an optimizer's `update`, `state.apply_gradients`) without donating them
    (`donate_argnums` / `donate_argnames`; equinox: `donate=`).

    ## Why is this bad?
    Without donation XLA must keep the old parameters alive while it writes the new ones: the step
    needs twice the memory for parameters and optimizer state, and copies them. Donated inputs are
    updated in place.

    ## Example
    ```python
    @jax.jit
    def train_step(params, opt_state, batch):
        grads = jax.grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    ```

    ## Use instead
    ```python
    @partial(jax.jit, donate_argnames=("params", "opt_state"))
    def train_step(params, opt_state, batch):
        ...
    ```
    The fix is unsafe: after the call the caller must not use the arrays it donated.
    """
    for fn, spec in src.jitted().items():
        if isinstance(fn, ast.Lambda) or spec.donates:
            continue
        if isinstance(spec.node, ast.Call) and any((k.arg or "").startswith("donate") or k.arg is None
                                                   for k in spec.node.keywords):
            continue
        equinox = spec.via.startswith("equinox.")  # filter_jit traces the arrays in any argument
        params = all_params(fn) - (set() if equinox else spec.static_params(fn)) - {"self", "cls"}
        order = [a.arg for a in all_args(fn)]
        donated = sorted(_updated(src, fn, params), key=order.index)
        if not donated:
            continue
        listed = ", ".join(f"`{n}`" for n in donated)
        how = '`donate="all"`' if equinox else "`donate_argnames`"
        where = fn if spec.node in fn.decorator_list else spec.node
        yield Finding.at(
            "RAX305", where,
            f"Jitted training step `{fn.name}` returns updated {listed} without donating "
            f"{'it' if len(donated) == 1 else 'them'}: the step holds two copies; donate "
            f"({how}) so XLA updates "
            f"{'it' if len(donated) == 1 else 'them'} in place",
            _donation_fix(src, spec, donated),
        )


def _fresh(src: SourceFile, target: ast.expr, call: ast.Call, loop: ast.AST | None) -> str | None:
    """What makes the function `target` a new object each time `call` runs (each iteration of
    `loop`, else each call of the enclosing function), or None."""
    if isinstance(target, ast.Lambda):
        return "a lambda"
    if isinstance(target, ast.Call) and src.qualname(target.func) in PARTIAL_NAMES:
        return "a `partial`"
    if isinstance(target, ast.Name):
        outer = src.enclosing_function(call)
        for definition in src._defined(target):
            inside = loop in src.ancestors(definition) if loop is not None else src.enclosing_function(definition) is outer
            if outer is not None and inside:
                return f"the nested function `{target.id}`"
    return None


def _loop(src: SourceFile, node: ast.AST) -> ast.AST | None:
    """The innermost loop around `node` within its function."""
    for ancestor in src.ancestors(node):
        if isinstance(ancestor, FUNCTIONS):
            return None
        if isinstance(ancestor, LOOPS):
            return ancestor
    return None


def _called_in(loop: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name for n in ast.walk(loop))


@rule("RAX306", "jit-per-call", default=True)
def jit_per_call(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Flags `jax.jit` applied to a function object made afresh each time, a lambda, a `partial` or a
    nested function, and called at once: inside a loop (every iteration) or a function (every call).

    ## Why is this bad?
    jit caches compiled code by function object: a new lambda is a new function, so every
    iteration traces and compiles again, which can take seconds each.

    ## Example
    ```python
    for batch in batches:
        loss = jax.jit(lambda p: loss_fn(p, batch))(params)
    ```

    ## Use instead
    ```python
    loss_jit = jax.jit(loss_fn)
    for batch in batches:
        loss = loss_jit(params, batch)
    ```
    Jitting in a loop to store one compiled function per case (`steps[n] = jax.jit(partial(f, n=n))`)
    is fine and not flagged.
    """
    jitted = src.jitted()
    for call in src.nodes(ast.Call) if jitted or src.imports_any("jax", "equinox", "flax") else ():
        if not (call.args and src.qualname(call.func) in JIT_NAMES):
            continue
        loop = _loop(src, call)
        what = _fresh(src, call.args[0], call, loop)
        if what is None:
            continue
        outer = src.enclosing_function(call)
        if outer is not None and any(a in jitted for a in (outer, *src.ancestors(outer))):
            continue  # under a trace: compiled once with the outer function
        parent = src.parent(call)
        called_now = isinstance(parent, ast.Call) and parent.func is call
        stored = isinstance(parent, ast.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0], ast.Name)
        jit = src.qualname(call.func)
        if loop is not None and (called_now or stored and _called_in(loop, parent.targets[0].id)):  # type: ignore[union-attr]
            yield Finding.at("RAX306", call, f"`{jit}` of {what} inside a loop compiles it again on every "
                                             "iteration; jit it once, before the loop")
        elif called_now and outer is not None and not getattr(outer, "name", "").startswith("test"):
            name = getattr(outer, "name", "<lambda>")  # (a test function runs once)
            yield Finding.at("RAX306", call, f"`{jit}` of {what} compiles it again on every call of `{name}`; "
                                             "jit it once (at module level) and call that")
