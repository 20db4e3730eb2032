"""`rax ir show DIR`: the IR records of a directory (or files), one row each: the function, where
it is defined, its inputs, the size of its IR and memory, and XLA's flops where available. A
table with rich on a terminal, tab-separated plain text otherwise (for grep and cut). Reads the
records without importing JAX."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from raximport.ir.record import RecordError, read_records, record_files
from raximport.memory import format_bytes
from raximport.report import use_rich

COLUMNS = ("function", "defined at", "inputs", "static", "stablehlo chars", "hlo chars", "memory", "flops")


def main(argv: Sequence[str]) -> int:
    """`rax ir show PATH...`: 0 after listing, 2 for a missing path or a line that is not a record."""
    parser = argparse.ArgumentParser(prog="rax ir show", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a directory of *.jsonl records, or record files")
    ns = parser.parse_args(list(argv))
    try:
        files = record_files(ns.paths)
        rows = [row(record) for record in read_records(files)]
    except RecordError as exc:
        print(f"rax ir show: {exc}", file=sys.stderr)
        return 2
    summary = f"{len(rows)} record{'s' * (len(rows) != 1)} in {len(files)} file{'s' * (len(files) != 1)}"
    if use_rich(sys.stdout):
        _print_rich(rows, summary)
    else:
        print("\t".join(COLUMNS))
        for cells in rows:
            print("\t".join(cells))
        print(summary)
    return 0


SHOWN_INPUTS = 4  # a train step's parameters and optimizer state are dozens of arrays: the record has them all
SHOWN_CHARS = 40  # of a static argument's repr (a config dataclass)


def row(record: dict[str, Any]) -> tuple[str, ...]:
    """One record's cells, in COLUMNS order."""
    inputs = [f"{dtype}[{','.join(map(str, shape))}]"
              for dtype, shape in zip(record.get("input_dtypes") or [], record.get("input_shapes") or [])]
    if len(inputs) > SHOWN_INPUTS:
        inputs = [*inputs[:SHOWN_INPUTS - 1], f"... {len(inputs)} in all"]
    static = ", ".join(f"{k}={_cut(v)}" for k, v in (record.get("static_args") or {}).items())
    memory = record.get("memory_analysis") or {}
    held = sum(memory.get(f"{f}_bytes") or 0 for f in ("argument", "output", "temp", "generated_code"))
    cost = record.get("cost_analysis") or {}
    flops = cost.get("flops")
    return (
        str(record.get("function", "?")) + (f" ({record['pass']})" if record.get("pass") else ""),
        f"{_library_relative(str(record.get('file', '?')))}:{record.get('line', '?')}",
        ", ".join(inputs),
        static,
        f"{len(record.get('stablehlo') or ''):,}",
        f"{len(record.get('hlo') or ''):,}",
        format_bytes(held) if memory.get("available") else "-",
        f"{flops:,.0f}" if cost.get("available") and flops is not None else "-",
    )


def _library_relative(path: str) -> str:
    """`optax/transforms/_combining.py` for a file of an installed package."""
    return path.rsplit("-packages/", 1)[-1]


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def _print_rich(rows: list[tuple[str, ...]], summary: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS, caption=summary)
    for column in table.columns[4:]:
        column.justify = "right"
    for column in (table.columns[0], *table.columns[4:]):
        column.no_wrap = True
    where = table.columns[1]  # kept whole where it fits: the line number is the point of it
    where.overflow, where.min_width = "fold", min(max((len(cells[1]) for cells in rows), default=0), 32)
    for cells in rows:
        table.add_row(*cells)
    Console(highlight=False).print(table)
