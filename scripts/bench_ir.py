"""Benchmark `rax ir generate` and `rax ir validate`: the issue's dataset, 12,000 records over the
10 categories (>= 600 functions each, forward and backward), on --jobs worker processes.

    python scripts/bench_ir.py                      # 12,000 records, 2 workers, then validate them
    python scripts/bench_ir.py --count 1200         # a tenth, for a quick figure
    python scripts/bench_ir.py --out DIR            # keep the dataset in DIR (a temp dir otherwise)
    python scripts/bench_ir.py --twice              # generate again (other workers' shares) and compare bytes

Prints the generation time and records/s against the 15-minute goal, the functions per
category, and the validation's time and pass rate. Exits 1 unless every record validates (and,
at the full count, every category has 600 functions; with --twice, unless both runs wrote the
same bytes). Each record costs one XLA compile to
generate and one to validate, so the machine's load matters: run it alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from raximport.ir import generate, templates, validate

GOAL_SECONDS = 15 * 60
FULL = 12_000
CATEGORIES = tuple(templates.CATEGORIES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=FULL, help=f"records to generate (default {FULL:,})")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="where to write the dataset (default: a temp dir, removed)")
    parser.add_argument("--twice", action="store_true",
                        help="generate the dataset a second time (in a temp dir) and compare the bytes")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = ns.out or Path(scratch) / "ir"
        start = time.perf_counter()
        summary, paths = generate.generate(ns.count, out, ns.seed, jobs=ns.jobs)
        seconds = time.perf_counter() - start
        print("\n".join(summary.lines(paths, seconds)))
        for failure in summary.failures:
            print(f"failed: {failure}")
        scaled = seconds * FULL / summary.records
        print(f"generate: {summary.records:,} records in {seconds:.0f} s ({summary.records / seconds:.1f} records/s); "
              f"{FULL:,} records at this rate: {scaled / 60:.1f} min (goal {GOAL_SECONDS // 60} min)")
        functions = Counter(generate.category_of(i, CATEGORIES) for i in summary.functions)
        print("functions per category: " + ", ".join(f"{c} {n}" for c, n in sorted(functions.items())))
        same = not ns.twice or _same_bytes(paths, ns, Path(scratch) / "again")

        start = time.perf_counter()
        outcomes = list(validate.validate([out], ns.jobs))
        seconds = time.perf_counter() - start
        passed = sum(o.status == "passed" for o in outcomes)
        lines = validate.summary_lines(outcomes)
        print("\n".join(lines[:1] + [line for line in lines if line.startswith("FAILED")]))
        print(f"validate: {len(outcomes):,} records in {seconds:.0f} s ({len(outcomes) / seconds:.1f} records/s): "
              f"{100 * passed / max(len(outcomes), 1):.2f}% passed")
    enough = ns.count < FULL or min(functions.values(), default=0) >= 600
    return 0 if passed == len(outcomes) and not summary.failures and enough and same else 1


def _same_bytes(paths: list[Path], ns: argparse.Namespace, again: Path) -> bool:
    """Generate the same seed again and compare it with `paths`, shard by shard: the workers take
    the functions in another order, so this shows whether a record depends on who built it."""
    start = time.perf_counter()
    _, others = generate.generate(ns.count, again, ns.seed, jobs=ns.jobs)
    different = [p.name for p, o in zip(paths, others) if p.read_bytes() != o.read_bytes()]
    same = len(paths) == len(others) and not different
    print(f"again: {len(others)} shards in {time.perf_counter() - start:.0f} s, "
          + ("the same bytes" if same else f"NOT the same bytes: {', '.join(different) or 'other shards'}"))
    return same


if __name__ == "__main__":
    sys.exit(main())
