"""Atomic checkpoints of pytrees: one .npz file per checkpoint.

The file holds every leaf as an array named by its pytree path (``jax.tree_util.keystr``) plus a
JSON ``__meta__`` entry (anything JSON-serialisable: iteration, config, RNG state, ...). Loading
needs a *template* pytree of the same structure (e.g. from ``jax.eval_shape``): the paths are
checked against it, so a changed model or optimizer gives a clear error, not silent garbage.

Saving writes a temporary file in the same directory, fsyncs it, then ``os.replace``s it over the
destination, so a save killed at any point leaves the previous checkpoint intact and readable.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

META_KEY = "__meta__"


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out: dict[str, np.ndarray] = {}
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        arr = np.asarray(jax.device_get(leaf))
        if arr.dtype.name == "bfloat16":  # npz can't store bfloat16: keep its bits (see _restore_dtype)
            name, arr = name + "@bfloat16", arr.view(np.uint16)
        out[name] = arr
    return out


def save(path: str | os.PathLike, tree: Any, meta: dict[str, Any] | None = None) -> Path:
    """Atomically write ``tree`` (a pytree of arrays) and ``meta`` (JSON-able dict) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = _flatten(tree)
    if META_KEY in arrays:
        raise ValueError(f"{META_KEY!r} is reserved")
    meta_bytes = np.frombuffer(json.dumps(meta or {}).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{META_KEY: meta_bytes})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the JSON metadata of a checkpoint (cheap: arrays are not read)."""
    with np.load(path) as z:
        return json.loads(z[META_KEY].tobytes().decode())


def load(path: str | os.PathLike, template: Any, prefix: str = "") -> tuple[Any, dict[str, Any]]:
    """Read a checkpoint into the structure of ``template``; returns (tree of numpy arrays, meta).

    With ``prefix`` (a ``keystr`` path such as ``"['params']"``), read only that subtree of the
    saved tree (e.g. the parameters without the optimizer state)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    with np.load(path) as z:
        stored = {
            name.removesuffix("@bfloat16"): name
            for name in z.files
            if name != META_KEY and name.startswith(prefix)
        }
        wanted = [prefix + jax.tree_util.keystr(p) for p, _ in leaves]
        missing = [n for n in wanted if n not in stored]
        extra = sorted(set(stored) - set(wanted))
        if missing or extra:
            raise ValueError(
                f"checkpoint {path} does not match the expected structure: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
            )
        out = []
        for name, (_, like) in zip(wanted, leaves):
            arr = z[stored[name]]
            if stored[name].endswith("@bfloat16"):
                arr = arr.view(jax.numpy.bfloat16)
            if hasattr(like, "shape") and tuple(arr.shape) != tuple(like.shape):
                raise ValueError(f"checkpoint {path}: {name} has shape {arr.shape}, expected {like.shape}")
            out.append(arr)
        meta = json.loads(z[META_KEY].tobytes().decode())
    return jax.tree_util.tree_unflatten(treedef, out), meta
