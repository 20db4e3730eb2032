"""--dump-ir: one record per compiled signature of a real run, read from the program JAX itself
compiles for the call (no compile added), with IR a later process can run again; `rax ir show`
lists the records; and the record format shared with the dataset (record.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from raximport.cli import main as rax
from raximport.ir import record, show
from raximport.ir.record import JsonlWriter, RecordError, canonical_hash, decode_array, encode_array, read_records
from tests.helpers import write

FUNCTIONS = """
import jax, jax.numpy as jnp
from functools import partial

def loss(w, x):
    def body(carry, xi):
        return carry + jnp.sin(w * xi), None
    total, _ = jax.lax.scan(body, 0.0, x)
    return total

grad = jax.jit(jax.grad(loss))

@partial(jax.jit, static_argnums=1)
def power(x, n):
    return x ** n

batched = jax.jit(jax.vmap(lambda v: jnp.dot(v, v)))

@jax.jit
def logged(x):
    jax.debug.print("sum {}", x.sum())  # a host callback: jax.export cannot serialize it
    return x * 2
"""

SCRIPT = FUNCTIONS + """
import os, sys
from jax import monitoring

compiles = []
monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: compiles.append(event) if event.endswith("backend_compile_duration") else None)
x, y, ones, matrix = jnp.arange(4.0), jnp.arange(1.0, 5.0), jnp.ones(3), jnp.ones((2, 3))
before = len(compiles)
print(grad(2.0, x))
print(power(x, 3), power(y, 3), power(ones, 3))  # a shape twice: one signature; another: two
print(batched(matrix))
if "--with-callback" in sys.argv:
    print(logged(x))
if "--with-child" in sys.argv:  # a child process inherits --dump-ir and writes its own file
    import subprocess
    sys.stdout.flush()
    subprocess.run([sys.executable, "-c", "import worker"], check=True)
print("compiles", len(compiles) - before)
sys.stdout.flush()
os._exit(0)  # no exit handler runs: records are on disk as the run goes
"""

WORKER = """
import jax, jax.numpy as jnp

print(jax.jit(lambda v: v * 2)(jnp.ones(2)))
"""

ENV = {"RAX_XLA_CACHE": "0"}  # every signature is compiled, so the compile count is the signature count


def _run(run_python, tmp_path: Path, *options: str, script_args: tuple[str, ...] = ()):
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "main.py", SCRIPT)
    write(tmp_path / "worker.py", WORKER)
    return run_python("-m", "raximport", *options, "main.py", *script_args, cwd=tmp_path, env=ENV)


def _by_function(directory: Path) -> dict[tuple[str, str], dict]:
    records = list(read_records(directory))
    by_key = {(r["function"], repr(r["input_shapes"])): r for r in records}
    assert len(by_key) == len(records), "one record per compiled signature"
    return by_key


@pytest.mark.slow
def test_every_compiled_signature_is_recorded_with_its_ir_and_no_compile_added(
        run_python, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(run_python, tmp_path, "--dump-ir", "ir", script_args=("--with-callback", "--with-child"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "compiles 5"  # grad, power (two shapes), batched, logged
    files = sorted((tmp_path / "ir").glob("capture-*.jsonl"))
    assert len(files) == 2  # the script's and its child's
    child = {r["file"]: r for r in read_records(files)}.pop("worker.py")
    assert child["input_shapes"] == [[2]] and "mul" in child["jaxpr"]
    records = _by_function(tmp_path / "ir")
    del records[("<lambda>", "[[2]]")]
    assert sorted(records) == [("<lambda>", "[[2, 3]]"), ("logged", "[[4]]"), ("loss", "[[], [4]]"),
                               ("power", "[[3]]"), ("power", "[[4]]")]
    for r in records.values():
        assert tuple(r) == record.RECORD_KEYS
        assert r["file"] == "main.py" and r["stablehlo"].startswith("module @jit_") and "stablehlo." in r["stablehlo"]
        assert r["hlo"].startswith("HloModule") and r["compile_seconds"] > 0
        assert r["memory_analysis"]["available"] and r["memory_analysis"]["argument_bytes"] > 0
        assert r["versions"]["platform"] == "cpu" and r["versions"]["jax"]
        assert all(dtype == "float32" for dtype in r["input_dtypes"])
        assert bool(r["exported"]) == (r["function"] != "logged")
    # the one program JAX cannot export keeps its record, with one note
    assert result.stderr.count("raximport:") == 1 and "jax.export failed for logged" in result.stderr

    grad_record = records[("loss", "[[], [4]]")]
    assert (grad_record["line"], grad_record["source"].splitlines()[0]) == (4, "def loss(w, x):")
    assert "scan[" in grad_record["jaxpr"] and "sin" in grad_record["jaxpr"] and "cos" in grad_record["jaxpr"]
    assert grad_record["cost_analysis"]["available"] and grad_record["cost_analysis"]["flops"] > 0
    power_record = records[("power", "[[4]]")]
    assert power_record["static_args"] == {"n": "3"} and "integer_pow[y=3]" in power_record["jaxpr"]
    lambda_record = records[("<lambda>", "[[2, 3]]")]
    assert lambda_record["source"] == "batched = jax.jit(jax.vmap(lambda v: jnp.dot(v, v)))"
    assert "dot_general" in lambda_record["jaxpr"]

    # the export runs again without the source, to what the function computes
    import jax
    import jax.numpy as jnp

    reference: dict = {}
    exec(FUNCTIONS, reference)
    x = jnp.arange(4.0)
    for r, inputs, expected in ((grad_record, (jnp.float32(2.0), x), reference["grad"](2.0, x)),
                                (power_record, (x,), x ** 3),
                                (lambda_record, (jnp.ones((2, 3)),), reference["batched"](jnp.ones((2, 3))))):
        exported = jax.export.deserialize(bytearray(base64.b64decode(r["exported"])))
        (out,) = exported.call(*inputs)
        np.testing.assert_allclose(out, expected, rtol=1e-6)

    assert show.main([str(tmp_path / "ir")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "6 records in 2 files"


@pytest.mark.slow
def test_capture_works_with_the_memory_check_off_and_its_failure_is_one_note(run_python, tmp_path: Path) -> None:
    result = _run(run_python, tmp_path, "--no-memory-check", "--dump-ir", "ir")
    assert result.returncode == 0 and "raximport" not in result.stderr, result.stderr
    assert result.stdout.splitlines()[-1] == "compiles 4"
    assert len(_by_function(tmp_path / "ir")) == 4

    write(tmp_path / "not-a-dir", "")  # records cannot be written: the run goes on as without --dump-ir
    failed = _run(run_python, tmp_path, "--dump-ir", "not-a-dir")
    assert failed.returncode == 0 and failed.stdout == result.stdout
    assert failed.stderr.count("raximport:") == 1 and "IR capture (--dump-ir) failed for" in failed.stderr


def test_show_lists_the_records_and_names_a_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shard = tmp_path / "ir" / "capture-1-00000.jsonl"
    fields = {key: None for key in record.RECORD_KEYS}
    good = {**fields, "function": "step", "file": "train.py", "line": 12, "stablehlo": "m" * 1200, "hlo": "h" * 30,
            "input_shapes": [[8, 4], []], "input_dtypes": ["float32", "int32"], "static_args": {"n": "3"},
            "cost_analysis": {"available": True, "flops": 64.0}, "memory_analysis": {
                "available": True, "argument_bytes": 1000, "output_bytes": 500, "temp_bytes": 0,
                "generated_code_bytes": 0}}
    library = {**good, "function": "init_fn", "file": "/venv/lib/python3.11/site-packages/optax/_combining.py",
               "input_shapes": [[2]] * 50, "input_dtypes": ["float32"] * 50, "static_args": {"config": "C" * 80},
               "cost_analysis": {"available": False, "flops": None}, "memory_analysis": {"available": False}}
    write(shard, json.dumps(good) + "\n" + json.dumps(library) + "\n")
    assert rax(["ir", "show", str(tmp_path / "ir")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split("\t") == ["step", "train.py:12", "float32[8,4], int32[]", "n=3", "1,200", "30", "1.5 KB", "64"]
    assert out[2].split("\t") == ["init_fn", "optax/_combining.py:12", "float32[2], float32[2], float32[2], ... 50 in all",
                                  "config=" + "C" * 37 + "...", "1,200", "30", "-", "-"]
    assert out[-1] == "2 records in 1 file"
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")  # as on a terminal: a rich table
    assert show.main([str(tmp_path / "ir")]) == 0
    table = capsys.readouterr().out
    assert table.startswith("┏━") and "train.py:12" in table and "2 records in 1 file" in table
    monkeypatch.delenv("FORCE_COLOR")

    with open(shard, "a") as lines:
        lines.write('{"function": "cut off\n')
    assert show.main([str(tmp_path / "ir")]) == 2
    assert f"{shard}:3: not a JSON record" in capsys.readouterr().err
    assert show.main([str(tmp_path / "missing")]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err


def test_the_writer_rolls_shards_and_never_writes_over_a_file(tmp_path: Path) -> None:
    write(tmp_path / "run-00000.jsonl", '{"old": true}\n')
    with JsonlWriter(tmp_path, "run", shard_size=2) as writer:
        for i in range(5):
            writer.write({"i": i})
    assert [p.name for p in writer.paths] == ["run-00001.jsonl", "run-00002.jsonl", "run-00003.jsonl"]
    assert [r.get("i") for r in read_records(tmp_path)] == [None, 0, 1, 2, 3, 4]
    assert [r["i"] for r in read_records(writer.paths[1:])] == [2, 3, 4]
    (tmp_path / "run-00001.jsonl").write_text('{"i": 0}\n[1, 2]\n')
    with pytest.raises(RecordError, match=r"run-00001.jsonl:2: not a JSON object"):
        list(read_records(tmp_path))


def test_arrays_round_trip_through_their_encoding() -> None:
    import ml_dtypes

    for array in (np.arange(6, dtype=">f8").reshape(2, 3), np.array([-1, 7], np.int64), np.ones((2, 0), np.int32),
                  np.array([1.5, -2], ml_dtypes.bfloat16), np.array(True)):
        encoded = json.loads(json.dumps(encode_array(array)))
        decoded = decode_array(encoded)
        assert decoded.dtype == array.dtype.newbyteorder("=") and decoded.shape == array.shape
        np.testing.assert_array_equal(decoded, array)


def test_the_canonical_hash_ignores_locations_and_the_module_name_only() -> None:
    import jax
    import jax.numpy as jnp

    def scale(y):
        return jnp.sin(y) * 2

    first = jax.jit(scale).lower(1.0).as_text(debug_info=True)
    second = jax.jit(lambda x: jnp.sin(x) * 2).lower(1.0).as_text()
    other = jax.jit(lambda x: jnp.sin(x) * 3).lower(1.0).as_text()
    assert "loc(" in first and "loc(" not in second and "@jit_scale" in first
    assert canonical_hash(first) == canonical_hash(second) != canonical_hash(other)



def test_without_dump_ir_nothing_of_capture_is_installed(load) -> None:
    from jax._src.interpreters import pxla

    mod = load("no_dump", """
        import jax, jax.numpy as jnp

        @jax.jit
        def double(x):
            return x * 2

        def run():
            return double(jnp.ones(3))
    """)
    assert float(mod.run().sum()) == 6.0
    assert "raximport" not in pxla.lower_sharding_computation.__code__.co_filename  # JAX's lowering, untouched
