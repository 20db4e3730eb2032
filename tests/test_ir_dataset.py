"""`rax ir generate/validate/stats`: a synthetic Python -> IR dataset whose every category yields
complete records, that is the same bytes for a seed whatever the number of workers, holds one
record per program, and whose validation passes when the records are sound and fails when an
output, an artifact or a gradient is wrong."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from raximport import cli
from raximport.ir import generate, stats, templates, validate, workers
from raximport.ir.record import DATASET_KEYS, RECORD_KEYS, canonical_hash, decode_array, encode_array

COUNT = 24  # records: more than one function of each of the 10 categories


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ir") / "data"
    summary, paths = generate.generate(COUNT, out, seed=3, jobs=1, shard_size=10)
    assert summary.failures == [] and summary.records == COUNT and len(paths) == 3
    return out


def lines(directory: Path) -> list[tuple[Path, int, dict]]:
    return [(path, number, json.loads(line)) for path in sorted(directory.glob("*.jsonl"))
            for number, line in enumerate(path.read_text().splitlines(), 1)]


def test_every_category_yields_complete_records(dataset: Path) -> None:
    records = [r for _, _, r in lines(dataset)]
    assert {r["category"] for r in records if r["pass"] == "forward"} == set(templates.CATEGORIES)
    assert {r["pass"] for r in records} == {"forward", "backward"}
    assert {"float32", "float64"} <= {d for r in records for d in r["input_dtypes"]}
    for r in records:
        assert tuple(r) == DATASET_KEYS
        assert "{ lambda" in r["jaxpr"] and "stablehlo." in r["stablehlo"] and "HloModule" in r["hlo"]
        assert r["cost_analysis"]["available"] and r["memory_analysis"]["available"]
        assert r["id"] == canonical_hash(r["stablehlo"])
        assert [list(decode_array(i).shape) for i in r["inputs"]] == r["input_shapes"]
        assert r["source"].splitlines()[r["line"] - 1].startswith(f"def {r['function']}(")
        namespace: dict = {}
        exec(r["source"], namespace)  # the source stands alone
        assert callable(namespace[r["function"]])
    backward = next(r for r in records if r["pass"] == "backward")
    assert "jax.vjp(" in backward["source"] and backward["function"].endswith("_vjp")


def test_every_line_of_a_shard_has_the_same_keys_and_json_types(dataset: Path) -> None:
    """What datasets.load_dataset("json", data_files=...) needs to read the shards as they are:
    the same keys everywhere, and each key's values of one JSON type (or null)."""

    def leaves(value: object, path: str = "") -> dict[str, str]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}/{key}").items()}
        return {path: "list" if isinstance(value, list) else type(value).__name__}

    for path in sorted(dataset.glob("*.jsonl")):
        shapes = [leaves(record) for p, _, record in lines(dataset) if p == path]
        assert all(shape.keys() == shapes[0].keys() for shape in shapes)
        for key in shapes[0]:
            assert len({shape[key] for shape in shapes} - {"NoneType"}) <= 1, key


@pytest.mark.slow
def test_the_same_seed_gives_the_same_bytes_with_one_worker_or_two(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    run = subprocess.run([sys.executable, "-m", "raximport.ir", "generate", "--count", str(COUNT), "--out",
                          str(again), "--seed", "3", "--jobs", "2", "--shard-size", "10"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert f"wrote {COUNT} records" in run.stdout and "0 functions failed" in run.stdout
    names = sorted(p.name for p in dataset.glob("*.jsonl"))
    assert names == sorted(p.name for p in again.glob("*.jsonl"))
    for name in names:
        assert (dataset / name).read_bytes() == (again / name).read_bytes()
    other = generate.build(4, 0, tuple(templates.CATEGORIES)).records[0]  # another seed, another function
    assert other["source"] != lines(dataset)[0][2]["source"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_each_worker_has_a_cpu_of_its_own() -> None:
    with workers.worker_pool(2) as pool:
        cpus = [f.result() for f in [pool.submit(_cpus_after, 1.0) for _ in range(2)]]
    assert all(len(c) == 1 for c in cpus) and cpus[0] != cpus[1]


def _cpus_after(seconds: float) -> set[int]:
    time.sleep(seconds)  # long enough for the other worker to take the other task
    return os.sched_getaffinity(0)


def test_each_function_is_traced_and_lowered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import jax

    lowerings = []
    real_lower = jax.stages.Traced.lower
    monkeypatch.setattr(jax.stages.Traced, "lower", lambda self, *a, **k: lowerings.append(1) or real_lower(self, *a, **k))
    monkeypatch.setattr(jax.export, "export", lambda *a, **k: pytest.fail("a second trace and lowering, to export"))
    built = generate.build(3, 6, ("gradients",))  # a forward and a backward record
    assert built.error is None and len(built.records) == 2
    assert len(lowerings) == 2
    assert all(r["exported"] and r["hlo"] for r in built.records)


def test_a_program_seen_before_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = generate.build(3, 0, ("arithmetic",))
    same = generate.build(3, 0, ("arithmetic",))
    renamed = [dict(r, function=r["function"] + "_again") for r in same.records]

    def built(seed: int, categories: object, jobs: int, options: object):
        yield first
        yield generate.Built(1, renamed)
        yield generate.build(3, 2, ("arithmetic",))

    monkeypatch.setattr(generate, "built_in_order", built)
    summary, _ = generate.generate(10, tmp_path / "out", seed=3)
    written = [r for _, _, r in lines(tmp_path / "out")]
    assert summary.duplicates == len(renamed) and len(written) == summary.records
    assert len({r["id"] for r in written}) == len(written)
    assert not any(r["function"].endswith("_again") for r in written)


def test_a_worker_leaves_out_a_program_it_built_before_without_compiling_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import jax

    kept: set[str] = set()
    first = generate.build(3, 6, ("gradients",), kept)
    assert len(first.records) == 2 and kept == {r["id"] for r in first.records}
    monkeypatch.setattr(jax.stages.Lowered, "compile", lambda *a, **k: pytest.fail("compiled a duplicate"))
    again = generate.build(3, 6, ("gradients",), kept)
    assert again.records == [] and again.duplicates == 2 and again.error is None


def test_a_record_does_not_depend_on_what_its_process_built_before() -> None:
    """JAX caches traces per process, and a cached trace keeps the source locations of whoever
    traced it first: a scatter-multiply's pullback traces `mul` the way a cumprod's lowering asks
    for it, so the cumprod's HLO named the scatter's line, or not, by what its worker had built
    before (two 12,000-record runs differed in 210 records)."""
    import jax

    x = np.linspace(0.5, 1.5, 12, dtype=np.float32).reshape(3, 4)
    cumprod = generate.HEADER + "def cumprod(x):\n    return jnp.cumprod(x, axis=1)\n"
    scatter = generate.HEADER + ("\n" * 4 + "def scatter(x, y):\n    return x.at[jnp.array([0, 1])].mul(y, unique_indices=True)\n\n\n"
                                 "def scatter_vjp(x, y, ct):\n    _, pullback = jax.vjp(scatter, x, y)\n"
                                 "    return pullback(ct)\n")
    with jax.enable_x64(True):
        jax.clear_caches()  # as in a process that has built nothing
        alone, _, _ = generate._record("cumprod", cumprod, [x])
        jax.clear_caches()
        generate._record("scatter_vjp", scatter, [x, x[:2], x])
        after, _, _ = generate._record("cumprod", cumprod, [x])
    assert isinstance(alone, dict) and isinstance(after, dict)
    assert {k for k in alone if alone[k] != after[k]} == set()


def test_an_ill_conditioned_program_is_left_out() -> None:
    """The logistic map at r=3.9 is chaotic: after 60 steps, one ulp in x decides the output."""
    import jax

    x = np.linspace(0.1, 0.9, 8, dtype=np.float32)
    chaotic = "def logistic(x):\n    return jax.lax.fori_loop(0, 60, lambda i, y: 3.9 * y * (1 - y), x)\n"
    tame = "def tame(x):\n    return jax.lax.fori_loop(0, 60, lambda i, y: 0.5 * y * (1 - y), x)\n"
    with jax.enable_x64(True):
        left_out, _, _ = generate._record("logistic", generate.HEADER + chaotic, [x])
        kept, _, _ = generate._record("tame", generate.HEADER + tame, [x])
    assert left_out == generate.ILL_CONDITIONED
    assert isinstance(kept, dict) and kept["function"] == "tame"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_float64_output_of_float32_inputs_is_checked_at_float32_precision(dtype: str) -> None:
    """`var(x) + mean(argmax(x))` of float32 x is float64 under x64 but holds float32 rounding,
    which another build (LLVM -O0 against XLA's default) may do 2 ulps apart: no failure for that.
    From float64 inputs, the same change is a real difference."""
    import jax

    source = generate.HEADER + "def f(x):\n    return jnp.var(x) + jnp.mean(jnp.argmax(x, axis=1))\n"
    x = np.random.default_rng(0).normal(size=(8, 5)).astype(dtype)
    with jax.enable_x64(True):
        record, _, _ = generate._record("f", source, [x])
    assert isinstance(record, dict)
    (out,) = [decode_array(o) for o in record["expected_outputs"]]
    assert out.dtype == np.float64
    record["expected_outputs"] = [encode_array(out + 2 * np.spacing(np.float32(out)).astype(np.float64))]
    [outcome] = validate.check_group([("a.jsonl:1", record)])
    assert outcome.status == ("passed" if dtype == "float32" else "failed"), outcome.reason


def test_fast_codegen_changes_no_ir_field_of_xla_default_build() -> None:
    """LLVM at -O0 (the default) against XLA's default level: the same record, but for the options
    and outputs within validate's tolerance (often the same bits)."""
    categories = tuple(templates.CATEGORIES)
    for index in range(len(categories)):
        fast = generate.build(5, index, categories)
        default = generate.build(5, index, categories, options={})
        assert fast.error is None and len(fast.records) == len(default.records) > 0
        for f, d in zip(fast.records, default.records):
            assert f["compile_options"] == generate.FAST_CODEGEN and d["compile_options"] == {}
            assert {k for k in f if f[k] != d[k]} <= {"compile_options", "expected_outputs"}
            for a, b in zip(f["expected_outputs"], d["expected_outputs"]):
                assert validate.agree(decode_array(a), decode_array(b)), f["function"]


def test_shared_mlir_contexts_change_no_byte_and_are_put_back() -> None:
    from jax._src.interpreters import mlir

    from raximport import jax_internals

    make = mlir.make_ir_context
    alone = generate.build(3, 6, ("gradients",))
    with jax_internals.shared_ir_contexts(3):
        contexts = [mlir.make_ir_context() for _ in range(4)]
        shared = generate.build(3, 6, ("gradients",))
    assert mlir.make_ir_context is make
    assert contexts[0] is contexts[1] is contexts[2] and contexts[3] is not contexts[0]
    assert shared.records == alone.records and len(alone.records) == 2


def test_validate_passes_on_a_fresh_dataset(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ir", "validate", str(dataset), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    backward = sum(r["pass"] == "backward" for _, _, r in lines(dataset))
    assert f"{COUNT} records: {COUNT} passed, 0 failed" in out
    assert f"{backward} backward records checked by central differences" in out and backward > 0
    exact = int(out.split("central differences; ")[1].split()[0])
    assert COUNT // 2 < exact <= COUNT  # most programs give the same bits at -O0 as at XLA's default level


def _rewrite(dataset: Path, tmp_path: Path, change) -> Path:
    """A copy of the dataset's records in one file, `change(number, record)` applied to each."""
    out = tmp_path / "changed.jsonl"
    with out.open("w") as f:
        for number, (_, _, record) in enumerate(lines(dataset), 1):
            f.write(json.dumps(change(number, record) or record) + "\n")
    return out


def test_validate_catches_a_wrong_output_and_a_corrupted_artifact(dataset: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def corrupt(number: int, record: dict) -> None:
        if number == 2:
            wrong = decode_array(record["expected_outputs"][0]).copy()
            wrong.flat[0] += 1 if wrong.dtype.kind in "iu" else 0.5
            record["expected_outputs"][0] = encode_array(wrong)
        if number == 5:
            blob = bytearray(base64.b64decode(record["exported"]))
            del blob[len(blob) // 2:]  # truncated
            record["exported"] = base64.b64encode(bytes(blob)).decode()

    assert validate.main([str(_rewrite(dataset, tmp_path, corrupt)), "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2 and f"{COUNT - 2} passed, 2 failed" in out
    assert failed[0].startswith("FAILED changed.jsonl:2 ") and "differs from expected_outputs" in failed[0]
    assert failed[1].startswith("FAILED changed.jsonl:5 ") and "exported" in failed[1]


def test_validate_checks_gradients_numerically(dataset: Path, tmp_path: Path) -> None:
    """A backward artifact that computes twice the gradient, with outputs to match: only the
    central differences of its forward record can tell."""
    import jax

    target = next(n for n, (_, _, r) in enumerate(lines(dataset), 1) if r["pass"] == "backward")

    def double(number: int, record: dict) -> None:
        if number != target:
            return
        namespace: dict = {}
        exec(record["source"], namespace)
        pullback = namespace[record["function"]]
        wrong = lambda *args: jax.tree.map(lambda g: 2 * g, pullback(*args))  # noqa: E731
        inputs = [decode_array(i) for i in record["inputs"]]
        with jax.enable_x64(True):
            avals = [jax.ShapeDtypeStruct(i.shape, i.dtype) for i in inputs]
            record["exported"] = base64.b64encode(jax.export.export(jax.jit(wrong))(*avals).serialize()).decode()
            record["expected_outputs"] = [encode_array(np.asarray(o)) for o in jax.tree.leaves(wrong(*inputs))]

    outcomes = list(validate.validate([_rewrite(dataset, tmp_path, double)]))
    failed = [o for o in outcomes if o.status == "failed"]
    assert [o.where for o in failed] == [f"changed.jsonl:{target}"]
    assert "central differences" in failed[0].reason


@pytest.mark.parametrize("factor", [1, 2])
def test_a_jump_within_the_steps_is_not_taken_for_a_wrong_gradient(factor: int) -> None:
    """`where` with branches 2 apart, at a point 1e-4 from its boundary: every difference step
    crosses the jump. The right gradient passes; twice it still fails."""
    import jax

    source = generate.HEADER + "def f(x, y):\n    return jnp.where(x > 0.0, x, x - y)\n"
    pullback = (source + "\n\ndef f_vjp(x, y, ct):\n    _, pullback = jax.vjp(f, x, y)\n"
                f"    return jax.tree.map(lambda g: {factor} * g, pullback(ct))\n")
    x = np.linspace(-1, 1, 12).astype(np.float32)
    x[3] = 1e-4
    y, ct = np.full(12, 2.0, np.float32), np.ones(12, np.float32)
    with jax.enable_x64(True):
        forward, _, _ = generate._record("f", source, [x, y])
        backward, _, _ = generate._record("f_vjp", pullback, [x, y, ct])
    assert isinstance(forward, dict) and isinstance(backward, dict)
    backward.update({"pass": "backward", "seed": 1})
    _, outcome = validate.check_group([("a.jsonl:1", forward), ("a.jsonl:2", backward)])
    assert outcome.gradient_checked or outcome.status == "failed"
    if factor == 1:
        assert outcome.status == "passed", outcome.reason
    else:
        assert outcome.status == "failed" and "central differences" in outcome.reason


def test_validate_checks_a_capture_for_structure_only(dataset: Path, tmp_path: Path) -> None:
    captured = {k: v for k, v in lines(dataset)[0][2].items() if k in RECORD_KEYS}
    (tmp_path / "capture.jsonl").write_text(json.dumps(captured) + "\n")
    [outcome] = validate.validate([tmp_path / "capture.jsonl"])
    assert (outcome.status, outcome.kind) == ("structure only", "capture")
    captured["input_shapes"][0] = [*captured["input_shapes"][0], 7]
    (tmp_path / "capture.jsonl").write_text(json.dumps(captured) + "\n")
    [outcome] = validate.validate([tmp_path / "capture.jsonl"])
    assert outcome.status == "failed" and "the record says" in outcome.reason


def test_validate_and_stats_refuse_what_is_not_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert validate.main([str(tmp_path), "--jobs", "1"]) == 2
    assert stats.main([str(tmp_path)]) == 2
    assert validate.main([str(tmp_path / "missing")]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["show", "stats"])
def test_a_reader_that_stops_early_gets_no_traceback(dataset: Path, command: str) -> None:
    """`rax ir show DIR | head`: the pipe closes before the command writes."""
    process = subprocess.Popen([sys.executable, "-m", "raximport.ir", command, str(dataset)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    error = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and error == ""


def test_generate_refuses_a_directory_that_holds_records(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--count", "1", "--out", str(dataset)]) == 2
    assert "already holds records" in capsys.readouterr().err


def test_generate_refuses_an_output_that_is_a_file_or_cannot_be_made(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert generate.main(["--count", "1", "--jobs", "1", "--out", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert generate.main(["--count", "1", "--jobs", "1", "--out", str(tmp_path / "file" / "out")]) == 2
    assert "cannot make" in capsys.readouterr().err


def test_generate_stops_when_every_function_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("no XLA here")

    monkeypatch.setattr(generate, "_record", broken)
    assert generate.main(["--count", "5", "--out", str(tmp_path / "out"), "--jobs", "1"]) == 1
    out, err = capsys.readouterr()
    assert f"{generate.MAX_FAILURES} functions failed" in out and "RuntimeError: no XLA here" in err


def test_stats(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ir", "stats", str(dataset)]) == 0
    out = capsys.readouterr().out
    records = [r for _, _, r in lines(dataset)]
    forward = sum(r["pass"] == "forward" for r in records)
    assert out.startswith(f"{COUNT} records\n") and f"forward {forward}" in out
    assert "arithmetic " in out and "stablehlo " in out and "mean chars" in out
    top = [line.split() for line in out.splitlines() if line.startswith("  stablehlo.")]
    assert top and all(int(a[1].replace(",", "")) >= int(b[1].replace(",", "")) for a, b in zip(top, top[1:]))
    assert stats.ops("%0 = stablehlo.add %a, %b\n%1 = stablehlo.add %0, %0\nstablehlo.return %1") == \
        {"stablehlo.add": 2, "stablehlo.return": 1}


def test_rax_ir_lists_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ir"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in ("show", "generate", "validate", "stats"))
