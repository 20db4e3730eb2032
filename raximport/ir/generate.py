"""`rax ir generate`: a dataset of Python -> IR records synthesised from the grammar in templates.py.

Function `index` of a run is a pure function of (seed, index): its category is the index's turn
in the round of categories, its template choices come from `default_rng([seed, index])` and its
inputs from the record's own `seed`. Each is executed from its source, traced once (`jaxpr`),
lowered (`stablehlo`), compiled (`hlo`, XLA's analyses, and `expected_outputs`: the compiled
program run on the inputs) and exported (`jax.export`, lowered by export's own path and
serialized: `rax ir validate` checks that artifact against the outputs). A differentiable one also
gets a backward record, the `jax.vjp` of it at a cotangent input, from a source of its own.
Outputs come from one compile rather than from running eagerly: op by op, JAX compiles a program
per primitive and shape (about 7 a record here), which measured several times slower.

Workers (spawned processes, x64 on) build functions in chunks; the parent writes their records in
index order, dropping a record whose StableHLO (`canonical_hash`) an earlier one had, and stops
at `--count` records: the same seed gives the same bytes whatever `--jobs`. Records carry no
timings, paths or process ids for that reason (`compile_seconds` is null).
"""

from __future__ import annotations

import argparse
import base64
import functools
import itertools
import os
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from raximport import jax_internals
from raximport.ir import templates
from raximport.ir.capture import _cost, _memory
from raximport.ir.record import JsonlWriter, canonical_hash, decode_array, encode_array, record_files, versions
from raximport.ir.stats import dtype_of

SOURCE_FILE = "<rax ir generate>"
HEADER = "import jax\nimport jax.numpy as jnp\n\n\n"
PREFIX = "ir"
CHUNK = 4  # functions per task handed to a worker


def function_seed(seed: int, index: int) -> int:
    """The seed of function `index`'s inputs (a record's `seed`): 63 bits, fits JSON readers' int64."""
    high, low = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(high) << 31 | int(low) >> 1


@dataclass
class Built:
    """What a worker returns for one function: its records, or why the function failed."""

    index: int
    records: list[dict[str, Any]]
    error: str | None = None


def category_of(index: int, categories: Sequence[str]) -> str:
    """Function `index`'s category: the categories take turns."""
    return categories[index % len(categories)]


def build(seed: int, index: int, categories: Sequence[str]) -> Built:
    """The records of function `index` of the run: forward, and backward where differentiable.
    A function the grammar made that JAX refuses is a bug in a template: returned as an error."""
    category = category_of(index, categories)
    name = f"{category}_{index:06d}"
    spec = templates.spec(category, np.random.default_rng([seed, index]))
    record_seed = function_seed(seed, index)
    rng = np.random.default_rng(record_seed)
    try:
        import jax

        with jax.enable_x64(True):
            inputs = [i.sample(rng) for i in spec.inputs]
            source = HEADER + spec.source(name)
            forward, is_tuple = _record(name, source, inputs)
            forward.update(category=category, seed=record_seed)
            if not spec.differentiable:
                return Built(index, [forward])
            cotangents = [rng.uniform(-1.0, 1.0, o["shape"]).astype(o["dtype"]) for o in forward["expected_outputs"]]
            vjp_source = source + "\n\n" + _vjp_source(name, spec, len(cotangents), is_tuple)
            backward, _ = _record(f"{name}_vjp", vjp_source, inputs + cotangents)
            backward.update(category=category, seed=record_seed, **{"pass": "backward"})
            if not all(np.isfinite(decode_array(g)).all() for g in backward["expected_outputs"]):
                return Built(index, [forward])  # at a point where it has no derivative (std of one value)
            return Built(index, [forward, backward])
    except Exception as exc:  # noqa: BLE001 - reported by the parent with the function's source
        return Built(index, [], f"{name}: {type(exc).__name__}: {exc}\n{HEADER + spec.source(name)}")


def build_chunk(seed: int, indices: range, categories: Sequence[str]) -> list[Built]:
    return [build(seed, index, categories) for index in indices]


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


def _record(name: str, source: str, args: list[np.ndarray]) -> tuple[dict[str, Any], bool]:
    """The record of `name` defined in `source`, called on `args`; and whether it returns a tuple."""
    import jax

    namespace: dict[str, Any] = {}
    exec(compile(source, SOURCE_FILE, "exec"), namespace)  # the grammar's own code, generated above
    fun = namespace[name]
    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
    traced, lowered, compiled, exported = _driver()(jax, fun, avals, jax_internals.export_lowered)
    stablehlo = lowered.as_text()
    result = compiled(*args)
    outputs = jax.tree.leaves(result)
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
        "expected_outputs": [encode_array(np.asarray(o)) for o in outputs],
        "id": canonical_hash(stablehlo),
    }
    return record, isinstance(result, (tuple, list))


_versions = functools.cache(versions)

DRIVER = """
def lower(jax, fun, avals, export_lowered):
    jitted = jax.jit(fun)
    traced = jitted.trace(*avals)
    lowered = traced.lower()
    exported = export_lowered(lowered, traced.jaxpr, traced.fun_name) or jax.export.export(jitted)(*avals)
    return traced, lowered, lowered.compile(), exported
"""
# Each record is traced, lowered and compiled once: its artifact is exported from that lowering.
# (Compiling at LLVM's lowest level would save time, but changes the outputs of ill-conditioned
# programs beyond validate's tolerances: 4 of 12,000 records, 2026-12-03.)


@functools.cache
def _driver() -> Callable[..., Any]:
    """Trace, lower, compile and export a function from code of its own ("<rax ir driver>"), with
    JAX's locations naming only the innermost frame outside JAX: the IR (the HLO's metadata, the
    artifact's debug locations) then names the generated source and this driver, never the
    generator's files or whoever called it (a worker, the CLI, pytest), which would differ between
    runs of one seed."""
    import jax

    jax.config.update("jax_include_full_tracebacks_in_locations", False)
    namespace: dict[str, Any] = {}
    exec(compile(DRIVER, "<rax ir driver>", "exec"), namespace)
    return namespace["lower"]


def built_in_order(seed: int, categories: Sequence[str], jobs: int) -> Iterator[Built]:
    """Functions 0, 1, 2, ... of the run, built by `jobs` spawned workers (here when 1), in order."""
    if jobs <= 1:
        yield from (build(seed, index, categories) for index in itertools.count())
        return
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    pending: deque[Future[list[Built]]] = deque()
    starts = itertools.count(0, CHUNK)
    try:
        while True:
            while len(pending) < 4 * jobs:
                start = next(starts)
                pending.append(pool.submit(build_chunk, seed, range(start, start + CHUNK), categories))
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
                 f"dropped {self.duplicates} duplicates (same StableHLO), {len(self.failures)} functions failed",
                 "pass: " + ", ".join(f"{p} {n}" for p, n in sorted(passes.items())),
                 "dtype: " + ", ".join(f"{d} {n}" for d, n in sorted(self.by_dtype.items())),
                 f"{'category':<16}{'forward':>9}{'backward':>9}"]
        for category in sorted({c for c, _ in self.by_category}):
            lines.append(f"{category:<16}{self.by_category[category, 'forward']:>9}"
                         f"{self.by_category[category, 'backward']:>9}")
        return lines


def generate(count: int, out: Path, seed: int = 0, categories: Sequence[str] = tuple(templates.CATEGORIES),
             jobs: int = 1, shard_size: int = 1000,
             progress: Callable[[int], None] = lambda n: None) -> tuple[Summary, list[Path]]:
    """Write `count` records to `out` (which holds no records yet); `progress(n)` after each."""
    summary = Summary()
    seen: set[str] = set()
    with JsonlWriter(out, PREFIX, shard_size) as writer:
        results = built_in_order(seed, categories, jobs)
        try:
            for built in results:
                if built.error:
                    summary.failures.append(built.error)
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
    ns = parser.parse_args(list(argv))
    if ns.count < 1 or ns.jobs < 1 or ns.shard_size < 1:
        parser.error("--count, --jobs and --shard-size must be positive")
    if ns.out.exists() and record_files(ns.out):
        print(f"rax ir generate: {ns.out} already holds records: give a new or empty directory", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with _progress_bar(ns.count) as advance:
        summary, paths = generate(ns.count, ns.out, ns.seed, ns.categories, ns.jobs, ns.shard_size, advance)
    print("\n".join(summary.lines(paths, time.perf_counter() - start)))
    for failure in summary.failures[:3]:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if summary.failures else 0


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
