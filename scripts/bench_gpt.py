"""Benchmark gpt/train.py's step on the CPU config, optionally side by side with PyTorch nanoGPT.

    python scripts/bench_gpt.py                                  # JAX: steady state + first iteration
    python scripts/bench_gpt.py --nanogpt /tmp/nanoGPT           # side by side with nanoGPT eager / torch.compile
    python scripts/bench_gpt.py --devices 1,2,4                  # data-parallel over 1, 2, 4 devices
    python scripts/bench_gpt.py --per-core                       # ... and the floor data parallelism could reach
    python scripts/bench_gpt.py --guards                         # the NaN guard's cost; how long a save blocks

The JAX runs use one device per CPU core, as train.py does (its cpu_devices setting).

--guards: the step with its guards (gradient and update norms, the finiteness select) against
the plain update, in alternating turns of --chunk iterations in one process (the ratio is the
median over turns of guarded / plain); then --saves checkpoint saves as train.py starts them
(latest, and good after the finiteness check), each followed by a turn of guarded iterations:
how long each save blocks the loop, against the step time, and the step time while it is written.

Steady state: the median over --iters iterations (after --warmup) of one whole training
iteration as train.py runs it (get_batch, device_put, jitted step, block_until_ready on the
loss), like the "time" nanoGPT prints with --log_interval=1.

Time to first iteration: a fresh process from start to the end of its first step, cold (empty
persistent compilation cache) and warm (the same cache, populated by the cold run).

--nanogpt PATH (a karpathy/nanoGPT checkout; needs torch): gpt/'s step, nanoGPT eager and
nanoGPT under torch.compile, each in a warmed-up child process of its own, take turns of
--chunk iterations on the same prepared train.bin (nanoGPT's iteration as its train.py runs it:
scripts/nanogpt_side.py). This VM's speed drifts by +-15% over minutes, more than the gaps being
measured, so a ratio is the median over turns of one turn's median against the JAX turn beside it.

--devices N,M,...: the steady state in one child process per count, each over that many devices
(on a CPU forced host devices, XLA_FLAGS=--xla_force_host_platform_device_count=N; they share the
same cores, so this measures the cost of sharding rather than a speed-up), batch split over "data".

--per-core: one child process per core, each pinned to its core with one device and its share of
the batch, all running at once with no gradient exchange. Their slowest ms/iter is the floor that
data parallelism over the cores could reach; the gap between it and the in-process run is what
XLA:CPU's multi-device execution (shared runtime, all-reduce) costs.
"""

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "gpt"))
CPU_CONFIG = ROOT / "config" / "train_shakespeare_char_cpu.py"


def setup_cache(cache_dir: str | None) -> None:
    import jax

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        jax.config.update("jax_persistent_cache_enable_xla_caches", "none")


def make_run(args, guard: bool = True):
    """(one_iteration, batch tokens, state) for the CPU config, built exactly as train.py does
    (guard=False: the step without its guards)."""
    import jax
    import numpy as np

    import data
    import train
    from model import init_params

    cfg = train.parse_config([str(CPU_CONFIG), f"--data_dir={args.data_dir}", f"--dtype={args.dtype}"])
    cfg["batch_size"] //= args.share  # a per-core child's share of the batch
    train.use_cpu_cores(cfg)  # as train.py's main: one device per core (unless XLA_FLAGS says otherwise)
    dataset_dir = data.ensure_prepared(cfg["dataset"], cfg["data_dir"], input_path=args.input)
    tokens = data.load_split(dataset_dir, "train")
    mc = train.model_config_from(cfg, data.load_meta(dataset_dir)["vocab_size"])
    mesh = train.make_mesh(cfg["model_parallel"])
    opt, step, _ = train.make_steps(mc, cfg, mesh)
    if not guard:
        step = train.make_train_step(mc, opt, cfg["gradient_accumulation_steps"], mesh, guard=False)
    load = train.batch_loader(train.make_mesh(cfg["model_parallel"]), cfg["block_size"])  # as train.py
    key = jax.random.key(cfg["seed"])
    state = {"params": jax.jit(init_params, static_argnums=0)(mc, key)}
    state["opt"], state["key"] = opt.init(state["params"]), key
    rng = np.random.default_rng(0)

    def one_iteration():
        x, y = load(tokens, cfg["batch_size"], rng)
        state["params"], state["opt"], state["key"], stats = step(state["params"], state["opt"], state["key"], x, y)
        return float(stats["loss"])

    return one_iteration, cfg["batch_size"] * cfg["block_size"], state


def first_iteration(args) -> None:
    """Child process: report seconds from process start to the end of the first iteration."""
    setup_cache(args.cache_dir)
    run, _, _ = make_run(args)
    run()
    print(json.dumps({"first_iter_s": time.perf_counter() - T_START}))


def steady(args) -> dict:
    run, tokens, _ = make_run(args)
    for _ in range(args.warmup):
        run()
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    ms = statistics.median(times) * 1000
    return {"ms_per_iter": ms, "tokens_per_s": tokens / ms * 1000, "tokens_per_iter": tokens}


def child_env(*xla_flags: str) -> dict[str, str]:
    """This process's environment with xla_flags in $XLA_FLAGS, replacing any forced device count."""
    env = dict(os.environ)
    kept = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*kept, *xla_flags])
    return env


def steady_on_devices(args, n: int) -> dict:
    """steady() in a child process over n devices (forced host devices on a CPU)."""
    env = child_env(f"--xla_force_host_platform_device_count={n}")
    cmd = [sys.executable, __file__, "--steady-child", f"--data_dir={args.data_dir}", f"--dtype={args.dtype}",
           f"--iters={args.iters}", f"--warmup={args.warmup}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"the {n}-device run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def steady_per_core(args) -> dict:
    """steady() in one child per core at once, each pinned to its core (one device, one XLA thread)
    with an equal share of the batch: ms/iter of the slowest, which paces a synchronous step. As
    train.py, on the most cores that divide the batch."""
    import train

    batch = train.parse_config([str(CPU_CONFIG)])["batch_size"]
    cores = sorted(os.sched_getaffinity(0))
    cores = cores[:max(n for n in range(1, len(cores) + 1) if batch % n == 0)]
    env = child_env("--xla_force_host_platform_device_count=1", "--xla_cpu_multi_thread_eigen=false")
    cmd = [sys.executable, __file__, "--steady-child", f"--data_dir={args.data_dir}", f"--dtype={args.dtype}",
           f"--iters={args.iters}", f"--warmup={args.warmup}", f"--share={len(cores)}"]
    children = [subprocess.Popen([*cmd, f"--pin={core}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for core in cores]
    runs = []
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"a per-core run failed:\n{err[-3000:]}")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    ms = max(r["ms_per_iter"] for r in runs)
    return {"ms_per_iter": ms, "tokens_per_s": sum(r["tokens_per_iter"] for r in runs) / ms * 1000,
            "each_ms_per_iter": [r["ms_per_iter"] for r in runs]}


def time_to_first_iteration(args) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            t = time.perf_counter()
            cmd = [sys.executable, __file__, "--first-iter", f"--cache-dir={cache}", f"--data_dir={args.data_dir}",
                   f"--dtype={args.dtype}"]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            out[label] = {"process_s": wall, "first_iter_s": json.loads(r.stdout.strip().splitlines()[-1])["first_iter_s"]}
    return out


TRAINERS = ("jax", "nanogpt eager", "nanogpt compile")


def make_nanogpt_run(args, compile_: bool):
    """(one_iteration, batch tokens) for nanoGPT's model and loop on the CPU config's prepared data."""
    import torch

    import data
    import nanogpt_side
    import train

    cfg = train.parse_config([str(CPU_CONFIG), f"--data_dir={args.data_dir}"])
    dataset_dir = data.ensure_prepared(cfg["dataset"], cfg["data_dir"])
    config = train.model_config_from(cfg, data.load_meta(dataset_dir)["vocab_size"])
    model, optimizer = nanogpt_side.build(nanogpt_side.load(args.nanogpt), config, cfg, cfg["seed"])
    if compile_:
        model = torch.compile(model)
    iteration = itertools.count()

    def one_iteration():
        x, y = nanogpt_side.get_batch(dataset_dir / "train.bin", cfg["batch_size"], config.block_size)
        lr = nanogpt_side.lr_at(next(iteration), cfg)
        return nanogpt_side.train_iteration(model, optimizer, x, y, lr, cfg["grad_clip"]).item()

    return one_iteration, cfg["batch_size"] * cfg["block_size"]


def trainer_child(args) -> None:
    """Child process of side_by_side: set up one trainer, run its first iteration and the warm-up,
    then a turn of N iterations for every line N on stdin, answering with their times."""
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for answers only (nanoGPT prints as it builds)
        if args.trainer == "jax":
            run, tokens, _ = make_run(args)
        else:
            run, tokens = make_nanogpt_run(args, compile_=args.trainer == "nanogpt compile")
        run()
    answer = {"first_iter_s": time.perf_counter() - t, "tokens_per_iter": tokens}
    if args.trainer == "jax":
        import jax

        answer["devices"] = jax.device_count()
    print(json.dumps(answer), flush=True)
    for _ in range(args.warmup):
        run()
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        print(json.dumps(times), flush=True)


def side_by_side(args, console) -> dict:
    """gpt/'s step and nanoGPT's, eager and compiled, in turns of --chunk iterations (see above)."""
    cmd = [sys.executable, __file__, f"--data_dir={args.data_dir}", f"--dtype={args.dtype}",
           f"--warmup={args.warmup}", f"--nanogpt={args.nanogpt}"]
    children, answers = {}, {}
    with tempfile.TemporaryDirectory() as logs:
        for name in TRAINERS:  # set up one at a time: compiles must not compete for the cores
            log = open(Path(logs) / f"{len(children)}.log", "w+")
            child = subprocess.Popen([*cmd, f"--trainer={name}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, text=True)
            children[name] = (child, log)
            answers[name] = read_answer(name, child, log)
            console.print(f"{name}: set up and first iteration in {answers[name]['first_iter_s']:.1f} s")
        turns: dict[str, list[list[float]]] = {name: [] for name in TRAINERS}
        for _ in range(max(1, args.iters // args.chunk)):
            for name, (child, log) in children.items():
                child.stdin.write(f"{args.chunk}\n")
                child.stdin.flush()
                turns[name].append(read_answer(name, child, log))
        for child, log in children.values():
            child.stdin.close()
            child.wait()
            log.close()
    results = {}
    jax_turns = [statistics.median(t) for t in turns["jax"]]
    for name in TRAINERS:
        medians = [statistics.median(t) for t in turns[name]]
        ms = statistics.median([x for t in turns[name] for x in t]) * 1000
        results[name] = {
            "ms_per_iter": ms, "tokens_per_s": answers[name]["tokens_per_iter"] / ms * 1000,
            "vs_jax": statistics.median([m / j for m, j in zip(medians, jax_turns)]),
            "first_iter_s": answers[name]["first_iter_s"], "turns": len(medians),
        }
    results["jax"]["devices"] = answers["jax"]["devices"]
    return results


def read_answer(name: str, child: subprocess.Popen, log) -> Any:
    line = child.stdout.readline()
    if not line:
        child.wait()
        log.seek(0)
        raise RuntimeError(f"the {name} trainer failed (exit {child.returncode}):\n{log.read()[-3000:]}")
    return json.loads(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=200, help="timed iterations (default %(default)s)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--data_dir", default=str(Path(tempfile.gettempdir()) / "bench_gpt_data"))
    p.add_argument("--input", help="text file for shakespeare_char (else data.py's default source)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--nanogpt", type=Path, help="a karpathy/nanoGPT checkout: run its CPU config side by side (torch)")
    p.add_argument("--chunk", type=int, default=20, help="iterations per turn with --nanogpt (default %(default)s)")
    p.add_argument("--no-first-iter", action="store_true", help="skip the cold/warm first-iteration runs")
    p.add_argument("--devices", help="comma-separated device counts, e.g. 1,2,4: tokens/s on each (data-parallel)")
    p.add_argument("--guards", action="store_true", help="the guards' paired step-time ratio and the time a save blocks")
    p.add_argument("--saves", type=int, default=10, help="checkpoint saves timed with --guards (default %(default)s)")
    p.add_argument("--per-core", action="store_true",
                   help="also run one pinned process per core, each on its share of the batch, at once (see above)")
    p.add_argument("--first-iter", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--steady-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--pin", type=int, help=argparse.SUPPRESS)
    p.add_argument("--trainer", choices=TRAINERS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    if args.first_iter:
        return first_iteration(args)
    if args.trainer:
        return trainer_child(args)
    if args.steady_child:
        import jax

        print(json.dumps({**steady(args), "devices": jax.device_count()}))
        return None

    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    if args.input:
        make_run(args)  # prepares the data once, before the timed child processes
    if args.devices:
        return devices_table(args, console)
    if args.guards:
        return guards_table(args, console)
    results = side_by_side(args, console) if args.nanogpt else {"jax": steady(args)}
    console.print(f"jax: {results['jax']}")
    if args.per_core:
        results["jax per core, no exchange"] = steady_per_core(args)
        console.print(f"jax per core, no exchange: {results['jax per core, no exchange']}")
    if not args.no_first_iter:
        results["first iteration"] = time_to_first_iteration(args)

    import jax

    devices = results["jax"].get("devices") or jax.device_count()
    table = Table(title=f"CPU config (4x128, block 64, batch 12), {args.dtype}, {devices} JAX device(s), "
                        f"median of {args.iters} iterations" + (f" in turns of {args.chunk}" if args.nanogpt else ""))
    for col in ("run", "ms/iter", "tokens/s", "vs jax" + (" (paired turns)" if args.nanogpt else ""), "first iteration"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        if "ms_per_iter" in r:
            ratio = r.get("vs_jax", r["ms_per_iter"] / results["jax"]["ms_per_iter"])
            first = f"{r['first_iter_s']:.1f} s" if "first_iter_s" in r else ""
            table.add_row(name, f"{r['ms_per_iter']:.2f}", f"{r['tokens_per_s']:,.0f}", f"{ratio:.3f}x", first)
    console.print(table)
    if "first iteration" in results:
        for label, r in results["first iteration"].items():
            console.print(f"time to first iteration ({label} compilation cache): {r['first_iter_s']:.2f} s "
                          f"(process {r['process_s']:.2f} s)")
    print(json.dumps(results))


def timed_turn(run, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return times


def guards_table(args, console) -> None:
    """--guards (see above): the guards' paired cost, then the time each save blocks the loop."""
    import jax
    from rich.table import Table

    import checkpoint

    guarded, _, state = make_run(args)
    plain, _, _ = make_run(args, guard=False)
    for run in (guarded, plain):
        for _ in range(args.warmup):
            run()
    turns = [(timed_turn(guarded, args.chunk), timed_turn(plain, args.chunk)) for _ in range(max(1, args.iters // args.chunk))]
    ratio = statistics.median(statistics.median(g) / statistics.median(p) for g, p in turns)
    step_ms = statistics.median(t for g, _ in turns for t in g) * 1000
    plain_ms = statistics.median(t for _, p in turns for t in p) * 1000

    blocked, after = [], []
    with tempfile.TemporaryDirectory() as out:
        ckpts = checkpoint.Checkpoints(out, keep_last=2)
        for i in range(1, args.saves + 1):
            t = time.perf_counter()  # what train.py's save() does in the loop
            tree = {"params": state["params"], "opt_state": state["opt"], "rng": {"key": jax.random.key_data(state["key"])}}
            ckpts.start_save(("latest",), i, tree, {"iter_num": i})
            blocked.append(time.perf_counter() - t)
            after.extend(timed_turn(guarded, args.chunk))  # while the background writes go on
        ckpts.wait()
        ckpts.close()
    blocked_ms = statistics.median(blocked) * 1000
    results = {
        "guarded_ms_per_iter": step_ms, "plain_ms_per_iter": plain_ms, "guard_ratio_paired": ratio, "turns": len(turns),
        "save_blocks_ms_median": blocked_ms, "save_blocks_ms_max": max(blocked) * 1000,
        "save_blocks_in_steps": blocked_ms / step_ms, "ms_per_iter_while_writing": statistics.median(after) * 1000,
        "devices": jax.device_count(),
    }
    table = Table(title=f"CPU config (4x128, block 64, batch 12), {args.dtype}, {jax.device_count()} JAX device(s): "
                        f"guards ({len(turns)} paired turns of {args.chunk}) and checkpoint saves ({args.saves})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("step with guards / plain step (paired median)", f"{ratio:.3f}x")
    table.add_row("ms/iter with guards, plain", f"{step_ms:.2f}, {plain_ms:.2f}")
    table.add_row("a save blocks the loop (median, max)", f"{blocked_ms:.1f} ms, {max(blocked) * 1000:.1f} ms")
    table.add_row("... in steps (median)", f"{blocked_ms / step_ms:.2f}")
    table.add_row("ms/iter while a save is written", f"{results['ms_per_iter_while_writing']:.2f}")
    console.print(table)
    print(json.dumps({"guards": results}))


def devices_table(args, console) -> None:
    from rich.table import Table

    results = {}
    for n in (int(d) for d in args.devices.split(",")):
        results[n] = steady_on_devices(args, n)
        console.print(f"{n} device(s): {results[n]}")
    table = Table(title=f"CPU config (4x128, block 64, batch 12), {args.dtype}, data-parallel, "
                        f"median of {args.iters} iterations")
    for col in ("devices", "ms/iter", "tokens/s", "vs first"):
        table.add_column(col, justify="right")
    first = next(iter(results.values()))["tokens_per_s"]
    for n, r in results.items():
        table.add_row(str(n), f"{r['ms_per_iter']:.2f}", f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_s'] / first:.2f}x")
    console.print(table)
    print(json.dumps({"devices": results}))


if __name__ == "__main__":
    main()
