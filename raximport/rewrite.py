"""The AST rewrite: a pure function of (source, options) -> code, with the user's file and lines.

Annotated functions get an innermost `@rax_check` decorator and dataclass-like classes with
annotated fields an outermost `@rax_check_class`; both are cheap trampolines (see checks.py).
Which annotations are jaxtyping's is decided from the module's own imports and aliases, so this
module never imports jaxtyping or JAX. Every injected node carries the location of the node it serves.
"""

from __future__ import annotations

import ast
import re
from types import CodeType

OPT_OUT_MARKER = "RAX_DONT_REWRITE"
CHECK = "@rax_check"  # not a valid identifier, so it can never clash with a user's name
CHECK_CLASS = "@rax_check_class"

# jaxtyping's public annotation names, for `from jaxtyping import *`.
JAXTYPING_STAR_NAMES = frozenset(
    "AbstractArray AbstractDtype Array ArrayLike BFloat16 Bool Complex Complex64 Complex128 "
    "Float Float8e4m3b11fnuz Float8e4m3fn Float8e4m3fnuz Float8e5m2 Float8e5m2fnuz Float16 "
    "Float32 Float64 Inexact Int Int2 Int4 Int8 Int16 Int32 Int64 Integer Key Num PRNGKeyArray "
    "PyTree Real Scalar ScalarLike Shaped UInt UInt2 UInt4 UInt8 UInt16 UInt32 UInt64".split()
)
SKIP_DECORATORS = frozenset({"no_type_check", "overload"})


class _JaxtypingNames:
    """The names that denote jaxtyping in one module: imported names, module aliases, type aliases."""

    def __init__(self, tree: ast.Module) -> None:
        self.names: set[str] = set()
        self.modules: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == "jaxtyping":
                    for alias in node.names:
                        if alias.name == "*":
                            self.names |= JAXTYPING_STAR_NAMES
                        else:
                            self.names.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "jaxtyping":
                        self.modules.add(alias.asname or alias.name.split(".")[0])
        if not (self.names or self.modules):
            return
        for stmt in tree.body:  # module-level aliases such as `Tokens = Int[Array, "batch seq"]`
            value = getattr(stmt, "value", None)
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and value is not None and self.uses(value):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                self.names.update(t.id for t in targets if isinstance(t, ast.Name))

    def __bool__(self) -> bool:
        return bool(self.names or self.modules)

    def uses(self, annotation: ast.expr | None) -> bool:
        """Whether an annotation mentions jaxtyping (also inside a string annotation)."""
        if annotation is None:
            return False
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            try:
                annotation = ast.parse(annotation.value, mode="eval").body
            except SyntaxError:
                return False
        for node in ast.walk(annotation):
            if isinstance(node, ast.Name) and node.id in self.names:
                return True
            if isinstance(node, ast.Attribute):
                root = node
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in self.modules:
                    return True
        return False


def _decorator_name(node: ast.expr) -> str:
    while isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _located(node: ast.AST, where: ast.AST) -> ast.AST:
    """Give `node` and all its children the location of `where`."""
    for child in ast.walk(node):
        if "lineno" in child._attributes:
            ast.copy_location(child, where)
    return node


class _CheckInserter(ast.NodeVisitor):
    """Adds the check decorators in place; counts what it did."""

    def __init__(self, jaxtyping: _JaxtypingNames) -> None:
        self.jaxtyping = jaxtyping
        self.count = 0

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.generic_visit(node)
        if any(_decorator_name(d) in SKIP_DECORATORS for d in node.decorator_list):
            return
        args = node.args
        every_arg = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        annotations = [a.annotation for a in every_arg if a is not None] + [node.returns]
        if any(self.jaxtyping.uses(a) for a in annotations):
            node.decorator_list.append(_located(ast.Name(CHECK, ast.Load()), node))
            self.count += 1

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.generic_visit(node)
        fields = [s.annotation for s in node.body if isinstance(s, ast.AnnAssign)]
        if any(self.jaxtyping.uses(a) for a in fields):
            node.decorator_list.insert(0, _located(ast.Name(CHECK_CLASS, ast.Load()), node))
            self.count += 1

    # Coroutines are not checked: a checked wrapper would test the coroutine, not its result.
    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.generic_visit(node)


def has_opt_out_marker(tree: ast.Module, source: str) -> bool:
    """`RAX_DONT_REWRITE` in the module docstring or in a comment opts a module out."""
    if OPT_OUT_MARKER not in source:
        return False
    docstring = ast.get_docstring(tree, clean=False) or ""
    return OPT_OUT_MARKER in docstring or bool(re.search(rf"^\s*#.*{OPT_OUT_MARKER}", source, re.M))


def _prologue_end(tree: ast.Module) -> int:
    """Index of the first statement after the docstring and `from __future__` imports."""
    index = 0
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            index = 1
    while index < len(body) and isinstance(body[index], ast.ImportFrom) and body[index].module == "__future__":
        index += 1
    return index


def rewrite_tree(tree: ast.Module, source: str, *, checks: bool = True) -> int:
    """Rewrite `tree` in place; return how many definitions were instrumented."""
    if not checks or has_opt_out_marker(tree, source):
        return 0
    jaxtyping = _JaxtypingNames(tree)
    if not jaxtyping:
        return 0
    inserter = _CheckInserter(jaxtyping)
    inserter.visit(tree)
    if inserter.count:
        at = _prologue_end(tree)
        where = tree.body[at] if at < len(tree.body) else tree.body[-1]
        runtime = ast.ImportFrom(
            module="raximport.checks",
            names=[ast.alias("check", CHECK), ast.alias("check_class", CHECK_CLASS)],
            level=0,
        )
        tree.body.insert(at, _located(runtime, where))
    return inserter.count


def compile_source(source: str | bytes, filename: str, *, checks: bool = True, optimize: int = -1) -> CodeType:
    """Parse, rewrite and compile; errors in the source surface as Python's own SyntaxError."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise exc.with_traceback(None) from None  # no frames of ast.py: it points at the user's line
    text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
    rewrite_tree(tree, text, checks=checks)
    return compile(tree, filename, "exec", dont_inherit=True, optimize=optimize)
