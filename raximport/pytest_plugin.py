"""`pytest --rax`: run a test suite with the project under test instrumented, as `python -m raximport`
instruments a script: the rootdir's packages, its conftests and test modules (and `--rax-packages`).

Registered by raximport's `pytest11` entry point, and loadable with `-p raximport.pytest_plugin`
(the entry point has that name, so both together load it once). Without `--rax` it only adds its
options and imports nothing else, so every pytest run where raximport is installed stays as it was.
The machinery lives in pytest_hook.py, imported only under `--rax`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator

import pytest

if TYPE_CHECKING:
    from raximport.session import Installation

# The live import hook of this pytest run: set before the first conftest is imported.
INSTALLATION = pytest.StashKey["Installation"]()
# Where a pytest-xdist worker hands its reports and notes to the controller (config.workeroutput).
WORKER_REPORTS = "raximport_reports"
WORKER_NOTES = "raximport_notes"
# The notes of the controller's finished workers.
NOTES = pytest.StashKey["list[str]"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("raximport", "raximport (jaxtyping shape checks, jit watch, memory check)")
    group.addoption(
        "--rax", action="store_true", default=False,
        help="instrument the project under test (the rootdir's packages, conftests and test modules) "
        "with raximport before the first conftest is imported; a failing check's report is shown with "
        "its test. Options of [tool.raximport] in the rootdir's pyproject.toml apply")
    group.addoption(
        "--rax-packages", action="append", default=[], metavar="NAMES",
        help="with --rax, also instrument these packages (comma-separated), wherever they are installed")
    group.addoption(
        "--rax-report-json", default=None, metavar="PATH",
        help="with --rax, write every raximport report of the run to PATH as JSON (pytest-xdist "
        "workers' too), with the failing test's node id in its `extra`")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Install the hook before any conftest is imported (tryfirst: before pytest's own
    implementation imports them), so that a conftest importing the package gets it checked."""
    if not getattr(early_config.known_args_namespace, "rax", False):
        return
    from raximport.pytest_hook import instrument

    installation = instrument(early_config)
    early_config.stash[INSTALLATION] = installation
    early_config.add_cleanup(installation.uninstall)


def pytest_configure(config: pytest.Config) -> None:
    """--rax on a plugin loaded after the conftests (from a conftest's `pytest_plugins`) would check
    nothing they import: a usage error, never a silent no-op."""
    if config.getoption("rax") and INSTALLATION not in config.stash:
        raise pytest.UsageError(
            "raximport: --rax: the plugin was loaded after the initial conftests, too late to instrument "
            "what they import; load it with `-p raximport.pytest_plugin` (or install raximport, whose "
            "entry point loads it) instead of a conftest's pytest_plugins")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say that the run is instrumented, and what: never silently on or off."""
    installation = config.stash.get(INSTALLATION, None)
    if installation is None:
        return []
    rax = installation.config
    packages = f", packages {', '.join(rax.packages)}" if rax.packages else ""
    return [f"raximport: instrumenting {rax.project_root}{packages}"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test whose exception raximport explains gets the report in its failure section."""
    report = yield
    installation = item.config.stash.get(INSTALLATION, None)
    if installation is not None and report.failed and call.excinfo is not None:
        from raximport.pytest_hook import attach_report

        attach_report(report, call.excinfo.value, item.nodeid, installation.config)
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: a finished worker's reports go into this run's JSON file, its notes
    into the summary (a worker that crashed has no workeroutput)."""
    installation = node.config.stash.get(INSTALLATION, None)
    if installation is None:
        return
    output = getattr(node, "workeroutput", {})
    node.config.stash.setdefault(NOTES, []).extend(output.get(WORKER_NOTES, ()))
    if output.get(WORKER_REPORTS):
        from raximport.report import record

        record(installation.config.report_json, *output[WORKER_REPORTS])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A pytest-xdist worker hands its reports and notes over; the controller (or the only process)
    writes the JSON file with the run's exit status, trylast so that the workers have finished."""
    installation = session.config.stash.get(INSTALLATION, None)
    if installation is None:
        return
    from raximport.report import notes, recorded, write_json

    path = installation.config.report_json
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[WORKER_NOTES] = notes()
        workeroutput[WORKER_REPORTS] = recorded(path) if path else []
    elif path:
        write_json(path, int(exitstatus))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """raximport's notes (a stage that stepped aside, a module another import hook took), workers'
    too: pytest's capture hid them when they were printed during collection."""
    if INSTALLATION not in config.stash:
        return
    from raximport.report import notes

    said = dict.fromkeys([*notes(), *config.stash.get(NOTES, [])])
    if said:
        terminalreporter.section("raximport notes")
        for message in said:
            terminalreporter.line(f"raximport: {message}")
