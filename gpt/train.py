"""Train a GPT in plain JAX, after karpathy/nanoGPT's train.py.

    python gpt/train.py config/train_shakespeare_char_cpu.py --max_iters=100

Configuration: the defaults below, then any config file (a Python file whose top-level
assignments override them), then ``--key=value`` overrides, in command-line order. Unknown keys
and values of the wrong type are errors (exit status 2).

Checkpoints (gpt/checkpoint.py, orbax-checkpoint) go to ``out_dir/latest`` (the last keep_last),
``out_dir/best`` (lowest val loss) and ``out_dir/good`` (the newest with every value finite).
``init_from='resume'`` continues from the newest of latest exactly where it stopped: same
iteration, parameters, optimizer state and both RNGs (JAX key and numpy Generator), so a resumed
run's losses equal an uninterrupted run's bit for bit; ``init_from='good'`` continues from good.
Ctrl-C stops after the current iteration and saves first (press it twice to abort without saving).

A non-finite loss or gradient norm is never applied: with ``on_nonfinite='stop'`` training stops
there with a report (exit status 1); with 'skip' the update is skipped, up to max_skipped in a row.
"""

import ast
import collections
import contextlib
import math
import os
import runpy
import signal
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int, Integer, PRNGKeyArray, Shaped

import checkpoint
import data
from model import GPTConfig, Params, decay_mask, init_params, loss_fn, num_params

# ----------------------------------------------------------------------------- defaults
# I/O
out_dir = "out"
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False  # if True, evaluate once and exit
always_save_checkpoint = True  # if True, save latest after each eval even if val loss got worse (best: only if better)
init_from = "scratch"  # 'scratch', 'resume' (the newest in out_dir/latest) or 'good' (out_dir/good, last known finite)
overwrite = False  # a scratch run into an out_dir that holds checkpoints is refused unless True (then removes them)
keep_last = 2  # how many saves out_dir/latest keeps
on_nonfinite = "stop"  # a NaN/Inf loss or gradient norm: 'stop' (report, exit 1) or 'skip' (that update not applied)
max_skipped = 5  # with 'skip': stop after this many skipped updates in a row
# data
dataset = "shakespeare_char"
data_dir = "data"
gradient_accumulation_steps = 1  # micro-batches per optimizer step, accumulated inside the jitted step
batch_size = 12  # micro-batch size
block_size = 1024
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False
# AdamW optimizer
learning_rate = 6e-4  # max learning rate
max_iters = 600000
weight_decay = 1e-1  # applied to 2-D parameters only (matmul weights and embeddings)
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip gradients at this global norm, or disable if == 0.0
# learning rate schedule: linear warmup, then cosine decay to min_lr
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 600000  # ~= max_iters per Chinchilla
min_lr = 6e-5  # ~= learning_rate/10 per Chinchilla
# system
dtype = "float32"  # 'float32' or 'bfloat16' (matmuls in bfloat16, params and optimizer in float32)
seed = 1337
# Peak FLOP/s of the device, for the MFU estimate (nanoGPT uses an A100's bf16 peak, 312e12).
# The default is a rough fp32 peak of a small 2-core AVX-512 CPU (2 cores x 2 FMA x 16 lanes x
# 2 flop x ~3 GHz); set it to your hardware's number.
peak_flops = 2e11
# scaling out (README "Scaling out"): a ("data", "model") mesh over all devices of all processes
cpu_devices = 0  # on a CPU, JAX devices to split the batch over (one per core); 0: the most cores that divide batch_size
model_parallel = 1  # devices per model replica (attention/MLP weights split over them); the rest: data-parallel
coordinator_address = ""  # multi-host: process 0's host:port; "" = $JAX_COORDINATOR_ADDRESS, if set
num_processes = 0  # multi-host: 0 = $JAX_NUM_PROCESSES, or what the cluster says (SLURM, Open MPI)
process_id = -1  # multi-host: -1 = $JAX_PROCESS_ID, or what the cluster says
# -----------------------------------------------------------------------------
DEFAULTS: dict[str, Any] = {
    k: v for k, v in globals().items() if not k.startswith("_") and type(v) in (int, float, bool, str)
}


INIT_FROM = {"scratch": None, "resume": "latest", "good": "good"}  # init_from -> the checkpoint it reads
POSITIVE = (  # zero or negative is an error (sample.py's keys too)
    "eval_interval", "log_interval", "eval_iters", "batch_size", "block_size", "n_layer", "n_head", "n_embd",
    "gradient_accumulation_steps", "lr_decay_iters", "keep_last", "max_skipped", "num_samples", "max_new_tokens",
)
NON_NEGATIVE = ("max_iters", "warmup_iters", "learning_rate", "min_lr", "grad_clip", "weight_decay", "dropout",
                "temperature", "top_k")
CHOICES = {"on_nonfinite": ("stop", "skip"), "dtype": ("float32", "bfloat16"), "init_from": tuple(INIT_FROM)}


class ConfigError(ValueError):
    """A bad config file or --key=value override."""


def check_values(cfg: dict[str, Any]) -> None:
    """Refuse, before anything runs, values that would fail later or loop forever (an
    eval_interval of 0 divides by zero after a whole compile; a negative batch_size...)."""
    for key in POSITIVE:
        if key in cfg and cfg[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {cfg[key]!r}")
    for key in NON_NEGATIVE:
        if key in cfg and cfg[key] < 0:
            raise ConfigError(f"{key} must not be negative, got {cfg[key]!r}")
    for key, choices in CHOICES.items():
        if key in cfg and cfg[key] not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, choices))}, got {cfg[key]!r}")


def _valid_keys(defaults: dict[str, Any]) -> str:
    return "valid keys: " + ", ".join(sorted(defaults))


def _check_value(key: str, value: Any, source: str, defaults: dict[str, Any]) -> Any:
    if key not in defaults:
        raise ConfigError(f"unknown config key {key!r} (from {source}); {_valid_keys(defaults)}")
    want = type(defaults[key])
    if want is float and type(value) is int:
        value = float(value)
    if type(value) is not want:
        raise ConfigError(
            f"config key {key!r} (from {source}) must be {want.__name__}, "
            f"got {type(value).__name__} {value!r}; default is {defaults[key]!r}"
        )
    return value


def print_help_if_asked(argv: list[str], script: str, doc: str) -> bool:
    """If argv holds -h or --help, print the script's help and return True: its docstring, then
    its defaults block as written in its source (every key with its default and comment), which
    is what a config file or --key=value overrides."""
    if not any(arg in ("-h", "--help") for arg in argv):
        return False
    lines = Path(script).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# ---") and "defaults" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("# ---"))
    keys = "\n".join(f"  {line}" for line in lines[start + 1 : end])
    print(f"{doc.strip()}\n\nKeys and their defaults (override in a config file or with --key=value):\n{keys}")
    return True


def parse_config(argv: list[str], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then config files (positional args) and --key=value overrides in order."""
    defaults = DEFAULTS if defaults is None else defaults
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith("--"):
            path = Path(arg)
            if not path.is_file():
                raise ConfigError(f"config file not found: {arg}")
            try:
                values = runpy.run_path(str(path), run_name="__config__")
            except Exception as e:  # whatever the file raises: the user's to fix, shown at its line
                line = e.lineno if isinstance(e, SyntaxError) else next(
                    (f.lineno for f in reversed(traceback.extract_tb(e.__traceback__)) if f.filename == str(path)), "?")
                raise ConfigError(f"config file {arg}, line {line}: {type(e).__name__}: {e}") from e
            for key, value in values.items():
                if key.startswith("_") or callable(value) or type(value).__name__ == "module":
                    continue  # dunders, imports and helpers of the config file itself
                config[key] = _check_value(key, value, arg, defaults)
            continue
        if "=" not in arg:
            raise ConfigError(f"expected --key=value, got {arg!r}; {_valid_keys(defaults)}")
        key, raw = arg[2:].split("=", 1)
        if key not in defaults:
            raise ConfigError(f"unknown config key {key!r} (from {arg}); {_valid_keys(defaults)}")
        try:
            value = ast.literal_eval(raw)
        except (SyntaxError, ValueError):
            value = raw  # a bare string, e.g. --dataset=shakespeare_char
        if isinstance(defaults[key], str) and not isinstance(value, str):
            value = raw
        config[key] = _check_value(key, value, arg, defaults)
    check_values(config)
    return config


# ----------------------------------------------------------------------------- training


def get_lr(it: int | Array, cfg: dict[str, Any]) -> Float[Array, ""]:
    """nanoGPT's schedule: linear warmup, cosine decay to min_lr, then min_lr (jit-friendly)."""
    lr, min_lr_, warmup, decay = cfg["learning_rate"], cfg["min_lr"], cfg["warmup_iters"], cfg["lr_decay_iters"]
    if not cfg["decay_lr"]:
        return jnp.asarray(lr, jnp.float32)
    it = jnp.asarray(it, jnp.float32)
    warm = lr * (it + 1) / (warmup + 1)
    ratio = jnp.clip((it - warmup) / max(decay - warmup, 1), 0.0, 1.0)
    cosine = min_lr_ + 0.5 * (1.0 + jnp.cos(math.pi * ratio)) * (lr - min_lr_)
    return jnp.where(it < warmup, warm, jnp.where(it > decay, min_lr_, cosine))


def make_optimizer(cfg: dict[str, Any]) -> optax.GradientTransformation:
    """AdamW with decay on >=2-D params only, after global-norm clipping."""
    adamw = optax.adamw(
        learning_rate=partial(get_lr, cfg=cfg),
        b1=cfg["beta1"],
        b2=cfg["beta2"],
        eps=1e-8,
        weight_decay=cfg["weight_decay"],
        mask=decay_mask,
    )
    if cfg["grad_clip"] > 0.0:
        return optax.chain(optax.clip_by_global_norm(cfg["grad_clip"]), adamw)
    return adamw


# ----------------------------------------------------------------------------- devices


def init_distributed(cfg: dict[str, Any]) -> None:
    """jax.distributed.initialize for a multi-process run, from the config or the environment
    ($JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID; or JAX's own detection of a
    SLURM / Open MPI job). A no-op for a single process, and when already initialized."""
    env = os.environ
    address = cfg.get("coordinator_address") or env.get("JAX_COORDINATOR_ADDRESS", "")
    n = cfg.get("num_processes", 0) or int(env.get("JAX_NUM_PROCESSES", "0"))
    pid = cfg.get("process_id", -1)
    pid = pid if pid >= 0 else int(env.get("JAX_PROCESS_ID", "-1"))
    cluster = any(int(env.get(name, "1") or 1) > 1 for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))
    if n == 1 or not (address or n > 1 or cluster) or jax.distributed.is_initialized():
        return
    jax.distributed.initialize(address or None, n or None, pid if pid >= 0 else None)


def use_cpu_cores(cfg: dict[str, Any]) -> None:
    """On a CPU, one JAX device per core, with the batch split over them as over GPUs: XLA:CPU
    runs a small model's step mostly on one thread, so data parallelism over the cores is
    faster (1.4x for the CPU config on 2 cores). Only for a single process whose backend is not
    up yet, and not when $XLA_FLAGS already forces a host device count."""
    n = cfg["cpu_devices"] or max(d for d in range(1, (os.cpu_count() or 1) + 1) if cfg["batch_size"] % d == 0)
    forced = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if n == 1 or forced or jax.distributed.is_initialized():
        return
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # JAX already picked its devices (train() called from a running program)
        if cfg["cpu_devices"]:
            raise ConfigError(f"cpu_devices={n}: JAX's backend is already initialized; set it before any JAX operation")


def make_mesh(model_parallel: int = 1, devices: list | None = None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: all devices of all processes), model
    axis model_parallel long. Built with Mesh (auto axis types): jax.make_mesh's explicit axes
    make the embedding gather wte[idx] fail."""
    devices = jax.devices() if devices is None else list(devices)
    if model_parallel < 1 or len(devices) % model_parallel:
        raise ConfigError(f"model_parallel={model_parallel} must divide the number of devices, {len(devices)}")
    return Mesh(np.array(devices).reshape(-1, model_parallel), ("data", "model"))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """The batch is split evenly over the mesh's data axis: refuse, before compiling, one that is not."""
    n = mesh.shape["data"]
    if batch_size % n == 0:
        return
    lower, upper = batch_size // n * n, (batch_size // n + 1) * n
    nearest = f"{lower} or {upper}" if lower else f"{upper}"
    raise ConfigError(
        f"batch_size={batch_size} does not divide by the data axis of the device mesh, {n} "
        f"({mesh.devices.size} devices / model_parallel={mesh.shape['model']}): each data-parallel device "
        f"takes an equal share of every (micro-)batch; nearest valid batch sizes: {nearest}"
    )


# Megatron-style split of each block's matmuls over the model axis: c_attn / c_fc by output
# features (column-parallel), the c_proj after them by input features (row-parallel), so a block
# needs one all-reduce per direction. Everything else (embeddings, LayerNorms) is replicated.
_COLUMN_PARALLEL = ("c_attn", "c_fc")


def param_spec(path: tuple, shape: tuple[int, ...], model: int) -> P:
    """The PartitionSpec of a parameter, or of an optimizer-state leaf mirroring one (same path tail)."""
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    if model == 1 or len(names) < 2:
        return P()
    layer, leaf = names[-2], names[-1]
    if layer in _COLUMN_PARALLEL:
        spec = {"w": P(None, "model"), "b": P("model")}.get(leaf)
    elif layer == "c_proj":
        spec = {"w": P("model", None)}.get(leaf)
    else:
        spec = None
    if spec is None or any(axis == "model" and shape[i] % model for i, axis in enumerate(spec)):
        return P()
    return spec


def tree_shardings(tree: Any, mesh: Mesh) -> Any:
    """A NamedSharding for every leaf of tree (parameters, optimizer state), after param_spec."""
    model = mesh.shape["model"]
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, param_spec(path, x.shape, model)), tree
    )


def state_shardings(model_config: GPTConfig, optimizer: optax.GradientTransformation, mesh: Mesh) -> tuple[Any, Any]:
    """(parameter shardings, optimizer-state shardings): one replicated NamedSharding (a pytree
    prefix) without model parallelism, else one per leaf."""
    if mesh.shape["model"] == 1:
        replicated = NamedSharding(mesh, P())
        return replicated, replicated
    shapes = jax.eval_shape(partial(init_params, model_config), jax.random.key(0))
    return tree_shardings(shapes, mesh), tree_shardings(jax.eval_shape(optimizer.init, shapes), mesh)


def place(tree: Any, shardings: Any) -> Any:
    """Host arrays (the same on every process, e.g. a loaded checkpoint) onto their shardings;
    shardings may be a single NamedSharding for the whole tree."""
    if isinstance(shardings, NamedSharding):
        shardings = jax.tree_util.tree_map(lambda _: shardings, tree)

    def put(x: Any, s: NamedSharding) -> Shaped[Array, "..."]:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree, shardings)


OPTIMIZER_KEYS = (
    "learning_rate", "min_lr", "warmup_iters", "lr_decay_iters", "decay_lr",
    "beta1", "beta2", "weight_decay", "grad_clip",
)
_steps: dict[tuple, tuple] = {}  # jitted steps by (model config, optimizer settings, accum, mesh)


def make_steps(
    model_config: GPTConfig, cfg: dict[str, Any], mesh: Mesh | None = None
) -> tuple[optax.GradientTransformation, Any, Any]:
    """(optimizer, train_step, eval_step) for this model and optimizer config on `mesh` (default:
    all devices, cfg's model_parallel), made once per process so that repeated train() calls
    (tests, notebooks) reuse the compiled steps."""
    accum = cfg["gradient_accumulation_steps"]
    mesh = mesh if mesh is not None else make_mesh(cfg.get("model_parallel", 1))
    k = (model_config, accum, tuple(cfg[name] for name in OPTIMIZER_KEYS), mesh)
    if k not in _steps:
        optimizer = make_optimizer(cfg)
        _steps[k] = (
            optimizer,
            make_train_step(model_config, optimizer, accum, mesh),
            make_eval_step(model_config, mesh, optimizer),
        )
    return _steps[k]


def make_train_step(
    model_config: GPTConfig, optimizer: optax.GradientTransformation, accum: int, mesh: Mesh | None = None,
    guard: bool = True,
):
    """The jitted update: (params, opt_state, key, x, y) -> (params, opt_state, key, stats).
    stats: loss, grad_norm (global, before clipping), update_norm, finite (loss and gradient norm
    both finite) and leaf_finite (one flag per gradient leaf). A step that is not finite returns
    params and opt_state unchanged, so a NaN never reaches them; the loop decides to stop or skip.
    guard=False: the plain update, stats only the loss (scripts/bench_gpt.py measures the guard
    against it).
    x, y hold accum * batch_size rows; gradients are accumulated over accum micro-batches with
    lax.scan. params and opt_state are donated (updated in place).

    On a mesh, the step is jitted with explicit in/out shardings: x, y split along "data",
    parameters and optimizer state replicated or split along "model" (state_shardings), the key
    and loss replicated. Explicit shardings also make raximport's memory check (which compiles
    the step again with the same options) per device. Pure data parallelism is written out with
    shard_map: each device takes the gradient of its rows, then one all-reduce averages the loss
    and all gradients flattened into a single vector. XLA's own all-reduce of the gradient tuple
    waits for the other devices once per buffer, which on two CPU devices cost ~5% of the
    CPU config's step. With dropout, each device draws its own masks (fold_in of its index).
    With model_parallel > 1, XLA inserts the collectives itself."""
    use_dropout = model_config.dropout > 0.0
    grad_fn = jax.value_and_grad(loss_fn)
    data_parallel = mesh is not None and mesh.shape["data"] > 1

    def mean_loss_and_grads(
        params: Params, key: PRNGKeyArray, x: Int[Array, "batch seq"], y: Int[Array, "batch seq"]
    ) -> tuple[Array, Params]:
        """Mean loss and gradients over the rows of x, y, in accum micro-batches."""
        if accum == 1:
            return grad_fn(params, x, y, model_config, key if use_dropout else None)
        xs = x.reshape(accum, -1, x.shape[1])
        ys = y.reshape(accum, -1, y.shape[1])
        if data_parallel and mesh.shape["model"] > 1:  # every micro-batch split over "data"
            xs, ys = jax.lax.with_sharding_constraint((xs, ys), NamedSharding(mesh, P(None, "data")))
        keys = jax.random.split(key, accum)

        def micro_step(carry, inputs):
            loss_sum, grad_sum = carry
            xm, ym, km = inputs
            loss, grads = grad_fn(params, xm, ym, model_config, km if use_dropout else None)
            return (loss_sum + loss, jax.tree_util.tree_map(jnp.add, grad_sum, grads)), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        (loss, grads), _ = jax.lax.scan(micro_step, (jnp.zeros((), jnp.float32), zeros), (xs, ys, keys))
        return loss / accum, jax.tree_util.tree_map(lambda g: g / accum, grads)

    loss_and_grads = mean_loss_and_grads
    if data_parallel and mesh.shape["model"] == 1:

        def averaged_over_devices(
            params: Params, key: PRNGKeyArray, x: Int[Array, "batch seq"], y: Int[Array, "batch seq"]
        ) -> tuple[Array, Params]:
            key = jax.random.fold_in(key, jax.lax.axis_index("data"))
            flat, unflatten = ravel_pytree(mean_loss_and_grads(params, key, x, y))
            return unflatten(jax.lax.pmean(flat, "data"))  # shards hold equal numbers of rows

        loss_and_grads = jax.shard_map(  # check_vma=False: the accumulation's zero carry is not "varying"
            averaged_over_devices, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")), out_specs=P(),
            check_vma=False,
        )

    def train_step(
        params: Params,
        opt_state: optax.OptState,
        key: PRNGKeyArray,
        x: Int[Array, "batch seq"],
        y: Int[Array, "batch seq"],
    ) -> tuple[Params, optax.OptState, PRNGKeyArray, dict[str, Array]]:
        key, step_key = jax.random.split(key)
        loss, grads = loss_and_grads(params, step_key, x, y)
        if not guard:
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, key, {"loss": loss}
        grad_norm = optax.tree.norm(grads)  # before clipping
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # a non-finite step changes nothing: a select, never an arithmetic mask (0 * NaN is NaN)
        keep = partial(jax.tree_util.tree_map, lambda new, old: jnp.where(finite, new, old))
        params = keep(optax.apply_updates(params, updates), params)
        stats = {
            "loss": loss, "grad_norm": grad_norm, "update_norm": optax.tree.norm(updates), "finite": finite,
            "leaf_finite": jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]),
        }
        return params, keep(new_opt_state, opt_state), key, stats

    if mesh is None:
        return jax.jit(train_step, donate_argnums=(0, 1, 2))
    param_s, opt_s = state_shardings(model_config, optimizer, mesh)
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(
        train_step, donate_argnums=(0, 1, 2),
        in_shardings=(param_s, opt_s, replicated, batch, batch),
        out_shardings=(param_s, opt_s, replicated, replicated),
    )


def make_eval_step(
    model_config: GPTConfig, mesh: Mesh | None = None, optimizer: optax.GradientTransformation | None = None
):
    def eval_step(params: Params, x: Int[Array, "batch seq"], y: Int[Array, "batch seq"]) -> Float[Array, ""]:
        return loss_fn(params, x, y, model_config, None)

    if mesh is None:
        return jax.jit(eval_step)
    param_s = state_shardings(model_config, optimizer or optax.identity(), mesh)[0]
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(eval_step, in_shardings=(param_s, batch, batch), out_shardings=replicated)


def estimate_mfu(n_params: int, mc: GPTConfig, tokens_per_iter: int, dt: float, peak: float) -> float:
    """nanoGPT's estimate (PaLM appendix B): 6N + 12*L*H*Q*T flops per token, fwd + bwd."""
    L, H, Q, T = mc.n_layer, mc.n_head, mc.head_dim, mc.block_size
    flops_per_token = 6 * n_params + 12 * L * H * Q * T
    return flops_per_token * tokens_per_iter / dt / peak


def model_config_from(cfg: dict[str, Any], vocab_size: int) -> GPTConfig:
    return GPTConfig(
        block_size=cfg["block_size"], vocab_size=vocab_size, n_layer=cfg["n_layer"], n_head=cfg["n_head"],
        n_embd=cfg["n_embd"], dropout=cfg["dropout"], bias=cfg["bias"], dtype=cfg["dtype"],
    )


def batch_loader(mesh: Mesh, block_size: int):
    """data.get_batch onto the mesh: load(tokens, n, rng) -> (x, y), global arrays of n rows split
    along "data". Every process draws the same n window starts (its rng stays in step with the
    others') but reads only the rows its own devices hold."""
    sharding = NamedSharding(mesh, P("data"))
    if jax.process_count() == 1:
        if mesh.devices.size == 1:
            put = jax.device_put  # as on one device without a mesh: the step's jit places it
        else:
            put = partial(jax.device_put, device=sharding)

        def load(tokens: Integer[np.ndarray, " n"], n: int, rng: np.random.Generator) -> tuple[Array, Array]:
            x, y = data.get_batch(tokens, n, block_size, rng)
            return put(x), put(y)

        return load

    def load(tokens: Integer[np.ndarray, " n"], n: int, rng: np.random.Generator) -> tuple[Array, Array]:
        spans = [index[0] for index in sharding.addressable_devices_indices_map((n, block_size)).values()]
        rows = slice(min(s.start or 0 for s in spans), max(n if s.stop is None else s.stop for s in spans))
        x, y = data.get_batch(tokens, n, block_size, rng, rows=rows)
        return tuple(jax.make_array_from_process_local_data(sharding, a, (n, block_size)) for a in (x, y))

    return load


def any_process(flag: bool) -> bool:
    """Whether any process of a multi-process run has `flag` set. Every process must call it at
    the same iteration: a Ctrl-C that reached only some processes then stops them all together
    (the checkpoint save is collective: a process stopping alone would hang the others)."""
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


class _StopFlag:
    """First SIGINT: stop after the current iteration (and save); in a multi-process run, at the
    next log_interval iteration, together with the other processes. Second: KeyboardInterrupt."""

    def __init__(self) -> None:
        self.stop = False
        self._previous = None

    def __enter__(self) -> "_StopFlag":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handler(self, signum, frame) -> None:
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Diverged(RuntimeError):
    """Training stopped at a non-finite loss or gradient norm (on_nonfinite='stop', or max_skipped
    skips in a row with 'skip'); the message is the report, summary what train() would return."""

    def __init__(self, report: str, iteration: int, summary: dict[str, Any]) -> None:
        super().__init__(report)
        self.iteration, self.summary = iteration, summary


def divergence_report(
    iteration: int, recent: list[tuple[int, dict[str, float]]], bad_leaves: list[str], n_leaves: int,
    skipped: int, good: tuple[Path, int] | None, cfg: dict[str, Any],
) -> str:
    """What a user needs when training blows up: where, the numbers leading there, which
    gradients, and how to go on from the last checkpoint known to be finite."""
    last = recent[-1][1]
    why = f"{skipped} updates in a row were skipped" if skipped > 1 else "the update was not applied"
    lines = [
        f"training stopped at iteration {iteration}: non-finite loss or gradient norm "
        f"(loss {last['loss']:.4g}, grad norm {last['grad_norm']:.4g}); {why}, and nothing after it was saved",
        "  iteration       loss   grad norm  update norm        lr",
    ]
    lines += [
        f"  {it:>9} {s['loss']:>10.4g} {s['grad_norm']:>11.4g} {s['update_norm']:>12.4g} {s['lr']:>9.3g}"
        for it, s in recent
    ]
    if bad_leaves:
        shown = ", ".join(bad_leaves[:6]) + (f" and {len(bad_leaves) - 6} more" if len(bad_leaves) > 6 else "")
        lines.append(f"  non-finite gradients ({len(bad_leaves)} of {n_leaves} leaves): {shown}")
    else:
        lines.append("  every gradient leaf is finite: the loss itself is not")
    lower = f"--learning_rate={cfg['learning_rate'] / 10:g} --min_lr={cfg['min_lr'] / 10:g}"
    if good is None:
        lines.append(f"  no checkpoint was saved before it: start again with a lower learning rate ({lower})")
    else:
        path, good_iter = good
        lines += [
            f"  last good checkpoint: {path} (iteration {good_iter}, every parameter finite)",
            f"  resume from it with a lower learning rate: python gpt/train.py <your config and overrides> "
            f"--out_dir={cfg['out_dir']} --init_from=good {lower}",
        ]
    return "\n".join(lines)


def prepare_out_dir(cfg: dict[str, Any]) -> None:
    """Create out_dir and write to it now, not at the first save an eval_interval later; refuse a
    scratch run over existing checkpoints unless overwrite=True (then remove them)."""
    out = Path(cfg["out_dir"])
    probe = out / f".write-test-{jax.process_index()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"checkpoints go here")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"out_dir {out} is not writable: {e}") from e
    if cfg["init_from"] != "scratch":
        return
    reader = checkpoint.Checkpoints(out, read_only=True)
    existing = reader.steps()
    reader.close()
    if existing and not cfg["overwrite"]:
        listed = "; ".join(f"{out / kind}: iteration{'s' if len(it) > 1 else ''} {', '.join(map(str, it))}"
                           for kind, it in existing.items())
        raise ConfigError(
            f"out_dir {out} holds checkpoints ({listed}): a scratch run would overwrite them. "
            f"Continue them with --init_from=resume, choose another --out_dir, or pass --overwrite=True"
        )
    if existing:
        if jax.process_index() == 0:
            checkpoint.remove(out)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("gpt: old checkpoints removed")


def train(cfg: dict[str, Any], console=None) -> dict[str, Any]:
    """Run the training loop described by cfg; returns a summary (losses per logged iteration,
    evals, final iteration, skipped iterations). Writes only to cfg['out_dir'] (and data_dir when
    preparing data). Raises Diverged when training stops at a non-finite loss or gradient."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    check_values(cfg)
    init_distributed(cfg)  # before anything else touches JAX
    is_main = jax.process_index() == 0  # only process 0 logs
    console = (console or Console(soft_wrap=True)) if is_main else Console(quiet=True)  # log lines unwrapped
    out = Path(cfg["out_dir"])
    accum = cfg["gradient_accumulation_steps"]
    tokens_per_iter = accum * cfg["batch_size"] * cfg["block_size"]
    prepare_out_dir(cfg)

    dataset_dir = data.ensure_prepared(cfg["dataset"], cfg["data_dir"])
    meta = data.load_meta(dataset_dir)
    splits = {s: data.load_split(dataset_dir, s, meta["vocab_size"], cfg["block_size"]) for s in ("train", "val")}

    mesh = make_mesh(cfg["model_parallel"])
    check_batch_size(cfg["batch_size"], mesh)  # before compiling anything, or opening the checkpoints
    ckpts = checkpoint.Checkpoints(out, cfg["keep_last"])
    iter_num, best_val_loss = 0, float("inf")
    resume_kind = INIT_FROM[cfg["init_from"]]
    if resume_kind:
        try:
            ck_meta = ckpts.meta(resume_kind)
        except checkpoint.CheckpointError as e:
            ckpts.close()
            raise ConfigError(f"init_from={cfg['init_from']!r}: {e}") from e
        for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout"):  # the model must match
            cfg[k] = ck_meta["config"][k]
        model_config = GPTConfig(**{**ck_meta["model_args"], "dtype": cfg["dtype"]})
    else:
        model_config = model_config_from(cfg, meta["vocab_size"])

    load_batch = batch_loader(mesh, model_config.block_size)
    optimizer, train_step, eval_step = make_steps(model_config, cfg, mesh)
    param_s, opt_s = state_shardings(model_config, optimizer, mesh)
    replicated = NamedSharding(mesh, P())
    key = jax.random.key(cfg["seed"])
    key, init_key = jax.random.split(key)
    if mesh.devices.size == 1:
        params = jax.jit(init_params, static_argnums=0)(model_config, init_key)
        opt_state = optimizer.init(params)
    else:
        params = jax.jit(init_params, static_argnums=0, out_shardings=param_s)(model_config, init_key)
        opt_state = jax.jit(optimizer.init, out_shardings=opt_s)(params)
        key = jax.random.wrap_key_data(place(jax.random.key_data(key), replicated))
    np_rng = np.random.default_rng(cfg["seed"])
    if resume_kind:  # read onto the same shardings: each process reads the shards it holds
        like = {"params": params, "opt_state": opt_state, "rng": {"key": jax.random.key_data(key)}}
        try:
            state, ck_meta = ckpts.restore(resume_kind, like)
        except checkpoint.CheckpointError as e:
            ckpts.close()
            raise ConfigError(f"init_from={cfg['init_from']!r}: {e}") from e
        params, opt_state = state["params"], state["opt_state"]
        key = jax.random.wrap_key_data(state["rng"]["key"])
        np_rng.bit_generator.state = ck_meta["np_rng_state"]
        iter_num, best_val_loss = ck_meta["iter_num"], ck_meta["best_val_loss"]
        console.print(f"resuming from {ckpts.path(resume_kind)} at iteration {iter_num}")

    n_params = num_params(params)
    leaf_names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    console.print(
        f"model: {model_config.n_layer} layers, {model_config.n_head} heads, {model_config.n_embd} embd, "
        f"vocab {model_config.vocab_size}, {n_params / 1e6:.2f}M parameters; "
        f"tokens per iteration {tokens_per_iter:,}"
    )
    if mesh.devices.size > 1:
        console.print(
            f"mesh: {mesh.devices.size} devices ({jax.process_count()} process"
            f"{'es' if jax.process_count() > 1 else ''}), data {mesh.shape['data']} x model {mesh.shape['model']}"
        )

    def save(kinds: tuple[str, ...], val_loss: float | None = None) -> None:
        """Start saving the current state as each of kinds, and as good if it is all finite (see
        Checkpoints.start_save: the loop goes on at once). Every process takes part, each writing
        its own shards."""
        state = {"params": params, "opt_state": opt_state, "rng": {"key": jax.random.key_data(key)}}
        ck = {
            "iter_num": iter_num, "best_val_loss": best_val_loss, "config": cfg, "model_args": model_config.to_dict(),
            "np_rng_state": np_rng.bit_generator.state, "data_meta": meta,
        }
        ckpts.start_save(kinds, iter_num, state, ck, val_loss, warn=console.print)

    def estimate_loss() -> dict[str, float]:
        result = {}
        for i, split in enumerate(("train", "val")):
            rng = np.random.default_rng([cfg["seed"], iter_num, i])  # fixed per eval: no drift of np_rng
            losses = [  # float(): one batch at a time, never a queue of multi-device steps (see one_in_flight)
                float(eval_step(params, *load_batch(splits[split], cfg["batch_size"], rng)))
                for _ in range(cfg["eval_iters"])
            ]
            result[split] = float(np.mean(losses))
        return result

    summary: dict[str, Any] = {"losses": {}, "evals": {}, "interrupted": False, "skipped": []}
    recent: collections.deque = collections.deque(maxlen=6)  # (iteration, stats) of the last iterations
    skipped_in_a_row = 0
    lr_at = lambda iteration: float(get_lr(iteration - 1, cfg))  # noqa: E731  (the lr iteration `iteration` used)

    def check(entry: tuple[int, dict[str, Array]]) -> None:
        """Act on a step's finiteness flag: read one step late, so the host never stalls the queue."""
        nonlocal skipped_in_a_row
        iteration, stats = entry
        if bool(stats["finite"]):
            skipped_in_a_row = 0
            return
        skipped_in_a_row += 1
        summary["skipped"].append(iteration)
        if cfg["on_nonfinite"] == "skip" and skipped_in_a_row < cfg["max_skipped"]:
            console.print(f"iter {iteration}: non-finite loss or gradient norm, update skipped "
                          f"({skipped_in_a_row} in a row; stopping at {cfg['max_skipped']})")
            return
        shown = [(it, {k: float(s[k]) for k in ("loss", "grad_norm", "update_norm")} | {"lr": lr_at(it)})
                 for it, s in recent if it <= iteration]
        bad = [name for name, ok in zip(leaf_names, np.asarray(stats["leaf_finite"])) if not ok]
        with contextlib.suppress(Exception):  # (a failed save is reported when the run ends)
            ckpts.wait()  # the saves under way, the last good one among them
        good_step = ckpts.managers["good"].latest_step()
        good = None if good_step is None else (ckpts.path("good", good_step), good_step)
        summary.update(iter_num=iteration, best_val_loss=best_val_loss)
        report = divergence_report(iteration, shown, bad, len(leaf_names), skipped_in_a_row, good, cfg)
        raise Diverged(report, iteration, summary)

    columns = [
        TextColumn("[bold blue]train"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
    ]
    log_lines = not console.is_terminal or not is_main  # in a pipe or log file: nanoGPT-style lines, no bar
    t0 = time.perf_counter()
    last_log_iter, running_mfu = iter_num, -1.0
    try:
        with _StopFlag() as stop, Progress(*columns, console=console, disable=log_lines) as progress:
            task = progress.add_task("train", total=cfg["max_iters"], completed=iter_num, stats="")
            pending = None  # the last step, its finiteness flag not read yet
            # On several CPU devices, steps queued without a sync deadlock XLA:CPU's all-reduce (jaxlib
            # 0.10): keep one step in flight there. Accelerators keep JAX's usual asynchronous queue.
            one_in_flight = jax.default_backend() == "cpu" and mesh.devices.size > 1
            multi_process = jax.process_count() > 1  # then a Ctrl-C is agreed on at log iterations
            while True:
                if iter_num % cfg["eval_interval"] == 0 or iter_num == cfg["max_iters"]:
                    if pending is not None:
                        check(pending)
                        pending = None
                    losses = estimate_loss()
                    summary["evals"][iter_num] = losses
                    progress.console.print(
                        f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                    )
                    improved = losses["val"] < best_val_loss
                    if improved:
                        best_val_loss = losses["val"]
                    if iter_num > 0:
                        save((("latest",) if improved or cfg["always_save_checkpoint"] else ())
                             + (("best",) if improved else ()), losses["val"])
                    t0 = time.perf_counter()  # don't count the eval (or a save's copy) in ms/iter
                    last_log_iter = iter_num
                if cfg["eval_only"] or iter_num >= cfg["max_iters"]:
                    break

                x, y = load_batch(splits["train"], accum * cfg["batch_size"], np_rng)  # while the last step runs
                if one_in_flight and pending is not None:
                    pending[1]["loss"].block_until_ready()
                params, opt_state, key, stats = train_step(params, opt_state, key, x, y)
                iter_num += 1
                entry = (iter_num, stats)
                recent.append(entry)
                if pending is not None:
                    check(pending)
                pending = entry

                log_now = iter_num % cfg["log_interval"] == 0
                stopping = log_now and any_process(stop.stop) if multi_process else stop.stop
                if log_now or stopping:
                    check(pending)  # waits for this step
                    pending = None
                    lossf = float(stats["loss"])
                    t1 = time.perf_counter()
                    dt = (t1 - t0) / max(iter_num - last_log_iter, 1)
                    t0, last_log_iter = t1, iter_num
                    summary["losses"][iter_num] = lossf
                    mfu = estimate_mfu(n_params, model_config, tokens_per_iter, dt, cfg["peak_flops"])
                    running_mfu = mfu if running_mfu < 0 else 0.9 * running_mfu + 0.1 * mfu
                    norms = f"grad norm {float(stats['grad_norm']):.3g}, update norm {float(stats['update_norm']):.3g}"
                    stats_text = (
                        f"loss {lossf:.4f}  {norms}  {dt * 1000:.1f} ms/iter  {tokens_per_iter / dt:,.0f} tok/s  "
                        f"mfu {running_mfu * 100:.1f}%  lr {lr_at(iter_num):.2e}"
                    )
                    progress.update(task, completed=iter_num, stats=stats_text)
                    if log_lines:
                        console.print(
                            f"iter {iter_num}: loss {lossf:.4f}, {norms}, lr {lr_at(iter_num):.2e}, time {dt * 1000:.2f}ms, "
                            f"tok/s {tokens_per_iter / dt:.0f}, mfu {running_mfu * 100:.2f}%"
                        )
                if stopping:
                    save(("latest",))
                    console.print(f"interrupted: saved {ckpts.path('latest', iter_num)} at iteration {iter_num}")
                    summary["interrupted"] = True
                    break
    finally:
        try:  # the saves started must be complete before the run ends, whatever ends it
            ckpts.wait()
        except Exception as e:
            console.print(f"warning: a checkpoint save failed: {type(e).__name__}: {e}")
        ckpts.close()
    summary.update(iter_num=iter_num, best_val_loss=best_val_loss)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if print_help_if_asked(argv, __file__, __doc__):
        return 0
    try:
        cfg = parse_config(argv)
        init_distributed(cfg)
        use_cpu_cores(cfg)
        train(cfg)
    except (ConfigError, data.DataError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
