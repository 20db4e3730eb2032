"""Training hygiene (RAX6xx): the checks a training loop and a training step should carry, so that a
diverging run is seen (NaN/Inf loss, gradient norm) rather than discovered hours later."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from raximport.lint.registry import Finding, rule
from raximport.lint.source import Function, SourceFile, all_args

# What a step's callee is called: `train_step`, `make_step`, `update`, `optax.apply_updates`...
STEP_WORDS = ("step", "update", "apply_gradients")
NAN_CHECKS = frozenset({"isnan", "isfinite", "isinf", "apply_if_finite", "error_if", "branched_error_if"})
GRADIENTS = frozenset(
    {
        "jax.grad",
        "jax.value_and_grad",
        "equinox.filter_grad",
        "equinox.filter_value_and_grad",
        "flax.nnx.grad",
        "flax.nnx.value_and_grad",
    }
)
UPDATES = frozenset({"apply_updates", "apply_gradients"})
GRADIENT_NORMS = frozenset(
    {"global_norm", "clip_by_global_norm", "tree_l2_norm", "clip_grad_norm", "adaptive_grad_clip"}
)


def _called(node: ast.Call) -> str:
    """The last name of what a call runs (`train_step`, `apply_updates`, `update`)."""
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _step_call(node: ast.AST) -> tuple[ast.Call, str, str] | None:
    """If `node` is a statement that calls a step, rebinds what it passed in and binds a loss (or
    metrics): (the call, the rebound name, the loss name)."""
    if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
        return None
    call = node.value
    if not any(word in _called(call).lower() for word in STEP_WORDS):
        return None
    bound = [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    given = {a.id for a in ast.walk(call) if isinstance(a, ast.Name)}
    rebound = next((name for name in bound if name in given), None)
    loss = next((name for name in bound if "loss" in name.lower() or "metric" in name.lower()), None)
    return (call, rebound, loss) if rebound and loss else None


def _loop(src: SourceFile, node: ast.AST) -> ast.For | ast.While | None:
    """The innermost loop around `node` in its function."""
    for ancestor in src.ancestors(node):
        if isinstance(ancestor, (ast.For, ast.While)):
            return ancestor
        if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return None
    return None


def _checks_nan(src: SourceFile, nodes: list[ast.AST]) -> bool:
    """Whether `nodes`, or a function of this module they call, test for NaN/Inf."""
    local = {fn.name: fn for fn in src.functions()}
    seen: set[str] = set()
    while nodes:
        node = nodes.pop()
        for child in ast.walk(node):
            if isinstance(child, ast.Call):
                called = _called(child)
                if called in NAN_CHECKS:
                    return True
                if called in local and called not in seen:
                    seen.add(called)
                    nodes.append(local[called])
            if isinstance(child, ast.Compare) and any(isinstance(op, ast.NotEq) for op in child.ops):
                if ast.dump(child.left) in (ast.dump(c) for c in child.comparators):
                    return True  # `loss != loss`
    return False


def _debug_nans(src: SourceFile) -> bool:
    return "jax_debug_nans" in src.text or "debug_nans" in src.text


@rule("RAX601", "training-loop-without-nan-check", default=False)
def training_loop_without_nan_check(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for a training loop (a loop that calls a step, rebinds the parameters or state it passed
    in, and binds a loss or metrics) that never tests the loss for NaN/Inf: no `isnan`/`isfinite`
    in the loop or in the functions of this module it calls, no `optax.apply_if_finite`, no
    `jax_debug_nans`.

    ## Why is this bad?
    A NaN loss does not stop training: every later step turns the parameters into NaN too, and the
    run burns its budget on garbage until someone looks at a plot.

    ## Example
    ```python
    for step in range(num_steps):
        params, opt_state, loss = train_step(params, opt_state, next(batches))
    ```

    ## Use instead
    ```python
    for step in range(num_steps):
        params, opt_state, loss = train_step(params, opt_state, next(batches))
        if not jnp.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}")
    ```
    """
    if _debug_nans(src) or ("loss" not in src.text and "metric" not in src.text):
        return
    reported: set[ast.AST] = set()
    for node in src.nodes(ast.Assign):
        found = _step_call(node)
        loop = _loop(src, node) if found else None
        if found is None or loop is None or loop in reported or _checks_nan(src, [loop]):
            continue
        reported.add(loop)
        call, rebound, loss = found
        value = loss if "loss" in loss.lower() else f'{loss}["loss"]'
        yield Finding.at(
            "RAX601",
            loop,
            f"training loop calls `{ast.unparse(call.func)}` and rebinds `{rebound}` but never checks `{loss}` "
            f"for NaN/Inf: stop when `not jnp.isfinite({value})`",
        )


def _is_training_step(src: SourceFile, fn: Function) -> bool:
    """A function that computes gradients, applies them, and returns what it updated (or, as with
    flax nnx's `optimizer.update(model, grads)`, updates an argument in place)."""
    grads = in_place = False
    updated: set[str] = set()
    params = {a.arg for a in all_args(fn)}
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            grads = grads or src.qualname(node.func) in GRADIENTS
            receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
            if _optimizer_update(node) and isinstance(receiver, ast.Name) and receiver.id in params:
                in_place = True
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _applies(node.value):
            updated.update(n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name))
    returned = [n for r in _returns(fn) if r.value is not None for n in ast.walk(r.value)]
    returns_update = any(
        (isinstance(n, ast.Name) and n.id in updated) or (isinstance(n, ast.Call) and _applies(n)) for n in returned
    )
    return grads and (in_place or returns_update)


def _returns(fn: Function) -> list[ast.Return]:
    """The return statements of `fn` itself, not of the functions nested in it."""
    found: list[ast.Return] = []
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return):
            found.append(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return found


def _applies(call: ast.Call) -> bool:
    return _called(call) in UPDATES or _optimizer_update(call)


def _optimizer_update(call: ast.Call) -> bool:
    """`optimizer.update(model, grads)` (flax nnx) or `tx.update(grads, opt_state, ...)` (optax)."""
    if _called(call) != "update":
        return False
    return any(isinstance(a, ast.Name) and "grad" in a.id.lower() for a in call.args)


@rule("RAX602", "training-step-without-grad-norm", default=False)
def training_step_without_grad_norm(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for a training step (a function that computes gradients with `jax.grad`/
    `jax.value_and_grad` or equinox's/nnx's and applies them) in a module that never computes a
    gradient norm: no `optax.global_norm`, `optax.clip_by_global_norm`, `tree_l2_norm`.

    ## Why is this bad?
    The gradient norm is the first sign of a diverging run (it spikes before the loss does), and
    clipping it is the usual guard; a step that neither logs nor clips it trains blind.

    ## Example
    ```python
    @jax.jit
    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    ```

    ## Use instead
    ```python
    @jax.jit
    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "grad_norm": grad_norm}
    ```
    (or build `tx` with `optax.clip_by_global_norm(1.0)` in its chain).
    """
    if "grad" not in src.text:
        return
    steps: dict[Function, None] = {}
    for call in src.nodes(ast.Call):
        if src.qualname(call.func) in GRADIENTS:
            functions = [a for a in src.ancestors(call) if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))]
            step = next((fn for fn in functions if _is_training_step(src, fn)), None)
            if step is not None:
                steps[step] = None
    if not steps:
        return
    names = {n.attr for n in src.nodes(ast.Attribute)} | {n.id for n in src.nodes(ast.Name)}
    if names & GRADIENT_NORMS:
        return
    for fn in steps:
        yield Finding.at(
            "RAX602",
            fn,
            f"training step `{fn.name}` applies gradients but never computes their norm: log "
            f"`optax.global_norm(grads)`, or clip with `optax.clip_by_global_norm`",
        )
