"""Vectorization (RAX4xx): array code written the way a loop or a matrix library would, where JAX
has a direct form (`jax.vmap`, `jnp.einsum`)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from raximport.lint.registry import Finding, rule
from raximport.lint.source import SourceFile

STACKERS = frozenset({"jax.numpy.stack", "jax.numpy.array", "jax.numpy.asarray", "jax.numpy.vstack"})
ARRAY_MAKERS = ("jax.numpy.", "jax.random.", "jax.lax.", "jax.nn.")


def _batched(src: SourceFile, loop_iter: ast.expr, target: ast.expr, scope: ast.AST) -> tuple[str, ast.expr] | None:
    """If a loop walks the leading (batch) axis of an array, the array's name and the expression
    that is one example: `range(x.shape[0])`/`range(len(x))` with `x[i]`, or `for xi in x` over an
    array this function makes with jax.numpy or takes annotated as one."""
    if not isinstance(target, ast.Name):
        return None
    if isinstance(loop_iter, ast.Call) and src.is_builtin(loop_iter.func, "range") and len(loop_iter.args) == 1:
        bound = loop_iter.args[0]
        array = None
        if (
            isinstance(bound, ast.Subscript)
            and isinstance(bound.value, ast.Attribute)
            and bound.value.attr == "shape"
            and isinstance(bound.value.value, ast.Name)
            and isinstance(bound.slice, ast.Constant)
            and bound.slice.value == 0
        ):
            array = bound.value.value.id
        elif isinstance(bound, ast.Call) and src.is_builtin(bound.func, "len") and bound.args:
            array = bound.args[0].id if isinstance(bound.args[0], ast.Name) else None
        if array is not None:
            return array, ast.Subscript(ast.Name(array, ast.Load()), ast.Name(target.id, ast.Load()), ast.Load())
    if isinstance(loop_iter, ast.Name) and _is_array(src, loop_iter.id, scope):
        return loop_iter.id, ast.Name(target.id, ast.Load())
    return None


def _is_array(src: SourceFile, name: str, scope: ast.AST) -> bool:
    """Whether every binding of `name` in `scope` makes it a JAX array (a jax.numpy call or an array annotation)."""
    bindings: list[bool] = []
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = scope.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs):
            if arg.arg == name:
                bindings.append(src.is_array_annotation(arg.annotation))
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            made = src.qualname(node.value.func) if isinstance(node.value, ast.Call) else None
            bindings.append(bool(made and made.startswith(ARRAY_MAKERS)))
    return bool(bindings) and all(bindings)


def _uses(expr: ast.AST, example: ast.expr) -> bool:
    dumped = ast.dump(example)
    return any(ast.dump(node) == dumped for node in ast.walk(expr))


def _per_example_call(expr: ast.expr, example: ast.expr) -> ast.Call | None:
    """The call of `expr` that computes on one example (`f(x[i])`), if any."""
    for node in ast.walk(expr):
        arguments = [*node.args, *(k.value for k in node.keywords)] if isinstance(node, ast.Call) else []
        if any(_uses(argument, example) for argument in arguments):
            return node
    return None


def _message(array: str, call: ast.Call) -> str:
    return (
        f"a Python loop over the batch axis of `{array}` stacks per-example results of "
        f"`{ast.unparse(call.func)}`: use `jax.vmap({ast.unparse(call.func)})`"
    )


@rule("RAX401", "loop-over-batch", default=False)
def loop_over_batch(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for a Python loop or comprehension over the leading (batch) axis of an array that calls
    a function on each example and stacks the results with `jnp.stack`/`jnp.array`:
    `jnp.stack([f(x[i]) for i in range(x.shape[0])])`, or a `for` loop appending to a list that is
    then stacked.

    ## Why is this bad?
    The loop is unrolled: under `jax.jit` it traces `f` once per example (compile time grows with
    the batch size) and runs the examples one after another instead of as one batched computation.

    ## Example
    ```python
    outputs = jnp.stack([model(x[i]) for i in range(x.shape[0])])
    ```

    ## Use instead
    ```python
    outputs = jax.vmap(model)(x)
    ```
    """
    if "for " not in src.text or ("stack(" not in src.text and "array(" not in src.text):
        return  # the fast path: no loop, or nothing stacked
    for node in src.nodes(ast.Call):
        if src.qualname(node.func) not in STACKERS or not node.args:
            continue
        scope = src.enclosing_function(node) or src.tree
        stacked = node.args[0]
        if isinstance(stacked, (ast.ListComp, ast.GeneratorExp)) and len(stacked.generators) == 1:
            generator = stacked.generators[0]
            batched = None if generator.ifs else _batched(src, generator.iter, generator.target, scope)
            call = _per_example_call(stacked.elt, batched[1]) if batched else None
            if batched and call:
                yield Finding.at("RAX401", node, _message(batched[0], call))
        elif isinstance(stacked, ast.Name):
            yield from _stacked_loop(src, node, stacked.id, scope)


def _stacked_loop(src: SourceFile, stack: ast.Call, name: str, scope: ast.AST) -> Iterator[Finding]:
    """The loop before `stack(name)` that appends one result per example to `name`."""
    for loop in ast.walk(scope):
        if not isinstance(loop, ast.For) or loop.lineno >= stack.lineno or loop.orelse:
            continue
        batched = _batched(src, loop.iter, loop.target, scope)
        if batched is None:
            continue
        for node in ast.walk(loop):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "append"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == name
                and node.args
                and (call := _per_example_call(node.args[0], batched[1])) is not None
            ):
                yield Finding.at("RAX401", loop, _message(batched[0], call))
                return


TRANSPOSES = frozenset({"transpose", "swapaxes", "moveaxis", "permute_dims"})
MATMULS = frozenset({"jax.numpy.matmul", "jax.numpy.dot"})


def _reshuffle(src: SourceFile, expr: ast.expr) -> str | None:
    """`x.transpose(0, 2, 1, 3)`, `jnp.swapaxes(x, 1, 2)`, `x.reshape(...)`: the operation's name."""
    if not isinstance(expr, ast.Call):
        return None
    func = expr.func
    name = src.qualname(func) or ""
    if name.startswith("jax.numpy."):
        op = name.rsplit(".", 1)[1]
        arguments = expr.args[1:]
    elif isinstance(func, ast.Attribute):
        op = func.attr
        arguments = expr.args
    else:
        return None
    if op == "transpose":
        listed = len(arguments) == 1 and isinstance(arguments[0], (ast.Tuple, ast.List))
        axes = arguments[0].elts if listed else arguments
        return op if len(axes) >= 3 else None
    return op if op in TRANSPOSES or op == "reshape" else None


def _operands(src: SourceFile, node: ast.AST) -> list[ast.expr] | None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        return [node.left, node.right]
    if isinstance(node, ast.Call) and src.qualname(node.func) in MATMULS and len(node.args) == 2:
        return list(node.args)
    return None


@rule("RAX402", "use-einsum", default=False)
def use_einsum(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Checks for a contraction written as a matmul of transposed or reshaped operands:
    `q @ k.swapaxes(-1, -2)`, `x.transpose(0, 2, 1, 3) @ w`, or a reshape to 2-D, a matmul, and a
    reshape back (`(x.reshape(-1, d) @ w).reshape(b, s, -1)`). A plain `.T` of a matrix is fine.

    ## Why is this bad?
    The axes a contraction runs over are implicit in the transposes and reshapes, which are easy to
    get wrong and hard to review; `jnp.einsum` names every axis, and XLA picks the layout itself.

    ## Example
    ```python
    scores = q @ jnp.swapaxes(k, -1, -2)
    ```

    ## Use instead
    ```python
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k)
    ```
    """
    if not any(op in src.text for op in ("transpose", "swapaxes", "moveaxis", "permute_dims", "reshape")):
        return  # the fast path: nothing reshuffles axes
    for node in [*src.nodes(ast.BinOp), *src.nodes(ast.Call)]:
        operands = _operands(src, node)
        if operands is None:
            continue
        ops = [op for op in map(lambda e: _reshuffle(src, e), operands) if op]
        if "reshape" in ops:
            parent = src.parent(node)
            reshaped_back = isinstance(parent, ast.Attribute) and parent.attr == "reshape"
            ops = [op for op in ops if op != "reshape"] + (["reshape"] if reshaped_back else [])
        if ops:
            yield Finding.at(
                "RAX402",
                node,
                f"contraction by `{'`/`'.join(dict.fromkeys(ops))}` and a matmul: write it as one `jnp.einsum` "
                f"that names the axes",
            )
