"""`rax ir COMMAND` (and `python -m raximport.ir COMMAND`): show, generate, validate, stats."""

from __future__ import annotations

import importlib
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
    return int(importlib.import_module(f"raximport.ir.{argv[0]}").main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
