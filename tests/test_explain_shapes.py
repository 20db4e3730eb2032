"""Shape errors in code with no annotations (explain_shapes.py): the report names the user's own
expressions with their dtypes and shapes, the jitted function's arguments, and what stands out
between the shapes, without running any of the user's code again. In-process: each test catches
the error a plain JAX program raises and explains it, as the runner and the pytest plugin do;
tests/bugs/shape_unannotated.py runs one through `python -m raximport --report-json`."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from raximport.config import Config
from raximport.explain import explain
from raximport.jit import jit
from raximport.report import Report


def explained(fn: Callable[..., Any], *args: Any) -> Report:
    try:
        fn(*args)
    except (TypeError, ValueError) as exc:
        return explain(exc)
    raise AssertionError("no error")


def line_of(marker: str) -> tuple[str, int]:
    """This file and the line holding `marker` in a comment."""
    with open(__file__) as fh:
        return __file__, next(n for n, line in enumerate(fh, 1) if line.rstrip().endswith(f"# {marker}"))


def test_wrong_rank_labels_through_optax_are_named_with_their_shapes() -> None:
    optax = pytest.importorskip("optax")

    def step(params, batch):
        logits = batch["image"] @ params["w"]
        loss = optax.softmax_cross_entropy_with_integer_labels(  # optax call
            logits, batch["label"])
        return loss.mean()

    params = {"w": jnp.zeros((16, 10))}
    batch = {"image": jnp.zeros((8, 16)), "label": jnp.zeros((8, 1), jnp.int32)}
    report = explained(jit(step, config=Config()), params, batch)

    assert report.kind == "shape-error" and report.where == line_of("optax call")
    assert report.function == "step"
    assert report.extra["operands"] == {"logits": "float32[8,10]", 'batch["label"]': "int32[8,1]"}
    assert report.extra["library"] == "optax"
    assert report.extra["observation"] == {"kind": "extra-axis", "operand": 'batch["label"]', "axis": 1, "size": 1}
    assert report.extra["jitted_function"] == "step"
    assert report.extra["jitted_arguments"] == {"params['w']": "float32[16,10]", "batch['image']": "float32[8,16]",
                                                "batch['label']": "int32[8,1]"}
    assert report.fix == 'drop the extra axis: batch["label"].squeeze(1)'
    text = report.text()
    assert 'call: optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])' in text
    assert 'batch["label"]: int32[8,1]' in text and "logits:         float32[8,10]" in text
    assert "extra axis 1 (of size 1)" in report.title
    assert "optax says: ValueError: indices and arr must have the same number of dimensions; 3 vs. 2" in text


def test_off_by_one_targets_in_a_flax_linen_model() -> None:
    nn = pytest.importorskip("flax.linen")
    optax = pytest.importorskip("optax")

    class TinyLM(nn.Module):
        vocab_size: int = 16

        @nn.compact
        def __call__(self, idx, targets):
            logits = nn.Dense(self.vocab_size)(nn.Embed(self.vocab_size, 4)(idx))
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()  # flax loss

    model = TinyLM()
    idx = jnp.zeros((2, 8), jnp.int32)
    params = model.init(jax.random.key(0), idx, idx)
    report = explained(model.apply, params, idx, jnp.zeros((2, 9), jnp.int32))

    assert report.kind == "shape-error" and report.where == line_of("flax loss")
    assert report.extra["operands"] == {"logits": "float32[2,8,16]", "targets": "int32[2,9]"}
    assert report.extra["observation"] == {"kind": "off-by-one", "operand": "targets", "axis": 1, "size": 9,
                                           "other_size": 8}
    assert "axis 1 of 'targets' is 9, one more than 'logits' without its last axis (8)" in report.title
    assert "[:, 1:]" in report.fix


def test_a_layer_called_with_the_wrong_input_size_shows_its_weights() -> None:
    eqx = pytest.importorskip("equinox")

    class MLP(eqx.Module):
        hidden: Any

        def __call__(self, x):
            return jax.nn.relu(self.hidden(x))  # equinox layer

    model = MLP(eqx.nn.Linear(4, 8, key=jax.random.key(0)))
    report = explained(jax.vmap(model), jnp.zeros((16, 5)))
    assert report.where == line_of("equinox layer") and report.extra["library"] == "equinox"
    assert report.extra["operands"] == {"x": "float32[5]", "self.hidden.weight": "float32[8,4]",
                                        "self.hidden.bias": "float32[8]"}
    assert "axis 0 of 'x' is 5, one more than 'self.hidden.weight' without its first axis (4)" in report.title


def test_an_nnx_layer_called_with_the_wrong_input_size_shows_its_parameters() -> None:
    """Flax NNX holds a layer's arrays in `nnx.Param`s: shown as the arrays they hold, read from the
    variable's storage (no property of flax's runs)."""
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self) -> None:
            self.l1 = nnx.Linear(8, 32, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return nnx.relu(self.l1(x))  # nnx layer

    report = explained(MLP(), jnp.zeros((4, 9)))
    assert report.where == line_of("nnx layer") and report.extra["library"] == "flax"
    assert report.extra["operands"] == {"x": "float32[4,9]", "self.l1.kernel": "float32[8,32]",
                                        "self.l1.bias": "float32[32]"}
    assert "observation" not in report.extra  # the layer's kernel and bias are never set against each other


def test_inside_lax_scan_the_report_is_at_the_line_of_the_scanned_body() -> None:
    def body(carry, x):
        return carry + x, None  # scan body

    def scanned(xs):
        return lax.scan(body, jnp.zeros(3), xs)

    report = explained(jit(scanned, config=Config()), jnp.zeros((5, 4)))
    assert report.kind == "shape-error" and report.where == line_of("scan body")
    assert report.function == "body"
    assert report.extra["operands"] == {"carry": "float32[3]", "x": "float32[4]"}
    assert report.extra["observation"]["kind"] == "off-by-one"  # type: ignore[index]
    assert report.extra["jitted_function"] == "scanned" and report.extra["jitted_arguments"] == {"xs": "float32[5,4]"}
    assert "operation: carry + x" in report.text()


def test_inside_jax_vmap_shapes_are_per_example() -> None:
    def pair(a, b):
        return jnp.matmul(a, b.T)  # vmapped

    report = explained(jax.vmap(pair), jnp.zeros((2, 3, 4)), jnp.zeros((2, 5, 3)))
    assert report.where == line_of("vmapped")
    assert report.extra["operands"] == {"a": "float32[3,4]", "b.T": "float32[3,5]"}
    assert "inside jax.vmap: shapes per example" in report.text()
    assert "observation" not in report.extra  # no pair of sizes the matmul's message names is off by one side by side
    assert "dot_general requires contracting dimensions to have the same shape" in report.title


class Counted:
    """An attribute whose reading has a side effect, as a property can."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def batch(self) -> jax.Array:
        self.reads += 1
        return jnp.zeros((5, 2))


def test_nothing_with_a_side_effect_is_evaluated_again() -> None:
    calls: list[int] = []

    def next_batch() -> jax.Array:
        calls.append(1)
        return jnp.zeros((5, 2))

    holder, w = Counted(), jnp.zeros((3, 4))
    report = explained(lambda: jnp.dot(w, next_batch()))
    assert calls == [1] and report.extra["operands"] == {"w": "float32[3,4]", "next_batch()": "(a call: not run again)"}
    report = explained(lambda: jnp.dot(w, holder.batch))
    assert holder.reads == 1
    assert report.extra["operands"]["holder.batch"] == "(a property or method: not run)"  # type: ignore[index]
    report = explained(lambda: jnp.dot(w, (batch := next_batch())) + batch)
    assert calls == [1, 1] and report.extra["operands"]["batch := next_batch()"] == "(not evaluated)"  # type: ignore[index]


def test_the_evaluator_reads_stored_attributes_items_shapes_and_operators() -> None:
    class Settings:
        def __init__(self) -> None:
            self.n = 4

    class Model:
        __slots__ = ("w",)

        def __init__(self) -> None:
            self.w = jnp.zeros((4, 6))

    config, model, xs = Settings(), Model(), [jnp.zeros((2, 6))]
    report = explained(lambda: jnp.reshape(xs[0] @ model.w.T[:, :config.n] * 2, (config.n + 1, -1)))
    assert report.extra["operands"] == {"xs[0] @ model.w.T[:, :config.n] * 2": "float32[2,4]",
                                        "config.n + 1": "5", "-1": "-1"}


def test_an_error_that_is_not_about_shapes_is_left_as_it_is() -> None:
    x = jnp.zeros(3)
    assert explained(lambda: jnp.linalg.norm(x, ord="fro")).kind == "error"

    def own_check(x: jax.Array) -> None:
        if x.ndim != 2:
            raise ValueError(f"expected a matrix, got shape {x.shape}")  # the user's own error, no library's

    assert explained(own_check, x).kind == "error"
