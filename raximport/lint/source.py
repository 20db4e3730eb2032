"""One parsed Python file as the lint rules see it: its tree, its imports resolved, its jitted functions.

Rules ask questions in terms of qualified names (`jax.numpy.zeros`, `jax.random.split`) so that
`import jax.numpy as jnp`, `from jax import random as jr` or `from jax import jit` all read alike.
Everything is computed once per file, on first use.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from raximport.rewrite import annotation_expression

Function = ast.FunctionDef | ast.AsyncFunctionDef
Scope = ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda

# What jits a function, by qualified name; pmap compiles too, with its own static-argument keyword.
JIT_NAMES: frozenset[str] = frozenset(
    {
        "jax.jit",
        "jax.pmap",
        "jax.experimental.pjit.pjit",
        "equinox.filter_jit",
        "equinox.filter_pmap",
        "flax.nnx.jit",
        "raximport.jit",
        "raximport.jit.jit",
    }
)
_JIT_WORDS = frozenset(name.rsplit(".", 1)[1] for name in JIT_NAMES)
PARTIAL_NAMES: frozenset[str] = frozenset({"functools.partial"})
# Annotations that denote an array (besides anything from jaxtyping).
ARRAY_TYPES: frozenset[str] = frozenset(
    {
        "jax.Array",
        "jax.numpy.ndarray",
        "jax.numpy.array",
        "jax.typing.ArrayLike",
        "numpy.ndarray",
        "numpy.typing.NDArray",
        "numpy.typing.ArrayLike",
        "chex.Array",
        "chex.ArrayDevice",
    }
)
T = TypeVar("T", bound=ast.AST)
# Fields that never hold a child worth indexing: names and flags, and the shared singleton
# contexts and operators (`Load`, `Add`); a Compare's `ops` are operators too.
_SCALAR_FIELDS = frozenset({"ctx", "op", "ops", "id", "name", "arg", "attr", "kind", "type_comment", "level",
                            "module", "asname", "conversion", "is_async", "simple", "lineno"})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}
# Fields that hold no node for these types only: lists of names (`global a, b`, a class pattern's
# keywords) and constants' values.
_NOT_CHILDREN = {ast.Global: "names", ast.Nonlocal: "names", ast.MatchClass: "kwd_attrs", ast.Constant: "value",
                 ast.MatchSingleton: "value"}
NEWLINE = re.compile(r"\r\n|\r|\n")  # what ends a line for Python (str.splitlines also splits on \f...)
_OPTIONS = ("static_argnums", "static_argnames", "donate_argnums", "donate_argnames")


@dataclass(frozen=True)
class JitSpec:
    """How a function is jitted: the qualified name used (`via`), the decorator or call (`node`),
    and the literal values of its static/donate options. `dynamic` names the options given a value
    that is not a literal (or `**kwargs`): their effect is unknown, so rules should not guess."""

    via: str
    node: ast.expr
    static_argnums: tuple[int, ...] = ()
    static_argnames: tuple[str, ...] = ()
    donate_argnums: tuple[int, ...] = ()
    donate_argnames: tuple[str, ...] = ()
    dynamic: tuple[str, ...] = field(default=())
    source: SourceFile | None = field(default=None, repr=False, compare=False)

    @property
    def donates(self) -> bool:
        """Whether any argument is (or may be) donated."""
        return bool(self.donate_argnums or self.donate_argnames) or any(o.startswith("donate") for o in self.dynamic)

    def static_params(self, fn: Function | ast.Lambda) -> set[str]:
        """Names of `fn`'s parameters made static. Under equinox's filter_jit, every parameter not
        annotated as an array is static (it traces array leaves only)."""
        positional = positional_params(fn)
        names = {name for name in self.static_argnames if name in all_params(fn)}
        for index in self.static_argnums:
            if -len(positional) <= index < len(positional):
                names.add(positional[index])
        if self.via in ("equinox.filter_jit", "equinox.filter_pmap"):
            for arg in all_args(fn):
                if self.source is None or not self.source.is_array_annotation(arg.annotation):
                    names.add(arg.arg)
        return names


def positional_params(fn: Function | ast.Lambda) -> list[str]:
    """The names of `fn`'s positional parameters, in order (what static_argnums indexes)."""
    return [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]


def all_args(fn: Function | ast.Lambda) -> list[ast.arg]:
    """Every parameter of `fn`, `*args` and `**kwargs` included."""
    a = fn.args
    return [*a.posonlyargs, *a.args, *([a.vararg] if a.vararg else []), *a.kwonlyargs, *([a.kwarg] if a.kwarg else [])]


def all_params(fn: Function | ast.Lambda) -> set[str]:
    return {a.arg for a in all_args(fn)}


def stored_names(target: ast.AST) -> list[str]:
    """The names an assignment target binds (`a`; `a, (b, *c)`; none for `x.attr` or `x[i]`)."""
    if target.__class__ is ast.Name:  # the usual target, without a walk
        return [target.id] if target.ctx.__class__ is ast.Store else []  # type: ignore[attr-defined]
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


def _child_fields(kind: type) -> tuple[str, ...]:
    """The fields of a node of type `kind` that can hold nodes worth indexing."""
    return tuple(f for f in kind._fields if f not in _SCALAR_FIELDS and _NOT_CHILDREN.get(kind) != f)


def _source_order(node: ast.AST) -> tuple[int, int]:
    return node.lineno, node.col_offset  # type: ignore[attr-defined]


def _literal(node: ast.expr, kind: type) -> tuple | None:
    """A literal `kind` or tuple/list of them as a tuple; None if it is anything else."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    values = value if isinstance(value, (tuple, list)) else (value,)
    if all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        return tuple(values)
    return None


A = TypeVar("A")
_GIVEN = ("path", "text", "dimensions")  # what a SourceFile is made of; the rest is derived


class SourceFile:
    """A Python file: `path`, `text`, `lines`, and (parsed on first use; SyntaxError if it cannot be) `tree`.

    As a context manager, leaving the `with` drops everything derived from the text: derived
    objects reference one another and the file (a jit spec its file, a rule's shared analysis its
    file), so without that they would wait for the cyclic garbage collector, which the lint engine
    runs rarely."""

    def __init__(self, path: str | Path, text: str, *, dimensions: frozenset[str] = frozenset()) -> None:
        self.path = str(path)
        self.text = text
        self.dimensions = dimensions  # dimension names the project's config adds to RAX102's vocabulary

    def __enter__(self) -> SourceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.__dict__ = {name: self.__dict__[name] for name in _GIVEN}

    def shared(self, build: Callable[[SourceFile], A]) -> A:
        """`build(self)`, built once per file: an analysis that several rules use."""
        try:
            return self._shared[build]  # type: ignore[return-value]
        except KeyError:
            value = self._shared[build] = build(self)
            return value

    @cached_property
    def _shared(self) -> dict[Callable[[SourceFile], object], object]:
        return {}

    @cached_property
    def _qualnames(self) -> dict[ast.AST, str | None]:
        """qualname's answers: rules ask about the same nodes again and again."""
        return {}

    @cached_property
    def lines(self) -> list[str]:
        """The text's lines, as Python counts them (`lines[row - 1]`)."""
        lines = NEWLINE.split(self.text)
        if lines[-1] == "":
            lines.pop()
        return lines

    @cached_property
    def tree(self) -> ast.Module:
        return ast.parse(self.text, filename=self.path, type_comments=False)

    @cached_property
    def _index(self) -> tuple[list[ast.AST], dict[ast.AST, ast.AST], dict[type, list[ast.AST]]]:
        """One walk of the tree (in ast.walk's order): every node, each one's parent, nodes by type.
        Contexts and operators (`Load`, `Add`: shared singletons) are left out."""
        order: list[ast.AST] = [self.tree]  # also the walk's queue: a list iterates what it gains
        parents: dict[ast.AST, ast.AST] = {}
        by_type: defaultdict[type, list[ast.AST]] = defaultdict(list)
        extend, AST = order.extend, ast.AST
        for node in order:
            kind = node.__class__
            by_type[kind].append(node)
            fields = _CHILD_FIELDS.get(kind)
            if fields is None:
                fields = _CHILD_FIELDS[kind] = _child_fields(kind)
            for name in fields:
                value = getattr(node, name, None)
                if value.__class__ is list:
                    if value:
                        if None in value:  # a Dict's key for `**x`, a keyword-only parameter's default
                            value = [child for child in value if child is not None]
                        extend(value)
                        parents.update(dict.fromkeys(value, node))
                elif isinstance(value, AST):
                    order.append(value)
                    parents[value] = node
        return order, parents, by_type

    def nodes(self, *types: type[T]) -> list[T]:
        """Every node of the tree of one of `types` (all nodes if none), in ast.walk's order (in source
        order when several types are asked for); one walk per file serves every rule (a rule that
        walks the tree itself pays for it again)."""
        order, _, by_type = self._index
        if not types:
            return order  # type: ignore[return-value]
        if any(t.__subclasses__() or "lineno" not in t._attributes for t in types):
            return [node for node in order if isinstance(node, types)]  # type: ignore[misc]
        found = [by_type[t] for t in types if t in by_type]
        if len(found) <= 1:
            return found[0] if found else []  # type: ignore[return-value]
        return sorted((n for nodes in found for n in nodes), key=_source_order)  # type: ignore[misc]

    def parent(self, node: ast.AST) -> ast.AST | None:
        """The node directly containing `node` (None for the module)."""
        return self._index[1].get(node)

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        """The nodes containing `node`, innermost first."""
        parents = self._index[1]
        current = parents.get(node)
        while current is not None:
            yield current
            current = parents.get(current)

    def scope(self, node: ast.AST) -> Scope:
        """The innermost function, lambda, class or module containing `node`."""
        for ancestor in self.ancestors(node):
            if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.Module)):
                return ancestor
        return self.tree

    def enclosing_function(self, node: ast.AST) -> Function | ast.Lambda | None:
        """The innermost function or lambda containing `node`, or None at module or class level."""
        for ancestor in self.ancestors(node):
            if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return ancestor
        return None

    @cached_property
    def imports(self) -> dict[str, str]:
        """Local name -> qualified name, for every import anywhere in the file (absolute imports)."""
        names: dict[str, str] = {}
        for node in self.nodes(ast.Import, ast.ImportFrom):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        names[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        names[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if alias.name != "*":
                        names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        return names

    def imports_any(self, *packages: str) -> bool:
        """Whether the file imports anything from one of `packages` ("jax" covers jax.numpy...):
        a rule about JAX has nothing to find in a file that imports none of it. A package whose name
        is nowhere in the text is not imported: that answer needs no parse."""
        packages = tuple(p for p in packages if p in self.text)
        return bool(packages) and any(name == p or name.startswith(p + ".") for name in self.imports.values() for p in packages)

    def qualname(self, expr: ast.AST) -> str | None:
        """The dotted name `expr` stands for, import aliases resolved (`jnp.zeros` -> "jax.numpy.zeros").
        A name no import binds stands for itself ("print", "self.params"); None for anything but a
        dotted name."""
        try:
            return self._qualnames[expr]
        except KeyError:
            name = self._qualnames[expr] = self._resolve(expr)
            return name

    def _resolve(self, expr: ast.AST) -> str | None:
        parts: list[str] = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        parts.append(self.imports.get(expr.id, expr.id))
        return ".".join(reversed(parts))

    def is_builtin(self, expr: ast.AST, name: str) -> bool:
        """Whether `expr` is the builtin `name` (not shadowed by an import)."""
        return isinstance(expr, ast.Name) and expr.id == name and name not in self.imports and hasattr(builtins, name)

    def functions(self) -> list[Function]:
        """Every function and method definition, in ast.walk's order."""
        return self.nodes(ast.FunctionDef, ast.AsyncFunctionDef)

    def is_array_annotation(self, annotation: ast.expr | None) -> bool:
        """Whether an annotation names an array type (jax.Array, jnp.ndarray, anything from jaxtyping...)."""
        annotation = annotation_expression(annotation)
        if annotation is None:
            return False
        for node in ast.walk(annotation):
            name = self.qualname(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
            if name and (name in ARRAY_TYPES or name.startswith("jaxtyping.")):
                return True
        return False

    def jit_spec(self, expr: ast.expr) -> JitSpec | None:
        """The JitSpec if `expr` is a jit transform usable as a decorator: `jax.jit`, `jax.jit(...)` with
        options only, or `partial(jax.jit, ...)`."""
        if not isinstance(expr, ast.Call):
            name = self.qualname(expr)
            return JitSpec(via=name, node=expr, source=self) if name in JIT_NAMES else None
        func = self.qualname(expr.func)
        if func in JIT_NAMES and not expr.args:
            return self._spec(func, expr, expr.keywords)
        if func in PARTIAL_NAMES and expr.args and self.qualname(expr.args[0]) in JIT_NAMES and len(expr.args) == 1:
            return self._spec(self.qualname(expr.args[0]) or "", expr, expr.keywords)
        return None

    def _spec(self, via: str, node: ast.expr, keywords: list[ast.keyword]) -> JitSpec:
        values: dict[str, tuple] = {}
        dynamic: list[str] = []
        for keyword in keywords:
            option = keyword.arg
            if option is None:
                dynamic.append("**")
                continue
            if option == "static_broadcasted_argnums":  # pmap's name for static_argnums
                option = "static_argnums"
            if option not in _OPTIONS:
                continue
            value = _literal(keyword.value, int if option.endswith("nums") else str)
            if value is None:
                dynamic.append(option)
            else:
                values[option] = value
        if "**" in dynamic:
            dynamic = [*dynamic, *_OPTIONS]
        return JitSpec(via=via, node=node, dynamic=tuple(dynamic), source=self, **values)

    @cached_property
    def _jitted(self) -> dict[Function | ast.Lambda, JitSpec]:
        found: dict[Function | ast.Lambda, JitSpec] = {}
        if not any(word in self.text for word in _JIT_WORDS):
            return found  # a jit's name is in the text: where it is called, or in the import that binds it
        if not self.imports_any(*{name.split(".")[0] for name in JIT_NAMES}):
            return found
        for fn in self.functions():
            for decorator in fn.decorator_list:
                spec = self.jit_spec(decorator)
                if spec is not None:
                    found.setdefault(fn, spec)
                    break
        for call in self.nodes(ast.Call):
            if not (call.args and self.qualname(call.func) in JIT_NAMES):
                continue
            spec = self._spec(self.qualname(call.func) or "", call, call.keywords)
            for target in self._defined(call.args[0]):
                found.setdefault(target, spec)
        return found

    def jitted(self) -> dict[Function | ast.Lambda, JitSpec]:
        """Every function this module jits: decorated, or passed to a jit call here (by name, as
        `self.method`, or as a lambda)."""
        return self._jitted

    def _defined(self, expr: ast.expr) -> list[Function | ast.Lambda]:
        """The definitions in this module that `expr` (a lambda, a name, `self.name`) refers to."""
        if isinstance(expr, ast.Lambda):
            return [expr]
        if isinstance(expr, ast.Name):  # the nearest definition of that name in its scope, else the module's
            for scope in (self.scope(expr), self.tree):
                defs = [f for f in self.functions() if f.name == expr.id and self.scope(f) is scope]
                before = [f for f in defs if f.lineno <= expr.lineno]
                if defs:
                    return (before or defs)[-1:]
            return []
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id in ("self", "cls"):
            cls = next((a for a in self.ancestors(expr) if isinstance(a, ast.ClassDef)), None)
            if cls is not None:
                return [
                    s for s in cls.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == expr.attr
                ][-1:]
        return []
