"""A training run's checkpoints, on orbax-checkpoint's CheckpointManager.

``out_dir`` holds three managed folders, one subfolder per saved iteration:

    latest/  the newest ``keep_last`` saves; ``init_from='resume'`` continues from the newest
    best/    the save with the lowest val loss, written only when the val loss improves
    good/    the newest save whose parameters and optimizer state were all finite (checked on the
             device before saving); the rotation of latest never touches it, and it is replaced
             only once a newer finite save has completed

Each save holds the items ``params``, ``opt_state``, ``rng`` (the JAX key's data) and ``meta``
(JSON: iteration, config, numpy RNG state, ...). orbax makes the saves atomic (written into a
temporary folder, renamed once complete, so a save killed mid-way leaves the previous ones
readable) and asynchronous (the arrays are copied off the device, then written by a background
thread while training goes on); ``start_save`` moves even that copy off the training loop. In a
multi-process run every process calls ``save`` and writes
the shards it holds; nothing is gathered to process 0. Restoring onto abstract arrays that carry
shardings reads each process's shards back in place.
"""

import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jaxtyping import Array, Bool

KINDS = ("latest", "best", "good")
logging.getLogger("absl").setLevel(logging.ERROR)  # orbax narrates every save through absl's logger


class CheckpointError(Exception):
    """A checkpoint that is missing or cannot be read."""


@jax.jit
def all_finite(tree: Any) -> Bool[Array, ""]:
    """Whether every floating leaf of tree is free of NaN and Inf (one scalar, computed on the device)."""
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


@jax.jit
def snapshot(tree: Any) -> Any:
    """A copy of tree on its devices (dispatched, not waited for): the training loop may donate
    the original to its next step while a save still reads the copy."""
    return jax.tree_util.tree_map(jnp.copy, tree)


class Checkpoints:
    """latest (keep the last keep_last), best (by val loss) and good (last known finite) under out_dir."""

    def __init__(self, out_dir: str | Path, keep_last: int = 2, read_only: bool = False) -> None:
        self.out = Path(out_dir)
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpt-checkpoint")  # saves in order
        self._started: list[Future] = []
        self.managers: dict[str, ocp.CheckpointManager] = {}
        for kind in KINDS:
            # Barriers through the distributed client (naming the processes does that): orbax's
            # default barrier is a collective over every device, which, from its background thread,
            # can interleave with the training step's collectives differently on each process (a
            # hang; on CPU a Gloo timeout). Their names are per kind: the three managers save the
            # same iteration at once. With named processes orbax leaves creating the folders to us.
            processes = ocp.options.MultiprocessingOptions(
                active_processes=set(range(jax.process_count())), barrier_sync_key_prefix=f"gpt_{kind}"
            )
            if not read_only:
                (self.out / kind).mkdir(parents=True, exist_ok=True)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep_last if kind == "latest" else 1,
                best_fn=(lambda metrics: metrics["val_loss"]) if kind == "best" else None,
                best_mode="min",
                keep_checkpoints_without_metrics=False,
                create=False,
                multiprocessing_options=processes,
                cleanup_tmp_directories=not read_only,  # what a save killed mid-way left
                read_only=read_only,
            )
            self.managers[kind] = ocp.CheckpointManager((self.out / kind).absolute(), options=options)

    def steps(self) -> dict[str, list[int]]:
        """The saved iterations of each kind (only kinds that hold one)."""
        found = {kind: sorted(m.all_steps()) for kind, m in self.managers.items()}
        return {kind: steps for kind, steps in found.items() if steps}

    def path(self, kind: str, step: int | None = None) -> Path:
        step = self.managers[kind].latest_step() if step is None else step
        return self.out / kind / str(step)

    def save(self, kind: str, step: int, state: dict[str, Any], meta: dict[str, Any], val_loss: float | None = None) -> bool:
        """Start saving state (a dict of pytrees: params, opt_state, rng) and meta as `kind` at
        `step`; returns at once, the writing goes on in the background. False if that iteration is
        already saved (a resumed run evaluating where it stopped)."""
        manager = self.managers[kind]
        if step in manager.all_steps():
            return False
        items = {name: ocp.args.StandardSave(tree) for name, tree in state.items()}
        metrics = {"val_loss": val_loss} if val_loss is not None else None
        return manager.save(step, args=ocp.args.Composite(**items, meta=ocp.args.JsonSave(meta)), metrics=metrics)

    def start_save(
        self, kinds: tuple[str, ...], step: int, state: dict[str, Any], meta: dict[str, Any],
        val_loss: float | None = None, warn: Callable[[str], None] = print,
    ) -> None:
        """Save state as each of kinds, and as good too if kinds has latest and every floating
        value is finite, without blocking the caller: a device copy is dispatched, and a worker
        thread checks it and hands it to orbax (whose own D2H copy and orbax's bookkeeping, ~0.1 s,
        would otherwise stall a training loop for more than a step of a small model). A save that
        fails (disk full) is passed to warn, never raised: the next save tries again."""
        copy = snapshot(state)
        # dispatched here, read in the worker: every computation that may need a collective (over
        # a sharded state) is issued by the loop's thread, in the same order on every process
        finite = all_finite((copy["params"], copy["opt_state"])) if "latest" in kinds else None

        def save_all() -> None:
            promoted = ("good",) if finite is not None and bool(finite) else ()
            for kind in (*kinds, *promoted):
                try:
                    self.save(kind, step, copy, meta, val_loss if kind == "best" else None)
                except Exception as e:  # orbax's, tensorstore's or the OS's: none of them may end the run
                    warn(f"warning: saving the {kind} checkpoint at iteration {step} failed, "
                         f"training goes on: {type(e).__name__}: {e}")

        self._started = [f for f in self._started if not f.done()] + [self._saver.submit(save_all)]

    def restore(self, kind: str, like: dict[str, Any], step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state, meta) of `kind` at `step` (default: its newest), read into the shapes, dtypes
        and shardings of `like` (a dict of pytrees of arrays or jax.ShapeDtypeStruct; any subset of
        the saved items, e.g. only params); a leaf without a sharding is read onto this process's
        first device, whatever devices saved it."""
        manager = self.managers[kind]
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.out / kind}")
        here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # for leaves that name no sharding

        def abstract_leaf(x: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None) or here)

        abstract = {name: jax.tree_util.tree_map(abstract_leaf, tree) for name, tree in like.items()}
        args = ocp.args.Composite(
            **{name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}, meta=ocp.args.JsonRestore()
        )
        try:
            restored = manager.restore(step, args=args)
        except Exception as e:  # orbax, tensorstore and json each raise their own kinds
            raise CheckpointError(f"checkpoint {self.path(kind, step)} cannot be read: {type(e).__name__}: {e}") from e
        return {name: restored[name] for name in like}, restored["meta"]

    def meta(self, kind: str, step: int | None = None) -> dict[str, Any]:
        """Only the JSON metadata of a checkpoint (no array is read)."""
        return self.restore(kind, {}, step)[1]

    def wait(self) -> None:
        """Block until every save started has been written (raises a background save's error)."""
        for started in self._started:
            started.result()
        for manager in self.managers.values():
            manager.wait_until_finished()

    def close(self) -> None:
        self._saver.shutdown()
        for manager in self.managers.values():
            manager.close()


def remove(out_dir: str | Path) -> None:
    """Delete every checkpoint under out_dir (before a scratch run with overwrite=True)."""
    for kind in KINDS:
        shutil.rmtree(Path(out_dir) / kind, ignore_errors=True)
