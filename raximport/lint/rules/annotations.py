"""Shape annotations (RAX101, RAX102): arrays say their shape with jaxtyping, in one vocabulary of
dimension names, so that raximport's runtime checks (and readers) can hold every function to it."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterator

from raximport.lint.registry import Finding, rule
from raximport.lint.source import SourceFile, all_args
from raximport.rewrite import annotation_expression

# Annotations that say "an array" and nothing about its shape or dtype.
BARE_ARRAYS = frozenset({"jax.Array", "jax.numpy.ndarray", "numpy.ndarray", "jaxtyping.Array", "chex.Array"})
# The seed's dimension names; a project adds its own with `dimensions = [...]`.
DIMENSIONS = frozenset(
    "batch b seq_len seq d_model d_head d_ff heads num_heads vocab_size vocab embed height h width w "
    "channels c num_gpu n_gpu batch_per_gpu".split()
)
EXAMPLE = 'Float[Array, "batch d_model"]'


def _unwrap_optional(src: SourceFile, annotation: ast.expr) -> ast.expr:
    """`X | None` and `Optional[X]` -> X."""
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        sides = [s for s in (annotation.left, annotation.right) if not (isinstance(s, ast.Constant) and s.value is None)]
        if len(sides) == 1:
            return sides[0]
    if isinstance(annotation, ast.Subscript) and src.qualname(annotation.value) in ("typing.Optional", "Optional"):
        return annotation.slice
    return annotation


def _bare(src: SourceFile, annotation: ast.expr | None) -> str | None:
    """The bare array type an annotation is (as written), or None."""
    annotation = annotation_expression(annotation)
    if annotation is None:
        return None
    annotation = _unwrap_optional(src, annotation)
    return ast.unparse(annotation) if src.qualname(annotation) in BARE_ARRAYS else None


@rule("RAX101", "array-without-shape", default=False)
def array_without_shape(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Flags an array parameter or return annotated with a bare array type (`jax.Array`,
    `jnp.ndarray`, `np.ndarray`), and a parameter or return of a jitted function left unannotated
    (static parameters, `self` and `*args`/`**kwargs` aside).

    ## Why is this bad?
    A bare `jax.Array` says nothing about the shape or dtype the function expects, which is where
    JAX code goes wrong (a transposed matrix, a missing batch axis broadcasts silently). A jaxtyping
    annotation documents it and raximport checks it at run time.

    ## Example
    ```python
    def attention(q: jax.Array, k: jax.Array) -> jax.Array:
        ...
    ```

    ## Use instead
    ```python
    def attention(q: Float[Array, "batch seq d_head"], k: Float[Array, "batch seq d_head"]
                  ) -> Float[Array, "batch seq seq"]:
        ...
    ```
    """
    if not src.imports_any("jax", "numpy", "jaxtyping", "chex"):
        return
    jitted = src.jitted()
    for fn in src.functions():
        for arg in all_args(fn):
            bare = _bare(src, arg.annotation)
            if bare:
                yield Finding.at("RAX101", arg, f"Parameter `{arg.arg}` of `{fn.name}` is a bare `{bare}`: "
                                                f"give it a jaxtyping shape (`{EXAMPLE}`)")
        bare = _bare(src, fn.returns)
        if bare and fn.returns is not None:
            yield Finding.at("RAX101", fn.returns, f"`{fn.name}` returns a bare `{bare}`: give it a jaxtyping shape "
                                                   f"(`{EXAMPLE}`)")
        spec = jitted.get(fn)
        if spec is None or any(option.startswith("static") for option in spec.dynamic):
            continue
        static = spec.static_params(fn) | {"self", "cls"}
        for arg in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs):
            if arg.annotation is None and arg.arg not in static:
                yield Finding.at("RAX101", arg, f"Parameter `{arg.arg}` of jitted `{fn.name}` has no annotation: "
                                                f"give it a jaxtyping shape (`{EXAMPLE}`, or `PyTree[...]`)")
        if fn.returns is None:
            yield Finding.at("RAX101", fn, f"Jitted `{fn.name}` has no return annotation: give it a jaxtyping "
                                           f"shape (`{EXAMPLE}`, or `PyTree[...]`)")


def _dimension_names(shape: str) -> Iterator[str]:
    """The plain dimension names of a jaxtyping shape string: numbers, `...`, `*name` (variadic) and
    expressions (`dim+1`) are not checked; `#name`, `_name` and `?name` are checked as `name`."""
    for token in shape.split():
        if token.startswith("*") or token in ("...", "_"):
            continue
        name = token.lstrip("#_?")
        if name.isidentifier():
            yield name


def _shape_strings(src: SourceFile) -> Iterator[tuple[ast.Constant, str]]:
    """(node to report at, shape string) of every jaxtyping `Dtype[Array, "shape"]` in the file,
    string annotations included (reported at the string)."""
    def shapes(subscripts: list[ast.Subscript]) -> Iterator[ast.Constant]:
        for sub in subscripts:
            parts = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else []
            if len(parts) == 2 and isinstance(parts[1], ast.Constant) and isinstance(parts[1].value, str) \
                    and (src.qualname(sub.value) or "").startswith("jaxtyping."):
                yield parts[1]

    for shape in shapes(src.nodes(ast.Subscript)):
        yield shape, shape.value
    for node in src.nodes(ast.Constant):
        if not (isinstance(node.value, str) and "[" in node.value):
            continue
        parent = src.parent(node)
        annotated = isinstance(parent, (ast.arg, ast.AnnAssign)) and parent.annotation is node
        if annotated or isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and parent.returns is node:
            try:
                inner = ast.parse(node.value, mode="eval")
            except SyntaxError:
                continue
            for shape in shapes([n for n in ast.walk(inner) if isinstance(n, ast.Subscript)]):
                yield node, shape.value


@rule("RAX102", "unknown-dimension", default=False)
def unknown_dimension(src: SourceFile) -> Iterator[Finding]:
    """## What it does
    Flags a dimension name in a jaxtyping shape (`Float[Array, "batch seq d_model"]`) that is not in
    the project's vocabulary: batch, b, seq_len, seq, d_model, d_head, d_ff, heads, num_heads,
    vocab_size, vocab, embed, height, h, width, w, channels, c, num_gpu, n_gpu, batch_per_gpu, plus
    the names in `dimensions = [...]` under [tool.raximport.lint]. Numbers, `...`, `*name` and
    expressions are always accepted.

    ## Why is this bad?
    jaxtyping binds equal names to equal sizes across a call: `seq` in one function and `T` in the
    next are never checked against each other, and readers must learn both spellings.

    ## Example
    ```python
    def embed(tokens: Int[Array, "B T"]) -> Float[Array, "B T D"]: ...
    ```

    ## Use instead
    ```python
    def embed(tokens: Int[Array, "batch seq"]) -> Float[Array, "batch seq d_model"]: ...
    ```
    """
    if not src.imports_any("jaxtyping"):
        return
    vocabulary = DIMENSIONS | src.dimensions
    for node, shape in _shape_strings(src):
        for name in dict.fromkeys(_dimension_names(shape)):
            if name in vocabulary:
                continue
            close = difflib.get_close_matches(name.lower(), sorted(vocabulary), n=1, cutoff=0.6)
            hint = f"use `{close[0]}`" if close else "use a name from it (`rax lint --explain RAX102`)"
            yield Finding.at("RAX102", node, f"Dimension `{name}` is not in the project's vocabulary: {hint}, "
                                             "or add it to `dimensions` in [tool.raximport.lint]")
