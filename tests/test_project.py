"""The project's own promises: CI runs exactly what the README says; raximport's dependencies are
what raximport imports, what only gpt/ needs is the `gpt` extra, and what only the tests need is
the `test` extra."""

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# import name -> distribution name, where they differ
DISTRIBUTION = {"tiktoken_ext": "tiktoken", "_pytest": "pytest", "orbax": "orbax-checkpoint"}
# The pytest plugin: only pytest imports it, so it alone may import pytest, which is no dependency.
PYTEST_PLUGIN = frozenset({"pytest_plugin.py", "pytest_hook.py"})


def test_ci_runs_the_readme_test_command() -> None:
    ci_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (REPO / "README.md").read_text()
    assert f"```\n{ci_command}\n```" in readme


def _names(requirements: list[str]) -> set[str]:
    """Normalised distribution names of PEP 508 requirements ("tomli>=1.1; python_version < ..." -> tomli)."""
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r).group()).lower() for r in requirements}


def _third_party_imports(folder: Path, in_functions: bool = True, skip: frozenset[str] = frozenset()) -> set[str]:
    """Distribution names of every absolute import in folder/*.py but `skip` (function-level ones
    too, unless not `in_functions`) that is neither the standard library nor the folder's own modules."""
    own = {"raximport", folder.name} | {path.stem for path in folder.glob("*.py")}
    found = set()
    for path in folder.glob("*.py"):
        if path.name in skip:
            continue
        for node in _walk(ast.parse(path.read_text(), str(path)), in_functions):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            found |= {DISTRIBUTION.get(t, t) for t in tops if t not in sys.stdlib_module_names and t not in own}
    return _names(sorted(found))


def _walk(tree: ast.AST, in_functions: bool) -> list[ast.AST]:
    """The nodes of `tree`, without the bodies of its functions unless `in_functions`."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if in_functions or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def test_raximport_dependencies_cover_its_imports_and_leave_gpt_alone() -> None:
    dependencies = _names(PROJECT["dependencies"])
    imports = _third_party_imports(REPO / "raximport")
    assert {"jax", "jaxtyping", "beartype", "numpy", "rich", "pytest"} <= imports  # the parse sees them
    assert "pytest" not in _third_party_imports(REPO / "raximport", skip=PYTEST_PLUGIN)
    imports.discard("pytest")
    assert imports <= dependencies, f"imported by raximport/ but not a dependency: {imports - dependencies}"
    assert not dependencies & {"optax", "tiktoken"}  # gpt/'s, in the gpt extra


def test_gpt_extra_covers_what_gpt_imports() -> None:
    available = _names(PROJECT["dependencies"]) | _names(PROJECT["optional-dependencies"]["gpt"])
    imports = _third_party_imports(REPO / "gpt")
    assert {"optax", "tiktoken"} <= imports
    assert imports <= available, f"imported by gpt/ but in neither: {imports - available}"


def test_test_extra_covers_what_the_tests_import_and_raximport_leaves_it_alone() -> None:
    test_only = _names(PROJECT["optional-dependencies"]["test"])
    assert {"equinox", "flax"} <= test_only  # libraries whose modules the tests instrument
    available = _names(PROJECT["dependencies"]) | _names(PROJECT["optional-dependencies"]["gpt"]) | test_only
    imports = _third_party_imports(REPO / "tests", in_functions=False)  # a test may import a module it wrote
    assert "pytest" in imports  # the parse sees them
    assert imports <= available, f"imported by tests/ but in no extra: {imports - available}"
    assert not _third_party_imports(REPO / "raximport", skip=PYTEST_PLUGIN) & test_only
