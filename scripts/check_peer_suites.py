#!/usr/bin/env python
"""Run the test suites of equinox, jaxtyping (and a subset of flax's tests/nnx) plain and under
raximport, and list every test whose outcome differs.

raximport's promise is that it never breaks code that works plain. This check holds it to that on
other people's test suites: each suite is run twice against the *installed* library,

  plain      python -m pytest ...
  raximport  python -m raximport -p LIB -m pytest ...   (LIB's modules rewritten on import)

with JAX_PLATFORMS=cpu and a private, fresh RAX_CACHE_DIR, and the two runs' outcomes are compared
test by test (from pytest's --junitxml). Per suite it prints the tests run, the passed / failed /
skipped / error counts of each run, every test whose outcome differs (node id, plain outcome,
raximport outcome, the first lines of the raximport failure) and the wall-time ratio.

Where the tests come from. The tests are fetched at check time, never copied into this project:

  1. the source archive of the installed version, `pip download --no-deps --no-binary :all:
     DIST==VERSION -d WORK/downloads` (cached: a rerun is offline);
  2. if that sdist ships no tests (equinox's and jaxtyping's do not), a local git clone or checkout
     named with `--source DIST=PATH`: the tests are exported from its tag vVERSION (or VERSION)
     with `git archive`, or copied from a plain directory (nothing is fetched from the network);
  3. otherwise the suite is skipped, and the report says why.

Only the tests directory and the project's pytest configuration (pyproject.toml / setup.cfg /
pytest.ini) are unpacked, into WORK/src/DIST-VERSION/, and pytest runs from there: the library
imported is the installed one, never the archive's copy (the report shows the path imported).

Test-only requirements the suites import (jaxtyping's conftest imports typeguard 2.x) that the
interpreter lacks are installed with `pip install --no-deps --target WORK/testdeps` (cached) and
put on PYTHONPATH for both runs; `--no-test-deps` turns that off. pytest-timeout is added the same
way so that `--timeout` can bound each test.

equinox's own pytest config turns on jaxtyping's import hook for equinox (addopts
`--jaxtyping-packages=equinox,...`); a module another import hook takes is left alone by
raximport, so by default the suites' `addopts` are cleared (`-o addopts=`) in both runs, so that
the raximport run actually instruments the library. `--keep-addopts` keeps them.

Examples:

    python scripts/check_peer_suites.py --source equinox=~/src/equinox --source jaxtyping=~/src/jaxtyping
    python scripts/check_peer_suites.py --suites jaxtyping --files jaxtyping=test/test_array.py
    python scripts/check_peer_suites.py --suites equinox,jaxtyping,flax --json peers.json

Exit status: 0 when every test has the same outcome in both runs, 1 when any outcome differs (or a
run crashed or timed out), 2 when no suite could be run at all (or a usage error).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# One entry per suite this check knows how to run.
#   tests:        the tests directory inside the sdist / repository
#   package:      what `python -m raximport -p` instruments
#   test_deps:    test-only requirements (pip specs, import names) the suite imports
#   default_files: the subset run when no --files / --all is given (paths relative to the suite
#                 root); None runs the whole tests directory
SUITES: dict[str, dict[str, Any]] = {
    "equinox": {
        "dist": "equinox",
        "package": "equinox",
        "tests": "tests",
        "test_deps": [],
        "default_files": [
            "tests/test_module.py",
            "tests/test_jit.py",
            "tests/test_filters.py",
            "tests/test_tree.py",
            "tests/test_nn.py",
            "tests/test_stateful.py",
            "tests/test_vmap.py",
            "tests/test_ad.py",
            "tests/test_enum.py",
        ],
    },
    "jaxtyping": {
        "dist": "jaxtyping",
        "package": "jaxtyping",
        "tests": "test",
        "test_deps": [("typeguard==2.13.3", "typeguard"), ("cloudpickle", "cloudpickle")],
        "default_files": [
            "test/test_array.py",
            "test/test_decorator.py",
            "test/test_messages.py",
            "test/test_pytree.py",
            "test/test_serialisation.py",
            "test/test_generators.py",
            "test/test_threading.py",
        ],
    },
    "flax": {
        "dist": "flax",
        "package": "flax",
        "tests": "tests/nnx",
        "test_deps": [("cloudpickle", "cloudpickle")],
        "default_files": [
            "tests/nnx/nn/linear_test.py",
            "tests/nnx/rngs_test.py",
            "tests/nnx/variable_test.py",
            "tests/nnx/filters_test.py",
        ],
    },
}
DEFAULT_SUITES = ["equinox", "jaxtyping"]
CONFIG_FILES = ("pyproject.toml", "setup.cfg", "pytest.ini", "tox.ini")
OUTCOMES = ("passed", "failed", "skipped", "error")
FAIL_LINES = 12


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# junit parsing and comparison (pure; unit-tested offline)
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    outcome: str  # passed | failed | skipped | error
    message: str = ""  # the failure's message and the first lines of its traceback


_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def _node_id(case: ET.Element) -> str:
    """pytest's node id, rebuilt from a junit testcase (xunit1 gives `file`)."""
    name = case.get("name", "")
    classname = case.get("classname", "")
    file = case.get("file")
    if not file:
        return f"{classname}::{name}" if classname else name
    module = file[:-3] if file.endswith(".py") else file
    dotted = module.replace("/", ".").replace("\\", ".")
    classes = classname[len(dotted) :].lstrip(".") if classname.startswith(dotted) else ""
    parts = [file] + ([c for c in classes.split(".") if c] if classes else []) + [name]
    return "::".join(parts)


def parse_junit(path: Path) -> dict[str, Result]:
    """Outcome of every test in a pytest junit xml; a test reported twice (a teardown error after
    a pass) keeps its worst outcome. xfail counts as skipped, xpass as passed, as pytest's junit
    writes them."""
    results: dict[str, Result] = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            tag = child.tag
            if tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                head = child.get("message") or ""
                body = (child.text or "").strip()
                message = "\n".join(x for x in (head, body) if x)
                break
        key = _node_id(case)
        old = results.get(key)
        if old is None or _RANK[outcome] > _RANK[old.outcome]:
            results[key] = Result(outcome, message)
    return results


def counts(results: dict[str, Result]) -> dict[str, int]:
    c = {o: 0 for o in OUTCOMES}
    for r in results.values():
        c[r.outcome] += 1
    return c


def first_lines(text: str, n: int = FAIL_LINES) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    out = lines[:n]
    if len(lines) > n:
        out.append(f"... ({len(lines) - n} more lines)")
    return "\n".join(out)


@dataclass
class Difference:
    node_id: str
    plain: str
    raximport: str
    raximport_failure: str = ""
    plain_failure: str = ""


def compare(plain: dict[str, Result], rax: dict[str, Result]) -> list[Difference]:
    """Every test whose outcome differs; a test missing from one run is 'missing' there."""
    diffs = []
    for key in sorted(set(plain) | set(rax)):
        p, r = plain.get(key), rax.get(key)
        po = p.outcome if p else "missing"
        ro = r.outcome if r else "missing"
        if po != ro:
            diffs.append(
                Difference(
                    key,
                    po,
                    ro,
                    first_lines(r.message) if r else "",
                    first_lines(p.message) if p else "",
                )
            )
    return diffs


# --------------------------------------------------------------------------------------------
# fetching the tests
# --------------------------------------------------------------------------------------------


class Skip(Exception):
    """This suite cannot be run; the message says why."""


def _safe_members(tar: tarfile.TarFile, prefix: str, wanted: tuple[str, ...]):
    for m in tar.getmembers():
        if not m.name.startswith(prefix):
            continue
        rel = m.name[len(prefix) :]
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            continue
        if not (m.isfile() or m.isdir()):
            continue
        if any(rel == w or rel.startswith(w.rstrip("/") + "/") for w in wanted):
            yield m, rel


def fetch_sdist(dist: str, version: str, work: Path, offline: bool) -> Path:
    downloads = work / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    names = [f"{dist}-{version}.tar.gz", f"{dist.replace('-', '_')}-{version}.tar.gz"]
    for name in names:
        if (downloads / name).is_file():
            return downloads / name
    if offline:
        raise Skip(f"no cached sdist {names[0]} in {downloads} and --offline")
    log(f"[{dist}] pip download --no-deps --no-binary :all: {dist}=={version}")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--disable-pip-version-check", "-q", f"{dist}=={version}", "-d", str(downloads)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    for name in names:
        if (downloads / name).is_file():
            return downloads / name
    raise Skip(f"pip download of the {dist}=={version} sdist failed: {first_lines(proc.stderr, 4)}")


def unpack_sdist(archive: Path, tests: str, dest: Path) -> bool:
    """Unpack the tests dir and the pytest config of an sdist into dest; False if it has no tests."""
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        prefix = top + "/"
        members = list(_safe_members(tar, prefix, (tests, *CONFIG_FILES)))
        if not any(rel == tests or rel.startswith(tests + "/") for _, rel in members):
            return False
        for m, rel in members:
            target = dest / rel
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return True


def unpack_source(source: Path, version: str, tests: str, dest: Path) -> str:
    """Export the tests of the tag vVERSION (or VERSION) from a local git repository, or copy them
    from a plain directory. Returns a description of what was used."""
    source = source.expanduser()
    is_git = subprocess.run(["git", "-C", str(source), "rev-parse", "--git-dir"],
                            capture_output=True, text=True).returncode == 0  # fmt: skip
    if is_git:
        for tag in (f"v{version}", version):
            ok = subprocess.run(["git", "-C", str(source), "rev-parse", "--verify", "-q", f"{tag}^{{commit}}"],
                                capture_output=True, text=True)  # fmt: skip
            if ok.returncode != 0:
                continue
            commit = ok.stdout.strip()
            listing = subprocess.run(["git", "-C", str(source), "ls-tree", "--name-only", tag],
                                     capture_output=True, text=True).stdout.split()  # fmt: skip
            paths = [tests] + [c for c in CONFIG_FILES if c in listing]
            dest.mkdir(parents=True, exist_ok=True)
            arch = subprocess.run(["git", "-C", str(source), "archive", "--format=tar", tag, *paths],
                                  capture_output=True)  # fmt: skip
            if arch.returncode != 0:
                raise Skip(f"git archive {tag} {tests} in {source} failed: {arch.stderr.decode()[:300]}")
            subprocess.run(["tar", "-x", "-C", str(dest)], input=arch.stdout, check=True)
            return f"git {source} tag {tag} ({commit[:12]})"
        raise Skip(f"{source} has no tag v{version} or {version} (the installed version)")
    if not (source / tests).is_dir():
        raise Skip(f"{source} has no {tests}/ directory")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / tests, dest / tests, dirs_exist_ok=True)
    for c in CONFIG_FILES:
        if (source / c).is_file():
            shutil.copy2(source / c, dest / c)
    return f"directory {source} (its version is not checked against {version})"


def prepare_suite(name: str, spec: dict[str, Any], version: str, work: Path, source: Path | None,
                  offline: bool) -> tuple[Path, str]:  # fmt: skip
    """The directory to run pytest in, and where its tests came from."""
    dest = work / "src" / f"{spec['dist']}-{version}"
    stamp = dest / ".origin"
    if stamp.is_file() and (dest / spec["tests"]).is_dir():
        return dest, stamp.read_text().strip() + " (cached)"
    if dest.exists():
        shutil.rmtree(dest)
    why_not_sdist = ""
    try:
        archive = fetch_sdist(spec["dist"], version, work, offline)
        dest.mkdir(parents=True)
        if unpack_sdist(archive, spec["tests"], dest):
            origin = f"sdist {archive.name}"
            stamp.write_text(origin)
            return dest, origin
        why_not_sdist = f"the sdist {archive.name} ships no {spec['tests']}/ directory"
        shutil.rmtree(dest)
    except Skip as e:
        why_not_sdist = str(e)
    if source is None:
        raise Skip(
            f"{why_not_sdist}; the GitHub tag archive cannot be fetched offline: pass --source "
            f"{name}=PATH (a local clone with tag v{version}) to run it"
        )
    origin = unpack_source(source, version, spec["tests"], dest)
    stamp.write_text(origin)
    return dest, origin


def ensure_test_deps(deps: list[tuple[str, str]], work: Path, offline: bool) -> tuple[Path, list[str]]:
    """Install the missing test-only requirements into WORK/testdeps; returns it and notes."""
    target = work / "testdeps"
    target.mkdir(parents=True, exist_ok=True)
    notes = []
    missing = []
    for spec, mod in deps:
        if (target / mod).exists() or (target / f"{mod}.py").exists():
            continue
        if importlib.util.find_spec(mod) is not None:
            continue
        missing.append((spec, mod))
    if missing and offline:
        notes.append("not installed (--offline): " + ", ".join(s for s, _ in missing))
        return target, notes
    for spec, mod in missing:
        log(f"pip install --no-deps --target {target} {spec}")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
             "--target", str(target), spec],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if proc.returncode != 0:
            notes.append(f"could not install {spec}: {first_lines(proc.stderr, 2)}")
    return target, notes


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    command: list[str]
    returncode: int | None
    wall_s: float
    timed_out: bool
    log: str
    junit: str
    results: dict[str, Result] = field(default_factory=dict)
    problem: str = ""


def _progress_of(log_path: Path) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 4000))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    pos = tail.rfind("%]")
    if pos == -1:
        return ""
    start = tail.rfind("[", 0, pos)
    return tail[start : pos + 2].strip() if start != -1 else ""


def run_pytest(mode: str, suite: str, cwd: Path, pytest_args: list[str], env: dict[str, str],
               out_dir: Path, package: str, budget_s: float) -> Run:  # fmt: skip
    junit = out_dir / f"{suite}-{mode}.xml"
    log_path = out_dir / f"{suite}-{mode}.log"
    junit.unlink(missing_ok=True)
    base = [sys.executable, "-m", "pytest"]
    if mode == "raximport":
        base = [sys.executable, "-m", "raximport", "-p", package, "-m", "pytest"]
    cmd = base + pytest_args + [f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    log(f"[{suite}] {mode}: {' '.join(cmd[1:])}  (log: {log_path})")
    start = time.monotonic()
    timed_out = False
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(30):
                log(f"[{suite}] {mode}: {time.monotonic() - start:.0f}s {_progress_of(log_path)}")

        threading.Thread(target=heartbeat, daemon=True).start()
        try:
            proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        finally:
            done.set()
    wall = time.monotonic() - start
    run = Run(mode, cmd, proc.returncode, wall, timed_out, str(log_path), str(junit))
    if junit.is_file():
        try:
            run.results = parse_junit(junit)
        except ET.ParseError as e:
            run.problem = f"unreadable junit xml: {e}"
    else:
        tail = log_path.read_text(errors="replace").splitlines()[-8:]
        run.problem = "no junit xml written; the log ends:\n" + "\n".join(ln[:300] for ln in tail)
    if timed_out:
        run.problem = (run.problem + "\n" if run.problem else "") + f"killed after {budget_s:.0f}s (--suite-timeout)"
    c = counts(run.results)
    log(f"[{suite}] {mode}: exit {proc.returncode} in {wall:.0f}s: "
        + ", ".join(f"{c[o]} {o}" for o in OUTCOMES))  # fmt: skip
    return run


def has_module(mod: str, extra_path: Path) -> bool:
    return importlib.util.find_spec(mod) is not None or (extra_path / mod).exists() or (extra_path / f"{mod}.py").exists()


def imported_from(package: str, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", f"import {package}; print({package}.__file__)"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    return proc.stdout.strip() or first_lines(proc.stderr, 3)


def check_suite(name: str, args: argparse.Namespace, work: Path, sources: dict[str, Path],
                files: dict[str, list[str]], kexpr: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    spec = SUITES[name]
    report: dict[str, Any] = {"suite": name, "dist": spec["dist"]}
    try:
        version = importlib.metadata.version(spec["dist"])
    except importlib.metadata.PackageNotFoundError:
        report["skipped"] = f"{spec['dist']} is not installed"
        log(f"[{name}] skipped: {report['skipped']}")
        return report
    report["version"] = version
    try:
        cwd, origin = prepare_suite(name, spec, version, work, sources.get(name), args.offline)
    except Skip as e:
        report["skipped"] = str(e)
        log(f"[{name}] skipped: {e}")
        return report
    report["tests_from"] = origin
    log(f"[{name}] {spec['dist']} {version}: tests from {origin}")

    deps_dir = work / "testdeps"
    notes: list[str] = []
    if not args.no_test_deps:
        wanted = list(spec["test_deps"])
        if args.timeout:
            wanted.append(("pytest-timeout", "pytest_timeout"))
        deps_dir, notes = ensure_test_deps(wanted, work, args.offline)
    cache = work / "rax-cache" / name
    if cache.exists():
        shutil.rmtree(cache)  # fresh: the raximport run pays its cold caches, as a first run does
    cache.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")}
    env.update({"JAX_PLATFORMS": "cpu", "RAX_CACHE_DIR": str(cache), "NO_COLOR": "1",
                "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    paths = [str(deps_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    report["imported_from"] = imported_from(spec["package"], cwd, env)
    report["notes"] = notes

    targets = files.get(name) or ([] if args.all else spec["default_files"]) or [spec["tests"]]
    targets = [t for t in targets if (cwd / t.split("::")[0]).exists()] or [spec["tests"]]
    pytest_args = ["-q", "-rA", "-p", "no:cacheprovider", "--rootdir", str(cwd), "-n", "0"]
    if not has_module("xdist", deps_dir):
        pytest_args = pytest_args[:-2]
    if not args.keep_addopts:
        pytest_args += ["-o", "addopts="]
    if args.timeout and has_module("pytest_timeout", deps_dir):
        pytest_args += [f"--timeout={args.timeout:g}"]  # its dist-info entry point loads it
    pytest_args += list(args.pytest_arg)
    if name in kexpr:
        pytest_args += ["-k", kexpr[name]]
    if args.maxfail:
        pytest_args += [f"--maxfail={args.maxfail}"]
    pytest_args += targets
    report["targets"] = targets
    out_dir = work / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = {}
    for mode in ("plain", "raximport"):
        runs[mode] = run_pytest(mode, name, cwd, pytest_args, env, out_dir, spec["package"], args.suite_timeout)
    plain, rax = runs["plain"], runs["raximport"]
    try:  # raximport's own notes (modules another import hook took, stages that stepped aside)
        rax_notes = [ln.strip()[:400] for ln in Path(rax.log).read_text(errors="replace").splitlines()
                     if ln.startswith("raximport:")]  # fmt: skip
    except OSError:
        rax_notes = []
    report["raximport_notes"] = list(dict.fromkeys(rax_notes))
    diffs = compare(plain.results, rax.results)
    report.update(
        {
            "tests": len(set(plain.results) | set(rax.results)),
            "plain": {"counts": counts(plain.results), "wall_s": round(plain.wall_s, 1),
                      "exit": plain.returncode, "problem": plain.problem, "log": plain.log,
                      "command": " ".join(plain.command[1:])},
            "raximport": {"counts": counts(rax.results), "wall_s": round(rax.wall_s, 1),
                          "exit": rax.returncode, "problem": rax.problem, "log": rax.log,
                          "command": " ".join(rax.command[1:])},
            "wall_ratio": round(rax.wall_s / plain.wall_s, 2) if plain.wall_s > 0 else None,
            "differences": [asdict(d) for d in diffs],
        }
    )  # fmt: skip
    return report


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------


def _fmt_counts(c: dict[str, int]) -> str:
    return " / ".join(str(c[o]) for o in OUTCOMES)


def render(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| suite | version | tests | plain p/f/s/e | raximport p/f/s/e | differ | wall plain | wall raximport | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        if "skipped" in r:
            lines.append(f"| {r['suite']} | {r.get('version', '-')} | skipped: {r['skipped']} | | | | | | |")
            continue
        p, x = r["plain"], r["raximport"]
        lines.append(
            f"| {r['suite']} | {r['version']} | {r['tests']} | {_fmt_counts(p['counts'])} | "
            f"{_fmt_counts(x['counts'])} | {len(r['differences'])} | {p['wall_s']:.0f}s | "
            f"{x['wall_s']:.0f}s | {r['wall_ratio']}x |"
        )
    out = ["\n".join(lines)]
    for r in reports:
        if "skipped" in r:
            continue
        out.append(f"\n{r['suite']} {r['version']}: tests from {r['tests_from']}; "
                   f"{r['dist']} imported from {r['imported_from']}")  # fmt: skip
        out.append(f"  files: {' '.join(r['targets'])}")
        for note in r.get("notes", []):
            out.append(f"  note: {note}")
        for note in r.get("raximport_notes", []):
            out.append(f"  raximport said: {note}")
        for mode in ("plain", "raximport"):
            if r[mode]["problem"]:
                out.append(f"  {mode} run problem: {r[mode]['problem']}")
        if not r["differences"] and not (r["plain"]["problem"] or r["raximport"]["problem"]):
            out.append("  every test has the same outcome plain and under raximport")
        diffs = r["differences"]
        for mode, other in (("raximport", "plain"), ("plain", "raximport")):
            gone = [d for d in diffs if d[mode] == "missing"]
            if r[mode]["problem"] and len(gone) > 3:
                out.append(f"  DIFFERS {len(gone)} tests: {other} ran them, the {mode} run did not "
                           f"(it stopped: see its problem above), e.g. {gone[0]['node_id']}")  # fmt: skip
                diffs = [d for d in diffs if d[mode] != "missing"]
        for d in diffs:
            out.append(f"  DIFFERS {d['node_id']}: plain {d['plain']}, raximport {d['raximport']}")
            text = d["raximport_failure"] or d["plain_failure"]
            for ln in text.splitlines():
                out.append(f"      {ln}")
    return "\n".join(out)


def _pairs(values: list[str], opt: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise SystemExit(f"{opt} takes SUITE=VALUE, got {v!r}")
        k, _, val = v.partition("=")
        if k not in SUITES:
            raise SystemExit(f"{opt}: unknown suite {k!r} (known: {', '.join(SUITES)})")
        out[k] = val
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--suites", default=",".join(DEFAULT_SUITES),
                    help=f"comma-separated suites to run, of {', '.join(SUITES)} (default: %(default)s)")  # fmt: skip
    ap.add_argument("--work", type=Path, default=REPO / ".peer-suites",
                    help="where downloads, unpacked tests, test deps, caches and logs go (default: %(default)s); "
                         "reruns reuse what is there, offline")  # fmt: skip
    ap.add_argument("--source", action="append", default=[], metavar="SUITE=PATH",
                    help="a local git clone (tag vVERSION is used) or checkout to take the tests "
                         "from when the sdist has none")  # fmt: skip
    ap.add_argument("--files", action="append", default=[], metavar="SUITE=PATH[,PATH...]",
                    help="test files or node ids to run, relative to the suite root (e.g. "
                         "jaxtyping=test/test_array.py); default: a built-in subset per suite")  # fmt: skip
    ap.add_argument("-k", dest="kexpr", action="append", default=[], metavar="SUITE=EXPR",
                    help="pytest -k expression for a suite")
    ap.add_argument("--all", action="store_true", help="run each suite's whole tests directory")
    ap.add_argument("--timeout", type=float, default=120,
                    help="per-test timeout in seconds via pytest-timeout, 0 for none (default: %(default)s)")  # fmt: skip
    ap.add_argument("--suite-timeout", type=float, default=1200,
                    help="kill one pytest run after this many seconds (default: %(default)s)")  # fmt: skip
    ap.add_argument("--maxfail", type=int, default=0, help="pass --maxfail to pytest (default: off)")
    ap.add_argument("--keep-addopts", action="store_true",
                    help="keep the suites' own pytest addopts (equinox's turns on jaxtyping's "
                         "import hook, which then takes equinox's modules from raximport)")  # fmt: skip
    ap.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                    help="an extra pytest argument for both runs of every suite (repeatable), e.g. "
                         "--pytest-arg=-Wignore::pytest.PytestAssertRewriteWarning")  # fmt: skip
    ap.add_argument("--no-test-deps", action="store_true",
                    help="do not pip-install missing test-only requirements into WORK/testdeps")  # fmt: skip
    ap.add_argument("--offline", action="store_true", help="use only what WORK already holds")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    args = ap.parse_args(argv)

    names = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(unknown)} (known: {', '.join(SUITES)})")
    sources = {k: Path(v) for k, v in _pairs(args.source, "--source").items()}
    files = {k: [x for x in v.split(",") if x] for k, v in _pairs(args.files, "--files").items()}
    kexpr = _pairs(args.kexpr, "-k")
    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    reports = [check_suite(n, args, work, sources, files, kexpr) for n in names]
    text = render(reports)
    print(text)
    ran = [r for r in reports if "skipped" not in r]
    bad = [r for r in ran if r["differences"] or r["plain"]["problem"] or r["raximport"]["problem"]]
    status = 2 if not ran else (1 if bad else 0)
    print(f"\n{len(ran)} suite(s) run, {len(reports) - len(ran)} skipped, "
          f"{sum(len(r['differences']) for r in ran)} differing test(s), "
          f"{time.monotonic() - started:.0f}s; exit {status}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"version": 1, "exit_status": status, "suites": reports}, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
