"""Train a GPT in plain JAX, after karpathy/nanoGPT's train.py.

    python gpt/train.py config/train_shakespeare_char_cpu.py --max_iters=100

Configuration: the defaults below, then any config file (a Python file whose top-level
assignments override them), then ``--key=value`` overrides, in command-line order. Unknown keys
and values of the wrong type are errors (exit status 2).

``init_from='resume'`` continues from ``out_dir/last.npz`` exactly where it stopped: same
iteration, parameters, optimizer state and both RNGs (JAX key and numpy Generator), so a resumed
run's losses equal an uninterrupted run's bit for bit. Ctrl-C stops after the current iteration
and saves ``last.npz`` first (press it twice to abort without saving).
"""

import ast
import math
import os
import runpy
import signal
import sys
import time
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
always_save_checkpoint = True  # if True, save best.npz after each eval even if val loss got worse
init_from = "scratch"  # 'scratch' or 'resume' (from out_dir/last.npz)
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


class ConfigError(ValueError):
    """A bad config file or --key=value override."""


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
            values = runpy.run_path(str(path), run_name="__config__")
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
    model_config: GPTConfig, optimizer: optax.GradientTransformation, accum: int, mesh: Mesh | None = None
):
    """The jitted update: (params, opt_state, key, x, y) -> (params, opt_state, key, loss).
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
    ) -> tuple[Params, optax.OptState, PRNGKeyArray, Float[Array, ""]]:
        key, step_key = jax.random.split(key)
        loss, grads = loss_and_grads(params, step_key, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, key, loss

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
    (the checkpoint gather is collective: a process stopping alone would hang the others)."""
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


def train(cfg: dict[str, Any], console=None) -> dict[str, Any]:
    """Run the training loop described by cfg; returns a summary (losses per logged iteration,
    evals, final iteration). Writes only to cfg['out_dir'] (and data_dir when preparing data)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    init_distributed(cfg)  # before anything else touches JAX
    is_main = jax.process_index() == 0  # only process 0 logs and writes checkpoints
    console = (console or Console(soft_wrap=True)) if is_main else Console(quiet=True)  # log lines unwrapped
    out = Path(cfg["out_dir"])
    accum = cfg["gradient_accumulation_steps"]
    tokens_per_iter = accum * cfg["batch_size"] * cfg["block_size"]

    dataset_dir = data.ensure_prepared(cfg["dataset"], cfg["data_dir"])
    meta = data.load_meta(dataset_dir)
    splits = {s: data.load_split(dataset_dir, s) for s in ("train", "val")}

    iter_num, best_val_loss = 0, float("inf")
    if cfg["init_from"] == "resume":
        ckpt_path = out / "last.npz"
        if not ckpt_path.exists():
            raise ConfigError(f"init_from='resume' but there is no checkpoint at {ckpt_path}")
        ck_meta = checkpoint.load_meta(ckpt_path)
        for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout"):  # the model must match
            cfg[k] = ck_meta["config"][k]
        model_config = GPTConfig(**ck_meta["model_args"])
        model_config = GPTConfig(**{**model_config.to_dict(), "dtype": cfg["dtype"]})
    elif cfg["init_from"] == "scratch":
        model_config = model_config_from(cfg, meta["vocab_size"])
    else:
        raise ConfigError(f"init_from must be 'scratch' or 'resume', not {cfg['init_from']!r}")

    mesh = make_mesh(cfg["model_parallel"])
    check_batch_size(cfg["batch_size"], mesh)  # before compiling anything
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
    if cfg["init_from"] == "resume":
        template = {"params": params, "opt_state": opt_state, "key": jax.random.key_data(key)}
        state, ck_meta = checkpoint.load(out / "last.npz", template)
        if mesh.devices.size == 1:
            params = jax.tree_util.tree_map(jnp.asarray, state["params"])
            opt_state = jax.tree_util.tree_map(jnp.asarray, state["opt_state"])
            key = jax.random.wrap_key_data(jnp.asarray(state["key"]))
        else:
            params, opt_state = place(state["params"], param_s), place(state["opt_state"], opt_s)
            key = jax.random.wrap_key_data(place(state["key"], replicated))
        np_rng.bit_generator.state = ck_meta["np_rng_state"]
        iter_num, best_val_loss = ck_meta["iter_num"], ck_meta["best_val_loss"]
        console.print(f"resuming from {out / 'last.npz'} at iteration {iter_num}")

    n_params = num_params(params)
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

    def save(name: str) -> None:
        tree = {"params": params, "opt_state": opt_state, "key": jax.random.key_data(key)}
        if jax.process_count() > 1:  # every process takes part in the gather; process 0 writes
            from jax.experimental import multihost_utils

            tree = multihost_utils.process_allgather(tree, tiled=True)
        if not is_main:
            return
        ck = {
            "iter_num": iter_num, "best_val_loss": best_val_loss, "config": cfg,
            "model_args": model_config.to_dict(), "np_rng_state": np_rng.bit_generator.state,
            "data_meta": meta,
        }
        checkpoint.save(out / name, tree, ck)

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

    summary: dict[str, Any] = {"losses": {}, "evals": {}, "interrupted": False, "diverged": False}
    columns = [
        TextColumn("[bold blue]train"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
    ]
    log_lines = not console.is_terminal or not is_main  # in a pipe or log file: nanoGPT-style lines, no bar
    t0 = time.perf_counter()
    last_log_iter, running_mfu = iter_num, -1.0
    with _StopFlag() as stop, Progress(*columns, console=console, disable=log_lines) as progress:
        task = progress.add_task("train", total=cfg["max_iters"], completed=iter_num, stats="")
        loss = None
        # On several CPU devices, steps queued without a sync deadlock XLA:CPU's all-reduce (jaxlib
        # 0.10): keep one step in flight there. Accelerators keep JAX's usual asynchronous queue.
        one_in_flight = jax.default_backend() == "cpu" and mesh.devices.size > 1
        multi_process = jax.process_count() > 1  # then a Ctrl-C is agreed on at log iterations
        while True:
            if iter_num % cfg["eval_interval"] == 0 or iter_num == cfg["max_iters"]:
                losses = estimate_loss()
                summary["evals"][iter_num] = losses
                progress.console.print(
                    f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                )
                improved = losses["val"] < best_val_loss
                if improved:
                    best_val_loss = losses["val"]
                if iter_num > 0 and (improved or cfg["always_save_checkpoint"]):
                    save("best.npz")
                if iter_num > 0:
                    save("last.npz")
                t0 = time.perf_counter()  # don't count the eval in ms/iter
                last_log_iter = iter_num
            if cfg["eval_only"] or iter_num >= cfg["max_iters"]:
                break

            x, y = load_batch(splits["train"], accum * cfg["batch_size"], np_rng)  # while the last step runs
            if one_in_flight and loss is not None:
                loss.block_until_ready()
            params, opt_state, key, loss = train_step(params, opt_state, key, x, y)
            iter_num += 1

            log_now = iter_num % cfg["log_interval"] == 0
            stopping = log_now and any_process(stop.stop) if multi_process else stop.stop
            if log_now or stopping:
                lossf = float(loss)  # waits for this step
                if not math.isfinite(lossf):  # diverged: later steps only spread the NaN
                    console.print(f"iter {iter_num}: loss is {lossf}, stopping (the last checkpoint is kept)")
                    summary["diverged"] = True
                    break
                t1 = time.perf_counter()
                dt = (t1 - t0) / max(iter_num - last_log_iter, 1)
                t0, last_log_iter = t1, iter_num
                summary["losses"][iter_num] = lossf
                mfu = estimate_mfu(n_params, model_config, tokens_per_iter, dt, cfg["peak_flops"])
                running_mfu = mfu if running_mfu < 0 else 0.9 * running_mfu + 0.1 * mfu
                stats = (
                    f"loss {lossf:.4f}  {dt * 1000:.1f} ms/iter  {tokens_per_iter / dt:,.0f} tok/s  "
                    f"mfu {running_mfu * 100:.1f}%  lr {float(get_lr(iter_num - 1, cfg)):.2e}"
                )
                progress.update(task, completed=iter_num, stats=stats)
                if log_lines:
                    console.print(
                        f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms, "
                        f"tok/s {tokens_per_iter / dt:.0f}, mfu {running_mfu * 100:.2f}%"
                    )
            if stopping:
                save("last.npz")
                console.print(f"interrupted: saved {out / 'last.npz'} at iteration {iter_num}")
                summary["interrupted"] = True
                break
    summary.update(iter_num=iter_num, best_val_loss=best_val_loss)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if print_help_if_asked(argv, __file__, __doc__):
        return 0
    try:
        cfg = parse_config(argv)
    except ConfigError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    try:
        init_distributed(cfg)
        use_cpu_cores(cfg)
        train(cfg)
    except ConfigError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
