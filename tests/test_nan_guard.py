"""--nan-guard: the first call of a jitted function whose outputs hold NaN or Inf stops the run, with
a report naming the function, the call, the output leaves, the user's line and the fix."""

from __future__ import annotations

import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float

from raximport import nan_guard
from raximport.config import load_config
from raximport.errors import RaxNonFiniteError
from raximport.jit import autojit, jit, library_jit
from tests.helpers import write

GUARDED = load_config({"nan_guard": True}, environ={})


def calls_until_stopped(fn, inputs) -> tuple[int, RaxNonFiniteError | None]:
    """Call `fn` on each input, then read the last call as the runner does at the end: how many calls
    returned, and the guard's error, if any."""
    returned = 0
    try:
        for x in inputs:
            fn(x)
            returned += 1
        nan_guard.check_pending()
    except RaxNonFiniteError as exc:
        return returned, exc
    return returned, None


def test_off_jit_is_jax_own_object_and_on_the_guard_keeps_its_api() -> None:
    def f(x):
        return {"y": x * 2}

    assert type(jit(f, config=load_config({}, environ={}))).__name__ == "PjitFunction"
    guarded = jit(f, config=GUARDED, donate_argnums=())
    assert type(guarded).__name__ == "function" and inspect.unwrap(guarded) is f
    x = jnp.ones(3)
    assert jax.tree.structure(guarded.eval_shape(x)) == jax.tree.structure({"y": 0})
    np.testing.assert_array_equal(guarded.lower(x).compile()(x)["y"], x * 2)  # the user's program, unflagged
    np.testing.assert_array_equal(guarded(x)["y"], x * 2)


def test_a_nan_input_at_the_fifth_call_stops_at_that_call_and_names_it() -> None:
    step = jit(lambda x: {"params": {"h": [{"attn": x * 2}], "n": jnp.int32(3)}, "loss": x.sum()}, config=GUARDED)
    inputs = [jnp.ones(4)] * 4 + [jnp.array([1.0, np.nan, 1.0, 1.0])] + [jnp.ones(4)] * 5
    returned, exc = calls_until_stopped(step, inputs)
    assert exc is not None and returned in (4, 5)  # stopped by the 5th call itself or the 6th, one behind
    report = exc.report
    assert report.title == "<lambda> returned NaN at its 5th call"
    assert report.extra["leaves"] == {"['loss']": "NaN", "['params']['h'][0]['attn']": "NaN"}
    code = calls_until_stopped.__code__
    assert report.where == (code.co_filename, code.co_firstlineno + 6)  # the user's line: `fn(x)`
    assert "its 4 earlier calls returned finite values" in report.explanation and "2 floating outputs" in report.explanation
    assert "learning rate" in report.fix and "--debug-nans" in report.fix


def test_an_equinox_filter_jit_step_is_guarded() -> None:
    eqx = pytest.importorskip("equinox")
    model = [eqx.nn.Linear(2, 2, key=jax.random.key(0))]

    @library_jit(eqx.filter_jit, config=GUARDED)
    def scale(model, factor):
        return jax.tree.map(lambda p: p * factor, model), "a static output"

    def step(factor):
        model[0], _ = scale(model[0], factor)

    returned, exc = calls_until_stopped(step, [1.0, 1.0, np.nan, 1.0])
    assert exc is not None and returned in (2, 3)
    assert exc.report.title == "scale returned NaN at its 3rd call"
    assert exc.report.extra["leaves"] == {"[0].weight": "NaN", "[0].bias": "NaN"}


def test_a_flax_nnx_step_is_guarded_with_the_modules_it_updates_in_place() -> None:
    """The step returns a loss computed before its update: only the module's new state says that
    the 3rd call broke it (the loss would say so one call later)."""
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    @library_jit(nnx.jit, config=GUARDED)
    def scale(model, factor):
        loss = jnp.abs(model.kernel[...]).sum()
        model.kernel[...] = model.kernel[...] * factor
        return loss

    returned, exc = calls_until_stopped(lambda factor: scale(model, factor), [1.0, 1.0, np.inf, 1.0])
    assert exc is not None and returned in (2, 3)
    assert exc.report.title.startswith("scale returned ") and exc.report.title.endswith(" at its 3rd call")
    assert set(exc.report.extra["leaves"]) == {"model['kernel'].value"}
    assert "3 floating outputs" in exc.report.explanation  # the loss, the kernel and the bias


def test_nnx_modules_passed_through_star_args_are_checked_too() -> None:
    nnx = pytest.importorskip("flax.nnx")
    models = [nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Linear(2, 2, rngs=nnx.Rngs(1))]

    @library_jit(nnx.jit, config=GUARDED)
    def scale(factor, *models):
        models[1].bias[...] = models[1].bias[...] + factor
        return jnp.float32(0.0)

    _, exc = calls_until_stopped(lambda factor: scale(factor, *models), [1.0, np.nan])
    assert exc is not None and exc.report.title == "scale returned NaN at its 2nd call"
    assert exc.report.extra["leaves"] == {"models[1]['bias'].value": "NaN"}


def test_plus_and_minus_inf_are_told_apart() -> None:
    f = jit(lambda x: (x / 0.0, -x / 0.0, jnp.log(x) * 0.0, x), config=GUARDED)
    _, exc = calls_until_stopped(f, [jnp.array([1.0, 0.0])])
    assert exc is not None
    assert exc.report.extra["leaves"] == {"[0]": "NaN, +Inf", "[1]": "NaN, -Inf", "[2]": "NaN"}
    assert exc.report.title == "<lambda> returned NaN, +Inf, -Inf at its 1st call"


def test_finite_outputs_whose_sum_overflows_are_not_reported() -> None:
    """The guard screens each output by its sum: large finite values that overflow it (float32, and
    float16 summed in float32 too) are checked element by element, not reported."""
    big = jit(lambda x: (x * 3e38, x.astype(jnp.float16) * 60000), config=GUARDED)
    assert calls_until_stopped(big, [jnp.ones(4)] * 3) == (3, None)
    _, exc = calls_until_stopped(big, [jnp.array([1.0, 1.0, jnp.inf, 1.0])])
    assert exc is not None and exc.report.extra["leaves"] == {"[0]": "+Inf", "[1]": "+Inf"}


def test_a_healthy_function_runs_on_and_nested_calls_are_part_of_their_caller() -> None:
    inner = jit(lambda x: jnp.log(x), config=GUARDED)
    outer = jit(lambda x: inner(x).sum(), config=GUARDED)
    x = jnp.array([1.0, 2.0])
    returned, exc = calls_until_stopped(outer, [x] * 3)
    assert (returned, exc) == (3, None)
    jax.grad(lambda x: inner(x).sum())(x)
    jax.vmap(inner)(x[:, None])
    inner(x)
    assert calls_until_stopped(jit(lambda x: (x > 0, jnp.int32(1)), config=GUARDED), [x]) == (1, None)  # no floats
    _, exc = calls_until_stopped(inner, [-x])  # log of a negative number: the 2nd call of inner itself
    assert exc is not None and exc.report.extra["call"] == 2


def total(x: Float[Array, " n"], scale: float) -> Float[Array, ""]:
    return (x / scale).sum()


def test_auto_jitted_functions_are_guarded_too() -> None:
    auto = autojit(total, GUARDED)
    returned, exc = calls_until_stopped(lambda x: auto(x, 1.0), [jnp.ones(2), jnp.array([np.inf, 1.0])])
    assert exc is not None and exc.report.title == "total returned +Inf at its 2nd call"
    assert exc.report.extra["leaves"] == {"(the output)": "+Inf"}


def test_one_trace_and_one_compile_per_signature() -> None:
    traces = []

    def f(x):
        traces.append(x.shape)  # noqa: RAX303 (counting traces is the point)
        return x + 1

    guarded = jit(f, config=GUARDED)
    for x in [jnp.ones(2), jnp.ones(2), jnp.ones(3), jnp.ones(2), jnp.ones(3)]:
        guarded(x)
    assert traces == [(2,), (3,)]
    assert guarded._cache_size() == 2
    guarded.clear_cache()
    guarded(jnp.ones(2))
    assert traces == [(2,), (3,), (2,)] and guarded._cache_size() == 1


DIVERGES = """
import sys
import jax, jax.numpy as jnp

@jax.jit
def step(params, factor):
    params = {{"w": params["w"] * factor}}
    return params, (params["w"] * 0.0).sum()

params = {{"w": jnp.ones(3)}}
for i in range(1, 8):
    params, loss = step(params, {factor})
    print("step", i, float(loss))
"""


def run_diverging(run_python, tmp_path: Path, factor: str, *args: str, env: dict[str, str] | None = None,
                  pyproject: str = ""):
    write(tmp_path / "pyproject.toml", pyproject)
    write(tmp_path / "main.py", DIVERGES.format(factor=factor))
    return run_python(*args, "main.py", cwd=tmp_path, env={"RAX_XLA_CACHE": "0", **(env or {})})


@pytest.mark.parametrize("spelling", ["--nan-guard", "RAX_NAN_GUARD=1", "pyproject"])
def test_a_diverging_script_stops_at_the_call_that_overflowed(run_python, tmp_path: Path, spelling: str) -> None:
    """1e15 ** 3 overflows float32 at the 3rd step: w is +Inf and the loss (Inf * 0) NaN."""
    flags = ["--nan-guard"] if spelling == "--nan-guard" else []
    env = {"RAX_NAN_GUARD": "1"} if spelling.startswith("RAX") else {}
    result = run_diverging(run_python, tmp_path, "1e15", "-m", "raximport", *flags, env=env,
                           pyproject="[tool.raximport]\nnan_guard = true\n" if spelling == "pyproject" else "")
    assert result.returncode == 1, result.stderr
    assert "step 2 0.0" in result.stdout and "step 4" not in result.stdout
    assert "raximport: step returned NaN, +Inf at its 3rd call" in result.stderr
    assert f"at {tmp_path / 'main.py'}:11" in result.stderr
    assert "[0]['w']: +Inf" in result.stderr and "[1]: NaN" in result.stderr
    assert "--debug-nans" in result.stderr


def test_a_healthy_script_prints_the_same_with_the_guard(run_python, tmp_path: Path) -> None:
    plain = run_diverging(run_python, tmp_path, "1.5")
    guarded = run_diverging(run_python, tmp_path, "1.5", "-m", "raximport", "--nan-guard")
    assert plain.returncode == guarded.returncode == 0, guarded.stderr
    assert guarded.stdout == plain.stdout and "step 7 0.0" in plain.stdout
    assert "raximport" not in guarded.stderr


def test_when_the_guard_cannot_read_outputs_the_function_runs_unguarded(monkeypatch, capsys) -> None:
    def unreadable(self, out):
        raise ValueError("an output the guard does not know")

    monkeypatch.setattr(nan_guard._Watch, "flags", unreadable)
    f = jit(lambda x: x / 0.0, config=GUARDED)
    assert calls_until_stopped(f, [jnp.ones(2)] * 2) == (2, None)
    assert "the NaN guard failed for <lambda>, which runs as plain JAX" in capsys.readouterr().err
