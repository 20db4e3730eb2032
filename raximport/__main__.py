"""`python -m raximport [options] script.py [args]`, the same as `rax run`."""

import sys

from raximport.cli import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], prog="python -m raximport"))
