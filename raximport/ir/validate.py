"""`rax ir validate PATH...`: does every record's `exported` artifact still compute what the record
says it computes?

Each record's `exported` is deserialized (`jax.export.deserialize`), its input avals compared with
`input_shapes`/`input_dtypes`, and, where the record carries `inputs` (a dataset record), run on
them and compared with `expected_outputs`: same count, shapes and dtypes, and values within the
dtype's tolerance, `|actual - expected| <= tol * (|expected| + max(1, max |expected|))`
elementwise, with tol 1e-2 for float16/bfloat16, 1e-4 for float32, 1e-9 for float64, or the float
inputs' where looser (a float64 output computed from float32 inputs has float32's) (the outputs
came from another build: `rax ir generate` compiles with LLVM at -O0, and another XLA or CPU
rounds differently), and exact for integers and booleans; the summary counts the records whose outputs are the expected ones bit for
bit. A captured record has no inputs: it is checked for structure only.

A backward record (the vjp of the forward record before it, `<name>_vjp`) is also checked
numerically: along a random direction v of its float inputs (drawn from the record's seed), the
directional derivative of `sum(ct * f(x))` by central differences of the forward artifact must
match `sum(grad * v)`, within 1e-5 relative for float64 and 2e-2 for float32 (plus the rounding
error the difference quotient amplifies), at the first of three shrinking steps that agrees (a
step can straddle the kink of a `where` or `max`). Where the quotients grow like 1/step instead,
the function jumps within the steps (a `where` whose branches differ, at a point that close to
its boundary): that says nothing of the gradient, and the check is made again along a random half
of v's coordinates, up to 8 times, until one leaves the jumping coordinate out. A wrong gradient
of a smooth function shows no such growth and fails at once. Exit 0 if all pass, 1 if any fails,
2 when the input cannot be read.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from jaxtyping import Shaped

from raximport.ir.record import RecordError, decode_array, read_records, record_files
from raximport.ir.workers import worker_pool

TOLERANCES = {"float16": 1e-2, "bfloat16": 1e-2, "float32": 1e-4, "float64": 1e-9}
GRADIENT = {"float32": (2e-2, (1e-2, 3e-3, 1e-3)), "float64": (1e-5, (1e-5, 1e-6, 1e-4))}  # tol, steps
GROUP_CHUNK = 8  # functions per task handed to a worker
JUMP_RETRIES = 8  # directions tried when the function jumps within a step (module docstring)


@dataclass(frozen=True)
class Outcome:
    """One record's verdict: `status` is passed, failed or structure only."""

    where: str  # shard:line
    function: str
    category: str
    kind: str  # forward, backward or capture
    status: str
    reason: str = ""
    gradient_checked: bool = False
    bit_exact: bool = False  # outputs bit for bit the expected ones (not just within tolerance)


def check_group(group: list[tuple[str, dict[str, Any]]]) -> list[Outcome]:
    """Check a forward record and the backward records after it (in a worker, x64 on)."""
    import jax

    outcomes = []
    forward: tuple[dict[str, Any], Callable[..., Any]] | None = None
    with jax.enable_x64(True):
        for where, record in group:
            kind = record.get("pass") or "capture"
            base = dict(where=where, function=str(record.get("function")), category=str(record.get("category") or "-"),
                        kind=kind)
            try:
                call, outputs, status, exact = _run(record)
                checked = False
                if kind == "backward" and forward is not None and outputs is not None:
                    _check_gradient(record, outputs, *forward)
                    checked = True
                outcomes.append(Outcome(**base, status=status, gradient_checked=checked, bit_exact=exact))
                if kind == "forward":
                    forward = (record, call)
            except Failure as exc:
                outcomes.append(Outcome(**base, status="failed", reason=str(exc)))
    return outcomes


class Failure(Exception):
    """Why a record fails validation."""


def _run(record: dict[str, Any]) -> tuple[Callable[..., Any], list[np.ndarray] | None, str, bool]:
    """Deserialize and check the record's artifact: (its jitted call, its outputs, status, whether
    the outputs are the expected ones bit for bit)."""
    import jax

    try:
        exported = jax.export.deserialize(bytearray(base64.b64decode(record["exported"], validate=True)))
    except Exception as exc:  # noqa: BLE001 - any damage to the artifact is the record's failure
        raise Failure(f"exported does not deserialize ({type(exc).__name__}: {str(exc)[:120]})") from None
    shapes = [list(a.shape) for a in exported.in_avals]
    dtypes = [str(a.dtype) for a in exported.in_avals]
    if shapes != record.get("input_shapes") or dtypes != record.get("input_dtypes"):
        raise Failure(f"exported takes {_signature(shapes, dtypes)}, the record says "
                      f"{_signature(record.get('input_shapes') or [], record.get('input_dtypes') or [])}")
    call = jax.jit(exported.call)
    if record.get("inputs") is None:
        return call, None, "structure only", False
    inputs = [decode_array(i) for i in record["inputs"]]
    try:
        outputs = [np.asarray(o) for o in jax.tree.leaves(call(*inputs))]
    except Exception as exc:  # noqa: BLE001 (whatever the artifact raises, the record failed)
        raise Failure(f"exported does not run on the inputs ({type(exc).__name__}: {str(exc)[:120]})") from None
    expected = [decode_array(e) for e in record.get("expected_outputs") or []]
    if len(outputs) != len(expected):
        raise Failure(f"{len(outputs)} outputs, {len(expected)} expected")
    for k, (actual, want) in enumerate(zip(outputs, expected)):
        if actual.shape != want.shape or actual.dtype != want.dtype:
            raise Failure(f"output {k} is {actual.dtype}{list(actual.shape)}, expected {want.dtype}{list(want.shape)}")
        if not agree(actual, want, inputs=record["input_dtypes"]):
            diff = np.max(np.abs(actual.astype(np.float64) - want.astype(np.float64)))
            raise Failure(f"output {k} differs from expected_outputs (max |difference| {diff:.3g}, "
                          f"tolerance {tolerance(want.dtype.name, record['input_dtypes']):g} for {want.dtype})")
    return call, outputs, "passed", all(a.tobytes() == e.tobytes() for a, e in zip(outputs, expected))


def tolerance(output: str, inputs: Sequence[str] = ()) -> float | None:
    """The tolerance of a float output of dtype `output`: its dtype's, or the float inputs' where
    looser (a float64 output computed from float32 inputs carries float32 rounding); None (exact)
    for integers and booleans."""
    if output not in TOLERANCES:
        return None
    return max(TOLERANCES[d] for d in (output, *inputs) if d in TOLERANCES)


def agree(actual: Shaped[np.ndarray, "..."], expected: Shaped[np.ndarray, "..."], margin: float = 1.0,
          inputs: Sequence[str] = ()) -> bool:
    """Equal within `margin` times the tolerance of the output given the input dtypes `inputs`
    (`tolerance`, module docstring); NaNs where expected has NaNs."""
    tol = tolerance(expected.dtype.name, inputs)
    if tol is None:
        return bool(np.array_equal(actual, expected))
    tol *= margin
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(e[np.isfinite(e)]), initial=0.0)))
    return bool(np.allclose(a, e, rtol=tol, atol=tol * scale, equal_nan=True))


def _signature(shapes: Sequence[Sequence[int]], dtypes: Sequence[str]) -> str:
    return "(" + ", ".join(f"{d}{list(s)}" for s, d in zip(shapes, dtypes)) + ")"


def _check_gradient(backward: dict[str, Any], grads: list[np.ndarray], forward: dict[str, Any],
                    call: Callable[..., Any]) -> None:
    """The backward record's gradients against central differences of the forward artifact."""
    inputs = [decode_array(i) for i in forward["inputs"]]
    cotangents = [decode_array(i) for i in backward["inputs"][len(inputs):]]
    floats = [k for k, x in enumerate(inputs) if x.dtype.name in GRADIENT]
    if len(floats) != len(grads):
        raise Failure(f"{len(grads)} gradients for {len(floats)} float inputs of {forward['function']}")
    dtype = inputs[floats[0]].dtype.name
    rng = np.random.default_rng(int(backward.get("seed") or 0))
    directions = {k: rng.standard_normal(inputs[k].shape) for k in floats}
    for _ in range(JUMP_RETRIES):
        errors, jumps = _check_direction(inputs, cotangents, floats, grads, directions, call, dtype)
        if not errors:
            return
        if not jumps:
            break
        # The function jumps within a step of the point (a `where` whose branches differ there):
        # look along a random half of the coordinates, which in time leaves the jumping one out.
        directions = {k: v * rng.integers(0, 2, v.shape) for k, v in directions.items()}
    else:
        errors.append(f"and a jump within every step along {JUMP_RETRIES} directions")
    raise Failure(f"gradient along a random direction is {errors[0]}, central differences give "
                  f"{', '.join(errors[1:])}")


def _check_direction(inputs: list[np.ndarray], cotangents: list[np.ndarray], floats: list[int],
                     grads: list[np.ndarray], directions: dict[int, np.ndarray], call: Callable[..., Any],
                     dtype: str) -> tuple[list[str], bool]:
    """([], _) if the directional derivative along `directions` agrees with central differences at
    one of the dtype's steps; else (the derivative and each difference quotient, as text; whether
    the quotients grow like 1/step, the mark of a jump inside the steps rather than a wrong
    gradient)."""
    tol, steps = GRADIENT[dtype]
    analytic = sum(float(np.sum(g.astype(np.float64) * directions[k])) for k, g in zip(floats, grads))
    scale = float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
                  * np.sqrt(sum(np.sum(v ** 2) for v in directions.values())))

    def along(t: float) -> tuple[float, float]:
        moved = [(x + t * directions[k]).astype(x.dtype) if k in directions else x for k, x in enumerate(inputs)]
        outputs = [np.asarray(o, np.float64) for o in _leaves(call(*moved))]
        products = [c.astype(np.float64) * o for c, o in zip(cotangents, outputs)]
        return sum(float(np.sum(p)) for p in products), sum(float(np.sum(np.abs(p))) for p in products)

    errors, misses = [f"{analytic:.6g}"], {}
    for h in steps:
        (plus, size), (minus, _) = along(h), along(-h)
        numeric = (plus - minus) / (2 * h)
        allowed = tol * (abs(analytic) + scale) + 10 * np.finfo(dtype).eps * size / h
        if abs(numeric - analytic) <= allowed:
            return [], False
        errors.append(f"{numeric:.6g} at step {h:g}")
        misses[h] = abs(numeric - analytic)
    small, large = min(misses), max(misses)
    ordered = [misses[h] for h in sorted(misses, reverse=True)]
    jumps = all(a < b for a, b in zip(ordered, ordered[1:])) and misses[small] >= 0.5 * (large / small) * misses[large]
    return errors, jumps


def _leaves(tree: Any) -> list[Any]:
    import jax

    return jax.tree.leaves(tree)


def groups(records: Sequence[tuple[str, dict[str, Any]]]) -> list[list[tuple[str, dict[str, Any]]]]:
    """The records in runs of one forward record and the backward records of its function."""
    runs: list[list[tuple[str, dict[str, Any]]]] = []
    for where, record in records:
        if runs and record.get("pass") == "backward" and \
                f"{runs[-1][0][1].get('function')}_vjp" == record.get("function"):
            runs[-1].append((where, record))
        else:
            runs.append([(where, record)])
    return runs


def check_chunk(chunk: list[list[tuple[str, dict[str, Any]]]]) -> list[Outcome]:
    return [outcome for group in chunk for outcome in check_group(group)]


def validate(paths: Sequence[str | os.PathLike[str]], jobs: int = 1) -> Iterator[Outcome]:
    """Every record's outcome, in file order (RecordError if a line is not a record)."""
    records = [(f"{path.name}:{line}", record) for path in record_files(paths)
               for line, record in enumerate(read_records([path]), 1)]
    runs = groups(records)
    chunks = [runs[i:i + GROUP_CHUNK] for i in range(0, len(runs), GROUP_CHUNK)]
    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield from check_chunk(chunk)
        return
    with worker_pool(jobs) as pool:
        for outcomes in pool.map(check_chunk, chunks):
            yield from outcomes


def main(argv: Sequence[str]) -> int:
    """`rax ir validate`: 0 if every record passes, 1 if any fails, 2 if the input cannot be read."""
    parser = argparse.ArgumentParser(prog="rax ir validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a directory of *.jsonl records, or record files")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="J",
                        help="worker processes (default: one per core)")
    ns = parser.parse_args(list(argv))
    try:
        if not record_files(ns.paths):
            raise RecordError(f"no *.jsonl records in {', '.join(map(str, ns.paths))}")
        outcomes = list(validate(ns.paths, ns.jobs))
    except RecordError as exc:
        print(f"rax ir validate: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(outcomes)))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def summary_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """The counts per category and pass, then each failing record."""
    status = Counter(o.status for o in outcomes)
    table = Counter((o.category, o.kind, o.status) for o in outcomes)
    lines = [f"{len(outcomes)} records: {status['passed']} passed, {status['failed']} failed, "
             f"{status['structure only']} structure only (no inputs); "
             f"{sum(o.gradient_checked for o in outcomes)} backward records checked by central differences; "
             f"{sum(o.bit_exact for o in outcomes)} records' outputs the expected ones bit for bit",
             f"{'category':<16}{'pass':<10}{'passed':>8}{'failed':>8}{'structure':>10}"]
    for category, kind in sorted({(o.category, o.kind) for o in outcomes}):
        lines.append(f"{category:<16}{kind:<10}{table[category, kind, 'passed']:>8}"
                     f"{table[category, kind, 'failed']:>8}{table[category, kind, 'structure only']:>10}")
    lines += [f"FAILED {o.where} {o.function} ({o.kind}): {o.reason}" for o in outcomes if o.status == "failed"]
    return lines
