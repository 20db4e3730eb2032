"""Benchmark `rax lint` on the installed sources of jax, flax, optax, equinox and numpy.

Prints, per library and in all: the lines linted, crashes (internal errors of a rule: goal 0),
files that do not parse (RAX000), findings per 1,000 lines with the default rules (goal <= 1, a
sample is printed for review), and speed in lines per second per core, with a cold and then a
warm result cache (goal >= 50,000). Per core = lines / CPU seconds of this process and its
workers, so a busy machine does not distort it; wall-clock figures are printed beside.

    python scripts/bench_lint.py [--libraries jax numpy ...] [--jobs N] [--sample 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from raximport.collecting import collecting_rarely
from raximport.lint import engine
from raximport.lint.output import concise_line
from raximport.lint.settings import Settings

LIBRARIES = ("jax", "flax", "optax", "equinox", "numpy")


def location(name: str) -> Path:
    """The installed package's directory, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(paths: list[Path], settings: Settings, cache: Path | None, jobs: int | None) -> tuple[engine.Outcome, float, float]:
    cpu, wall = cpu_seconds(), time.perf_counter()
    outcome = engine.run(paths, settings, cache_dir=cache, jobs=jobs)
    return outcome, time.perf_counter() - wall, cpu_seconds() - cpu


def _seconds(step: Callable[[], object]) -> float:
    start = time.process_time()
    step()
    return time.process_time() - start


def rule_times(paths: list[Path]) -> None:
    """CPU seconds of parsing, of the shared index, and of each rule, over every file (one process,
    with the engine's garbage-collector setting)."""
    from raximport.lint.registry import RULES
    from raximport.lint.source import SourceFile

    spent: Counter[str] = Counter()
    lines = 0
    with collecting_rarely():
        for path in engine.discover(paths, Settings(Path.cwd())):
            text = engine.read(path)[1]
            if text is None:
                continue
            lines += text.count("\n") + 1
            with SourceFile(str(path), text) as source:
                try:
                    spent["parse"] += _seconds(lambda: source.tree)
                    spent["index"] += _seconds(source.nodes)
                except (SyntaxError, ValueError, RecursionError):
                    continue  # RAX000: no rule runs
                for code, rule in RULES.items():  # a rule that raises stops the benchmark
                    spent[code] += _seconds(lambda: list(rule.check(source)))
    print(f"CPU seconds per step over {lines:,} lines (one process):")
    for label, seconds in spent.most_common():
        print(f"  {label:<7} {seconds:7.2f} s  {lines / seconds if seconds else float('inf'):>12,.0f} lines/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES))
    parser.add_argument("--jobs", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--sample", type=int, default=20, help="default-rule findings to print for review")
    parser.add_argument("--rule-times", action="store_true", help="only time parsing and each rule, then stop")
    ns = parser.parse_args()
    roots = {name: location(name) for name in ns.libraries}
    paths = list(roots.values())
    if ns.rule_times:
        return rule_times(paths)
    root = Path(os.path.commonpath(paths))
    default, everything = Settings(root), Settings(root, select=("ALL",))

    # Crashes and parse failures: every rule, no cache.
    all_rules, wall_all, cpu_all = timed(paths, everything, None, ns.jobs)
    lines = {f.path: f.text.count("\n") + 1 for f in all_rules.files}
    total = sum(lines.values())
    print(f"{len(all_rules.files)} files, {total:,} lines; every rule (ALL): {cpu_all:.1f} CPU s, {wall_all:.1f} s wall")
    print(f"crashes (internal errors): {len(all_rules.errors)}")
    for message in all_rules.errors.values():
        print(f"  {message}")
    unparsed = [f.path for f in all_rules.files if any(x.code == "RAX000" for x in f.findings)]
    print(f"files that do not parse (RAX000): {len(unparsed)}")

    # Default rules: cold cache, then warm.
    with tempfile.TemporaryDirectory() as directory:
        cache = Path(directory) / "lint"
        cold, wall_cold, cpu_cold = timed(paths, default, cache, ns.jobs)
        warm, wall_warm, cpu_warm = timed(paths, default, cache, ns.jobs)
    findings = [(f.path, x) for f in cold.files for x in f.findings if x.code != "RAX000"]

    print("\nfindings per 1,000 lines, default rules:")
    for name, directory in roots.items():
        mine = [x for path, x in findings if path.is_relative_to(directory)]
        count = sum(n for path, n in lines.items() if path.is_relative_to(directory))
        codes = Counter(x.code for x in mine)
        print(f"  {name:<8} {count:>8,} lines {len(mine):>5} findings {1000 * len(mine) / count:6.2f}/1k  "
              + " ".join(f"{c}:{n}" for c, n in sorted(codes.items())))
    print(f"  {'all':<8} {total:>8,} lines {len(findings):>5} findings {1000 * len(findings) / total:6.2f}/1k (goal <= 1)")

    print("\nspeed, default rules (lines/s per core = lines / CPU s; goal >= 50,000):")
    for label, wall, cpu in (("cold cache", wall_cold, cpu_cold), ("warm cache", wall_warm, cpu_warm)):
        print(f"  {label}: {total / cpu:>12,.0f} lines/s per core ({cpu:.2f} CPU s; {total / wall:,.0f} lines/s wall, "
              f"{wall:.2f} s)")
    # fewer hits than files: a rule's source changed between the runs (the cache is keyed on it)
    print(f"  warm run: {warm.cache_hits} of {len(warm.files)} files from the cache")

    print(f"\na sample of {min(ns.sample, len(findings))} default-rule findings, for review:")
    for path, finding in random.Random(0).sample(findings, min(ns.sample, len(findings))):
        print("  " + concise_line(str(path.relative_to(root)), finding))


if __name__ == "__main__":
    main()
