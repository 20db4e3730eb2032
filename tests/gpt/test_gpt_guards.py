"""gpt/train.py's guards: a non-finite step stops the run (or is skipped) before it is applied
or saved, with a report; best only on improvement; no silent overwrite of checkpoints or of
the user's data; clear errors (exit 2) for bad checkpoints, data, config files and values."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import checkpoint
import data
import train
from model import GPTConfig, init_params

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "config" / "train_tiny.py"
FAST = ["--eval_interval=5", "--max_iters=10", "--lr_decay_iters=10"]


def args(data_dir, out_dir, *overrides):
    return [str(TINY), f"--data_dir={data_dir}", f"--out_dir={out_dir}", *FAST, *overrides]


@pytest.fixture
def nan_at(monkeypatch):
    """poison(iterations): the training batches of those iterations give a NaN loss whose
    gradient is NaN in wte alone (the other leaves stay finite), as a diverging run would."""
    real_loss, real_batch = train.loss_fn, data.get_batch

    def loss_fn(params, x, y, config, key=None):
        bad = jnp.any(x < 0)
        return real_loss(params, jnp.maximum(x, 0), y, config, key) + jnp.where(bad, jnp.nan, 0.0) * jnp.sum(
            params["wte"]
        )

    def poison(iterations, eval_iters=2, eval_interval=5):
        calls = iter(range(10**6))

        def get_batch(tokens, batch_size, block_size, rng, rows=None):
            x, y = real_batch(tokens, batch_size, block_size, rng, rows)
            # the run reads, in turn, an eval's 2 * eval_iters batches, then eval_interval iterations' batches
            evals, position = divmod(next(calls), 2 * eval_iters + eval_interval)
            if position >= 2 * eval_iters and evals * eval_interval + position - 2 * eval_iters + 1 in iterations:
                x[0, 0] = -1
            return x, y

        monkeypatch.setattr(train, "loss_fn", loss_fn)
        monkeypatch.setattr(train, "_steps", {})  # steps built with the poisoned loss, not reused after
        monkeypatch.setattr(data, "get_batch", get_batch)

    return poison


@pytest.mark.slow
def test_nan_stops_at_its_iteration_and_the_good_checkpoint_resumes(tmp_path, data_dir, nan_at, capsys, monkeypatch):
    nan_at({8})
    assert train.main(args(data_dir, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "training stopped at iteration 8: non-finite loss or gradient norm (loss nan, grad norm nan)" in err
    assert "non-finite gradients (1 of 15 leaves): ['wte']" in err
    assert "       7 " in err and "       8 " in err  # the last iterations' loss, grad norm, lr
    assert f"last good checkpoint: {tmp_path / 'good' / '5'} (iteration 5" in err
    assert f"--out_dir={tmp_path} --init_from=good --learning_rate=0.001" in err
    assert "Traceback" not in err
    # nothing after the bad step was saved; what was saved is finite
    assert checkpoint.Checkpoints(tmp_path, read_only=True).steps() == {"latest": [5], "best": [5], "good": [5]}

    monkeypatch.undo()  # the data is clean again: resume as the report says
    summary = train.train(train.parse_config(args(data_dir, tmp_path, "--init_from=good", "--learning_rate=1e-3")))
    assert summary["iter_num"] == 10 and not summary["skipped"]
    assert all(np.isfinite(list(summary["losses"].values())))
    assert np.isfinite(summary["evals"][10]["val"])


@pytest.mark.slow
def test_skip_mode_skips_bad_updates_and_stops_after_max_skipped_in_a_row(tmp_path, data_dir, nan_at):
    nan_at({3, 6, 7})
    cfg = train.parse_config(args(data_dir, tmp_path, "--on_nonfinite=skip", "--max_skipped=2"))
    with pytest.raises(train.Diverged) as e:
        train.train(cfg)
    assert e.value.iteration == 7 and e.value.summary["skipped"] == [3, 6, 7]
    assert "2 updates in a row were skipped" in str(e.value)
    assert all(np.isfinite(loss) for it, loss in e.value.summary["losses"].items() if it not in (3, 6, 7))
    assert np.isfinite(e.value.summary["evals"][5]["val"])  # the skipped update at 3 never reached the params


def test_a_non_finite_step_leaves_params_and_optimizer_state_unchanged(nan_at):
    """The select, not a multiply: Adam's state after a NaN gradient is bit for bit what it was."""
    nan_at(set())
    mc = GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32)
    opt, step, _ = train.make_steps(mc, dict(train.DEFAULTS, warmup_iters=0), train.make_mesh(1, jax.devices()[:1]))
    params = init_params(mc, jax.random.key(0))
    x = np.ones((2, 16), np.int32)
    params, opt_state, key, stats = step(params, opt.init(params), jax.random.key(1), x, x)  # one good step
    assert bool(stats["finite"]) and float(stats["grad_norm"]) > 0 and float(stats["update_norm"]) > 0
    before = jax.tree_util.tree_map(np.asarray, (params, opt_state))
    x[0, 0] = -1
    params, opt_state, key, stats = step(params, opt_state, key, x, x)
    assert not bool(stats["finite"]) and np.isnan(float(stats["loss"]))
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert [n for n, ok in zip(names, np.asarray(stats["leaf_finite"])) if not ok] == ["['wte']"]
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves((params, opt_state))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's event loop, after the corrupt read
def test_best_only_when_better_latest_always_and_a_failed_save_goes_on(tmp_path, data_dir, monkeypatch, capsys):
    """Scripted val losses 5 (iteration 0), 2 (2), 3 (4), 2.5 (6); the first save of latest fails
    (disk full). best stays at 2 with its own loss, latest holds the newest, the run finishes."""
    vals = iter([5.0, 2.0, 3.0, 2.5])
    losses = []

    def make_eval_step(model_config, mesh=None, optimizer=None):
        def eval_step(params, x, y):  # eval_iters=2: two train batches, then two val batches
            if not losses:
                val = next(vals)
                losses.extend([1.0, 1.0, val, val])
            return jnp.asarray(losses.pop(0))

        return eval_step

    real_save = checkpoint.Checkpoints.save

    def save(self, kind, step, *rest):
        if (kind, step) == ("latest", 2):
            raise OSError(28, "No space left on device")
        return real_save(self, kind, step, *rest)

    monkeypatch.setattr(train, "_steps", {})
    monkeypatch.setattr(train, "make_eval_step", make_eval_step)
    monkeypatch.setattr(checkpoint.Checkpoints, "save", save)
    summary = train.train(train.parse_config(args(data_dir, tmp_path, "--eval_interval=2", "--max_iters=6")))
    assert summary["iter_num"] == 6 and summary["best_val_loss"] == 2.0
    out = capsys.readouterr().out
    assert "warning: saving the latest checkpoint at iteration 2 failed, training goes on: OSError: [Errno 28]" in out
    ckpts = checkpoint.Checkpoints(tmp_path, read_only=True)
    assert ckpts.steps() == {"latest": [4, 6], "best": [2], "good": [6]}
    assert ckpts.meta("best")["best_val_loss"] == 2.0 and ckpts.meta("latest")["iter_num"] == 6

    # a scratch run into it is refused, naming what it would overwrite
    assert train.main(args(data_dir, tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"out_dir {tmp_path} holds checkpoints ({tmp_path / 'latest'}: iterations 4, 6; " in err
    assert "--overwrite=True" in err
    # a corrupt checkpoint is a clear error too
    for f in (tmp_path / "latest" / "6" / "params").rglob("d/*"):
        f.write_bytes(b"garbage")
    assert train.main(args(data_dir, tmp_path, "--init_from=resume")) == 2
    err = capsys.readouterr().err
    assert f"init_from='resume': checkpoint {tmp_path / 'latest' / '6'} cannot be read" in err
    assert "Traceback" not in err
    # overwrite=True removes them first
    train.prepare_out_dir(train.parse_config(args(data_dir, tmp_path, "--overwrite=True")))
    assert checkpoint.Checkpoints(tmp_path, read_only=True).steps() == {}


def test_an_out_dir_that_cannot_be_written_is_refused_at_start(tmp_path, data_dir, capsys):
    (tmp_path / "file").write_text("")
    assert train.main(args(data_dir, tmp_path / "file" / "out")) == 2
    assert f"out_dir {tmp_path / 'file' / 'out'} is not writable" in capsys.readouterr().err


def copy_dataset(data_dir, tmp_path) -> Path:
    target = tmp_path / "data" / "shakespeare_char"
    target.mkdir(parents=True)
    for name in data.FILES:
        (target / name).write_bytes((Path(data_dir) / "shakespeare_char" / name).read_bytes())
    return target


def test_a_custom_dataset_missing_a_file_is_never_rebuilt_from_shakespeare(tmp_path, capsys):
    text = tmp_path / "mine.txt"
    text.write_text("my own corpus, not Shakespeare\n" * 50)
    dataset_dir = data.prepare("shakespeare_char", tmp_path / "data", input_path=text)
    train_bin = (dataset_dir / "train.bin").read_bytes()
    (dataset_dir / "val.bin").unlink()
    assert train.main([str(TINY), f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert f"dataset {dataset_dir} is incomplete: val.bin missing" in err
    assert f"python gpt/data.py shakespeare_char --data-dir {tmp_path / 'data'} --input {text.resolve()}" in err
    assert (dataset_dir / "train.bin").read_bytes() == train_bin and not (dataset_dir / "val.bin").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "meta.json").write_text(json.dumps({**json.loads((d / "meta.json").read_text()), "vocab_size": 10})),
         "train.bin holds token id"),
        (lambda d: (d / "meta.json").write_text("{not json"), "meta.json cannot be read"),
        (lambda d: (d / "val.bin").write_bytes(b"\x01\x00\x02"), "val.bin has an odd number of bytes"),
        (lambda d: (d / "val.bin").write_bytes(b"\x01\x00" * 5), "val.bin has 5 tokens, block_size is 16"),
    ],
    ids=["token-id-past-vocab", "corrupt-meta", "odd-bin", "short-bin"],
)
def test_bad_data_is_a_clear_error_before_compiling(tmp_path, data_dir, capsys, damage, message):
    dataset_dir = copy_dataset(data_dir, tmp_path)
    damage(dataset_dir)
    assert train.main([str(TINY), f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "rebuild the dataset: python gpt/data.py shakespeare_char" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "override, message",
    [
        ("--eval_interval=0", "eval_interval must be positive, got 0"),
        ("--batch_size=-4", "batch_size must be positive, got -4"),
        ("--max_iters=-1", "max_iters must not be negative, got -1"),
        ("--on_nonfinite=ignore", "on_nonfinite must be one of 'stop', 'skip', got 'ignore'"),
        ("--init_from=best", "init_from must be one of 'scratch', 'resume', 'good', got 'best'"),
    ],
)
def test_bad_values_are_config_errors(override, message):
    with pytest.raises(train.ConfigError, match=message):
        train.parse_config([str(TINY), override])


@pytest.mark.parametrize(
    "source, message",
    [("n_layer = 2\nbatch_size = (\n", "line 2: SyntaxError"), ("n_layer = 2\nx = 1 / 0\n", "line 2: ZeroDivisionError")],
)
def test_a_config_file_with_an_error_names_its_line(tmp_path, capsys, source, message):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    assert train.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"config file {bad}, {message}" in err and "Traceback" not in err
