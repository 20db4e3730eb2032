"""What the rewrite checks, and what it must never wrap. In-process, with the hook on a tmp project."""

from __future__ import annotations

import inspect
import typing
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from raximport.errors import RaxWarning
from tests.helpers import write



HEADER = """
import numpy as np
import jax, jax.numpy as jnp
from jaxtyping import Array, Float, Int
"""


def test_a_dimension_must_agree_across_arguments(load) -> None:
    mod = load("chk_args", HEADER + """
def f(x: Float[Array, "batch seq"], y: Int[Array, "batch seq"]) -> Float[Array, "batch seq"]:
    return x + y
""")
    assert mod.f(jnp.ones((2, 3)), jnp.ones((2, 3), jnp.int32)).shape == (2, 3)
    assert mod.f(jnp.ones((5, 7)), jnp.ones((5, 7), jnp.int32)).shape == (5, 7)  # one memo scope per call
    with pytest.raises(TypeCheckError, match="seq"):
        mod.f(jnp.ones((2, 3)), jnp.ones((2, 4), jnp.int32))
    with pytest.raises(TypeCheckError):
        mod.f(jnp.ones((2, 3)), jnp.ones((2, 3), jnp.float32))  # dtype


def test_the_return_value_shares_the_call_scope(load) -> None:
    mod = load("chk_ret", HEADER + """
def first_row(x: Float[Array, "batch seq"]) -> Float[Array, "batch"]:
    return x[0]
""")
    assert mod.first_row(jnp.ones((3, 3))).shape == (3,)
    with pytest.raises(TypeCheckError, match="return"):
        mod.first_row(jnp.ones((2, 3)))


def test_numpy_values_are_checked_as_under_jit_for_jax_array_annotations(load) -> None:
    """jit turns a numpy argument into a tracer of the canonical dtype: the same call passes or fails
    the same way without jit (equinox's MNIST example passes numpy batches to `Float[Array, ...]`)."""
    mod = load("chk_numpy", HEADER + """
from typing import Optional
from jaxtyping import Float32, PyTree

class CNN:  # a method: never auto-jitted, so a plain call really runs outside jit
    def loss(self, x: Float[Array, "batch 1 28 28"], y: Int[Array, " batch"]) -> Float[Array, ""]:
        return jnp.mean(x) + jnp.sum(y)

    def scale(self, x: Float32[Array, "n"], by: Float[Array, ""], bias: Optional[Float[Array, "n"]] = None,
              extra: PyTree[Float[Array, "n"]] = ()) -> Float32[Array, "n"]:
        return x * by
""")
    model = mod.CNN()
    images, labels = np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64)
    two = np.float64(2.0)
    calls = {
        "numpy batch": (model.loss, (images, labels), True),
        "channels last": (model.loss, (images.reshape(4, 28, 28, 1), labels), False),
        "float labels": (model.loss, (images, labels.astype(np.float32)), False),
        "float64 is float32 under jit, a numpy scalar": (model.scale, (np.ones(3), two), True),
        "optional, pytree": (model.scale, (np.ones(3), two, np.ones(3), {"a": np.ones(3)}), True),
        "int64 is not float": (model.scale, (np.ones(3, np.int64), two), False),
        "rank": (model.scale, (np.ones((3, 1)), two), False),
        "a vector is not a scalar": (model.scale, (np.ones(3), np.ones(3)), False),
        "pytree leaf shape": (model.scale, (np.ones(3), two, None, {"a": np.ones(2)}), False),
    }
    for name, (method, args, accepted) in calls.items():
        for call in (method, jax.jit(method)):
            try:
                call(*args)
                outcome = True
            except TypeCheckError:
                outcome = False
            assert outcome == accepted, (name, call)
    assert typing.get_type_hints(mod.CNN.loss)["x"].array_type is jax.Array  # the user's annotations are untouched


def test_dataclass_fields_are_checked_at_construction(load) -> None:
    mod = load("chk_dc", HEADER + """
from dataclasses import dataclass

@dataclass(frozen=True)
class Batch:
    x: Int[Array, "batch seq"]
    y: Int[Array, "batch seq"]
    lr: float = 0.1
""")
    mod.Batch(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(TypeCheckError):
        mod.Batch(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 4), jnp.int32))


def test_postponed_annotations_forward_references_and_shape_names(load) -> None:
    mod = load("chk_future", """
from __future__ import annotations
import numpy as np
from jaxtyping import Float

batch = 3  # a module global named like a dimension: the shape string is still a shape

def scale(x: Float[np.ndarray, "batch"], by: Factor) -> Float[np.ndarray, "batch"]:
    return x * by.value

class Factor:
    value = 2.0
""")
    assert mod.scale(np.ones(5), mod.Factor()).tolist() == [2.0] * 5
    with pytest.raises(TypeCheckError):
        mod.scale(np.ones((5, 1)), mod.Factor())
    with pytest.raises(TypeCheckError):
        mod.scale(np.ones(5), 2.0)


def test_aliases_module_imports_methods_and_nested_functions(load) -> None:
    mod = load("chk_forms", """
import numpy as np
import jaxtyping as jt
from jaxtyping import Int

Tokens = Int[np.ndarray, "batch seq"]

def count(x: Tokens) -> int:
    return int(x.size)

def norm(x: jt.Float[np.ndarray, "n"]) -> float:
    return float(np.sqrt((x * x).sum()))

class Model:
    def forward(self, x: Tokens) -> Tokens:
        return x
    @staticmethod
    def make(n: int) -> Int[np.ndarray, "3"]:
        return np.zeros(n + 1, dtype=np.int64)
    @property
    def width(self) -> Int[np.ndarray, "2"]:
        return np.zeros(3, dtype=np.int64)

def outer(n: int):
    def inner(x: Int[np.ndarray, "n"]) -> Int[np.ndarray, "n"]:
        return x
    return inner
""")
    bad_ints = np.zeros((2, 3), dtype=np.float32)
    for call in (
        lambda: mod.count(bad_ints),
        lambda: mod.norm(np.ones((2, 2))),
        lambda: mod.Model().forward(bad_ints),
        lambda: mod.Model.make(3),
        lambda: mod.Model().width,
        lambda: mod.outer(1)(np.zeros((1, 1), dtype=np.int64)),
    ):
        with pytest.raises(TypeCheckError):
            call()
    assert mod.count(np.zeros((2, 3), dtype=np.int64)) == 6


def test_functions_without_jaxtyping_annotations_are_left_alone(load) -> None:
    mod = load("chk_plain", """
import numpy as np
from jaxtyping import Float

def plain(x: int) -> int:
    return x

def annotated(x: Float[np.ndarray, "n"]):
    return x
""")
    assert not hasattr(mod.plain, "__wrapped__")
    assert mod.annotated.__wrapped__.__name__ == "annotated"


def test_custom_vjp_jit_lru_cache_and_no_type_check_are_never_wrapped(load) -> None:
    mod = load("chk_never", HEADER + """
import functools, typing

@jax.custom_vjp
def clip_grad(x: Float[Array, "n"]) -> Float[Array, "n"]:
    return x

def clip_fwd(x: Float[Array, "n"]):
    return x, None

def clip_bwd(res, g: Float[Array, "n"]):
    return (jnp.clip(g, -1.0, 1.0),)

clip_grad.defvjp(clip_fwd, clip_bwd)

@jax.jit
def jitted(x: Float[Array, "n"]) -> Float[Array, "n"]:
    return 3.0 * x

@functools.lru_cache(maxsize=None)
def cached(n: int) -> Float[Array, "n"]:
    return jnp.zeros(n)

@typing.no_type_check
def unchecked(x: Float[Array, "n"]) -> Float[Array, "n"]:
    return x.reshape(-1, 1)
""")
    assert isinstance(mod.clip_grad, jax.custom_vjp)
    grad = jax.grad(lambda x: (10.0 * mod.clip_grad(x)).sum())(jnp.ones(3))
    assert grad.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(TypeCheckError):
        mod.clip_grad(jnp.ones((2, 2)))  # the check sits inside the custom_vjp
    assert hasattr(mod.jitted, "lower") and mod.jitted(jnp.ones(2)).tolist() == [3.0, 3.0]
    with pytest.raises(TypeCheckError):
        mod.jitted(jnp.ones((2, 2)))  # checked while tracing
    assert mod.cached.cache_info().hits == 0 and mod.cached(2) is mod.cached(2)
    assert mod.unchecked(jnp.ones(3)).shape == (3, 1)
    assert not hasattr(mod.unchecked, "__wrapped__")


def test_checks_run_once_per_trace_not_per_compiled_call(load) -> None:
    mod = load("chk_trace", HEADER + """
calls = []

def body(x: Float[Array, "n"]) -> Float[Array, "n"]:
    calls.append(1)  # runs only while tracing
    return x + 1

step = jax.jit(body)
""")
    for _ in range(5):
        mod.step(jnp.ones(4))
    assert len(mod.calls) == 1


def test_an_annotation_the_checker_cannot_handle_warns_once_and_runs(load) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = load("chk_proto", HEADER + """
from typing import Protocol

class HasShape(Protocol):  # not runtime-checkable: beartype refuses it
    shape: tuple

def f(x: Float[Array, "n"], other: HasShape) -> Float[Array, "n"]:
    return x
""")
        assert mod.f(jnp.ones(2), jnp.ones(3)).shape == (2,)
        assert mod.f(jnp.ones((2, 2)), None).shape == (2, 2)  # unchecked, as warned
    ours = [w for w in caught if issubclass(w.category, RaxWarning)]
    assert len(ours) == 1
    assert "f runs unchecked" in str(ours[0].message)
    assert ours[0].filename.endswith("chk_proto.py") and ours[0].lineno == 10


def test_checks_off_and_opt_out_marker(load, tmp_path: Path, cache_dir: Path) -> None:
    source = HEADER + "\ndef f(x: Float[Array, 'n']) -> Float[Array, 'n']:\n    return x\n"
    opted = load("chk_optout", '"""Helpers.  RAX_DONT_REWRITE"""\n' + source)
    assert not hasattr(opted.f, "__wrapped__")
    commented = load("chk_optout2", "# RAX_DONT_REWRITE: generated code\n" + source)
    assert not hasattr(commented.f, "__wrapped__")
    checked = load("chk_optin", source)
    assert hasattr(checked.f, "__wrapped__")


def test_user_frames_warnings_and_getsource_point_at_the_original_lines(load) -> None:
    mod = load("chk_fidelity", HEADER + """
import warnings

def noisy(x: Float[Array, "n"]) -> Float[Array, "n"]:
    warnings.warn("careful")
    return x

def boom(x: Float[Array, "n"]) -> Float[Array, "n"]:
    raise ValueError("boom")
""")
    with pytest.warns(UserWarning, match="careful") as record:
        mod.noisy(jnp.ones(1))
    assert record[0].filename == mod.__file__ and record[0].lineno == 8
    with pytest.raises(ValueError) as info:
        mod.boom(jnp.ones(1))
    last = info.traceback[-1]
    assert str(last.path) == mod.__file__ and last.lineno + 1 == 12
    assert inspect.getsource(mod.noisy).startswith("def noisy(x: Float[Array, \"n\"])")
    assert inspect.getsourcelines(mod.boom)[1] == 11


def test_import_is_lazy_checker_is_built_on_first_call(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "lazy_mod.py", """
import numpy as np
from jaxtyping import Float
def f(x: Float[np.ndarray, "n"]) -> Float[np.ndarray, "n"]:
    return x
""")
    write(tmp_path / "main.py", """
import sys
import lazy_mod
print("before", "beartype" in sys.modules)
lazy_mod.f(lazy_mod.np.ones(2))
print("after", "beartype" in sys.modules)
""")
    result = run_python("-m", "raximport", "main.py", cwd=tmp_path)
    assert result.stdout.split() == ["before", "False", "after", "True"], result.stderr


def test_a_callable_parameter_is_checked_and_warns_nothing_under_warnings_as_errors(run_python, tmp_path: Path) -> None:
    """equinox's MultiheadAttention: a `None | Callable[[...], ...]` parameter beside array ones. The
    numpy widening must leave the Callable alone, and beartype's deprecation note on typing.Callable
    (there only because raximport checks) must not fail a run with -W error, as equinox's suite runs."""
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "main.py", """
        from typing import Callable
        import numpy as np
        from jaxtyping import Array, Float

        Heads = Callable[[Float[Array, "a"]], Float[Array, "a"]]

        def attend(x: Float[Array, "n"], heads: None | Heads = None) -> Float[Array, "n"]:
            return x

        print(attend(np.ones(3)).shape)
        attend(np.ones((3, 2)))
    """)
    result = run_python("-W", "error", "-m", "raximport", "main.py", cwd=tmp_path, env={"RAX_XLA_CACHE": "0"})
    assert result.stdout == "(3,)\n", result.stderr
    assert result.returncode == 1 and "TypeCheckError" in result.stderr and "RaxWarning" not in result.stderr
