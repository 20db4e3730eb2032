"""Dtypes (RAX701): parameters start in float32, whatever precision the computation runs in."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from raximport.lint.registry import Finding, rule
from raximport.lint.source import SourceFile

LOW = {"jax.numpy.bfloat16": "bfloat16", "jax.numpy.float16": "float16", "numpy.float16": "float16",
       "ml_dtypes.bfloat16": "bfloat16", "jax.dtypes.bfloat16": "bfloat16", "bfloat16": "bfloat16",
       "float16": "float16"}
# jax.random draws used to initialise weights, and the position of their dtype argument.
DRAWS = {"normal": 2, "uniform": 2, "truncated_normal": 4, "orthogonal": 3, "ball": 3}
INITIALIZERS = ("jax.nn.initializers.", "flax.linen.initializers.", "flax.nnx.initializers.")
PARAMS = ("flax.nnx.Param",)


def _low(src: SourceFile, node: ast.expr | None) -> str | None:
    """"bfloat16" / "float16" if `node` names that dtype, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return LOW.get(node.value) if node.value in ("bfloat16", "float16") else None
    name = src.qualname(node) if node is not None else None
    return LOW.get(name) if name and "." in name else None


def _dtype(call: ast.Call, position: int | None) -> ast.expr | None:
    keyword = next((k.value for k in call.keywords if k.arg == "dtype"), None)
    if keyword is not None or position is None:
        return keyword
    return call.args[position] if len(call.args) > position else None


def _in_init(src: SourceFile, node: ast.AST) -> bool:
    """Whether `node` is in a function that initialises (its name says init or setup), or in
    an `nnx.Param(...)`."""
    for ancestor in src.ancestors(node):
        if isinstance(ancestor, ast.Call) and src.qualname(ancestor.func) in PARAMS:
            return True
        if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return "init" in ancestor.name.lower() or ancestor.name == "setup"
    return False


def _low_init(src: SourceFile, call: ast.Call) -> tuple[ast.expr, str, str] | None:
    """(dtype node, dtype, what) if `call` creates parameters in a low-precision dtype."""
    name = src.qualname(call.func) or ""
    param_dtype = next((k.value for k in call.keywords if k.arg == "param_dtype"), None)
    low = _low(src, param_dtype)
    if param_dtype is not None and low:
        return param_dtype, low, "keep `param_dtype` float32 and set `dtype` for the computation"
    layer_dtype = _dtype(call, None)
    low = _low(src, layer_dtype)
    if name.startswith("equinox.nn.") and layer_dtype is not None and low:
        return layer_dtype, low, "an equinox layer's `dtype` is its parameters': build it in float32 and cast"
    short = name.rsplit(".", 1)[-1]
    candidates: list[ast.expr | None] = []
    in_init = _in_init(src, call)
    if name.startswith("jax.random.") and name.count(".") == 2 and short in DRAWS and in_init:
        candidates.append(_dtype(call, DRAWS[short]))
    elif name.startswith(INITIALIZERS) and in_init:  # zeros(key, shape, dtype), or a factory's dtype=
        candidates.append(_dtype(call, 2 if short in ("zeros", "ones") else None))
    elif isinstance(call.func, ast.Call) and (src.qualname(call.func.func) or "").startswith(INITIALIZERS) and in_init:
        candidates.append(_dtype(call, 2))  # normal(0.02)(key, shape, dtype)
    elif isinstance(call.func, ast.Attribute) and call.func.attr == "param" and src.qualname(call.func.value) == "self":
        candidates.extend(call.args[2:])  # flax: self.param(name, init, shape, dtype)
    for node in candidates:
        low = _low(src, node)
        if low and node is not None:
            return node, low, f"draw it in float32, then cast (`.astype(jnp.{low})`)"
    return None


@rule("RAX701", "low-precision-init", default=False)
def low_precision_init(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Flags parameters created directly in bfloat16 or float16: `param_dtype=jnp.bfloat16` (flax), an
    equinox layer built with `dtype=jnp.bfloat16`, a flax `self.param(...)` or `nnx.Param(...)` drawn
    in it, and `jax.random` draws or `jax.nn.initializers` in it inside an init function.

    ## Why is this bad?
    bfloat16 keeps 8 bits of mantissa: small updates to a bfloat16 weight round away (training
    stalls), and initial distributions lose their tails. Mixed precision keeps float32 master
    parameters and casts them for the computation.

    ## Example
    ```python
    def init_params(key):
        return {"w": jax.random.normal(key, (512, 512), dtype=jnp.bfloat16)}
    ```

    ## Use instead
    ```python
    def init_params(key):
        return {"w": jax.random.normal(key, (512, 512), dtype=jnp.float32)}
    # and in the step: w.astype(jnp.bfloat16)
    ```
    """
    for call in src.nodes(ast.Call) if src.imports_any("jax", "flax", "equinox") else ():
        found = _low_init(src, call)
        if found is not None:
            node, low, advice = found
            yield Finding.at("RAX701", node, f"Parameters initialised directly in {low}: {advice}")
