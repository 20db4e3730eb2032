"""The import hook under `pytest --rax` (imported by pytest_plugin.py only then).

raximport's finder, which also takes the modules pytest's assertion rewriter would load (test
modules, conftests, modules registered with `pytest.register_assert_rewrite`) and compiles them
through both rewrites, raximport's first (it sees the source as written), then pytest's, so a test
module is checked and keeps pytest's detailed assert messages.

Composed code is cached only in raximport's bytecode cache, under a key naming pytest's rewrite
(its version and the ini value that shapes it). pytest keeps its own rewritten code in
`__pycache__/<name>.<PYTEST_TAG>.pyc`, keyed on the source alone, and this loader never reads or
writes those files (nor importlib's pycs): a run without --rax never loads a composed module, and a
run with it never loads pytest's plain one.
"""

from __future__ import annotations

import ast
import dataclasses
from types import CodeType

import pytest
from _pytest.assertion.rewrite import PYTEST_TAG, AssertionRewritingHook, rewrite_asserts

from raximport.config import Config, ConfigError, load_config
from raximport.failsafe import stepped_aside
from raximport.hook import BytecodeCache, RaxFinder, RaxLoader, load_rewritten
from raximport.report import record
from raximport.session import Installation, install, missed_modules


class AssertingRaxLoader(RaxLoader):
    """raximport's rewrite, then pytest's assertion rewrite."""

    def __init__(self, fullname: str, path: str, config: Config, cache: BytecodeCache,
                 pytest_config: pytest.Config) -> None:
        super().__init__(fullname, path, config, cache)
        self.pytest_config = pytest_config

    def get_code(self, fullname: str) -> CodeType:
        source = self.get_data(self.path)

        def rewrite_assertions(tree: ast.Module) -> None:
            rewrite_asserts(tree, source, self.path, self.pytest_config)

        return load_rewritten(self.path, self.config, self.cache, source, then=rewrite_assertions)


class PytestRaxFinder(RaxFinder):
    """RaxFinder that composes its rewrite with pytest's for the modules pytest's rewriter takes."""

    def __init__(self, config: Config, pytest_config: pytest.Config) -> None:
        super().__init__(config)
        self.pytest_config = pytest_config
        pass_hook = pytest_config.getini("enable_assertion_pass_hook")
        key = f"{config.rewrite_key()} then pytest's assertion rewrite {PYTEST_TAG} pass_hook={pass_hook}"
        self.asserting_cache = BytecodeCache(config.cache_dir, key)

    def loader_for(self, fullname: str, origin: str, found: object) -> RaxLoader | None:
        if isinstance(found, AssertionRewritingHook):
            return AssertingRaxLoader(fullname, origin, self.config, self.asserting_cache, self.pytest_config)
        return super().loader_for(fullname, origin, found)


def rax_config(pytest_config: pytest.Config) -> Config:
    """defaults < the rootdir's pyproject.toml [tool.raximport] < RAX_* < the command line;
    --rax-packages adds to the configured packages."""
    options = pytest_config.known_args_namespace
    root = pytest_config.rootpath
    extra = tuple(part.strip() for value in options.rax_packages for part in value.split(",") if part.strip())
    try:
        configured = load_config(root=root).packages
        overrides = {"packages": configured + extra if extra else None, "report_json": options.rax_report_json}
        return load_config(overrides, root=root, origin=lambda name: "--rax-" + name.replace("_", "-"))
    except ConfigError as exc:
        raise pytest.UsageError(f"raximport: {exc}") from None


def instrument(pytest_config: pytest.Config) -> Installation:
    """Install the hook; a module to instrument that something imported earlier is a usage error
    naming it, never a silent no-op (it would run unchecked)."""
    config = rax_config(pytest_config)
    missed = missed_modules(RaxFinder(config))
    if missed:
        packages = sorted({name.split(".")[0] for name in missed})
        shown = ", ".join(missed[:10]) + (f" and {len(missed) - 10} more" if len(missed) > 10 else "")
        raise pytest.UsageError(
            f"raximport: --rax cannot instrument {', '.join(packages)}: {shown} "
            f"{'was' if len(missed) == 1 else 'were'} imported before pytest loaded its first conftest "
            "(by a plugin given with -p or installed, a sitecustomize or .pth file, PYTHONSTARTUP), so "
            "they would run unchecked. Stop that early import, or leave them out with [tool.raximport] "
            "exclude in pyproject.toml")
    return install(config=config, finder=lambda config: PytestRaxFinder(config, pytest_config))


def attach_report(test_report: pytest.TestReport, exc: BaseException, nodeid: str, config: Config) -> None:
    """raximport's report of a failed test's exception, in the test's failure section (a section of
    its longrepr, so it shows whatever --show-capture says) and in the JSON file; nothing for an
    exception raximport has nothing to add to."""
    try:
        from raximport.explain import explain

        report = explain(exc)
    except Exception as error:  # the explanation must never hide the failure itself
        stepped_aside("the report", type(exc).__name__, error, config)
        return
    if report.kind == "error":
        return
    report = dataclasses.replace(report, extra={**report.extra, "test": nodeid})
    if hasattr(test_report.longrepr, "addsection"):
        test_report.longrepr.addsection("raximport", report.text())
    else:  # a plugin's own failure representation (a doctest's)
        test_report.sections.append(("raximport", report.text()))
    record(config.report_json, report)
