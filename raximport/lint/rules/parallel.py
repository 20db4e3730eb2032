"""Parallelism (RAX501, RAX502): meshes in one naming convention, and sharding through jit rather
than pmap."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from raximport.lint.registry import Finding, rule
from raximport.lint.source import SourceFile

MESH_AXES = ("model", "data")
# Mesh constructors and the position of their axis names.
MESHES = {"jax.sharding.Mesh": 1, "jax.sharding.AbstractMesh": 1, "jax.make_mesh": 1, "jax.sharding.make_mesh": 1}
PMAPS = {"jax.pmap": "`jax.pmap`", "equinox.filter_pmap": "`eqx.filter_pmap`"}


def _axis_names(call: ast.Call, position: int) -> ast.expr | None:
    keyword = next((k.value for k in call.keywords if k.arg == "axis_names"), None)
    return keyword if keyword is not None else call.args[position] if len(call.args) > position else None


@rule("RAX501", "mesh-axis-name", default=False)
def mesh_axis_name(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Flags a device mesh (`jax.sharding.Mesh`, `jax.make_mesh`) whose axes are named outside the
    `("model", "data")` convention.

    ## Why is this bad?
    PartitionSpecs name mesh axes: when every mesh of a project says `data` for the batch axis and
    `model` for the tensor-parallel one, specs and sharding rules carry over from one script to the
    next, and `P("batch")` against a mesh with a `data` axis is not a bug waiting to happen.

    ## Example
    ```python
    mesh = jax.make_mesh((4, 2), ("dp", "tp"))
    ```

    ## Use instead
    ```python
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    ```
    """
    for call in src.nodes(ast.Call) if src.imports_any("jax") else ():
        position = MESHES.get(src.qualname(call.func) or "")
        names = _axis_names(call, position) if position is not None else None
        if names is None:
            continue
        for element in names.elts if isinstance(names, (ast.Tuple, ast.List)) else [names]:
            if isinstance(element, ast.Constant) and isinstance(element.value, str) and element.value not in MESH_AXES:
                yield Finding.at("RAX501", element, f"Mesh axis `{element.value}` is outside the convention "
                                                    "(\"model\", \"data\"): name the batch axis `data` and the "
                                                    "tensor-parallel one `model`")


@rule("RAX502", "pmap", default=False)
def pmap(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Flags uses of `jax.pmap` (and equinox's `filter_pmap`).

    ## Why is this bad?
    pmap maps a function over devices with its own semantics (a leading device axis, collectives by
    axis name) and is in maintenance in JAX: `jax.jit` with shardings partitions the same program
    automatically, and `jax.shard_map` gives per-device control where it is needed; both compose
    with the rest of JAX and run on one device unchanged.

    ## Example
    ```python
    step = jax.pmap(train_step, axis_name="data")
    ```

    ## Use instead
    ```python
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    step = jax.jit(train_step, in_shardings=NamedSharding(mesh, P("data")))
    ```
    """
    if "pmap" not in src.text or not src.imports_any("jax", "equinox"):
        return  # every name of a pmap has "pmap" in it, or in the import that binds it
    for node in [*src.nodes(ast.Name), *src.nodes(ast.Attribute)]:
        if isinstance(node.ctx, ast.Load):
            what = PMAPS.get(src.qualname(node) or "")
            if what is not None and not isinstance(src.parent(node), ast.Attribute):
                yield Finding.at("RAX502", node, f"{what} is in maintenance: use `jax.jit` with shardings "
                                                 "(or `jax.shard_map` for per-device code)")
