"""One traversal of a file shared by the rules that look for a few kinds of node: every node by
type, with the function (or lambda, or module) whose body it runs in, and every call's qualified
name. A rule first asks for its candidates (`jax.random` calls, item assignments) and returns at
once if there are none, which is the common case."""

from __future__ import annotations

import ast
import weakref
from collections import defaultdict

from raximport.lint.source import SourceFile

SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


class Index:
    """The nodes of one file by type (`of`), each node's scope (`scope`), each call's name (`name`)."""

    def __init__(self, src: SourceFile) -> None:
        self._by_type: dict[type, list[ast.AST]] = defaultdict(list)
        self._scope: dict[ast.AST, ast.AST] = {}
        self._names: dict[ast.Call, str] = {}
        by_type, scopes, AST = self._by_type, self._scope, ast.AST
        stack: list[tuple[ast.AST, ast.AST]] = [(src.tree, src.tree)]
        while stack:
            node, scope = stack.pop()
            by_type[type(node)].append(node)
            scopes[node] = scope
            inner = node if isinstance(node, SCOPES) else scope
            children = []
            for field in node._fields:  # ast.iter_child_nodes, inlined: this loop is the hot path
                value = getattr(node, field, None)
                if isinstance(value, list):
                    children.extend((item, inner) for item in value if isinstance(item, AST))
                elif isinstance(value, AST):
                    children.append((value, inner))
            stack.extend(reversed(children))
        for call in self._by_type[ast.Call]:
            self._names[call] = src.qualname(call.func) or ""

    def of(self, *types: type) -> list[ast.AST]:
        """The nodes of these types, in source order within each type."""
        if len(types) == 1:
            return self._by_type.get(types[0], [])
        return [node for kind in types for node in self._by_type.get(kind, [])]

    def scope(self, node: ast.AST) -> ast.AST:
        """The function, lambda or module whose body runs `node` (a def's own scope is the outer one)."""
        return self._scope[node]

    def name(self, call: ast.Call) -> str:
        """The qualified name of what `call` calls ("" if it is not a dotted name)."""
        return self._names[call]


_INDEXES: weakref.WeakKeyDictionary[SourceFile, Index] = weakref.WeakKeyDictionary()


def index(src: SourceFile) -> Index:
    """The file's index, built on first use."""
    if src not in _INDEXES:
        _INDEXES[src] = Index(src)
    return _INDEXES[src]
