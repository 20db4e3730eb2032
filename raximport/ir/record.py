"""One record schema for the IR of a compiled function: what `--dump-ir` captures from a run and
what `rax ir generate` writes, one JSON object per line of `DIR/<prefix>-<shard>.jsonl`.

Every record (`Record`) has these keys:

    function          str     the function's name (`<lambda>` for a lambda)
    file              str     its file, relative to the working directory where possible
    line              int     the line of its `def` (0 where unknown)
    source            str     its source, or the lambda's line ("" where unknown)
    jaxpr             str     the jaxpr JAX traced for the call
    stablehlo         str     the StableHLO module JAX lowered it to (MLIR text)
    hlo               str     XLA's optimized HLO of the compiled executable ("" where not compiled)
    exported          str     base64 of `jax.export`'s serialized artifact ("" where JAX cannot
                              export the program): `jax.export.deserialize(base64.b64decode(...))
                              .call(*inputs)` runs it on the flat inputs without the source; the
                              leaves of what it returns (`jax.tree.leaves`) are the flat outputs
    input_shapes      list[list[int]]   the shape of each flat array input
    input_dtypes      list[str]         the dtype of each flat array input
    static_args       dict[str, str]    each static argument's name and repr
    cost_analysis     dict    `available` (bool), `flops`, `transcendentals`, `bytes_accessed`
                              (float or null)
    memory_analysis   dict    `available` (bool), `argument_bytes`, `output_bytes`, `temp_bytes`,
                              `generated_code_bytes` (int or null)
    compile_seconds   float or null     how long XLA took to compile it (null where not compiled)
    versions          dict[str, str]    `jax`, `jaxlib`, `stablehlo` (the version `jax.export`
                                        serializes to), `platform`

Dataset records (`DatasetRecord`) add: `category` (str), `pass` ("forward" or "backward"), `seed`
(int: the inputs' seed), `inputs` and `expected_outputs` (lists of `encode_array` dicts:
`dtype`, `shape`, `data` = base64 of the raw little-endian bytes), `compile_options` (the XLA
options of the compile the outputs came from; {} for XLA's defaults) and `id` (`canonical_hash`
of the StableHLO). Captures never have these keys. Within one kind of file every line has the same
keys with the same types (null for an absent value), so `datasets.load_dataset("json",
data_files=...)` reads the shards as they are. JAX documents its cost and memory analyses as
unreliable (missing, or zero), hence their `available` flag.

Stdlib and numpy (JAX only inside `versions`): `rax ir show` reads records without importing JAX.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, TypedDict

import numpy as np

if TYPE_CHECKING:
    from jaxtyping import Shaped

Cost = TypedDict("Cost", {"available": bool, "flops": "float | None", "transcendentals": "float | None",
                          "bytes_accessed": "float | None"})
Memory = TypedDict("Memory", {"available": bool, "argument_bytes": "int | None", "output_bytes": "int | None",
                              "temp_bytes": "int | None", "generated_code_bytes": "int | None"})
Versions = TypedDict("Versions", {"jax": str, "jaxlib": str, "stablehlo": str, "platform": str})
EncodedArray = TypedDict("EncodedArray", {"dtype": str, "shape": list[int], "data": str})


class Record(TypedDict):
    """The keys of every record, captured or generated (the module docstring says what each holds)."""

    function: str
    file: str
    line: int
    source: str
    jaxpr: str
    stablehlo: str
    hlo: str
    exported: str
    input_shapes: list[list[int]]
    input_dtypes: list[str]
    static_args: dict[str, str]
    cost_analysis: Cost
    memory_analysis: Memory
    compile_seconds: float | None
    versions: Versions


# `pass` is a Python keyword, hence the functional form.
DatasetRecord = TypedDict("DatasetRecord", {
    **Record.__annotations__,
    "category": str, "pass": Literal["forward", "backward"], "seed": int,
    "inputs": list[EncodedArray], "expected_outputs": list[EncodedArray], "compile_options": dict[str, int],
    "id": str,
})

RECORD_KEYS: tuple[str, ...] = tuple(Record.__annotations__)
DATASET_KEYS: tuple[str, ...] = tuple(DatasetRecord.__annotations__)


class RecordError(ValueError):
    """A line that is not a record; the message names its file and line number."""


def versions() -> Versions:
    """The versions a record's IR depends on: JAX's, jaxlib's, the StableHLO version `jax.export`
    serializes to, and the platform it was compiled for."""
    import jax
    import jaxlib
    from jax._src.lib.mlir.dialects import hlo

    try:
        stablehlo = str(hlo.get_version_from_compatibility_requirement(hlo.StablehloCompatibilityRequirement.WEEK_4))
    except AttributeError:  # moved in a later jaxlib: the version it builds is the closest answer
        stablehlo = str(hlo.get_current_version())
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "stablehlo": stablehlo,
            "platform": jax.default_backend()}


def encode_array(array: Shaped[np.ndarray, "..."]) -> EncodedArray:
    """An array as JSON: its dtype name, its shape and its raw little-endian bytes in base64."""
    array = np.asarray(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {"dtype": array.dtype.name, "shape": list(array.shape),
            "data": base64.b64encode(np.ascontiguousarray(little).tobytes()).decode("ascii")}


def decode_array(encoded: EncodedArray) -> Shaped[np.ndarray, "..."]:
    """The array `encode_array` wrote (bfloat16 and the other ml_dtypes names included)."""
    try:
        dtype = np.dtype(encoded["dtype"])
    except TypeError:
        import ml_dtypes

        dtype = np.dtype(getattr(ml_dtypes, encoded["dtype"]))
    data = base64.b64decode(encoded["data"])
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(encoded["shape"])


_MODULE_NAME = re.compile(r"^(\s*module)\s+@[\w.$-]+", re.MULTILINE)
_LOC_ALIAS = re.compile(r"^#loc\w*\s*=.*$\n?", re.MULTILINE)


def canonical_hash(stablehlo: str) -> str:
    """The hash of a StableHLO module's text without its location info (`loc(...)`, `#loc`
    aliases) and its module name, so the same program traced from two places hashes the same."""
    text = _MODULE_NAME.sub(r"\1 @m", _LOC_ALIAS.sub("", _strip_locations(stablehlo)))
    text = "\n".join(line.rstrip() for line in text.splitlines() if line.strip())
    return hashlib.sha256(text.encode()).hexdigest()


def _strip_locations(text: str) -> str:
    """`text` without each `loc(...)`, nested parentheses and quoted strings included."""
    out: list[str] = []
    i = 0
    while (start := text.find("loc(", i)) >= 0:
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_#"):  # `#loc(`, `myloc(`
            out.append(text[i:start + 4])
            i = start + 4
            continue
        out.append(text[i:start].rstrip(" "))
        i = _closing(text, start + 3) + 1
    out.append(text[i:])
    return "".join(out)


def _closing(text: str, open_at: int) -> int:
    """The index of the parenthesis closing the one at `open_at` (skipping quoted strings)."""
    depth, i, quoted = 0, open_at, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(text) - 1


class JsonlWriter:
    """Appends records to `DIR/<prefix>-<shard>.jsonl` (shards numbered from 00000, a new one
    every `shard_size` records, never over a file already there), one whole line per record,
    flushed: a crash keeps every record written before it, and never half of one."""

    def __init__(self, directory: str | os.PathLike[str], prefix: str, shard_size: int = 1000) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.shard_size = shard_size
        self.paths: list[Path] = []
        self._fd: int | None = None
        self._in_shard = 0
        self._shard = 0

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        if self._fd is None or self._in_shard >= self.shard_size:
            self._open_next()
        assert self._fd is not None
        written = os.write(self._fd, line)
        while written < len(line):  # a short write (a full pipe, a signal): finish the line
            written += os.write(self._fd, line[written:])
        self._in_shard += 1

    def _open_next(self) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            path = self.directory / f"{self.prefix}-{self._shard:05d}.jsonl"
            self._shard += 1
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            except FileExistsError:
                continue
            self.paths.append(path)
            self._in_shard = 0
            return

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_files(where: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The JSONL files of a directory (sorted by name), or the files given; RecordError if a
    path does not exist."""
    paths = [Path(where)] if isinstance(where, (str, os.PathLike)) else [Path(p) for p in where]
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise RecordError(f"{path}: no such file or directory")
    return files


def read_records(where: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> Iterator[dict[str, Any]]:
    """Every record of a directory's `*.jsonl` files (in name order) or of the files given, in
    order; RecordError naming the file and line of the first line that is not a JSON object."""
    for path in record_files(where):
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise RecordError(f"{path}:{number}: not a JSON object")
                yield record


def shard_prefix(kind: str) -> str:
    """A file prefix no other process of the run shares: `kind` and the process id."""
    return f"{kind}-{os.getpid()}"

