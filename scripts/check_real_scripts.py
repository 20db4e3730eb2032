#!/usr/bin/env python
"""Run code nobody here wrote, flax's own examples, plain and under raximport, and compare.

raximport promises that it never breaks code that works plain, compiles once per signature and
prints identical numbers. This check holds it to that on flax's examples: it fetches the sdist of
the installed flax version (`pip download --no-deps --no-binary :all: flax==<version>`, about
15 MB, kept in --sdist-cache so that a rerun is offline; never copied into this project), unpacks
examples/nnx_toy_examples (the numbered scripts and the hijax ones), examples/mnist and
examples/vae into --work, and runs each program twice, `python PROGRAM` and
`python -m raximport PROGRAM`, with:

  - data loading replaced by a synthetic stand-in (scripts/real_scripts_shim/, put first on
    PYTHONPATH): fake `tensorflow`, `tensorflow_datasets`, `datasets` (Hugging Face), TensorBoard,
    `orbax.export`, Pillow and matplotlib modules that yield small seeded random arrays with the
    real shapes and dtypes and draw or write nothing. The examples' model and training code is
    never edited;
  - mnist and vae driven through scripts/real_scripts_shim/drivers/rax_check_main.py (copied next
    to their train.py; their main.py also needs clu and TensorFlow), which calls
    `train.train_and_evaluate(config, workdir)` with their configs/default.py, a few steps through
    the config (--mnist-set / --vae-set, as `--config.FIELD=VALUE` would). They need
    ml_collections (`pip install ml_collections`); without it they are reported as skipped. The toy
    examples have no flags and run as written (their loops are short on CPU);
  - JAX_PLATFORMS=cpu, PYTHONHASHSEED=0, Python's and numpy's global generators seeded at start-up
    (--seed), a private, empty RAX_CACHE_DIR per run (cold caches), and raximport's reports
    written to a JSON file (RAX_REPORT_JSON) as evidence.

For each program it records: the exit status plain and under raximport; whether the output
(stdout and stderr, normalised: timings, timestamps, addresses and the run's own directories
replaced) is identical; the XLA compiles plain vs under raximport (a jax.monitoring listener
counts `/jax/core/compile/backend_compile_duration` events, one per program compiled or loaded
from the persistent cache); and the wall time of the whole process, raximport / plain. When the
outputs differ, plain runs once more to tell a program whose own output varies from run to run
("plain varies", not raximport's doing) from a difference raximport made.

A program FAILS when it runs plain (exit 0) but under raximport exits otherwise, prints anything
else, or compiles more. A program that already fails plain (flax's examples can lag behind its
API) is listed as "fails plain", with whether raximport ended the same way; it fails nothing.

    python scripts/check_real_scripts.py                      # all, table on stdout
    python scripts/check_real_scripts.py --only 06_ --only mnist
    python scripts/check_real_scripts.py --json > results.json
    python scripts/check_real_scripts.py --list

Progress goes to stderr. The runs' full stdout, stderr, compile logs and raximport's report JSON
stay under --work/runs/ for reading. Exit status: 0 when no program failed, 1 when one did, 3 when
the sdist could not be fetched (no network and nothing cached), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "scripts" / "real_scripts_shim"
DRIVER = SHIM / "drivers" / "rax_check_main.py"
DRIVER_NAME = "rax_check_main.py"
EXAMPLES = ("nnx_toy_examples", "mnist", "vae")
MARKER = "# written by raximport's scripts/check_real_scripts.py: the project root raximport sees\n"
DEFAULT_MNIST_SET = ("num_epochs=1", "batch_size=32")
DEFAULT_VAE_SET = ("num_epochs=2", "batch_size=32")


class FetchError(RuntimeError):
    """The sdist could not be fetched (no network, no such version) and none is cached."""


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "raximport-check-real-scripts"


# --- normalising output -------------------------------------------------------------------------

_ABSL_PREFIX = re.compile(r"^([IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+ ", re.M)
_ISO_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_CLOCK = re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b")
_DURATION = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?(?:e[+-]?\d+)?\s*(?:ns|us|µs|ms|s|sec|secs|second|seconds|min|mins|minutes)"
    r"(?:/(?:it|iter|step))?(?![\w])"
)
_RATE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s*(?:it|iter|steps|examples|samples|tokens)/s\b")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{4,}\b")
_TMP = re.compile(re.escape(tempfile.gettempdir().rstrip("/")) + r"/(?:tmp|pytest-of-[^/\s]+/pytest-\d+/)[\w.-]*")


def normalise(text: str, replacements: Sequence[tuple[str, str]] = ()) -> str:
    """`text` with what changes from run to run without being the program's result replaced:
    the run's own paths (`replacements`: (path, placeholder), longest first), timings (`0.52 s`,
    `12ms`, `3.1 it/s`), timestamps and absl's log-line prefixes (time and thread id; the
    level, file and line are kept), memory addresses and temporary directories. Trailing spaces
    are dropped and line endings made `\\n`."""
    for path, placeholder in sorted(replacements, key=lambda r: -len(r[0])):
        if path:
            text = text.replace(path, placeholder)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ABSL_PREFIX.sub(r"\1<time> <thread> ", text)
    text = _ADDRESS.sub("0x<address>", text)
    text = _ISO_TIME.sub("<timestamp>", text)
    text = _CLOCK.sub("<clock>", text)
    text = _RATE.sub("<rate>", text)
    text = _DURATION.sub("<duration>", text)
    text = _TMP.sub("<tmpdir>", text)
    return "\n".join(line.rstrip() for line in text.split("\n"))


def last_exception_line(stderr: str) -> str:
    """The `Type: message` line a traceback ends with (raximport's report may follow it)."""
    pattern = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)[\w]*)(: .*)?$")
    found = ""
    for line in stderr.splitlines():
        if pattern.match(line.strip()) and not line.startswith(" "):
            found = line.strip()
    return found


# --- the sdist --------------------------------------------------------------------------------


def installed_version(python: str, package: str) -> str:
    out = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"check_real_scripts: {package} is not installed for {python}: {out.stderr.strip()}")
    return out.stdout.strip()


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        raise SystemExit(f"check_real_scripts: {path} is not a directory only you can write; not using it")
    return path


def fetch_sdist(version: str, cache: Path, python: str = sys.executable, log=print) -> Path:
    """flax-<version>.tar.gz in `cache`, downloaded with pip if it is not there yet. What is run
    from it runs as you, so `cache` must be a directory only you can write."""
    _private_dir(cache)
    target = cache / f"flax-{version}.tar.gz"
    if target.is_file():
        return target
    log(f"fetching flax {version}'s sdist with pip into {cache} ...")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
               "--retries", "1", "--timeout", "20", f"flax=={version}", "-d", tmp]
        out = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(Path(tmp).glob("flax-*.tar.gz"))
        if out.returncode != 0 or not found:
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-5:])
            raise FetchError(f"pip could not download flax {version}'s sdist:\n{tail}")
        os.replace(found[0], target)
    return target


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unpack(sdist: Path, version: str, work: Path) -> Path:
    """A fresh copy of the three example directories under work/src/; returns .../examples."""
    src = work / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    prefix = f"flax-{version}/examples/"
    wanted = tuple(prefix + name + "/" for name in EXAMPLES)
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            if not m.name.startswith(wanted) or not (m.isfile() or m.isdir()):
                continue
            if m.name.startswith("/") or ".." in Path(m.name).parts:
                raise SystemExit(f"check_real_scripts: unsafe path in {sdist}: {m.name}")
            members.append(m)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(src, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(src, members=members)
    examples = src / f"flax-{version}" / "examples"
    for name in EXAMPLES:
        if not (examples / name).is_dir():
            raise SystemExit(f"check_real_scripts: {sdist} has no examples/{name}")
    # raximport instruments the modules under the script's project root, the nearest parent
    # holding pyproject.toml (...): the examples, whatever directory --work is in
    (examples / "pyproject.toml").write_text(MARKER)
    for name in ("mnist", "vae"):
        shutil.copy(DRIVER, examples / name / DRIVER_NAME)
    return examples


# --- the programs --------------------------------------------------------------------------------


@dataclasses.dataclass
class Program:
    name: str  # e.g. "nnx_toy_examples/06_scan_over_layers.py"
    cwd: Path
    argv: list[str]  # after `python` / `python -m raximport`
    shims: tuple[str, ...]  # subdirectories of SHIM put on PYTHONPATH
    requires: tuple[str, ...] = ()  # modules the program needs that the check does not fake
    workdir_flag: bool = False  # gets --workdir=<its run directory>/workdir
    modules: tuple[Path, ...] = ()  # its own source files (what raximport instruments)


def programs(examples: Path, mnist_set: Sequence[str], vae_set: Sequence[str]) -> list[Program]:
    toy = examples / "nnx_toy_examples"
    scripts = sorted(toy.glob("[0-9][0-9]_*.py")) + sorted(toy.glob("hijax*.py"))
    found = [Program(f"nnx_toy_examples/{p.name}", toy, [p.name], ("common",), modules=(p,)) for p in scripts]
    for name, sets in (("mnist", mnist_set), ("vae", vae_set)):
        argv = [DRIVER_NAME, *(f"--set={s}" for s in sets)]
        own = sorted(p for p in [*(examples / name).glob("*.py"), *(examples / name).glob("configs/*.py")]
                     if not p.name.endswith("_test.py") and "benchmark" not in p.name and p.name not in ("main.py", DRIVER_NAME))
        found.append(Program(f"{name} (train.py)", examples / name, argv, ("common", "tf"), ("ml_collections", "absl"), True, tuple(own)))
    return found


def rewrite_sites(paths: Sequence[Path]) -> dict[str, int]:
    """How many places raximport's rewrite instruments in these files, with its default options:
    `jit`, the jax.jit spellings routed through raximport.jit; `checks`, the jaxtyping-annotated
    defs and classes checked plus the functions auto-jitted. (This checkout's raximport.)"""
    import ast

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from raximport import rewrite

    jit = total = 0
    for path in paths:
        source = path.read_text(encoding="utf-8", errors="replace")
        jit += rewrite.rewrite_tree(ast.parse(source), source, rewrite.RewriteOptions(checks=False, autojit=False))
        total += rewrite.rewrite_tree(ast.parse(source), source)
    return {"jit": jit, "checks": total - jit}


@dataclasses.dataclass
class Run:
    exit: int | None  # None: timed out
    wall_s: float
    stdout: str
    stderr: str
    compiles: int
    cache_hits: int
    reports: list[dict[str, Any]]
    dir: Path


def module_missing(python: str, modules: Sequence[str]) -> list[str]:
    missing = []
    for module in modules:
        out = subprocess.run([python, "-c", f"import importlib.util as u; raise SystemExit(u.find_spec({module!r}) is None)"])
        if out.returncode != 0:
            missing.append(module)
    return missing


def run_once(program: Program, mode: str, run_dir: Path, python: str, seed: int, sizes: tuple[int, int], timeout: float,
             rax_options: Sequence[str] = ()) -> Run:
    """One process: `python ARGV` (mode "plain", "plain-again") or `python -m raximport ARGV`."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    compile_log = run_dir / "compiles.log"
    reports = run_dir / "raximport-reports.json"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAX_", "RAXCHECK_", "JAX_", "XLA_", "TF_", "PYTHON", "COVERAGE_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join([*(str(SHIM / s) for s in program.shims), str(REPO)]),
        "PYTHONHASHSEED": "0",
        "JAX_PLATFORMS": "cpu",
        "NO_COLOR": "1",
        "RAX_CACHE_DIR": str(run_dir / "rax-cache"),
        "RAXCHECK_SEED": str(seed),
        "RAXCHECK_TRAIN_EXAMPLES": str(sizes[0]),
        "RAXCHECK_TEST_EXAMPLES": str(sizes[1]),
        "RAXCHECK_COMPILE_LOG": str(compile_log),
    })
    argv = list(program.argv)
    if program.workdir_flag:
        argv.append(f"--workdir={run_dir / 'workdir'}")
    if mode == "raximport":
        env["RAX_REPORT_JSON"] = str(reports)
        cmd = [python, "-m", "raximport", *rax_options, *argv]
    else:
        cmd = [python, *argv]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=program.cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              errors="replace")
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        stderr += f"\n[check_real_scripts: killed after {timeout:.0f} s]\n"
    wall = time.perf_counter() - start
    (run_dir / "stdout.txt").write_text(stdout)
    (run_dir / "stderr.txt").write_text(stderr)
    (run_dir / "command.txt").write_text(f"cd {program.cwd} && {' '.join(cmd)}\n")
    events = compile_log.read_text().splitlines() if compile_log.exists() else []
    found_reports: list[dict[str, Any]] = []
    if reports.exists():
        try:
            found_reports = json.loads(reports.read_text()).get("reports", [])
        except (OSError, ValueError):
            found_reports = [{"kind": "unreadable", "title": f"{reports} is not JSON"}]
    return Run(code, wall, stdout, stderr, sum(e.startswith("compile ") for e in events),
               sum(e == "cache_hit" for e in events), found_reports, run_dir)


@dataclasses.dataclass
class Result:
    program: str
    status: str  # "ok", "FAIL", "fails plain", "plain varies", "skipped"
    plain_exit: int | None = None
    raximport_exit: int | None = None
    output_identical: bool | None = None
    compiles_plain: int | None = None
    compiles_raximport: int | None = None
    cache_hits_raximport: int | None = None
    wall_plain_s: float | None = None
    wall_raximport_s: float | None = None
    wall_ratio: float | None = None
    same_error: bool | None = None  # for "fails plain": raximport ended with the same exception
    symptoms: list[str] = dataclasses.field(default_factory=list)  # what makes it FAIL (or fail plain)
    notes: list[str] = dataclasses.field(default_factory=list)
    evidence: list[str] = dataclasses.field(default_factory=list)  # stderr lines, diff lines
    raximport_reports: list[str] = dataclasses.field(default_factory=list)
    rewrites: dict[str, int] = dataclasses.field(default_factory=dict)  # rewrite_sites of its modules
    command: str = ""
    run_dir: str = ""


def _diff(a: str, b: str, label: str, limit: int) -> list[str]:
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), f"{label} plain", f"{label} raximport", n=1, lineterm=""))
    return lines[:limit] + ([f"... {len(lines) - limit} more diff lines"] if len(lines) > limit else [])


def compare(program: Program, plain: Run, rax: Run, again: "Run | None" = None, evidence_lines: int = 30,
            rax_options: Sequence[str] = ()) -> Result:
    def norm(run: Run, text: str) -> str:
        return normalise(text, [(str(run.dir), "<run>"), (str(program.cwd), "<example>")])

    r = Result(
        program.name, "ok", plain.exit, rax.exit, None, plain.compiles, rax.compiles, rax.cache_hits,
        round(plain.wall_s, 2), round(rax.wall_s, 2), round(rax.wall_s / plain.wall_s, 2) if plain.wall_s else None,
        command=f"cd {program.cwd} && python -m raximport {' '.join([*rax_options, *program.argv])}", run_dir=str(rax.dir.parent),
    )
    r.rewrites = rewrite_sites(program.modules)
    r.raximport_reports = [f"{rep.get('kind', '?')}: {rep.get('title', '')}" for rep in rax.reports]
    out_p, out_r = norm(plain, plain.stdout), norm(rax, rax.stdout)
    err_p, err_r = norm(plain, plain.stderr), norm(rax, rax.stderr)
    r.output_identical = out_p == out_r and err_p == err_r
    if plain.exit != 0:
        r.status = "fails plain"
        r.same_error = rax.exit == plain.exit and last_exception_line(plain.stderr) == last_exception_line(rax.stderr)
        r.symptoms.append(f"plain exits {plain.exit}: {last_exception_line(plain.stderr) or '(no exception line)'}")
        if not r.same_error:
            r.symptoms.append(f"under raximport exits {rax.exit}: {last_exception_line(rax.stderr) or '(no exception line)'}")
        return r
    if rax.exit != 0:
        r.symptoms.append(f"exits {rax.exit} under raximport (0 plain)" if rax.exit is not None else "timed out under raximport")
        extra = [line for line in err_r.splitlines() if line.strip() and line not in set(err_p.splitlines())]
        r.evidence += extra[-evidence_lines:]
    if rax.compiles > plain.compiles:
        r.symptoms.append(f"{rax.compiles} XLA compiles under raximport, {plain.compiles} plain")
    if not r.output_identical:
        if again is not None and (norm(again, again.stdout), norm(again, again.stderr)) != (out_p, err_p):
            r.notes.append("the output differs between two plain runs, so its difference under raximport says nothing")
            r.evidence += _diff(out_p, norm(again, again.stdout), "stdout (second plain run)", evidence_lines)
            r.status = "FAIL" if r.symptoms else "plain varies"
            return r
        if out_p != out_r:
            r.symptoms.append("stdout differs")
            r.evidence += _diff(out_p, out_r, "stdout", evidence_lines)
        if err_p != err_r:
            r.symptoms.append("stderr differs")
            if rax.exit == 0:
                r.evidence += _diff(err_p, err_r, "stderr", evidence_lines)
    if r.symptoms:
        r.status = "FAIL"
    return r


# --- the report --------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    head = ["program", "rewritten (jax.jit, checks)", "exit plain", "exit rax", "output identical", "compiles plain", "compiles rax",
            "wall plain s", "wall rax s", "rax / plain", "result"]
    rows = []
    for r in results:
        def fmt(v: Any) -> str:
            if v is None:
                return "-"
            if isinstance(v, bool):
                return "yes" if v else "no"
            return str(v)

        status = r.status
        if r.status == "fails plain":
            status += ", raximport the same" if r.same_error else ", raximport differently"
        sites = f"{r.rewrites['jit']}, {r.rewrites['checks']}" if r.rewrites else "-"
        rows.append([r.program, sites, fmt(r.plain_exit), fmt(r.raximport_exit), fmt(r.output_identical), fmt(r.compiles_plain),
                     fmt(r.compiles_raximport), fmt(r.wall_plain_s), fmt(r.wall_raximport_s),
                     f"{r.wall_ratio:.2f}" if r.wall_ratio is not None else "-", status])
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def details(results: Sequence[Result]) -> str:
    out = []
    for r in results:
        if r.status == "ok" and not r.raximport_reports:
            continue
        out.append(f"\n{r.program}: {r.status}")
        for s in [*r.symptoms, *r.notes]:
            out.append(f"  - {s}")
        for rep in r.raximport_reports:
            out.append(f"  - raximport report: {rep}")
        if r.evidence:
            out.append("  evidence:")
            out += [f"    {line}" for line in r.evidence]
        if r.run_dir:
            out.append(f"  logs: {r.run_dir}/{{plain,raximport}}/")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--work", type=Path, default=None,
                        help="where the examples are unpacked and run (default: %s)" % default_cache())
    parser.add_argument("--sdist-cache", type=Path, default=None,
                        help="where the downloaded sdist is kept (default: <work>/download)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run the programs with (default: this one)")
    parser.add_argument("--flax-version", default=None, help="the sdist to fetch (default: the installed flax's version)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the programs whose name contains TEXT (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the programs and exit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the global generators and the synthetic data (default 0)")
    parser.add_argument("--train-examples", type=int, default=512, help="synthetic training examples per dataset (default 512)")
    parser.add_argument("--test-examples", type=int, default=128, help="synthetic test examples per dataset (default 128)")
    parser.add_argument("--mnist-set", action="append", default=None, metavar="FIELD=VALUE",
                        help="override a field of mnist's config (default: %s)" % " ".join(DEFAULT_MNIST_SET))
    parser.add_argument("--vae-set", action="append", default=None, metavar="FIELD=VALUE",
                        help="override a field of vae's config (default: %s)" % " ".join(DEFAULT_VAE_SET))
    parser.add_argument("--timeout", type=float, default=900, help="seconds per process before it is killed (default 900)")
    parser.add_argument("--no-recheck", action="store_true",
                        help="do not run plain a second time when the outputs differ")
    parser.add_argument("--rax-option", action="append", default=[], metavar="ARG",
                        help="pass ARG to raximport: python -m raximport ARG... PROGRAM (e.g. --rax-option=-p --rax-option=flax)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout instead of the table")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    work = (args.work or default_cache()).resolve()
    _private_dir(work)
    version = args.flax_version or installed_version(args.python, "flax")
    try:
        sdist = fetch_sdist(version, (args.sdist_cache or work / "download").resolve(), args.python, progress)
    except FetchError as exc:
        progress(f"check_real_scripts: {exc}")
        return 3
    examples = unpack(sdist, version, work)
    found = programs(examples, args.mnist_set or DEFAULT_MNIST_SET, args.vae_set or DEFAULT_VAE_SET)
    if args.only:
        found = [p for p in found if any(text in p.name for text in args.only)]
    if args.list:
        for p in found:
            print(f"{p.name}\t(cd {p.cwd} && python {' '.join(p.argv)})")
        return 0
    if not found:
        parser.error(f"no program matches --only {args.only}")

    sizes = (args.train_examples, args.test_examples)
    results: list[Result] = []
    started = time.perf_counter()
    for i, program in enumerate(found, 1):
        tag = f"[{i}/{len(found)}] {program.name}"
        missing = module_missing(args.python, program.requires)
        if missing:
            results.append(Result(program.name, "skipped", symptoms=[f"needs {', '.join(missing)} (pip install {' '.join(missing)})"]))
            progress(f"{tag}: skipped, needs {', '.join(missing)}")
            continue
        slug = re.sub(r"[^\w.-]+", "_", program.name).strip("_")
        base = work / "runs" / slug
        progress(f"{tag}: plain ...")
        plain = run_once(program, "plain", base / "plain", args.python, args.seed, sizes, args.timeout)
        progress(f"{tag}: plain exit {plain.exit}, {plain.wall_s:.1f} s, {plain.compiles} compiles; raximport ...")
        rax = run_once(program, "raximport", base / "raximport", args.python, args.seed, sizes, args.timeout, args.rax_option)
        progress(f"{tag}: raximport exit {rax.exit}, {rax.wall_s:.1f} s, {rax.compiles} compiles")
        result = compare(program, plain, rax, rax_options=args.rax_option)
        if result.status == "FAIL" and not result.output_identical and not args.no_recheck:
            progress(f"{tag}: outputs differ; plain once more, to see whether plain varies by itself ...")
            again = run_once(program, "plain-again", base / "plain-again", args.python, args.seed, sizes, args.timeout)
            result = compare(program, plain, rax, again, rax_options=args.rax_option)
        progress(f"{tag}: {result.status}" + (f" ({'; '.join(result.symptoms)})" if result.symptoms else ""))
        results.append(result)

    failed = [r for r in results if r.status == "FAIL"]
    summary = {
        "flax_version": version,
        "sdist": str(sdist),
        "sdist_sha256": sha256(sdist),
        "python": args.python,
        "seed": args.seed,
        "synthetic_examples": {"train": sizes[0], "test": sizes[1]},
        "mnist_set": list(args.mnist_set or DEFAULT_MNIST_SET),
        "vae_set": list(args.vae_set or DEFAULT_VAE_SET),
        "rax_options": list(args.rax_option),
        "total_s": round(time.perf_counter() - started, 1),
        "counts": {s: sum(r.status == s for r in results) for s in ("ok", "FAIL", "fails plain", "plain varies", "skipped")},
        "results": [dataclasses.asdict(r) for r in results],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"flax {version} examples, plain vs `python -m raximport` (seed {args.seed}, {summary['total_s']} s)\n")
        print(table(results))
        text = details(results)
        if text:
            print(text)
        counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
        print(f"\n{counts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
