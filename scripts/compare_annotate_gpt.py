"""`rax annotate` on gpt/ with its annotations removed, against gpt/'s own annotations.

    python scripts/compare_annotate_gpt.py [--timing] [--keep DIR] [train.py's --key=value ...]

Copies gpt/ and config/train_tiny.py to a temporary directory, removes every jaxtyping
annotation from the parameters and returns of gpt/'s functions (programmatically: the source text
at their positions), runs `rax annotate --write gpt/train.py config/train_tiny.py ...` there (a
few iterations), and compares the inferred annotations with gpt/'s, dimension by dimension:

- matched: gpt/ names the axis and the inferred annotation names it too, with the name that
  stands for gpt/'s name most often (`seq` -> `block_size` is a match: one consistent renaming);
- named differently: a literal size, or another name, where gpt/ names the axis;
- missed: no inferred annotation there (the run never called the function, or the argument was
  not an array).

Only gpt/'s named dimensions count (not `_`, `...`, literals, nor PRNGKeyArray). `--timing`
first measures what recording costs: train.py under `rax annotate` against `rax run`.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raximport.annotate import Edit, SourceFile, apply_edits  # noqa: E402

FILES = ("model.py", "train.py", "data.py", "sample.py", "checkpoint.py")
JAXTYPING = ("Float", "Int", "Integer", "Bool", "UInt", "Shaped", "Key", "PRNGKeyArray")
# Distinct sizes, so that the comparison measures naming, not coincidences of the tiny config
# (its head_dim 16 equals its block_size 16, its n_head 2 its n_layer 2).
RUN_ARGS = ("--n_embd=48", "--n_head=4", "--batch_size=6", "--max_iters=3", "--eval_interval=2", "--eval_iters=1",
            "--log_interval=1", "--lr_decay_iters=3", "--warmup_iters=1")
# Then sampling from the checkpoint, past the context window (the KV cache's window slide).
SAMPLE_ARGS = ("--num_samples=5", "--max_new_tokens=20")


def is_jaxtyping(annotation: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id in JAXTYPING for n in ast.walk(annotation))


def functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every def by its qualified path (`make_train_step.train_step`), a repeat numbered (`load#2`)."""
    out: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                name = name if name not in out else next(f"{name}#{i}" for i in range(2, 99) if f"{name}#{i}" not in out)
                out[name] = child
                visit(child, name + ".")
            elif not isinstance(child, ast.ClassDef):
                visit(child, prefix)
            else:
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return out


def all_args(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    return [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]


def strip(path: Path) -> int:
    """Remove the jaxtyping annotations of parameters and returns in `path`; how many."""
    source = SourceFile(str(path))
    edits = []
    for node in functions(source.tree).values():
        for arg in all_args(node):
            if arg.annotation is not None and is_jaxtyping(arg.annotation):
                start = source.position(arg.lineno, arg.col_offset + len(arg.arg.encode()))
                end = source.position(arg.annotation.end_lineno, arg.annotation.end_col_offset)
                text = source.lines[end[0] - 1][end[1]:]
                edits.append(Edit(start, (end[0], end[1] + 3), "=") if text.startswith(" = ") else Edit(start, end, ""))
        if node.returns is not None and is_jaxtyping(node.returns):
            end = source.position(node.returns.end_lineno, node.returns.end_col_offset)
            start = source._signature_end(node)
            edits.append(Edit(start, end, ""))
    path.write_text(apply_edits(source.text, edits))
    return len(edits)


def dims_of(annotation: ast.expr | None) -> list[list[str] | None]:
    """The dimension names of an annotation, per element of a returned tuple (one element
    otherwise); None for an element without a shape string."""
    if annotation is None:
        return []
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name) and annotation.value.id == "tuple":
        elements = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        return [d for e in elements for d in dims_of(e)[:1]] or [None]
    if isinstance(annotation, ast.BinOp):  # X | None
        return dims_of(annotation.left) if not _is_none(annotation.left) else dims_of(annotation.right)
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.slice, ast.Tuple):
        shape = annotation.slice.elts[-1]
        if isinstance(shape, ast.Constant) and isinstance(shape.value, str):
            return [shape.value.split()]
    return [None]


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def slots(path: Path) -> dict[tuple[str, str, int, int], str]:
    """(function, parameter or 'return', element, axis) -> the dimension written there."""
    out = {}
    tree = ast.parse(path.read_text())
    for qualname, node in functions(tree).items():
        named = [(arg.arg, arg.annotation) for arg in all_args(node)] + [("return", node.returns)]
        for param, annotation in named:
            for element, dims in enumerate(dims_of(annotation)):
                for axis, dim in enumerate(dims or []):
                    out[(f"{path.name}:{qualname}", param, element, axis)] = dim
    return out


def is_named(dim: str) -> bool:
    return dim.isidentifier() and dim != "_"


def compare(reference: dict, inferred: dict) -> tuple[Counter, dict[str, Counter], list[str], list[str]]:
    """The verdict counts, gpt/'s names -> the inferred ones, the functions with missed dims, and
    each dim named differently."""
    pairs = [(dim, inferred.get(key)) for key, dim in reference.items() if is_named(dim)]
    renaming: dict[str, Counter] = defaultdict(Counter)
    for ref, ours in pairs:
        if ours is not None and is_named(ours):
            renaming[ref][ours] += 1
    best = {ref: names.most_common(1)[0][0] for ref, names in renaming.items()}
    counts: Counter = Counter()
    different = []
    for key, ref in reference.items():
        ours = inferred.get(key)
        if is_named(ref):
            verdict = "missed" if ours is None else "matched" if ours == best.get(ref) else "named differently"
            counts[verdict] += 1
            if verdict == "named differently":
                different.append(f"{key[0]} {key[1]} axis {key[3]}: {ref} -> {ours}")
    missed_functions = sorted({key[0] for key, dim in reference.items() if is_named(dim) and key not in inferred})
    return counts, renaming, missed_functions, different


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (kept) instead of a temporary directory")
    parser.add_argument("--timing", action="store_true",
                        help="first time train.py under `rax annotate` against `rax run` (the recording's cost)")
    ns, extra = parser.parse_known_args()
    work = Path(ns.keep or tempfile.mkdtemp(prefix="rax-annotate-gpt-"))
    shutil.copytree(ROOT / "gpt", work / "gpt", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "config").mkdir(exist_ok=True)
    shutil.copy(ROOT / "config" / "train_tiny.py", work / "config")
    stripped = sum(strip(work / "gpt" / name) for name in FILES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rax = [sys.executable, "-c", "import sys; from raximport.cli import main; sys.exit(main())"]
    train = ["gpt/train.py", "config/train_tiny.py", f"--out_dir={work / 'out'}", *RUN_ARGS, *extra]

    def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return time.perf_counter() - start, done

    if ns.timing:
        run_s, _ = timed([*rax, "run", *train])
        annotate_s, _ = timed([*rax, "annotate", *train])
        print(f"recording cost: rax annotate {annotate_s:.1f} s / rax run {run_s:.1f} s = {annotate_s / run_s:.2f}x "
              f"(train.py, the stripped copy, wall time of the whole process)")
    command = [*rax, "annotate", "--write", *train, "--then", "gpt/sample.py", f"--out_dir={work / 'out'}",
               *SAMPLE_ARGS]
    _, done = timed(command)
    print(f"stripped {stripped} annotations; ran: rax {' '.join(command[3:])} (status {done.returncode})")
    print("\n".join(line for line in done.stderr.splitlines() if line.startswith(("  ", "rax annotate"))))
    reference, inferred = {}, {}
    for name in FILES:
        reference |= slots(ROOT / "gpt" / name)
        inferred |= slots(work / "gpt" / name)
    counts, renaming, missed, different = compare(reference, inferred)
    total = sum(counts.values())
    print(f"\n| gpt/'s named dims | matched | named differently | missed |\n| --- | --- | --- | --- |")
    print(f"| {total} | {counts['matched']} | {counts['named differently']} | {counts['missed']} |")
    print("\ngpt/'s name -> inferred names (count):")
    for ref, names in sorted(renaming.items()):
        print(f"  {ref:10} -> " + ", ".join(f"{n} ({c})" for n, c in names.most_common()))
    print("functions with missed dims: " + ", ".join(missed))
    print("named differently:\n  " + "\n  ".join(different))
    if not ns.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
