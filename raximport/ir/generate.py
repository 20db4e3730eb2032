"""`rax ir generate`: a dataset of Python -> IR records synthesised from the grammar in templates.py.

Function `index` of a run is a pure function of (seed, index): its category is the index's turn
in the round of categories, its template choices come from `default_rng([seed, index])` and its
inputs from the record's own `seed`. Each is executed from its source, traced once (`jaxpr`),
lowered (`stablehlo`), compiled (`hlo`, XLA's analyses, and `expected_outputs`: the compiled
program run on the inputs) and exported (`jax.export`, from that same lowering: `rax ir validate`
checks that artifact against the outputs). A differentiable one also gets a backward record, the
`jax.vjp` of it at a cotangent input, from a source of its own. Outputs come from one compile
rather than from running eagerly: op by op, JAX compiles a program per primitive and shape (about
7 a record here), which measured several times slower.

XLA compiles these programs with LLVM at -O0 (`compile_options` in each record; `--xla-default-
codegen` for XLA's default level): XLA's HLO passes do not depend on that level, so every IR field
and analysis is the default build's, and -O0 compiles ~25% faster; the outputs of some programs
differ from the default build's by an ulp or two. A program whose outputs one ulp more or less in
its float inputs moves by over a tenth of validate's tolerance is ill-conditioned at its inputs:
another build (another XLA, CPU or LLVM level) rounds it differently and no tolerance could check
it, so it is left out (counted in the summary), as is a program whose StableHLO
(`canonical_hash`) an earlier record had.

Workers (spawned processes, each on a CPU of its own where there are enough, x64 on, JAX's MLIR
contexts shared: `shared_ir_contexts`) build functions in chunks; each leaves out, before
compiling, a program it built earlier in the run; the parent writes the records in index order,
dropping the duplicates between workers, and stops at `--count` records: the same seed gives the
same bytes whatever `--jobs`. So a record must not depend on which worker built it, nor on what
that worker built before: JAX's caches are cleared before each record (a cached trace keeps the
source locations of the function it was first made for), and records carry no timings, paths or
process ids (`compile_seconds` is null).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import itertools
import os
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from raximport import jax_internals
from raximport.collecting import collecting_rarely
from raximport.ir import templates
from raximport.ir.capture import _cost, _memory
from raximport.ir.record import JsonlWriter, canonical_hash, decode_array, encode_array, record_files, versions
from raximport.ir.stats import dtype_of
from raximport.ir.validate import agree
from raximport.ir.workers import worker_pool

SOURCE_FILE = "<rax ir generate>"
HEADER = "import jax\nimport jax.numpy as jnp\n\n\n"
PREFIX = "ir"
CHUNK = 4  # functions per task handed to a worker
FAST_CODEGEN = {"xla_backend_optimization_level": 0}  # LLVM at -O0: the IR is the same (module docstring)
CONTEXT_USES = 64  # lowerings that share one MLIR context (jax_internals.shared_ir_contexts)
CONDITION_MARGIN = 0.1  # of validate's tolerance, that one ulp more or less in the inputs may move the outputs
MAX_FAILURES = 50  # failed functions, outnumbering the records written, that end a run
DUPLICATE, ILL_CONDITIONED = "duplicate", "ill-conditioned"  # why _record built no record


def function_seed(seed: int, index: int) -> int:
    """The seed of function `index`'s inputs (a record's `seed`): 63 bits, fits JSON readers' int64."""
    high, low = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(high) << 31 | int(low) >> 1


@dataclass
class Built:
    """What a worker returns for one function: its records, or why the function failed, and how
    many records it left out as duplicates or as ill-conditioned (module docstring)."""

    index: int
    records: list[dict[str, Any]]
    error: str | None = None
    duplicates: int = 0
    ill_conditioned: int = 0


def category_of(index: int, categories: Sequence[str]) -> str:
    """Function `index`'s category: the categories take turns."""
    return categories[index % len(categories)]


def build(seed: int, index: int, categories: Sequence[str], kept: set[str] | None = None,
          options: Mapping[str, int] = FAST_CODEGEN) -> Built:
    """The records of function `index` of the run: forward, and backward where differentiable.
    `kept`: the ids of the records this process built earlier in the run (it adds this function's):
    a program among them is left out before it is compiled, as the writer would drop it anyway.
    `options`: XLA's compile options for the records' programs. A function the grammar made that
    JAX refuses is a bug in a template: returned as an error."""
    kept = set() if kept is None else kept
    category = category_of(index, categories)
    name = f"{category}_{index:06d}"
    spec = templates.spec(category, np.random.default_rng([seed, index]))
    record_seed = function_seed(seed, index)
    rng = np.random.default_rng(record_seed)
    built = Built(index, [])
    try:
        import jax

        with jax.enable_x64(True):
            inputs = [i.sample(rng) for i in spec.inputs]
            source = HEADER + spec.source(name)
            forward, outputs, is_tuple = _record(name, source, inputs, kept, options)
            if not _left_out(built, forward):
                built.records.append(forward | {"category": category, "seed": record_seed})
            if forward == ILL_CONDITIONED or not spec.differentiable:
                return _keep(built, kept)  # no backward where its forward record is not there to check it
            cotangents = [rng.uniform(-1.0, 1.0, o.shape).astype(o.dtype) for o in outputs]
            vjp_source = source + "\n\n" + _vjp_source(name, spec, len(cotangents), is_tuple)
            backward, _, _ = _record(f"{name}_vjp", vjp_source, inputs + cotangents, kept, options)
            if not _left_out(built, backward) and all(np.isfinite(decode_array(g)).all()
                                                       for g in backward["expected_outputs"]):
                built.records.append(backward | {"category": category, "seed": record_seed, "pass": "backward"})
            # else: left out (counted), or at a point with no derivative (std of one value): the forward alone
            return _keep(built, kept)
    except Exception as exc:  # noqa: BLE001 - reported by the parent with the function's source
        return Built(index, [], f"{name}: {type(exc).__name__}: {exc}\n{HEADER + spec.source(name)}")


def _left_out(built: Built, outcome: dict[str, Any] | str) -> bool:
    """Whether `_record` left the record out (a DUPLICATE or ILL_CONDITIONED one, counted in `built`)."""
    built.duplicates += outcome == DUPLICATE
    built.ill_conditioned += outcome == ILL_CONDITIONED
    return isinstance(outcome, str)


def _keep(built: Built, kept: set[str]) -> Built:
    kept.update(r["id"] for r in built.records)
    return built


_kept_by_run: dict[str, set[str]] = {}


def build_chunk(run: str, seed: int, indices: range, categories: Sequence[str],
                options: Mapping[str, int]) -> list[Built]:
    """Functions `indices` of run `run`, in a worker: each worker takes its chunks in order, so the
    records it built before have lower indices than these, and the ids it kept stand for the run."""
    kept = _kept_by_run.setdefault(run, set())
    with _building_many():
        return [build(seed, index, categories, kept, options) for index in indices]


@contextlib.contextmanager
def _building_many() -> Iterator[None]:
    """How a process builds many records: JAX's MLIR contexts shared, the cyclic GC run rarely (JAX
    makes many short-lived objects tracing and lowering: ~3% of a record's time went to the GC)."""
    with jax_internals.shared_ir_contexts(CONTEXT_USES), collecting_rarely():
        yield


def _vjp_source(name: str, spec: templates.Spec, outputs: int, is_tuple: bool) -> str:
    """`{name}_vjp`: the pullback of `name` w.r.t. its float inputs, at cotangents `ct...`."""
    params = [i.name for i in spec.inputs]
    floats = [i.name for i in spec.inputs if i.is_float]
    cts = ["ct"] if outputs == 1 and not is_tuple else [f"ct{k}" for k in range(outputs)]
    fun = name if floats == params else f"lambda {', '.join(floats)}: {name}({', '.join(params)})"
    ct = cts[0] if len(cts) == 1 and not is_tuple else f"({', '.join(cts)}{',' * (len(cts) == 1)})"
    return (f"def {name}_vjp({', '.join(params + cts)}):\n"
            f"    _, pullback = jax.vjp({fun}, {', '.join(floats)})\n"
            f"    return pullback({ct})\n")


def _record(name: str, source: str, args: list[np.ndarray], kept: AbstractSet[str] = frozenset(),
            options: Mapping[str, int] = FAST_CODEGEN) -> tuple[dict[str, Any] | str, list[Any], bool]:
    """The record of `name` defined in `source`, called on `args` (or DUPLICATE, an id in `kept`,
    or ILL_CONDITIONED); the avals of its flat outputs; whether it returns a tuple."""
    import jax

    jax.clear_caches()  # JAX's traces of earlier records: what a record holds must not depend on them
    namespace: dict[str, Any] = {}
    exec(compile(source, SOURCE_FILE, "exec"), namespace)  # the grammar's own code, generated above
    fun = namespace[name]
    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
    driver = _driver()
    traced, lowered = driver["lower"](jax, fun, avals)
    stablehlo = lowered.as_text()
    outputs, is_tuple = jax.tree.leaves(traced.out_info), isinstance(traced.out_info, (tuple, list))
    digest = canonical_hash(stablehlo)
    if digest in kept:
        return DUPLICATE, outputs, is_tuple
    exported, compiled = driver["finish"](jax, fun, avals, traced, lowered, jax_internals.export_lowered,
                                          dict(options))
    expected = [np.asarray(o) for o in jax.tree.leaves(compiled(*args))]
    if not _well_conditioned(compiled, args, expected):
        return ILL_CONDITIONED, outputs, is_tuple
    record = {
        "function": name,
        "file": SOURCE_FILE,
        "line": source[: source.index(f"def {name}(")].count("\n") + 1,
        "source": source,
        "jaxpr": str(traced.jaxpr),
        "stablehlo": stablehlo,
        "hlo": compiled.as_text(),
        "exported": base64.b64encode(exported.serialize()).decode("ascii"),
        "input_shapes": [list(a.shape) for a in args],
        "input_dtypes": [a.dtype.name for a in args],
        "static_args": {},
        "cost_analysis": dict(_cost(compiled)),
        "memory_analysis": dict(_memory(compiled)),
        "compile_seconds": None,
        "versions": _versions(),
        "category": "",
        "pass": "forward",
        "seed": 0,
        "inputs": [encode_array(a) for a in args],
        "expected_outputs": [encode_array(o) for o in expected],
        "compile_options": dict(options),
        "id": digest,
    }
    return record, outputs, is_tuple


def _well_conditioned(compiled: Callable[..., Any], args: list[np.ndarray], expected: list[np.ndarray]) -> bool:
    """Whether outputs stay within a tenth of validate's tolerance when each float input moves by
    one ulp (up and down in turn): where they do not, they depend on rounding that another build
    (another XLA, CPU, or codegen level) does differently, and no tolerance could check them."""
    import jax

    nudged = [np.where(np.arange(a.size).reshape(a.shape) % 2, np.nextafter(a, np.inf), np.nextafter(a, -np.inf))
              .astype(a.dtype) if a.dtype.kind == "f" else a for a in args]
    moved = [np.asarray(o) for o in jax.tree.leaves(compiled(*nudged))]
    dtypes = [a.dtype.name for a in args]
    return all(agree(m, e, CONDITION_MARGIN, dtypes) for m, e in zip(moved, expected))


_versions = functools.cache(versions)

DRIVER = """
def lower(jax, fun, avals):
    traced = jax.jit(fun).trace(*avals)
    return traced, traced.lower()

def finish(jax, fun, avals, traced, lowered, export_lowered, options):
    exported = export_lowered(lowered, traced.jaxpr, traced.fun_name) or jax.export.export(jax.jit(fun))(*avals)
    return exported, lowered.compile(options)
"""
# Each record is traced, lowered and compiled once: its artifact is exported from that lowering.


@functools.cache
def _driver() -> dict[str, Callable[..., Any]]:
    """Trace, lower, compile and export a function from code of its own ("<rax ir driver>"), with
    JAX's locations naming only the innermost frame outside JAX: the IR (the HLO's metadata, the
    artifact's debug locations) then names the generated source and this driver, never the
    generator's files or whoever called it (a worker, the CLI, pytest), which would differ between
    runs of one seed."""
    import jax

    jax.config.update("jax_include_full_tracebacks_in_locations", False)
    namespace: dict[str, Any] = {}
    exec(compile(DRIVER, "<rax ir driver>", "exec"), namespace)
    return namespace


def built_in_order(seed: int, categories: Sequence[str], jobs: int,
                   options: Mapping[str, int] = FAST_CODEGEN) -> Iterator[Built]:
    """Functions 0, 1, 2, ... of the run, built by `jobs` spawned workers (here when 1), in order."""
    if jobs <= 1:
        kept: set[str] = set()
        with _building_many():
            yield from (build(seed, index, categories, kept, options) for index in itertools.count())
        return
    from concurrent.futures import Future

    run = uuid.uuid4().hex
    pool = worker_pool(jobs)
    pending: deque[Future[list[Built]]] = deque()
    starts = itertools.count(0, CHUNK)
    try:
        while True:
            while len(pending) < 4 * jobs:
                start = next(starts)
                pending.append(pool.submit(build_chunk, run, seed, range(start, start + CHUNK), categories, options))
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Summary:
    """What a run wrote: counts per category, pass and dtype, duplicates dropped, failures."""

    records: int = 0
    functions: set[int] = field(default_factory=set)
    by_category: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_dtype: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    ill_conditioned: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, index: int, record: dict[str, Any]) -> None:
        self.records += 1
        self.functions.add(index)
        self.by_category[record["category"], record["pass"]] += 1
        self.by_dtype[dtype_of(record)] += 1

    def lines(self, paths: list[Path], seconds: float) -> list[str]:
        size = sum(p.stat().st_size for p in paths)
        passes = Counter(p for (_, p), n in self.by_category.items() for _ in range(n))
        lines = [f"wrote {self.records} records ({len(self.functions)} functions) in {len(paths)} shards, "
                 f"{size / 1e6:.1f} MB, in {seconds:.1f} s: {self.records / max(seconds, 1e-9):.1f} records/s",
                 f"dropped {self.duplicates} duplicates (same StableHLO) and {self.ill_conditioned} ill-conditioned "
                 f"records, {len(self.failures)} functions failed",
                 "pass: " + ", ".join(f"{p} {n}" for p, n in sorted(passes.items())),
                 "dtype: " + ", ".join(f"{d} {n}" for d, n in sorted(self.by_dtype.items())),
                 f"{'category':<16}{'forward':>9}{'backward':>9}"]
        for category in sorted({c for c, _ in self.by_category}):
            lines.append(f"{category:<16}{self.by_category[category, 'forward']:>9}"
                         f"{self.by_category[category, 'backward']:>9}")
        return lines


def generate(count: int, out: Path, seed: int = 0, categories: Sequence[str] = tuple(templates.CATEGORIES),
             jobs: int = 1, shard_size: int = 1000, progress: Callable[[int], None] = lambda n: None,
             options: Mapping[str, int] = FAST_CODEGEN) -> tuple[Summary, list[Path]]:
    """Write `count` records to `out` (which holds no records yet); `progress(n)` after each.
    `options`: XLA's compile options for the programs the outputs come from ({}: XLA's defaults)."""
    summary = Summary()
    seen: set[str] = set()
    with JsonlWriter(out, PREFIX, shard_size) as writer:
        results = built_in_order(seed, categories, jobs, options)
        try:
            for built in results:
                if built.error:
                    summary.failures.append(built.error)
                    if len(summary.failures) >= MAX_FAILURES and len(summary.failures) > summary.records:
                        break  # something is broken for every function (JAX itself, say): not worth going on
                summary.duplicates += built.duplicates
                summary.ill_conditioned += built.ill_conditioned
                for record in built.records:
                    if record["id"] in seen:
                        summary.duplicates += 1
                        continue
                    seen.add(record["id"])
                    writer.write(record)
                    summary.add(built.index, record)
                    progress(summary.records)
                    if summary.records >= count:
                        return summary, writer.paths
        finally:
            results.close()
    return summary, writer.paths


def main(argv: Sequence[str]) -> int:
    """`rax ir generate`: 0 when the records are written, 1 if some functions failed, 2 for bad
    arguments or an output directory that already holds records."""
    parser = argparse.ArgumentParser(prog="rax ir generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True, metavar="N", help="records to write (after dedupe)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty directory")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="the run's seed (default 0)")
    parser.add_argument("--categories", nargs="+", choices=list(templates.CATEGORIES), metavar="CATEGORY",
                        default=list(templates.CATEGORIES),
                        help=f"which categories, in turn (default all: {', '.join(templates.CATEGORIES)})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="J",
                        help="worker processes (default: one per core); the output does not depend on it")
    parser.add_argument("--shard-size", type=int, default=1000, metavar="N", help="records per shard (default 1000)")
    parser.add_argument("--xla-default-codegen", action="store_true",
                        help="compile at XLA's default LLVM level, where by default LLVM runs at -O0, ~25%% faster: "
                             "the IR fields are the same, the expected outputs may differ by an ulp or two")
    ns = parser.parse_args(list(argv))
    if ns.count < 1 or ns.jobs < 1 or ns.shard_size < 1:
        parser.error("--count, --jobs and --shard-size must be positive")
    refusal = _unusable(ns.out)
    if refusal:
        print(f"rax ir generate: {ns.out} {refusal}: give a new or empty directory", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with _progress_bar(ns.count) as advance:
        summary, paths = generate(ns.count, ns.out, ns.seed, ns.categories, ns.jobs, ns.shard_size, advance,
                                  {} if ns.xla_default_codegen else FAST_CODEGEN)
    print("\n".join(summary.lines(paths, time.perf_counter() - start)))
    for failure in summary.failures[:3]:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if summary.failures else 0


def _unusable(out: Path) -> str | None:
    """Why `out` cannot take a new dataset (made here if need be), or None."""
    if out.exists() and not out.is_dir():
        return "is not a directory"
    if out.exists() and record_files(out):
        return "already holds records"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot make it ({exc.strerror})"
    return None


class _progress_bar:
    """A rich progress bar on a terminal's stderr; nothing otherwise."""

    def __init__(self, total: int) -> None:
        from raximport.report import use_rich

        self.total = total
        self.bar: Any = None
        if use_rich(sys.stderr):
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(*Progress.get_default_columns(), "{task.completed} records",
                                console=Console(stderr=True), transient=True)

    def __enter__(self) -> Callable[[int], None]:
        if self.bar is None:
            return lambda n: None
        self.bar.start()
        task = self.bar.add_task("generating", total=self.total)
        return lambda n: self.bar.update(task, completed=n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
