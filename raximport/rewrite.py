"""The AST rewrite: a pure function of (source, options) -> code, with the user's file and lines.

- Annotated functions get an innermost `@rax_check` decorator and dataclass-like classes with
  annotated fields an outermost `@rax_check_class`: cheap trampolines (see checks.py).
- Every `jax.jit` (attribute, `from jax import jit`, in `partial(...)`, aliased) becomes raximport's jit,
  and every `eqx.filter_jit` / `nnx.jit` goes through raximport's `library_jit` (the library's own object).
- Annotated, undecorated, side-effect-free module-level functions that take and return JAX arrays
  get an outermost `@rax_autojit` (see jit.py).

Which annotations are jaxtyping's is decided from the module's own imports and aliases, so this
module never imports jaxtyping or JAX. Every injected node carries the location of the node it serves.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from types import CodeType
from typing import Callable

OPT_OUT_MARKER = "RAX_DONT_REWRITE"
# Not valid identifiers, so they never clash with a user's name; the leading underscore keeps
# them out of `from module import *`.
CHECK = "_@rax_check"
CHECK_CLASS = "_@rax_check_class"
JIT = "_@rax_jit"
LIBRARY_JIT = "_@rax_library_jit"
AUTOJIT = "_@rax_autojit"
BIND = "_@rax_bind"
# The Config that instrumented the module: the loader (and the runner, for the main script) puts
# it in the module's globals before the code runs, and the module's jit and autojit are bound to it.
CONFIG = "_@rax_config"


@dataclass(frozen=True)
class RewriteOptions:
    """What the rewrite does; every field is part of the bytecode cache key."""

    checks: bool = True
    jit: bool = True
    autojit: bool = True


# jaxtyping's public annotation names, for `from jaxtyping import *`.
JAXTYPING_STAR_NAMES = frozenset(
    "AbstractArray AbstractDtype Array ArrayLike BFloat16 Bool Complex Complex64 Complex128 "
    "Float Float8e4m3b11fnuz Float8e4m3fn Float8e4m3fnuz Float8e5m2 Float8e5m2fnuz Float16 "
    "Float32 Float64 Inexact Int Int2 Int4 Int8 Int16 Int32 Int64 Integer Key Num PRNGKeyArray "
    "PyTree Real Scalar ScalarLike Shaped UInt UInt2 UInt4 UInt8 UInt16 UInt32 UInt64".split()
)
SKIP_DECORATORS = frozenset({"no_type_check", "overload"})



def annotation_expression(annotation: ast.expr | None) -> ast.expr | None:
    """An annotation as an expression: a string annotation (`"Float[Array, 'b']"`) parsed; None for
    none, or for a string that is not an expression."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            return ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return None
    return annotation


class _JaxtypingNames:
    """The names that denote jaxtyping in one module: imported names, module aliases, type aliases."""

    def __init__(self, tree: ast.Module, source: str) -> None:
        self.names: set[str] = set()
        self.modules: set[str] = set()
        if "jaxtyping" not in source:
            return
        for node in _statements(tree):
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
        annotation = annotation_expression(annotation)
        if annotation is None:
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


def _statements(tree: ast.AST) -> "list[ast.stmt]":
    """Every statement, nested ones included, without visiting expressions (imports live here)."""
    found: list[ast.AST] = [tree]
    index = 0
    while index < len(found):
        node = found[index]
        index += 1
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                found.extend(block)
    return found  # type: ignore[return-value]


def _as_list(node: "ast.AST | list[ast.AST]") -> "list[ast.AST]":
    return node if isinstance(node, list) else [node]


# The jits of libraries built on jax.jit, by module: they go through raximport.jit.library_jit.
LIBRARY_JITS = {"equinox": "filter_jit", "flax.nnx": "jit"}


class _JitRedirect(ast.NodeTransformer):
    """`jax.jit` and `from jax import jit` -> raximport's jit; `eqx.filter_jit` and `nnx.jit` (and
    their from-imports) -> `library_jit(<the library's jit>)`, for the whole module."""

    def __init__(self, tree: ast.Module, source: str) -> None:
        self.jax_names = set()
        self.library_names: dict[str, str] = {}  # a name bound to equinox or flax.nnx -> its jit's name
        for node in _statements(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "jax" or (alias.name.startswith("jax.") and not alias.asname):
                        self.jax_names.add(alias.asname or "jax")
                    if alias.name in LIBRARY_JITS and (alias.asname or "." not in alias.name):
                        self.library_names[alias.asname or alias.name] = LIBRARY_JITS[alias.name]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in LIBRARY_JITS:
                        self.library_names[alias.asname or alias.name] = LIBRARY_JITS[f"{node.module}.{alias.name}"]
        attributes = set(re.findall(r"(\w+)\s*\.\s*(\w+)\b", source))
        self.attribute_used = any(
            (name in self.jax_names and attr == "jit") or self.library_names.get(name) == attr
            for name, attr in attributes)
        self.count = 0
        self.library_count = 0

    def run(self, tree: ast.Module) -> None:
        """Visit every expression only where `<jax>.jit` occurs in the text; imports are statements."""
        if self.attribute_used:
            self.visit(tree)
            return
        for parent in _statements(tree):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(parent, field, None)
                if isinstance(block, list):
                    block[:] = [new for stmt in block for new in _as_list(self.visit_ImportFrom(stmt) if isinstance(stmt, ast.ImportFrom) else stmt)]

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.ctx, ast.Load) or not isinstance(node.value, ast.Name):
            return node
        if node.attr == "jit" and node.value.id in self.jax_names:
            self.count += 1
            return _located(ast.Name(JIT, ast.Load()), node)
        if self.library_names.get(node.value.id) == node.attr:
            self.library_count += 1
            return _located(ast.Call(ast.Name(LIBRARY_JIT, ast.Load()), [node], []), node)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | list[ast.AST]:
        jit_name = LIBRARY_JITS.get(node.module or "") if not node.level else None
        if jit_name and any(a.name == jit_name for a in node.names):  # `from equinox import filter_jit`
            jits = [a.asname or a.name for a in node.names if a.name == jit_name]
            self.library_count += len(jits)
            return [node, *(_located(ast.Assign([ast.Name(name, ast.Store())], ast.Call(
                ast.Name(LIBRARY_JIT, ast.Load()), [ast.Name(name, ast.Load())], [])), node) for name in jits)]
        if node.module != "jax" or node.level or not any(a.name == "jit" for a in node.names):
            return node
        self.count += 1
        ours = [a for a in node.names if a.name == "jit"]
        redirected = _located(ast.ImportFrom(module="raximport.jit", names=ours, level=0), node)
        node.names = [a for a in node.names if a.name != "jit"]
        return [node, redirected] if node.names else redirected


IMPURE_CALLS = frozenset({"print", "open", "input", "exec", "eval", "breakpoint", "setattr", "delattr", "exit", "quit"})
IMPURE_MODULES = frozenset(
    {"logging", "logger", "log", "os", "sys", "time", "random", "shutil", "subprocess", "pickle", "json", "io",
     "warnings", "tqdm", "wandb", "rich", "console", "pathlib", "socket", "threading", "builtins"}
)
MUTATING_METHODS = frozenset(  # called as a statement, on something the function did not create
    {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem", "add", "discard",
     "write", "writelines", "flush", "save", "savez", "dump", "put", "send", "close", "seek", "sort", "reverse"}
)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def has_visible_side_effects(fn: ast.FunctionDef) -> bool:
    """Printing, logging, I/O, globals, or writes to what it was given: such a function is never auto-jitted."""
    local_names = {
        n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    } - {a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)}
    for node in ast.walk(fn):
        if isinstance(node, (ast.Global, ast.Nonlocal, ast.Yield, ast.YieldFrom, ast.Await)):
            return True
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in IMPURE_CALLS:
                return True
            if isinstance(func, ast.Attribute):
                root = _root_name(func)
                chain = ast.unparse(func)
                if root in IMPURE_MODULES or (root in ("np", "numpy") and ".random." in f".{chain}"):
                    return True
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):  # `params.update(...)` as a statement
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr in MUTATING_METHODS:
                root = _root_name(func)
                if root is not None and root not in local_names:
                    return True
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            if isinstance(target, (ast.Attribute, ast.Subscript)) and _root_name(target) not in local_names:
                return True
    return False


def _mentions_jax_array(annotation: ast.expr | None, jaxtyping: _JaxtypingNames) -> bool:
    """A jaxtyping annotation over JAX arrays (`Float[Array, ...]`), not over numpy's."""
    if annotation is None or not jaxtyping.uses(annotation):
        return False
    text = ast.unparse(annotation)
    return "Array" in text.replace("ndarray", "") and "np." not in text and "numpy" not in text


_PYTHON_VALUES = frozenset({"bool", "int", "float", "complex", "str", "bytes", "None"})


def _union_members(annotation: ast.expr) -> list[ast.expr]:
    """`a | b`, `Union[a, b]` and `Optional[a]` -> their members; anything else -> itself."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return [annotation]
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _union_members(annotation.left) + _union_members(annotation.right)
    if isinstance(annotation, ast.Subscript):
        name = annotation.value.attr if isinstance(annotation.value, ast.Attribute) else getattr(annotation.value, "id", "")
        if name in ("Union", "Optional"):
            members = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
            return [m for member in members for m in _union_members(member)] + ([ast.Constant(None)] if name == "Optional" else [])
    return [annotation]


def _may_return_python_values(returns: ast.expr | None) -> bool:
    """A return annotation that admits a Python value (`Bool[Array, ""] | bool`): under jit that
    value would come back as an array, so the function is not auto-jitted (equinox's tree_equal)."""
    return returns is not None and any(
        (isinstance(m, ast.Name) and m.id in _PYTHON_VALUES) or (isinstance(m, ast.Constant) and m.value is None)
        for m in _union_members(returns))


def _wants_autojit(fn: ast.FunctionDef, jaxtyping: _JaxtypingNames) -> bool:
    if fn.decorator_list and not all(isinstance(d, ast.Name) and d.id == CHECK for d in fn.decorator_list):
        return False
    params = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
    if any(a.annotation is not None and "ndarray" in ast.unparse(a.annotation) for a in params):
        return False
    if _may_return_python_values(fn.returns):
        return False
    takes_arrays = any(_mentions_jax_array(a.annotation, jaxtyping) for a in params)
    return takes_arrays and _mentions_jax_array(fn.returns, jaxtyping) and not has_visible_side_effects(fn)


def rewrite_tree(tree: ast.Module, source: str, options: RewriteOptions = RewriteOptions()) -> int:
    """Rewrite `tree` in place; return how many places were instrumented."""
    if has_opt_out_marker(tree, source):
        return 0
    runtime: list[ast.alias] = []
    count = 0
    if options.jit and "jit" in source:
        redirect = _JitRedirect(tree, source)
        redirect.run(tree)
        if redirect.count:
            runtime.append(ast.alias("jit", JIT))
        if redirect.library_count:
            runtime.append(ast.alias("library_jit", LIBRARY_JIT))
        count += redirect.count + redirect.library_count
    jaxtyping = _JaxtypingNames(tree, source)
    if jaxtyping and options.checks:
        inserter = _CheckInserter(jaxtyping)
        inserter.visit(tree)
        if inserter.count:
            runtime += [ast.alias("check", CHECK), ast.alias("check_class", CHECK_CLASS)]
            count += inserter.count
    if jaxtyping and options.autojit:
        autojitted = [fn for fn in tree.body if isinstance(fn, ast.FunctionDef) and _wants_autojit(fn, jaxtyping)]
        for fn in autojitted:
            fn.decorator_list.insert(0, _located(ast.Name(AUTOJIT, ast.Load()), fn))
        if autojitted:
            runtime.append(ast.alias("autojit", AUTOJIT))
            count += len(autojitted)
    if runtime:
        at = _prologue_end(tree)
        where = tree.body[at] if at < len(tree.body) else tree.body[-1]
        checks = [alias for alias in runtime if alias.asname in (CHECK, CHECK_CLASS)]
        bound = [alias for alias in runtime if alias not in checks]
        prologue: list[ast.stmt] = []
        if checks:
            prologue.append(ast.ImportFrom(module="raximport.checks", names=checks, level=0))
        if bound:
            prologue.append(ast.ImportFrom(module="raximport.jit", names=[ast.alias("bind", BIND)], level=0))
            prologue += [ast.Assign([ast.Name(alias.asname, ast.Store())], ast.Call(
                ast.Name(BIND, ast.Load()), [ast.Name(CONFIG, ast.Load()), ast.Constant(alias.name)], []))
                for alias in bound]
        tree.body[at:at] = [_located(statement, where) for statement in prologue]
    return count


def compile_source(
    source: str | bytes,
    filename: str,
    options: RewriteOptions = RewriteOptions(),
    *,
    optimize: int = -1,
    then: Callable[[ast.Module], None] | None = None,
) -> CodeType:
    """Parse, rewrite and compile; errors in the source surface as Python's own SyntaxError.

    `then` rewrites the tree further after raximport's rewrite, which so sees the source as written
    (the pytest plugin's: pytest's assertion rewrite of a test module).
    """
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise exc.with_traceback(None) from None  # no frames of ast.py: it points at the user's line
    text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
    rewrite_tree(tree, text, options)
    if then is not None:
        then(tree)
    return compile(tree, filename, "exec", dont_inherit=True, optimize=optimize)
