"""`rax ir COMMAND` (and `python -m raximport.ir COMMAND`): show, generate, validate, stats."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

COMMANDS = {
    "show": "list the records of a directory: function, file:line, shapes, IR sizes, flops",
    "generate": "synthesise a validated Python -> IR dataset (--count N --out DIR)",
    "validate": "run every record's exported artifact on its inputs and check its outputs and gradients",
    "stats": "counts per category, pass and dtype, IR sizes, the most used StableHLO ops",
}
USAGE = "usage: rax ir {" + ",".join(COMMANDS) + "} ...\n\n" + "\n".join(
    f"  {name:<10}{help}" for name, help in COMMANDS.items()) + "\n\nRun `rax ir COMMAND --help` for its options."


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    try:
        return int(importlib.import_module(f"raximport.ir.{argv[0]}").main(argv[1:]))
    except BrokenPipeError:  # `rax ir show DIR | head`: the reader has what it wanted, say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # or the flush at exit fails again
        return 141  # 128 + SIGPIPE: what a shell reports for a program the closed pipe ended


if __name__ == "__main__":
    sys.exit(main())
