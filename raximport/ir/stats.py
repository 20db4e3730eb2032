"""`rax ir stats PATH...`: what a set of IR records holds: counts per category, pass and dtype, the
sizes of each text field (mean and median characters) and the StableHLO ops used most. Reads the
records without importing JAX."""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections import Counter
from typing import Any, Iterable, Sequence

from raximport.ir.record import RecordError, read_records, record_files

TEXT_FIELDS = ("source", "jaxpr", "stablehlo", "hlo")
_OP = re.compile(r'(?:^|=)\s*"?((?:stablehlo|chlo|mhlo)\.[a-z_]+)\b', re.MULTILINE)  # an op, not an attribute


def dtype_of(record: dict[str, Any]) -> str:
    """A record's dtype for counting: its inputs' dtypes, joined ("float32", "float32+int64")."""
    return "+".join(sorted(set(record.get("input_dtypes") or []))) or "-"


def ops(stablehlo: str) -> Counter[str]:
    """How often each StableHLO (and CHLO) operation occurs in a module's text."""
    return Counter(_OP.findall(stablehlo))


def stats_lines(records: Iterable[dict[str, Any]], top: int = 20) -> list[str]:
    counts: dict[str, Counter[str]] = {"category": Counter(), "pass": Counter(), "dtype": Counter()}
    sizes: dict[str, list[int]] = {name: [] for name in TEXT_FIELDS}
    histogram: Counter[str] = Counter()
    total = 0
    for record in records:
        total += 1
        counts["category"][record.get("category") or "-"] += 1
        counts["pass"][record.get("pass") or "capture"] += 1
        counts["dtype"][dtype_of(record)] += 1
        for name in TEXT_FIELDS:
            sizes[name].append(len(record.get(name) or ""))
        histogram.update(ops(record.get("stablehlo") or ""))
    lines = [f"{total} records"]
    for name, counter in counts.items():
        lines.append(f"{name}: " + ", ".join(f"{key} {n}" for key, n in sorted(counter.items())))
    lines.append(f"{'field':<12}{'mean chars':>12}{'median':>10}{'max':>10}")
    for name, values in sizes.items():
        if values:
            lines.append(f"{name:<12}{statistics.fmean(values):>12,.0f}{statistics.median(values):>10,.0f}"
                         f"{max(values):>10,}")
    lines.append(f"top StableHLO ops ({len(histogram)} distinct, {sum(histogram.values()):,} in all):")
    lines += [f"  {op:<32}{n:>9,}" for op, n in histogram.most_common(top)]
    return lines


def main(argv: Sequence[str]) -> int:
    """`rax ir stats`: 0, or 2 for a missing path or a line that is not a record."""
    parser = argparse.ArgumentParser(prog="rax ir stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a directory of *.jsonl records, or record files")
    parser.add_argument("--top", type=int, default=20, metavar="N", help="how many ops to list (default 20)")
    ns = parser.parse_args(list(argv))
    try:
        print("\n".join(stats_lines(read_records(record_files(ns.paths)), ns.top)))
    except RecordError as exc:
        print(f"rax ir stats: {exc}", file=sys.stderr)
        return 2
    return 0
