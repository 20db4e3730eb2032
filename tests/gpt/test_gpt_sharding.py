"""gpt on several devices (issue 7): a ("data", "model") mesh, the batch split over "data", the same
losses as on one device; a batch the data axis does not divide refused before compiling; raximport's
memory analysis per device and its batch suggestion a multiple of the data axis; two processes
training together through jax.distributed on localhost.

Several devices on a CPU need XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX
starts: those runs are subprocesses; the one-device references run in this process."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import pytest

import checkpoint
import train
from tests.helpers import XLA_TEST_FLAGS, write

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "config" / "train_tiny.py"
RUN = ["--max_iters=4", "--eval_interval=4", "--lr_decay_iters=4"]
TIMEOUT = 300


def env_with_devices(n: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAX_", "JAX_")) or k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env.update(JAX_PLATFORMS="cpu", NO_COLOR="1", XLA_FLAGS=f"{XLA_TEST_FLAGS} --xla_force_host_platform_device_count={n}", **extra)
    return env


def run_with_devices(n: int, *args: str, cwd: Path, timeout: float = TIMEOUT, **env: str):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env_with_devices(n, **env),
                          capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def reference(data_dir, out_dir, *overrides) -> dict:
    """A run in this (one-device) process."""
    assert jax.device_count() == 1, "the references need a single device (is XLA_FLAGS set?)"
    cfg = train.parse_config([str(TINY), f"--data_dir={data_dir}", f"--out_dir={out_dir}", *RUN, *overrides])
    return train.train(cfg)


def assert_same_run(got: dict, want: dict, rtol: float = 1e-5) -> None:
    assert sorted(map(int, got["losses"])) == sorted(want["losses"])
    for it, loss in want["losses"].items():
        assert got["losses"][str(it)] == pytest.approx(loss, rel=rtol), it
    assert "4" in got["evals"]  # a resumed run evaluates at the end only
    for it, losses in got["evals"].items():
        for split, loss in losses.items():
            assert loss == pytest.approx(want["evals"][int(it)][split], rel=rtol), (it, split)


# ----------------------------------------------------------------------------- data parallel, model parallel

SHARDED = """
import json, re, sys
sys.path.insert(0, {gpt!r})
import jax, jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import train
from model import init_params

assert jax.device_count() == 4
base = [{tiny!r}, "--data_dir={data}", *{run!r}]
runs = {{}}
for name, over in [("data4", []), ("data2_model2", ["--model_parallel=2"]), ("accum2", ["--gradient_accumulation_steps=2"])]:
    s = train.train(train.parse_config([*base, "--out_dir={out}/" + name, *over]))
    runs[name] = {{"losses": s["losses"], "evals": s["evals"]}}
# resume a sharded run from its checkpoint: placed back onto the mesh, it continues exactly
half = train.train(train.parse_config([*base, "--out_dir={out}/half", "--max_iters=2"]))
resumed = train.train(train.parse_config([*base, "--out_dir={out}/half", "--init_from=resume"]))
runs["resumed"] = {{"losses": {{**half["losses"], **resumed["losses"]}}, "evals": resumed["evals"]}}

cfg = train.parse_config([*base, "--model_parallel=2"])
mc = train.model_config_from(cfg, 65)
mesh = train.make_mesh(2)
opt, _, _ = train.make_steps(mc, cfg, mesh)
params_s, opt_s = train.state_shardings(mc, opt, mesh)
block = params_s["h"][0]
specs = {{name: list(block[layer][name2][leaf].spec) for name, (layer, name2, leaf) in {{
    "c_attn.w": ("attn", "c_attn", "w"), "attn.c_proj.w": ("attn", "c_proj", "w"),
    "c_fc.w": ("mlp", "c_fc", "w"), "mlp.c_proj.w": ("mlp", "c_proj", "w")}}.items()}}
specs["wte"] = list(params_s["wte"].spec)
specs["mesh"] = dict(mesh.shape)
moments = [list(s.spec) for s in jax.tree_util.tree_leaves(opt_s)]
specs["sharded_moments"] = sum("model" in s for s in moments)

# the data-parallel step's collectives, as XLA compiled them
cfg = train.parse_config(base)
mc = train.model_config_from(cfg, 65)
opt, step, _ = train.make_steps(mc, cfg, train.make_mesh(1))
params = init_params(mc, jax.random.key(0))
x = jnp.zeros((cfg["batch_size"], mc.block_size), jnp.int32)
hlo = step.lower(params, opt.init(params), jax.random.key(1), x, x).compile().as_text()
collectives = re.findall(r"= (\\S+) (all-reduce|all-gather|reduce-scatter|all-to-all)\\(", hlo)
print(json.dumps({{"runs": runs, "specs": specs, "collectives": collectives, "n_params": train.num_params(params, False)}}))
"""


@pytest.mark.slow
def test_sharded_runs_match_one_device(tmp_path, data_dir):
    driver = write(tmp_path / "sharded.py", SHARDED.format(
        gpt=str(ROOT / "gpt"), tiny=str(TINY), data=data_dir, out=tmp_path / "out", run=RUN))
    r = run_with_devices(4, str(driver), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mesh: 4 devices (1 process), data 4 x model 1" in r.stdout
    assert "data 2 x model 2" in r.stdout
    got = last_json(r.stdout)

    want = reference(data_dir, tmp_path / "ref")
    for name in ("data4", "data2_model2", "resumed"):
        assert_same_run(got["runs"][name], want)
    assert_same_run(got["runs"]["accum2"], reference(data_dir, tmp_path / "ref2", "--gradient_accumulation_steps=2"))

    specs = got["specs"]
    assert specs["mesh"] == {"data": 2, "model": 2}
    assert specs["c_attn.w"] == specs["c_fc.w"] == [None, "model"]  # by output features
    assert specs["attn.c_proj.w"] == specs["mlp.c_proj.w"] == ["model", None]  # by input features
    assert specs["wte"] == []
    assert specs["sharded_moments"] == 2 * 4 * 2  # Adam's mu and nu of the 4 split matrices of 2 layers
    # data parallel: the loss and every gradient averaged in one all-reduce of one flat vector
    # (XLA's own: one wait per gradient buffer, plus one for the loss's token count)
    assert got["collectives"] == [[f"f32[{got['n_params'] + 1}]{{0}}", "all-reduce"]]


def test_batch_not_divisible_by_the_data_axis_is_refused_before_compiling(tmp_path, data_dir):
    r = run_with_devices(4, str(ROOT / "gpt" / "train.py"), str(TINY), f"--data_dir={data_dir}",
                         f"--out_dir={tmp_path}", "--batch_size=6", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "batch_size=6 does not divide by the data axis of the device mesh, 4" in r.stderr
    assert "nearest valid batch sizes: 4 or 8" in r.stderr
    assert "iter " not in r.stdout and not checkpoint.Checkpoints(tmp_path, read_only=True).steps()


@pytest.mark.parametrize("batch_size, cpu_devices", [(4, 2), (3, 0), (4, 0)])
def test_train_py_splits_the_batch_over_one_device_per_core(tmp_path, data_dir, batch_size, cpu_devices):
    env = env_with_devices(1)
    del env["XLA_FLAGS"]  # as a user runs it
    r = subprocess.run([sys.executable, str(ROOT / "gpt" / "train.py"), str(TINY), f"--data_dir={data_dir}",
                        f"--out_dir={tmp_path}", f"--batch_size={batch_size}", f"--cpu_devices={cpu_devices}",
                        "--max_iters=2", "--eval_interval=2"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    cores = os.cpu_count() or 1
    n = cpu_devices or max(d for d in range(1, cores + 1) if batch_size % d == 0)  # the most cores dividing the batch
    if n > 1:
        assert f"mesh: {n} devices (1 process), data {n} x model 1" in r.stdout
    else:
        assert "mesh:" not in r.stdout  # one device: no mesh to speak of


@pytest.mark.slow
def test_a_long_unlogged_run_on_two_cpu_devices_finishes(tmp_path, data_dir):
    """Steps queued without a sync deadlock XLA:CPU's all-reduce between host devices (jaxlib
    0.10: 'only 1 of them arrived', abort after 40 s); train.py keeps one step in flight."""
    env = env_with_devices(1)
    del env["XLA_FLAGS"]
    cpu_config = ROOT / "config" / "train_shakespeare_char_cpu.py"  # the tiny model's steps did not hang
    r = subprocess.run([sys.executable, str(ROOT / "gpt" / "train.py"), str(cpu_config), f"--data_dir={data_dir}",
                        f"--out_dir={tmp_path}", "--cpu_devices=2", "--max_iters=200", "--eval_interval=1000",
                        "--log_interval=1000"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 200: train loss" in r.stdout


def test_cpu_devices_once_jax_is_running():
    devices = jax.devices()  # the backend is up
    train.use_cpu_cores({"cpu_devices": 0, "batch_size": 12})  # automatic: left as it is
    assert jax.devices() == devices
    with pytest.raises(train.ConfigError, match="cpu_devices=2: JAX's backend is already initialized"):
        train.use_cpu_cores({"cpu_devices": 2, "batch_size": 12})


def test_batch_and_mesh_errors_name_the_numbers():
    mesh = SimpleNamespace(shape={"data": 4, "model": 2}, devices=SimpleNamespace(size=8))
    train.check_batch_size(8, mesh)
    with pytest.raises(train.ConfigError) as e:
        train.check_batch_size(3, mesh)
    assert "batch_size=3 does not divide by the data axis of the device mesh, 4 (8 devices / model_parallel=2)" in str(e.value)
    assert str(e.value).endswith("nearest valid batch sizes: 4")
    with pytest.raises(train.ConfigError, match="model_parallel=3 must divide the number of devices, 4"):
        train.make_mesh(3, jax.devices() * 4)


def test_param_spec():
    P = jax.sharding.PartitionSpec
    path = lambda *names: tuple(jax.tree_util.DictKey(n) for n in names)  # noqa: E731
    assert train.param_spec(path("mlp", "c_fc", "w"), (32, 128), 2) == P(None, "model")
    assert train.param_spec(path("mlp", "c_fc", "b"), (128,), 2) == P("model")
    assert train.param_spec(path("mlp", "c_proj", "w"), (128, 32), 2) == P("model", None)
    assert train.param_spec(path("mlp", "c_proj", "b"), (32,), 2) == P()
    assert train.param_spec(path("mlp", "c_fc", "w"), (32, 127), 2) == P()  # uneven: replicated
    assert train.param_spec(path("mlp", "c_fc", "w"), (32, 128), 1) == P()
    assert train.param_spec(path("wte"), (65, 32), 2) == P()
    assert dict(train.make_mesh(1).shape) == {"data": jax.device_count(), "model": 1}


# ----------------------------------------------------------------------------- raximport per device

MEMORY = """
import json, sys
sys.path.insert(0, {gpt!r})
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxtyping import Array, Float, TypeCheckError
import train
from model import init_params
from raximport import memory

assert jax.device_count() == 4
cfg = train.parse_config([{tiny!r}])
mc = train.model_config_from(cfg, vocab_size=65)
results = {{}}
for name, mesh in [("one", train.make_mesh(1, jax.devices()[:1])), ("four", train.make_mesh(1))]:
    optimizer, train_step, _ = train.make_steps(mc, cfg, mesh)
    params = init_params(mc, jax.random.key(0))
    x = jax.device_put(jnp.zeros((16, mc.block_size), jnp.int32), NamedSharding(mesh, P("data")))
    params, _, _, stats = train_step(params, optimizer.init(params), jax.random.key(1), x, x)
    a = memory.ANALYSES[-1]
    results[name] = {{"function": a.function, "devices": a.devices, "temps": a.footprint.temps,
                     "step": a.footprint.step, "peak": a.peak, "in_use": a.budget.in_use,
                     "arguments": a.footprint.arguments, "loss": float(stats["loss"])}}

# shape checks at trace time see the global array, not one device's shard
mesh = train.make_mesh(1)
seen = []
def rows(x: Float[Array, "16 8"]) -> Float[Array, "16"]:
    seen.append(x.shape)
    return x.sum(axis=1)
f = jax.jit(rows, in_shardings=NamedSharding(mesh, P("data")))
f(jnp.ones((16, 8)))
try:
    f(jnp.ones((4, 8)))  # exactly one shard's shape of the (16, 8) batch: refused
    results["refused"] = False
except TypeCheckError:
    results["refused"] = True
results["seen"] = seen
results["overhead"] = memory.CPU_RUNTIME_OVERHEAD
print(json.dumps(results))
"""


def test_memory_analysis_and_shape_checks_on_four_devices(tmp_path):
    write(tmp_path / "pyproject.toml", "")
    driver = write(tmp_path / "memory_driver.py", MEMORY.format(gpt=str(ROOT / "gpt"), tiny=str(TINY)))
    r = run_with_devices(4, "-m", "raximport", "--path", str(ROOT / "gpt"), "--memory-report", driver.name,
                         cwd=tmp_path, RAX_CACHE_DIR=str(tmp_path / "rax-cache"))
    assert r.returncode == 0, r.stderr[-3000:]
    got = last_json(r.stdout)
    one, four = got["one"], got["four"]
    assert one["function"] == four["function"] == "train_step"
    assert one["loss"] == pytest.approx(four["loss"], rel=1e-5)
    assert (one["devices"], four["devices"]) == (1, 4)
    # per device: each device holds a quarter of the batch, so fewer activations than the one device
    assert four["temps"] < 0.6 * one["temps"]
    # ... and on CPU the host holds all four devices' shares: the peak counts the step four times
    assert four["peak"] == four["in_use"] + 4 * four["step"] + got["overhead"]
    assert one["peak"] == one["in_use"] + one["step"] + got["overhead"]
    # the table says so
    table = r.stderr[r.stderr.index("memory of each compiled function"):]
    assert re.search(r"train_step\s+[\d.]+ [KMG]?B\s+[\d.]+ [KMG]?B\s+[\d.]+ [KMG]?B\s+[\d.]+ [KMG]?B\s+\d+%\s+4\b", table), table
    assert "per device" in table
    # jaxtyping saw the global (16, 8), not a (4, 8) shard, and refused a (4, 8) array
    assert got["seen"] == [[16, 8]] and got["refused"]


def test_batch_suggestion_rounds_down_to_the_data_axis():
    """BatchFit only proposes batch sizes the data axis divides (compiles faked: peak = 1000 * batch)."""
    from raximport import memory

    class FakeCompiled:
        def __init__(self, batch):
            self.batch = batch

        def memory_analysis(self):
            return SimpleNamespace(argument_size_in_bytes=0, output_size_in_bytes=0, alias_size_in_bytes=0,
                                   temp_size_in_bytes=1000 * self.batch, generated_code_size_in_bytes=0)

    budget = memory.Budget(limit=int(70_500 / memory.SAFETY_FRACTION) + 1, in_use=0, source="test", platform="gpu")
    for multiple, expected in [(1, 70), (4, 68), (8, 64), (16, 64)]:
        step = memory.Step(lambda x: x, {}, (SimpleNamespace(shape=(128, 8)),), {}, [(0, 0)], batch_multiple=multiple)
        step.compile = lambda batch=None: FakeCompiled(batch)
        analysis = memory.Analysis("step", memory.Footprint.of(FakeCompiled(128)), budget, 128_000)
        fit = memory.BatchFit(step, analysis)
        assert fit.small % multiple == 0
        assert fit.largest_fitting() == expected, multiple
        fixes = memory.find_fixes(step, analysis, step.args, {})
        assert [f.batch_size for f in fixes if f.batch_size] == [expected]
        accum = [f for f in fixes if "gradient_accumulation_steps" in f.action]
        if accum:
            micro = int(re.search(r"-> (\d+) with", accum[0].action).group(1))
            assert micro % multiple == 0 and micro <= expected


STEP_OOM = """
import sys
sys.path.insert(0, {gpt!r})
import jax, jax.numpy as jnp
import train
from model import init_params

cfg = train.parse_config([{tiny!r}, "--n_embd=64", "--block_size=64", "--n_layer=2"])
mc = train.model_config_from(cfg, vocab_size=65)
optimizer, train_step, _ = train.make_steps(mc, cfg)
params = init_params(mc, jax.random.key(0))
x = jnp.zeros((int(sys.argv[1]), 64), jnp.int32)
try:
    params, _, _, stats = train_step(params, optimizer.init(params), jax.random.key(1), x, x)
except MemoryError as exc:
    print("suggested", exc.suggested_batch_size)
    raise
print("ran", float(stats["loss"]))
"""


@pytest.mark.slow
def test_out_of_memory_suggestion_on_four_devices_divides_by_four(tmp_path):
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "oom.py", STEP_OOM.format(gpt=str(ROOT / "gpt"), tiny=str(TINY)))
    env = {"RAX_CACHE_DIR": str(tmp_path / "rax-cache")}
    run = lambda batch, *flags: run_with_devices(  # noqa: E731
        4, "-m", "raximport", "--path", str(ROOT / "gpt"), *flags, "oom.py", str(batch), cwd=tmp_path, **env)
    probe = run(8, "--memory-report")
    assert probe.returncode == 0 and "ran" in probe.stdout, probe.stderr[-3000:]
    peak_mb = float(re.search(r"train_step\s+\S+ \S+\s+\S+ \S+\s+([\d.]+) MB", probe.stderr).group(1))
    limit = f"{int(peak_mb + 200)}MB"
    refused = run(4096, "--memory-limit", limit)
    assert refused.returncode == 1 and "refused before running it" in refused.stderr, refused.stderr[-3000:]
    suggested = int(re.search(r"suggested (\d+)", refused.stdout).group(1))
    assert 8 < suggested < 4096 and suggested % 4 == 0
    assert run(suggested, "--memory-limit", limit).returncode == 0


# ----------------------------------------------------------------------------- two processes


GLOO_WORDS = r"\[Gloo\]|Rank|is|connected|to|peer|ranks|Expected|number|of|[.:]|\d+|\s+"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(tmp_path, *args: str) -> list[str]:
    """gpt/train.py in two processes on localhost, 2 CPU devices each; their stdouts."""
    port = free_port()
    cmd = [sys.executable, str(ROOT / "gpt" / "train.py"), str(TINY), *args]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env_with_devices(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                              JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    return [stdout for stdout, _ in outputs]


@pytest.mark.slow
def test_two_processes_train_together_on_localhost(tmp_path, data_dir):
    """jax.distributed on localhost, 2 processes x 2 CPU devices: the batch split over 4 devices,
    each process reading its own rows; process 0 alone logs. Both write their own part of the
    checkpoint (nothing gathered to process 0), and both read it back to resume, exactly."""
    out = tmp_path / "out"
    common = [f"--data_dir={data_dir}", f"--out_dir={out}", *RUN]
    log0, log1 = run_two_processes(tmp_path, *common, "--max_iters=2")
    assert "mesh: 4 devices (2 processes), data 4 x model 1" in log0
    # only process 0 logs. Process 1's stdout holds only Gloo's own "[Gloo] Rank 1 is connected to 3
    # peer ranks. ..." messages, whose C++ threads interleave them mid-line, so compare by words
    assert re.sub(GLOO_WORDS, "", log1) == "", log1
    saved = out / "latest" / "2"
    for process in (0, 1):  # each process wrote its share of the (replicated) parameters itself
        assert any((saved / "params" / f"ocdbt.process_{process}" / "d").iterdir()), process
    resumed, _ = run_two_processes(tmp_path, *common, "--init_from=resume")
    assert f"resuming from {saved} at iteration 2" in resumed

    want = reference(data_dir, tmp_path / "ref")
    got = {int(it): float(loss) for it, loss in re.findall(r"iter (\d+): loss ([\d.]+)", log0 + resumed)}
    assert got == pytest.approx({it: round(loss, 4) for it, loss in want["losses"].items()}, abs=2e-4)
    val = float(re.search(r"step 4: train loss [\d.]+, val loss ([\d.]+)", resumed).group(1))
    assert val == pytest.approx(want["evals"][4]["val"], abs=2e-4)


@pytest.mark.slow
def test_ctrl_c_in_one_of_two_processes_stops_both_and_saves(tmp_path, data_dir):
    """A SIGINT that reaches only process 1: both processes stop at the same log iteration and the
    collective checkpoint save completes (stopping alone, a process would hang the other)."""
    port = free_port()
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "gpt" / "train.py"), str(TINY), f"--data_dir={data_dir}", f"--out_dir={out}",
           "--max_iters=100000", "--lr_decay_iters=100000", "--eval_interval=100000", "--log_interval=5"]
    errs = [(tmp_path / f"err{i}").open("w") for i in range(2)]  # files, not pipes: nobody reads stderr meanwhile
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=errs[i], text=True,
                         env=env_with_devices(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                              JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
        for i in range(2)
    ]
    try:
        log0 = ""
        while "iter 10:" not in log0:  # both are training (they step together)
            line = procs[0].stdout.readline()
            assert line, (tmp_path / "err0").read_text()[-3000:]
            log0 += line
        procs[1].send_signal(signal.SIGINT)
        log0 += procs[0].communicate(timeout=120)[0]
        procs[1].wait(timeout=60)
    finally:
        for p, err in zip(procs, errs):
            p.kill()
            err.close()
    assert [p.returncode for p in procs] == [0, 0], (tmp_path / "err1").read_text()[-3000:]
    stopped = int(re.search(r"interrupted: saved\s+\S+\s+at\s+iteration\s+(\d+)", log0).group(1))
    assert stopped % 5 == 0 and stopped > 10
    assert checkpoint.Checkpoints(out, read_only=True).meta("latest")["iter_num"] == stopped
