"""Per-step overhead of raximport on the gpt CPU train step, plain `python` vs `python -m raximport`.

Each figure comes from small driver programs written to a temp dir and run in fresh subprocesses
(JAX_PLATFORMS=cpu, a private RAX_CACHE_DIR per scenario), plain and under raximport interleaved
(A B A B ...) because the machine is shared and noisy. A goal is judged on the median of the
paired chunk ratios (each chunk against its neighbour of the other variant); the pooled medians'
ratio is printed beside it:

  (a) gpt's jitted train step (config/train_shakespeare_char_cpu.py, train.make_steps): median
      ms/step over --steps individually timed steps (block_until_ready on the loss), after a warm-up.
      Goal: raximport / plain <= 1.01.
  (b) a tiny `jax.jit(lambda x: x + 1)` defined in the driver (so raximport routes it through
      raximport.jit): per-call time, median over batches of calls. Goal: raximport / plain <= 1.5.
  (c) a driver with NO jax.jit: a module-level annotated pure train step (gpt's loss_fn + optax)
      that raximport auto-jits, vs the same driver with `train_step = jax.jit(train_step,
      static_argnames=...)` (hand-jitted), both under raximport (and the hand-jitted one plain).
      Goal: auto-jit within 2% of hand-jit.
  (d) time to first step: from process spawn to the first completed gpt train step, under
      raximport with an empty cache (cold) and again with the same cache (warm); plain for
      reference. Goal: warm / cold <= 0.5. And the XLA compiles up to that step: raximport cold
      compiles no more programs than plain (one compile per signature, the memory check included;
      JAX counts a persistent-cache load as one too).
  (e) --nan-guard: gpt's train step under raximport with the guard off and on, steps dispatched back
      to back as a training loop does (block_until_ready once per chunk, so JAX's asynchronous
      dispatch runs ahead and the guard's one-call-behind read is what is measured): s per step.
      Goal: on / off <= 1.01. And the tiny jit of (b), guard on / off, per call (each call waits
      for the previous one's flags: the guard's dispatch cost). And the guard's check alone (its
      flags over a step's outputs, as a program of its own) against the step, alternated step by
      step in one process: the device time it adds, as a share of a step at the same load (as a
      program of its own it also pays a launch, which inside the step it does not). `--only e-check`
      runs that last comparison alone: for a config whose steps are too slow to pair end to end.

    .venv/bin/python scripts/bench_overhead.py             # the default run (~5-10 min)
    .venv/bin/python scripts/bench_overhead.py --quick     # a smoke run
    .venv/bin/python scripts/bench_overhead.py --reps 7 --steps 200 --only a,c
    .venv/bin/python scripts/bench_overhead.py --only e                  # the NaN guard alone
    .venv/bin/python scripts/bench_overhead.py --only e-check --config config/train_shakespeare_char.py \
        --reps 1 --steps 6 --chunk 2 --warmup 1    # the guard's check on the config gpt trains with
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPT = ROOT / "gpt"
CONFIG = ROOT / "config" / "train_shakespeare_char_cpu.py"
VOCAB = 65  # shakespeare_char
MARK = "BENCH_RESULT "

# Shared top of every driver. A driver sets up (compiles, warms up), says READY, then serves
# "run N" lines on stdin with the times of N more steps, so that the parent can alternate
# between a plain and a raximport process in short chunks: both see the same background load.
PRELUDE = f"""\
import time
T_TOP = time.perf_counter()
import json, os, sys
sys.path.insert(0, {str(GPT)!r})
import numpy as np
import jax
import jax.numpy as jnp
T_JAX = time.perf_counter()
COMPILES = []  # seconds of each XLA compile of this process (a persistent-cache load counts too)
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **_: COMPILES.append(secs) if event == "/jax/core/compile/backend_compile_duration" else None)


def emit(**fields):
    fields.setdefault("raximport_active", "raximport.session" in sys.modules)
    fields["top_to_jax_s"] = T_JAX - T_TOP
    print({MARK!r} + json.dumps(fields), flush=True)


def routed(f):
    # raximport.jit returns JAX's own jitted object around raximport/jit.py's `traced`
    inner = getattr(f, "__wrapped__", None)
    code = getattr(inner, "__code__", None)
    return type(f).__name__, bool(code and code.co_filename.replace(os.sep, "/").endswith("raximport/jit.py"))


def serve(chunk, **ready):
    emit(ready=True, **ready)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        emit(**chunk(int(words[1])))
"""

# One train step at a time: the call (dispatch: JAX returns before the step has run) and the
# whole step (block_until_ready on the loss), both per step.
STEP_LOOP = """\
state = [params, opt_state]
losses = []


def step(i):
    x, y = batches[i % len(batches)]
    t0 = time.perf_counter()
    out = call(state, x, y)
    t1 = time.perf_counter()
    out[-1].block_until_ready()
    t2 = time.perf_counter()
    state[:len(out) - 1] = out[:-1]
    losses.append(out[-1])
    return t1 - t0, t2 - t0


def chunk(n):
    times = [step(i) for i in range(n)]
    return dict(dispatch=[d for d, _ in times], times=[t for _, t in times], loss=float(losses[-1]))


t0 = time.perf_counter()
step(0)
t_first = time.time()
first_s = time.perf_counter() - t0
if WARMUP < 0:  # time to first step: stop here
    emit(first_step_wall=t_first, first_step_s=first_s, since_top_s=time.perf_counter() - T_TOP,
         loss=float(losses[0]), compiles=len(COMPILES), compile_s=sum(COMPILES), **INFO)
    sys.exit(0)
for i in range(WARMUP):
    step(i)
serve(chunk, first_step_s=first_s, **INFO)
"""

# (e): training steps dispatched back to back, as a loop that only logs now and then runs them.
PIPELINED_LOOP = """\
state = [params, opt_state]


def steps(n):
    for i in range(n):
        x, y = batches[i % len(batches)]
        out = call(state, x, y)
        state[:len(out) - 1] = out[:-1]
    out[-1].block_until_ready()
    return out[-1]


steps(1 + WARMUP)


def chunk(n):
    t0 = time.perf_counter()
    loss = steps(n)
    return dict(times=[(time.perf_counter() - t0) / n], loss=float(loss))


serve(chunk, **INFO)
"""

# (e): the guard's in-program check alone (its jitted flags over a step's outputs) against the step,
# alternated in one process: the device time the guard adds, as a share of a step, at the same load.
CHECK_LOOP = """\
from raximport.config import load_config
from raximport.nan_guard import _Watch

check = jax.jit(_Watch(train_step, load_config({}, environ={})).flags)
state = [params, opt_state]


def timed(f):
    t0 = time.perf_counter()
    jax.block_until_ready(f())
    return time.perf_counter() - t0


def one_step(i):
    x, y = batches[i % len(batches)]
    out = call(state, x, y)
    state[:len(out) - 1] = out[:-1]
    return out


outputs = [one_step(i) for i in range(1 + WARMUP)][-1]
check(outputs)


def chunk(n):
    global outputs
    steps, checks = [], []
    for i in range(n):
        steps.append(timed(lambda: one_step(i)))
        outputs = (*state, outputs[-1])
        # A program started as soon as the step's outputs are ready waits for the step's own tail
        # (measured: ~0.4 s after a 20 s step of config/train_shakespeare_char.py, gone after a
        # 1 s pause). A pause keeps that out of the check's time; inside the step there is none.
        time.sleep(min(1.0, 0.1 * steps[-1]))
        checks.append(timed(lambda: check(outputs)))
    return dict(times=steps, check=checks)


serve(chunk, **INFO)
"""

# (a), (d) and (e): gpt's own jitted train step, built the way gpt/train.py builds it.
GPT_SETUP = PRELUDE + f"""\
import train
from model import init_params

WARMUP = int(sys.argv[1])
cfg = train.parse_config([#CONFIG#])
mc = train.model_config_from(cfg, {VOCAB})
optimizer, train_step, _ = train.make_steps(mc, cfg)
key = jax.random.key(cfg["seed"])
key, init_key = jax.random.split(key)
params = jax.jit(init_params, static_argnums=0)(mc, init_key)
opt_state = optimizer.init(params)
rows = cfg["gradient_accumulation_steps"] * cfg["batch_size"]
rng = np.random.default_rng(0)
batches = [tuple(jax.device_put(rng.integers(0, {VOCAB}, (rows, cfg["block_size"]), dtype=np.int32)) for _ in "xy")
           for _ in range(8)]
jax.block_until_ready(batches)
params = (params, key)  # the state is (params, opt_state, key): donated and replaced each step


def call(state, x, y):
    (p, k), s = state
    p, s, k, stats = train_step(p, s, k, x, y)
    return (p, k), s, stats["loss"]


INFO = dict(jit=routed(train_step))
"""
GPT_STEP = GPT_SETUP + STEP_LOOP
GPT_PIPELINED = GPT_SETUP + PIPELINED_LOOP
GPT_CHECK = GPT_SETUP + CHECK_LOOP

# (b): a tiny jitted function; under raximport this jax.jit is rewritten to raximport.jit.
TINY = PRELUDE + """\
f = jax.jit(lambda x: x + 1)
x = jnp.ones((8,), jnp.float32)
for _ in range(3000):
    y = f(x)
y.block_until_ready()


def chunk(batches, calls=1000):
    per_call = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            y = f(x)
        y.block_until_ready()
        per_call.append((time.perf_counter() - t0) / calls)
    return dict(per_call=per_call)


serve(chunk, jit=routed(f))
"""

# (c): no jax.jit in the driver: raximport auto-jits this module-level annotated pure function.
NOJIT = PRELUDE + f"""\
from typing import Any

import optax
from jaxtyping import Array, Float, Int

import train
from model import GPTConfig, init_params, loss_fn


def train_step(
    params: dict[str, Any],
    opt_state: Any,
    x: Int[Array, "batch seq"],
    y: Int[Array, "batch seq"],
    config: GPTConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[dict[str, Any], Any, Float[Array, ""]]:
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, config, None)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, loss

#HANDJIT#

WARMUP = int(sys.argv[1])
cfg = train.parse_config([#CONFIG#])
mc = train.model_config_from(cfg, {VOCAB})
optimizer = train.make_optimizer(cfg)
params = init_params(mc, jax.random.key(cfg["seed"]))
opt_state = optimizer.init(params)
rng = np.random.default_rng(0)
batches = [tuple(jax.device_put(rng.integers(0, {VOCAB}, (cfg["batch_size"], cfg["block_size"]), dtype=np.int32)) for _ in "xy")
           for _ in range(8)]
jax.block_until_ready(batches)


def call(state, x, y):
    return train_step(state[0], state[1], x, y, mc, optimizer)


INFO = dict(autojit=bool(getattr(train_step, "__rax_autojit__", False)), jit=routed(train_step))
""" + STEP_LOOP
HANDJIT = NOJIT.replace("#HANDJIT#", 'train_step = jax.jit(train_step, static_argnames=("config", "optimizer"))')
AUTOJIT = NOJIT.replace("#HANDJIT#", "")


# ------------------------------------------------------------------------------------ running


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAX_", "JAX_", "XLA_", "_RAXIMPORT"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONDONTWRITEBYTECODE="1")
    return env


class Driver:
    """One driver in a fresh process: `python driver.py` or `python -m raximport --path gpt driver.py`."""

    def __init__(self, name: str, script: Path, args: list, rax: bool, cache: Path | None, verbose: bool = False,
                 flags: tuple[str, ...] = ()):
        self.name, self.rax = name, rax
        env = base_env()
        cmd = [sys.executable]
        if rax:
            assert cache is not None
            env["RAX_CACHE_DIR"] = str(cache)
            cmd += ["-m", "raximport", "--path", str(GPT), *flags] + (["--verbose"] if verbose else [])
        cmd += [str(script), *map(str, args)]
        self.stderr_path = script.parent / f"{script.stem}-{'rax' if rax else 'plain'}-{time.time_ns()}.stderr"
        self.stderr = open(self.stderr_path, "w+")
        self.spawned = time.time()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, cwd=script.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        self.info: dict = {}

    def fail(self, why: str) -> None:
        self.proc.kill()
        self.stderr.seek(0)
        sys.stderr.write(self.stderr.read()[-5000:])
        raise SystemExit(f"driver {self.name} ({'raximport' if self.rax else 'plain'}): {why}")

    def read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                result = json.loads(line[len(MARK):])
                if result["raximport_active"] != self.rax:
                    self.fail(f"raximport active={result['raximport_active']}, expected {self.rax}")
                return result
        self.proc.wait()
        self.fail(f"exited with {self.proc.returncode} before giving a result")
        raise AssertionError

    def ready(self) -> "Driver":
        self.info = self.read()
        return self

    def run(self, n: int) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> float:
        """Wait for the process to end; its wall time from spawn."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        if self.proc.wait(timeout=600) != 0:
            self.fail(f"exited with {self.proc.returncode}")
        self.stderr.seek(0)
        self.stderr_text = self.stderr.read()
        self.stderr.close()
        return time.perf_counter() - self.t0


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def pct(xs: list[float], q: int) -> float:
    """The q-th percentile (q in 1..99)."""
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else xs[0]


def quartiles(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.3f}" if xs else "-"
    q = statistics.quantiles(xs, n=4)
    return f"{q[0]:.3f}-{q[2]:.3f}"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, value: str, goal: str = "", verdict: str = "") -> None:
        self.rows.append((what, value, goal, verdict))
        print(f"  {what}: {value}" + (f"  [goal {goal}: {verdict}]" if goal else ""), flush=True)

    def show(self) -> None:
        head = ("figure", "value", "goal", "met")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(4)]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        print(line(head))
        print(line(tuple("-" * w for w in widths)))
        for r in self.rows:
            print(line(r))


def paired(specs: list[tuple], args: list, procs: int, rounds: int, n: int,
           expect: dict[str, dict]) -> dict[str, list[list[dict]]]:
    """For each of `procs` repetitions, start one fresh process per spec (name, script, rax, cache
    and, optionally, raximport's flags), set up side by side, then
    alternate between them in `rounds` chunks of `n` steps (or batches), rotating who goes first.
    Returns, per spec name, per repetition, the chunks' results. `expect`: what each driver must
    say when ready (e.g. that its jit went through raximport.jit)."""
    out: dict[str, list[list[dict]]] = {name: [] for name, *_ in specs}
    for rep in range(procs):
        drivers = [Driver(name, script, args, rax, cache, flags=tuple(flags[0]) if flags else ())
                   for name, script, rax, cache, *flags in specs]
        for d in drivers:
            d.ready()
            for field, want in expect.get(d.name, {}).items():
                if d.info.get(field) != want:
                    d.fail(f"{field} is {d.info.get(field)!r}, expected {want!r}")
            out[d.name].append([])
        for r in range(rounds):
            k = (rep + r) % len(drivers)
            for d in drivers[k:] + drivers[:k]:
                out[d.name][-1].append(d.run(n))
        for d in drivers:
            d.close()
        print(f"    repetition {rep + 1}/{procs} done ({uptime().split('load average:')[-1].strip()})", flush=True)
    return out


def flat(chunks_by_rep: list[list[dict]], key: str) -> list[float]:
    return [t for chunks in chunks_by_rep for c in chunks for t in c[key]]


def compare(table: Table, runs: dict[str, list[list[dict]]], key: str, scale: float, unit: str, label: str,
            base: str, other: str, goal: str = "", ok=None) -> bool | None:
    """Rows for `other` against `base`: pooled medians and their ratio, the paired-chunk ratios, per-process ratios."""
    for name in (base, other):
        if not any(r[0] for r in table.rows if r[0].startswith(f"{label} {name}:")):
            per_proc = [med(flat([c], key)) * scale for c in runs[name]]
            values = flat(runs[name], key)
            table.add(f"{label} {name}: median {unit}",
                      f"{med(values) * scale:.3f} (per process {', '.join(f'{m:.2f}' for m in per_proc)}; "
                      f"10th percentile {pct(values, 10) * scale:.2f}, n={len(values)})")
    ratio = med(flat(runs[other], key)) / med(flat(runs[base], key))
    low = pct(flat(runs[other], key), 10) / pct(flat(runs[base], key), 10)
    chunk_ratios = [med(o[key]) / med(b[key]) for bs, os_ in zip(runs[base], runs[other]) for b, o in zip(bs, os_)]
    proc_ratios = [med(flat([o], key)) / med(flat([b], key)) for b, o in zip(runs[base], runs[other])]
    # The verdict takes the paired chunks' median: neighbouring chunks share the machine's state,
    # so their ratio cancels the drift (other tenants, frequency) that the pooled medians carry.
    paired_ratio = med(chunk_ratios)
    verdict = ""
    if ok is not None:
        verdict = "yes" if ok(paired_ratio) else "NO"
    table.add(f"{label} {other}/{base}",
              f"{ratio:.3f} (paired chunks: median {med(chunk_ratios):.3f}, IQR {quartiles(chunk_ratios)}, "
              f"n={len(chunk_ratios)}; per process {min(proc_ratios):.3f}-{max(proc_ratios):.3f}; "
              f"10th percentiles {low:.3f})", goal, verdict)
    return ok(paired_ratio) if ok is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to PATH")
    parser.add_argument("--reps", type=int, default=3,
                        help="fresh processes per variant, each set alternated chunk by chunk (default 3)")
    parser.add_argument("--steps", type=int, default=100, help="timed train steps per process (default 100)")
    parser.add_argument("--chunk", type=int, default=5,
                        help="steps (tiny jit: batches of 1000 calls) per alternation chunk (default 5)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps after the first (default 10)")
    parser.add_argument("--first-reps", type=int, default=2, help="cold/warm/plain triples for time to first step (default 2)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 rep, 30 steps, 1 cold/warm/plain triple")
    parser.add_argument("--only", default="a,b,c,d,e",
                        help="which parts to run, e.g. a,c (default all); e-check: only (e)'s check alone against a step")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with the drivers, caches and stderr")
    parser.add_argument("--config", type=Path, default=CONFIG,
                        help=f"gpt's config for its steps (default {CONFIG.relative_to(ROOT)}; "
                             "config/train_shakespeare_char.py is the one it trains with, ~20 s a step on 2 CPUs)")
    opts = parser.parse_args(argv)
    if not opts.config.is_file():
        parser.error(f"--config {opts.config}: no such file")
    if opts.quick:
        opts.reps, opts.steps, opts.first_reps = 1, 30, 1
    rounds = max(1, opts.steps // opts.chunk)
    parts = set(opts.only.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="rax-bench-overhead-"))
    scripts = {}
    for name, text in (("gpt_step", GPT_STEP), ("tiny", TINY), ("autojit", AUTOJIT), ("handjit", HANDJIT),
                       ("gpt_pipelined", GPT_PIPELINED), ("gpt_check", GPT_CHECK)):
        scripts[name] = tmp / f"{name}.py"
        scripts[name].write_text(text.replace("#CONFIG#", repr(str(opts.config.resolve()))))
    uptime_start = uptime()
    print(f"uptime at start: {uptime_start}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, gpt config {opts.config}, drivers in {tmp}",
          flush=True)
    table = Table()
    goals: list[tuple[str, bool]] = []
    raw: dict[str, object] = {"uptime_start": uptime_start, "options": vars(opts)}
    started = time.perf_counter()
    try:
        if "a" in parts:
            print(f"(a) gpt train step: {opts.reps} x (plain, raximport) processes, {rounds} alternating chunks "
                  f"of {opts.chunk} steps each", flush=True)
            runs = paired([("plain", scripts["gpt_step"], False, None),
                           ("raximport", scripts["gpt_step"], True, tmp / "cache-a")],
                          [opts.warmup], opts.reps, rounds, opts.chunk,
                          {"plain": {"jit": ["PjitFunction", False]}, "raximport": {"jit": ["PjitFunction", True]}})
            raw["a"] = runs
            ok = compare(table, runs, "times", 1e3, "ms/step", "(a) gpt step", "plain", "raximport", "<= 1.01",
                         lambda r: r <= 1.01)
            goals.append(("a", bool(ok)))
            compare(table, runs, "dispatch", 1e6, "us/dispatch", "(a) call", "plain", "raximport")
        if "b" in parts:
            batches = opts.chunk
            print(f"(b) tiny jit: {opts.reps} x (plain, raximport) processes, {rounds} alternating chunks of "
                  f"{batches} x 1000 calls", flush=True)
            runs = paired([("plain", scripts["tiny"], False, None), ("raximport", scripts["tiny"], True, tmp / "cache-b")],
                          [], opts.reps, rounds, batches,
                          {"plain": {"jit": ["PjitFunction", False]}, "raximport": {"jit": ["PjitFunction", True]}})
            raw["b"] = runs
            ok = compare(table, runs, "per_call", 1e6, "us/call", "(b) tiny jit", "plain", "raximport", "<= 1.5",
                         lambda r: r <= 1.5)
            goals.append(("b", bool(ok)))
        if "c" in parts:
            check = Driver("autojit --verbose", scripts["autojit"], [0], True, tmp / "cache-c-check", verbose=True)
            check.ready()
            check.close()
            announced = [line.strip() for line in check.stderr_text.splitlines() if "jit train_step: static=" in line]
            if not check.info.get("autojit") or not announced:
                sys.stderr.write(check.stderr_text)
                raise SystemExit("(c) auto-jit did not kick in for the no-jit driver")
            table.add("(c) --verbose says", announced[0])
            print(f"(c) no jax.jit vs hand-jit: {opts.reps} x (autojit raximport, handjit raximport, handjit plain) "
                  f"processes, {rounds} alternating chunks of {opts.chunk} steps each", flush=True)
            runs = paired([("handjit raximport", scripts["handjit"], True, tmp / "cache-c-hand"),
                           ("autojit raximport", scripts["autojit"], True, tmp / "cache-c-auto"),
                           ("handjit plain", scripts["handjit"], False, None)],
                          [opts.warmup], opts.reps, rounds, opts.chunk,
                          {"handjit raximport": {"jit": ["PjitFunction", True]},
                           "autojit raximport": {"autojit": True}, "handjit plain": {"jit": ["PjitFunction", False]}})
            raw["c"] = runs
            ok = compare(table, runs, "times", 1e3, "ms/step", "(c)", "handjit raximport", "autojit raximport",
                         "0.98-1.02", lambda r: abs(r - 1) <= 0.02)
            goals.append(("c", bool(ok)))
            compare(table, runs, "times", 1e3, "ms/step", "(c)", "handjit plain", "handjit raximport")
            compare(table, runs, "dispatch", 1e6, "us/dispatch", "(c) call", "handjit raximport", "autojit raximport")
        if "d" in parts:
            print(f"(d) time to first step: {opts.first_reps} x (raximport cold, raximport warm, plain), one process "
                  "at a time", flush=True)
            found: dict[str, list[dict]] = {"raximport cold": [], "raximport warm": [], "plain": []}
            for rep in range(opts.first_reps):
                cache = tmp / f"cache-d-{rep}"
                for name, rax in (("raximport cold", True), ("raximport warm", True), ("plain", False)):
                    d = Driver(name, scripts["gpt_step"], [-1], rax, cache)
                    r = d.ready().info
                    r["wall_s"] = d.close()
                    r["ttfs"] = r["first_step_wall"] - d.spawned
                    found[name].append(r)
            for name, bucket in found.items():
                ttfs = [r["ttfs"] for r in bucket]
                table.add(f"(d) {name}: s to first step",
                          f"{med(ttfs):.2f} (runs {', '.join(f'{t:.2f}' for t in ttfs)}; import jax "
                          f"{med([r['top_to_jax_s'] for r in bucket]):.2f}, first step call "
                          f"{med([r['first_step_s'] for r in bucket]):.2f}, whole process {med([r['wall_s'] for r in bucket]):.2f})")
            raw["d"] = found
            counts = {name: med([r["compiles"] for r in bucket]) for name, bucket in found.items()}
            table.add("(d) XLA programs to the first step (compiled or loaded): raximport cold, warm; plain",
                      f"{counts['raximport cold']:.0f}, {counts['raximport warm']:.0f}; {counts['plain']:.0f} "
                      f"({med([r['compile_s'] for r in found['raximport cold']]):.2f} s vs "
                      f"{med([r['compile_s'] for r in found['plain']]):.2f} s compiling)",
                      "cold = plain", "yes" if counts["raximport cold"] <= counts["plain"] else "NO")
            goals.append(("d compiles", counts["raximport cold"] <= counts["plain"]))
            cold, warm = found["raximport cold"], found["raximport warm"]
            ratios = [w["ttfs"] / c["ttfs"] for c, w in zip(cold, warm)]
            ratio = med([r["ttfs"] for r in warm]) / med([r["ttfs"] for r in cold])
            table.add("(d) raximport warm/cold", f"{ratio:.3f} (per pair {min(ratios):.3f}-{max(ratios):.3f})",
                      "<= 0.5", "yes" if ratio <= 0.5 else "NO")
            goals.append(("d", ratio <= 0.5))
            plain = med([r["ttfs"] for r in found["plain"]])
            table.add("(d) raximport cold/plain, warm/plain",
                      f"{med([r['ttfs'] for r in cold]) / plain:.3f}, {med([r['ttfs'] for r in warm]) / plain:.3f}")
        if "e" in parts:
            print(f"(e) --nan-guard: {opts.reps} x (guard off, guard on) raximport processes, {rounds} alternating "
                  f"chunks of {opts.chunk} back-to-back gpt steps, then the tiny jit", flush=True)
            guarded = {"jit": ["function", True]}  # the guard's function around JAX's jitted program
            runs = paired([("guard off", scripts["gpt_pipelined"], True, tmp / "cache-e-off"),
                           ("guard on", scripts["gpt_pipelined"], True, tmp / "cache-e-on", ["--nan-guard"])],
                          [opts.warmup], opts.reps, rounds, opts.chunk,
                          {"guard off": {"jit": ["PjitFunction", True]}, "guard on": guarded})
            raw["e"] = runs
            ok = compare(table, runs, "times", 1e3, "ms/step", "(e) gpt steps", "guard off", "guard on", "<= 1.01",
                         lambda r: r <= 1.01)
            goals.append(("e", bool(ok)))
            runs = paired([("guard off", scripts["tiny"], True, tmp / "cache-e-tiny-off"),
                           ("guard on", scripts["tiny"], True, tmp / "cache-e-tiny-on", ["--nan-guard"])],
                          [], opts.reps, rounds, opts.chunk,
                          {"guard off": {"jit": ["PjitFunction", True]}, "guard on": guarded})
            raw["e tiny"] = runs
            compare(table, runs, "per_call", 1e6, "us/call", "(e) tiny jit", "guard off", "guard on")
        if "e" in parts or "e-check" in parts:
            print(f"(e) the guard's check alone against a gpt step: {opts.reps} process(es), {rounds} chunks of "
                  f"{opts.chunk} steps", flush=True)
            runs = paired([("check", scripts["gpt_check"], True, tmp / "cache-e-check")], [opts.warmup], opts.reps,
                          rounds, opts.chunk, {})
            raw["e check"] = runs
            shares = [med(c["check"]) / med(c["times"]) for chunks in runs["check"] for c in chunks]
            table.add("(e) the guard's check alone / a gpt step, same process, alternated",
                      f"{med(shares):.4f} (check {med(flat(runs['check'], 'check')) * 1e3:.2f} ms, step "
                      f"{med(flat(runs['check'], 'times')) * 1e3:.2f} ms; per chunk IQR {quartiles(shares)}, "
                      f"n={len(shares)})")
    finally:
        if opts.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    uptime_end = uptime()
    print()
    table.add("load at start (uptime 1/5/15 min)", uptime_start.split("load average:")[-1].strip())
    table.add("load at end (uptime 1/5/15 min)", uptime_end.split("load average:")[-1].strip())
    table.add("benchmark wall time", f"{time.perf_counter() - started:.0f} s")
    print()
    table.show()
    if opts.json:
        raw["uptime_end"] = uptime_end
        raw["table"] = table.rows
        Path(opts.json).write_text(json.dumps(raw, indent=1))
    missed = [name for name, ok in goals if not ok]
    print("\nall goals met" if not missed else f"\ngoals missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
