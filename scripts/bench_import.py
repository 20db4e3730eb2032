#!/usr/bin/env python
"""Import-time benchmark: plain Python vs raximport (cold and warm cache) vs jaxtyping's own hook.

Generates a realistic project in a temp dir: a package `benchpkg` of N modules (default 50) with
about 1,000 jaxtyping-annotated functions (`Float[Array, "batch seq embed"]` and friends), some
annotated methods, dataclasses with jaxtyping fields, plain helpers, module-level constants and
type aliases, a few `jax.jit`s, and imports between the modules; every module does
`import jax.numpy as jnp`. `main.py` imports all of them (no calls) and prints how long the
imports of the N modules took inside the process; `main_jaxtyping.py` does the same after
`jaxtyping.install_import_hook(["benchpkg"], "beartype.beartype")`.

Two numbers per variant, each the median (and the minimum) of --runs processes, run interleaved
(round after round of every variant once) so that the load of a shared machine hits all alike:
  process  wall time of the whole `python ...` subprocess (interpreter + jax start included; nothing
           subtracted);
  imports  time.perf_counter() around the N imports inside the process (jax and jaxtyping are
           imported before the timer starts, so this is the modules alone).

Two environments:
  env      as this environment runs Python: PYTHONDONTWRITEBYTECODE=1 if set here. Then Python
           writes no __pycache__ for the generated modules and jaxtyping's hook caches nothing;
           raximport's own cache (in its cache dir) still works.
  pyc      bytecode writing allowed, into a private PYTHONPYCACHEPREFIX (warmed first), so plain
           Python and jaxtyping's hook get their caches too: the fair baseline. Nothing is written
           next to the sources or into the venv.

Also: raximport's own share of `python -X importtime -m raximport main.py` (sum of the self times
of raximport.* modules), and the cost at every interpreter start of the raximport.pth line when
RAX_ENABLE is unset.

    python scripts/bench_import.py [--runs 7] [--modules 50] [--functions 1000] [--envs env,pyc] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import timeit
from pathlib import Path

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]

# --- the generated project -------------------------------------------------------------------

HEADER = '''\
"""Model component {i}: layers, losses and data helpers for experiment {i}."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree
{imports}
HIDDEN_{i} = {hidden}
NUM_HEADS_{i} = {heads}
DROPOUT_{i} = {dropout}
LAYER_NAMES_{i} = ({names})
DEFAULTS_{i} = {{"lr": {lr}, "warmup": {warmup}, "decay": 0.1, "clip": 1.0, "betas": (0.9, 0.95)}}

Tokens{i} = Int[Array, "batch seq"]
Hidden{i} = Float[Array, "batch seq embed"]
'''

# Annotated functions: {n} is a unique suffix, {i} the module number.
FUNCTIONS = [
    '''
def layer_norm_{n}(
    x: Float[Array, "batch seq embed"], scale: Float[Array, "embed"], bias: Float[Array, "embed"], eps: float = 1e-5
) -> Float[Array, "batch seq embed"]:
    """Normalise over the embedding axis, then scale and shift."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias
''',
    '''
def attention_{n}(
    q: Float[Array, "batch heads seq dim"],
    k: Float[Array, "batch heads seq dim"],
    v: Float[Array, "batch heads seq dim"],
    mask: Optional[Bool[Array, "seq seq"]] = None,
) -> Float[Array, "batch heads seq dim"]:
    """Scaled dot-product attention with an optional causal mask."""
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, v)
''',
    '''
def mlp_{n}(
    x: Hidden{i}, w_in: Float[Array, "embed hidden"], w_out: Float[Array, "hidden embed"]
) -> Hidden{i}:
    """Two-layer perceptron with a GELU."""
    h = jax.nn.gelu(x @ w_in)
    return h @ w_out
''',
    '''
def cross_entropy_{n}(logits: Float[Array, "batch seq vocab"], targets: Tokens{i}) -> Float[Array, ""]:
    """Mean token-level cross entropy."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return -jnp.mean(picked)
''',
    '''
def embed_{n}(tokens: Int[Array, "batch seq"], table: Float[Array, "vocab embed"]) -> Float[Array, "batch seq embed"]:
    """Look the tokens up in the embedding table."""
    return jnp.take(table, tokens, axis=0)
''',
    '''
def dropout_{n}(
    key: PRNGKeyArray, x: Float[Array, "*shape"], rate: float = DROPOUT_{i}, *, deterministic: bool = False
) -> Float[Array, "*shape"]:
    """Inverted dropout."""
    if deterministic or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)
''',
    '''
def positions_{n}(seq_len: int, dim: int) -> Float[Array, "seq dim"]:
    """Sinusoidal position encodings."""
    pos = jnp.arange(seq_len)[:, None]
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(0, dim, 2) / dim)
    angles = pos * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
''',
    '''
def split_heads_{n}(x: Float[Array, "batch seq embed"], heads: int = NUM_HEADS_{i}) -> Float[Array, "batch heads seq dim"]:
    """(batch, seq, heads*dim) -> (batch, heads, seq, dim)."""
    b, s, e = x.shape
    return x.reshape(b, s, heads, e // heads).transpose(0, 2, 1, 3)
''',
    '''
def global_norm_{n}(tree: PyTree[Float[Array, "..."]]) -> Float[Array, ""]:
    """The L2 norm of all leaves together."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in leaves))
''',
    '''
@jax.jit
def accuracy_{n}(logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]) -> Float[Array, ""]:
    """Fraction of correct argmax predictions."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
''',
    '''
@functools.partial(jax.jit, static_argnames=("axis",))
def masked_mean_{n}(x: Float[Array, "batch seq"], mask: Bool[Array, "batch seq"], axis: int = -1) -> Float[Array, " batch"]:
    """Mean of x over the positions where mask is set."""
    total = jnp.sum(jnp.where(mask, x, 0.0), axis=axis)
    return total / jnp.maximum(jnp.sum(mask, axis=axis), 1)
''',
]

PLAIN = [
    '''
def schedule_{n}(step: int, warmup: int = 1000, peak: float = 3e-4) -> float:
    """Linear warm-up then cosine decay (plain Python floats)."""
    if step < warmup:
        return peak * step / max(1, warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - warmup) / 100_000)))
''',
    '''
def describe_{n}(config: dict) -> str:
    return ", ".join(f"{{key}}={{value}}" for key, value in sorted(config.items()))
''',
    '''
def chunks_{n}(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]
''',
]

CLASSES = '''
@dataclasses.dataclass(frozen=True)
class Batch{i}:
    """One training batch."""

    tokens: Int[Array, "batch seq"]
    targets: Int[Array, "batch seq"]
    mask: Bool[Array, "batch seq"]
    weights: Optional[Float[Array, " batch"]] = None

    def num_tokens(self) -> Int[Array, ""]:
        return jnp.sum(self.mask)


@dataclasses.dataclass
class Params{i}:
    wq: Float[Array, "embed embed"]
    wk: Float[Array, "embed embed"]
    wv: Float[Array, "embed embed"]
    wo: Float[Array, "embed embed"]
    ln_scale: Float[Array, "embed"]
    ln_bias: Float[Array, "embed"]


class Block{i}:
    """A transformer block holding its parameters."""

    def __init__(self, params: Params{i}, heads: int = NUM_HEADS_{i}) -> None:
        self.params = params
        self.heads = heads

    def __call__(self, x: Float[Array, "batch seq embed"]) -> Float[Array, "batch seq embed"]:
        p = self.params
        h = (x - jnp.mean(x, -1, keepdims=True)) * p.ln_scale + p.ln_bias
        return x + (h @ p.wq) @ p.wo

    def project(self, x: Float[Array, "batch seq embed"], w: Float[Array, "embed embed"]) -> Float[Array, "batch seq embed"]:
        return x @ w


class Stats{i}(NamedTuple):
    loss: float
    accuracy: float
    tokens: int
'''


def module_source(i: int, functions: int, rng: random.Random) -> str:
    previous = rng.sample(range(i), k=min(i, 3))
    imports = "".join(f"from benchpkg import m{j:02d}\n" for j in sorted(previous))
    parts = [
        HEADER.format(
            i=i,
            imports=imports,
            hidden=rng.choice([256, 512, 768, 1024]),
            heads=rng.choice([4, 8, 12, 16]),
            dropout=rng.choice([0.0, 0.1, 0.2]),
            names=", ".join(f'"layer_{k}"' for k in range(rng.randint(2, 6))),
            lr=rng.choice([1e-3, 3e-4, 6e-4]),
            warmup=rng.choice([100, 1000, 2000]),
        ),
        CLASSES.format(i=i),
    ]
    for k in range(functions):
        parts.append(FUNCTIONS[(i + k) % len(FUNCTIONS)].format(n=f"{i}_{k}", i=i))
        if k % 5 == 0:
            parts.append(PLAIN[(i + k) % len(PLAIN)].format(n=f"{i}_{k}"))
    if previous:  # use what was imported, as real code does
        j = previous[0]
        parts.append(f"\nDEFAULTS_{i}.update(m{j:02d}.DEFAULTS_{j})\n")
    return "".join(parts)


def generate(root: Path, modules: int, functions: int) -> dict[str, int]:
    rng = random.Random(0)
    package = root / "benchpkg"
    package.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "benchproj"\nversion = "0"\n')
    (package / "__init__.py").write_text('"""Benchmark package."""\n')
    per_module = [functions // modules + (1 if i < functions % modules else 0) for i in range(modules)]
    lines = 0
    for i in range(modules):
        text = module_source(i, per_module[i] - 3, rng)  # 3 annotated methods per module's classes
        lines += text.count("\n")
        (package / f"m{i:02d}.py").write_text(text)
    imports = "".join(f"import benchpkg.m{i:02d}\n" for i in range(modules))
    body = textwrap.dedent(
        """\
        import json, time
        import jax, jax.numpy, jaxtyping  # interpreter + JAX + jaxtyping: before the timer
        {install}
        _t0 = time.perf_counter()
        {imports}_t1 = time.perf_counter()
        print("BENCH " + json.dumps({{"imports_s": _t1 - _t0}}))
        """
    )
    (root / "main.py").write_text(body.format(install="", imports=imports))
    install = 'jaxtyping.install_import_hook(["benchpkg"], "beartype.beartype")'
    (root / "main_jaxtyping.py").write_text(body.format(install=install, imports=imports))
    return {"modules": modules, "annotated_functions": functions, "dataclasses": 2 * modules, "lines": lines}


# --- measuring -------------------------------------------------------------------------------


def base_env(kind: str, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")}
    env.update({"JAX_PLATFORMS": "cpu", "NO_COLOR": "1"})
    env.pop("PYTHONPYCACHEPREFIX", None)
    if kind == "pyc":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def run_once(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench_import: {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return wall, json.loads(line[6:])["imports_s"]
    raise SystemExit(f"bench_import: no BENCH line from {' '.join(argv)}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def summarise(name: str, walls: list[float], imports: list[float]) -> dict:
    row = {"name": name, "process_s": statistics.median(walls), "imports_s": statistics.median(imports),
           "process_min_s": min(walls), "imports_min_s": min(imports), "process_all": walls, "imports_all": imports}
    print(f"  {name:<46} process {row['process_s']:7.3f} s (min {row['process_min_s']:6.3f})   "
          f"imports {row['imports_s'] * 1000:8.1f} ms (min {row['imports_min_s'] * 1000:7.1f})", flush=True)
    return row


def variants(kind: str, root: Path, work: Path, runs: int) -> list[dict]:
    pycache = work / f"pycache-{kind}"
    env = base_env(kind, pycache)
    cold_dir, warm_dir = work / f"rax-cold-{kind}", work / f"rax-warm-{kind}"
    rax = [PYTHON, "-m", "raximport"]
    plan = [
        ("plain", "plain", [PYTHON, "main.py"], env, None),
        ("cold", "raximport cold (empty cache each run)", [*rax, "--cache-dir", str(cold_dir), "main.py"], env, cold_dir),
        ("warm", "raximport warm (-m raximport)", [*rax, "--cache-dir", str(warm_dir), "main.py"], env, None),
        ("warm_env", "raximport warm (RAX_ENABLE=1 python main.py)", [PYTHON, "main.py"],
         {**env, "RAX_ENABLE": "1", "RAX_CACHE_DIR": str(warm_dir)}, None),
        ("jaxtyping", "jaxtyping hook + beartype", [PYTHON, "main_jaxtyping.py"], env, None),
    ]
    # Warm everything that can be warmed: pycs (pyc env), raximport's warm cache, the OS file cache.
    for _, _, argv, run_env, fresh in plan:
        if fresh is None:
            run_once(argv, root, run_env)
    cached = list((warm_dir / "pyc").glob("*.pyc"))
    modules = len(list((root / "benchpkg").glob("m*.py")))
    if len(cached) < modules:  # raximport must really have rewritten the modules, or the numbers mean nothing
        raise SystemExit(f"bench_import: raximport cached {len(cached)} files for {modules} modules: not instrumented?")
    # Interleaved: every round runs each variant once, so a change in the machine's load hits all alike.
    walls: dict[str, list[float]] = {key: [] for key, *_ in plan}
    imports: dict[str, list[float]] = {key: [] for key, *_ in plan}
    for round_ in range(runs):
        for key, _, argv, run_env, fresh in plan:
            if fresh is not None:
                shutil.rmtree(fresh, ignore_errors=True)
            wall, inner = run_once(argv, root, run_env)
            walls[key].append(wall)
            imports[key].append(inner)
        print(f"  [{kind}] round {round_ + 1}/{runs} done, load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"[{kind}] medians of {runs} interleaved runs:", flush=True)
    return [{"key": key, "env": kind, **summarise(name, walls[key], imports[key])} for key, name, *_ in plan]


def rax_importtime(kind: str, root: Path, work: Path) -> dict:
    """raximport's own import cost under `-X importtime -m raximport main.py`, warm caches.

    raximport_self_us: the self times of the raximport.* lines summed. attributable_us: the self
    times of raximport.* and of everything imported underneath them (stdlib modules raximport was
    the first to import included: an upper bound).
    """
    env = base_env(kind, work / f"pycache-{kind}")
    cache = work / f"rax-importtime-{kind}"
    argv = [PYTHON, "-X", "importtime", "-m", "raximport", "--cache-dir", str(cache), "main.py"]
    run_once(argv, root, env)  # warm raximport's cache (and the pycs in the pyc env)
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    entries = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_part, cumulative, name = line[len("import time:"):].split("|")
            entries.append((len(name) - len(name.lstrip()), name.strip(), int(self_part), int(cumulative)))
    self_us = total_us = attributable_us = 0
    modules = []
    stack: list[tuple[int, bool]] = []  # importtime lists children before parents: walk it backwards
    for indent, name, self_time, cumulative in reversed(entries):
        while stack and stack[-1][0] >= indent:
            stack.pop()
        ours = name.startswith("raximport")
        under = ours or (stack[-1][1] if stack else False)
        stack.append((indent, under))
        total_us += self_time
        attributable_us += self_time if under else 0
        if ours:
            self_us += self_time
            modules.append((name, self_time, cumulative))
    return {"env": kind, "raximport_self_us": self_us, "attributable_us": attributable_us, "all_self_us": total_us,
            "modules": modules[::-1]}


def pth_cost() -> dict:
    """The raximport.pth line, run at every start: its cost with RAX_ENABLE unset."""
    pth = Path(sysconfig.get_path("purelib")) / "raximport.pth"
    line = next(l for l in pth.read_text().splitlines() if l.startswith("import"))
    env = {k: v for k, v in os.environ.items() if k != "RAX_ENABLE"}
    saved = os.environ.pop("RAX_ENABLE", None)
    try:
        timer = timeit.Timer(line)
        number, _ = timer.autorange()
        per_call = min(timer.repeat(5, number)) / number
    finally:
        if saved is not None:
            os.environ["RAX_ENABLE"] = saved
    proc = subprocess.run([PYTHON, "-X", "importtime", "-c", "pass"], env=env, capture_output=True, text=True)
    imported = [l.split("|")[-1].strip() for l in proc.stderr.splitlines() if "raximport" in l]
    return {"pth": str(pth), "line": line, "per_start_us": per_call * 1e6, "raximport_imported_at_start": imported}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="processes per variant; the median is reported")
    parser.add_argument("--modules", type=int, default=50)
    parser.add_argument("--functions", type=int, default=1000, help="annotated functions in all (methods included)")
    parser.add_argument("--envs", default="env,pyc", help="env (as this environment runs Python), pyc (bytecode caching on)")
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (default: a temp dir, removed)")
    parser.add_argument("--json", metavar="FILE", help="also write all measurements to FILE")
    args = parser.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rax-bench-"))
    if args.keep and work.exists():
        shutil.rmtree(work)
    root = work / "project"
    try:
        shape = generate(root, args.modules, args.functions)
        print(f"generated {shape['modules']} modules, {shape['lines']} lines, ~{shape['annotated_functions']} "
              f"annotated functions and methods, {shape['dataclasses']} dataclasses, in {root}")
        print(f"python {sys.version.split()[0]}, PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} "
              f"here; load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
              f"on {os.cpu_count()} cores", flush=True)
        rows = []
        kinds = [k.strip() for k in args.envs.split(",") if k.strip()]
        for kind in kinds:
            rows += variants(kind, root, work, args.runs)
        importtime = [rax_importtime(kind, root, work) for kind in kinds]
        pth = pth_cost()
        load_after = os.getloadavg()
        report(rows, importtime, pth, load_after)
        if args.json:
            Path(args.json).write_text(json.dumps({"shape": shape, "rows": rows, "importtime": importtime,
                                                   "pth": pth, "load_after": load_after}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def report(rows: list[dict], importtimes: list[dict], pth: dict, load_after: tuple[float, float, float]) -> None:
    print("\n| env | variant | process (s) | x plain | imports of the modules (ms) | x plain |")
    print("|---|---|---:|---:|---:|---:|")
    for kind in dict.fromkeys(r["env"] for r in rows):
        these = [r for r in rows if r["env"] == kind]
        plain = these[0]
        for r in these:
            print(f"| {kind} | {r['name']} | {r['process_s']:.3f} | {r['process_s'] / plain['process_s']:.2f}x "
                  f"| {r['imports_s'] * 1000:.1f} | {r['imports_s'] / plain['imports_s']:.2f}x |")
    print()
    for kind in dict.fromkeys(r["env"] for r in rows):
        by = {r["key"]: r for r in rows if r["env"] == kind}
        plain, cold, warm, jt = by["plain"], by["cold"], by["warm"], by["jaxtyping"]
        for metric, label in (("process_s", "process"), ("imports_s", "imports")):
            p, c, w, j = plain[metric], cold[metric], warm[metric], jt[metric]
            print(f"[{kind}] {label:<7}: warm/plain {w / p:.2f}x (target <= 1.10)  cold/plain {c / p:.2f}x (target <= 2)  "
                  f"jaxtyping-hook/plain {j / p:.2f}x  raximport cold {'faster' if c < j else 'SLOWER'} than "
                  f"jaxtyping hook ({j / c:.2f}x), warm {'faster' if w < j else 'SLOWER'} ({j / w:.2f}x)")
    for it in importtimes:
        print(f"\n[{it['env']}] raximport's own modules under -X importtime -m raximport (warm caches): "
              f"{it['raximport_self_us'] / 1000:.1f} ms self time summed, {it['attributable_us'] / 1000:.1f} ms with "
              f"what they imported first, of {it['all_self_us'] / 1000:.0f} ms for all imports of the process:")
        for name, self_us, cumulative in it["modules"]:
            print(f"    {name:<28} self {self_us / 1000:6.2f} ms  cumulative {cumulative / 1000:7.2f} ms")
    print(f"\n{pth['pth']} at every interpreter start with RAX_ENABLE unset: {pth['per_start_us']:.2f} us per start "
          f"({'well under' if pth['per_start_us'] < 1000 else 'NOT under'} 1 ms); raximport modules imported by "
          f"`python -X importtime -c pass`: {pth['raximport_imported_at_start'] or 'none'}")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
