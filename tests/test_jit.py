"""raximport's jit: every jax.jit in user modules goes through it; auto-jit; fallback; recompilation watch."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import sys
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import raximport
from raximport.jit import DYNAMIC, SPLIT, STATIC, UNSUPPORTED, classify
from tests.helpers import write



def is_watched(jitted) -> bool:
    """raximport.jit returns JAX's own object around raximport's trace watch."""
    return type(jitted).__name__ == "PjitFunction" and jitted.__wrapped__.__code__.co_filename.endswith("raximport/jit.py")


def test_every_spelling_of_jax_jit_is_routed_and_jax_itself_is_untouched(load) -> None:
    mod = load("jit_forms", """
import functools
import jax
import jax as jx
import jax.numpy as jnp
from jax import jit, jit as J
from functools import partial

@jax.jit
def a(x):
    return x + 1

def _b(x, n):
    return jnp.zeros(n) + x.sum()
b = jax.jit(_b, static_argnums=1)

@partial(jax.jit, static_argnames=("n",))
def c(x, n):
    return jnp.tile(x, n)

@jit
def d(x):
    return x * 2

e = J(lambda x: x - 1)
f = jx.jit(lambda x: x / 2)
g = functools.partial(jax.jit, donate_argnums=0)(lambda x: x * 3)
""")
    for name in "abcdefg":
        assert is_watched(getattr(mod, name)), name
    x = jnp.ones(2)
    assert mod.b(x, 3).shape == (3,) and mod.c(x, n=2).shape == (4,)
    assert mod.a.lower(x).compile() is not None and mod.a.eval_shape(x).shape == (2,)
    assert mod.a.trace(x).jaxpr is not None
    donated = jnp.ones(4)
    mod.g(donated)
    assert donated.is_deleted()  # the user's donate_argnums is honoured
    assert jax.jit.__module__.startswith("jax") and not is_watched(jax.jit(lambda x: x))


def test_jit_options_off_leave_jax_jit_alone(tmp_path: Path, cache_dir: Path) -> None:
    write(tmp_path / "jit_off.py", "import jax\nf = jax.jit(lambda x: x)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with raximport.install(project_root=tmp_path, cache_dir=cache_dir, jit=False):
            mod = importlib.import_module("jit_off")
        assert not is_watched(mod.f)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("jit_off", None)


class Color(enum.Enum):
    RED = 1


class Sizes(NamedTuple):
    width: int
    scale: float


@dataclasses.dataclass(frozen=True)
class Cfg:
    n: int = 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class State:
    w: jax.Array


@pytest.mark.parametrize(
    "value, kind",
    [
        (jnp.ones(2), DYNAMIC), (np.ones(2), DYNAMIC), (1.5, DYNAMIC), (np.float32(1), DYNAMIC),
        ({"w": jnp.ones(1)}, DYNAMIC), ([jnp.ones(1)], DYNAMIC), (State(jnp.ones(1)), DYNAMIC),
        (3, STATIC), (True, STATIC), ("gelu", STATIC), (Color.RED, STATIC), (jnp.float32, STATIC),
        (np.dtype("float32"), STATIC), (None, STATIC), (Cfg(), STATIC), (Sizes(2, 0.5), STATIC), ((4, 8), STATIC),
        (optax.adamw(1e-3), STATIC), (jnp.tanh, STATIC), (jax.jit(lambda x: x), STATIC),
        (np.random.default_rng(0), UNSUPPORTED),
        # pytrees holding leaves jit cannot trace: their arrays and numbers traced, the rest static
        (eqx.nn.MLP(2, 1, 4, 1, key=jax.random.PRNGKey(0)), SPLIT), ((jnp.ones(1), "relu"), SPLIT),
        ({"scale": 2.0, "name": "relu"}, SPLIT), (eqx.nn.Dropout(0.5), DYNAMIC), ((jnp.ones(1), 3), DYNAMIC),
        ({"rng": np.random.default_rng(0)}, UNSUPPORTED), ([jnp.ones(1), Cfg], SPLIT),
    ],
)
def test_static_detection(value, kind) -> None:
    assert classify(value) == kind


AUTO = """
import jax, jax.numpy as jnp, numpy as np
from dataclasses import dataclass
from typing import Optional
from jaxtyping import Array, Bool, Float, Int

@dataclass(frozen=True)
class Config:
    scale: int = 3

def forward(x: Float[Array, "n"], config: Config, act=jnp.tanh) -> Float[Array, "n"]:
    return act(x) * config.scale

def outer(x: Float[Array, "n"]) -> Float[Array, "n"]:
    return forward(x, Config()) + 1

def printing(x: Float[Array, "n"]) -> Float[Array, "n"]:
    print("side effect")
    return x

counts = {}
def writes_global(x: Float[Array, "n"]) -> Float[Array, "n"]:
    counts["n"] = 1
    return x

def mutates_argument(x: Float[Array, "n"], log: list) -> Float[Array, "n"]:
    log.append(1)
    return x

def returns_python(x: Float[Array, "n"]) -> float:
    return 1.0

def equal(x: Float[Array, "n"], y: Float[Array, "n"]) -> Bool[Array, ""] | bool:  # eqx.tree_equal's shape
    return bool((x == y).all()) if isinstance(x, np.ndarray) else (x == y).all()

def maybe(x: Float[Array, "n"]) -> Optional[Float[Array, "n"]]:
    return x

def branchy(x: Float[Array, "n"]) -> Float[Array, "n"]:
    if x.sum() > 0:
        return x
    return -x

def to_int(x: Float[Array, "n"]) -> Float[Array, "n"]:
    return x * int(x.sum())

@dataclass
class Mutable:
    k: int = 2

def unhashable(x: Float[Array, "n"], m: Mutable) -> Float[Array, "n"]:
    return x * m.k

def step(params: Float[Array, "n"], optimizer) -> Float[Array, "n"]:
    grads = jax.grad(lambda p: (p ** 2).sum())(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return params + updates
"""


def test_auto_jit_picks_pure_entry_points_only(load) -> None:
    """Not `equal` or `maybe`: a return annotation that admits a Python value (bool, None) would
    come back as an array from jit (eqx.tree_equal's `Bool[Array, ""] | bool`)."""
    mod = load("auto_pick", AUTO)
    auto = {name for name in dir(mod) if getattr(getattr(mod, name), "__rax_autojit__", False)}
    assert auto == {"forward", "outer", "branchy", "to_int", "unhashable", "step"}
    assert mod.equal(np.ones(2), np.ones(2)) is True


def test_auto_jit_results_equal_plain_python_including_fallbacks(load, capsys) -> None:
    mod = load("auto_same", AUTO)
    x = jnp.array([1.0, -2.0, 0.5])
    plain = {
        "forward": jnp.tanh(x) * 3,
        "outer": jnp.tanh(x) * 3 + 1,
        "branchy": -x,
        "to_int": x * -0.0,
        "unhashable": x * 2,
    }
    got = {
        "forward": mod.forward(x, mod.Config()),
        "outer": mod.outer(x),
        "branchy": mod.branchy(x),
        "to_int": mod.to_int(x),
        "unhashable": mod.unhashable(x, mod.Mutable()),
    }
    for name in plain:
        np.testing.assert_allclose(got[name], plain[name], rtol=1e-6, err_msg=name)
    assert mod.branchy(-x).tolist() == (-x).tolist()  # still correct after falling back
    err = capsys.readouterr().err
    for name, error in (("branchy", "TracerBoolConversionError"), ("to_int", "ConcretizationTypeError"), ("unhashable", "ValueError")):
        assert f"{name} runs without jit: it cannot be traced ({error})" in err
    assert err.count("runs without jit") == 3  # one report per function, not per call
    # the fix for each cause
    assert "it branches in Python (`if`, `while`, `and`, bool()) on an array: use jnp.where or lax.cond" in err
    assert "it makes a Python number or a shape from an array (int(), .item(), range(), jnp.zeros(n))" in err
    assert ("argument 'm' is held static (jit compiles its value in), so it must be hashable, and a Mutable is not: "
            "make it a frozen dataclass") in err
    assert "jnp.where" not in err.split("unhashable runs without jit")[1]


def test_the_fallback_fix_names_the_leaf_that_is_not_an_array() -> None:
    from raximport.jit import fallback_report

    def takes(d):
        return 0

    with pytest.raises(TypeError) as caught:
        jax.jit(takes)({"w": jnp.ones(1), "act": print})
    fix = fallback_report(takes, caught.value, [("d", {"w": jnp.ones(1), "act": print})]).fix
    assert "argument leaf d['act'] is a builtin_function_or_method, not an array, and jit traces arrays" in fix


def test_auto_jit_compiles_from_python_and_inlines_inside_traces(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "model.py", AUTO)
    write(tmp_path / "main.py", """
import jax, jax.numpy as jnp, optax
import model
x = jnp.ones(3)
for _ in range(3):
    model.outer(x)
model.forward(x, model.Config())
jax.jit(model.outer)(x)
model.step(x, optax.sgd(0.1))
""")
    result = run_python("-m", "raximport", "--verbose", "main.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    decisions = [line for line in result.stderr.splitlines() if line.startswith("raximport: jit ")]
    assert decisions == [
        "raximport: jit outer: static=()",
        "raximport: jit forward: static=('config',)",
        "raximport: jit step: static=('optimizer',)",
    ]


def test_a_genuine_shape_error_is_not_swallowed_by_the_fallback(load) -> None:
    from jaxtyping import TypeCheckError

    mod = load("auto_shape", AUTO)
    with pytest.raises(TypeCheckError):
        mod.forward(jnp.ones((2, 2)), mod.Config())


def test_an_array_annotation_given_something_else_fails_its_check_without_a_report(load, capsys) -> None:
    """`x: Float[Array, "n"]` makes a number traced, not a string: jit fails on that with a report
    about raximport's own choice; plain Python's check names the mistake."""
    from jaxtyping import TypeCheckError

    mod = load("auto_not_array", AUTO)
    with pytest.raises(TypeCheckError):
        mod.forward("abc", mod.Config())
    assert "runs without jit" not in capsys.readouterr().err


RECOMPILE = """
import jax, jax.numpy as jnp, optax, sys

@jax.jit
def train_step(params, opt_state, optimizer):
    grads = jax.grad(lambda p: (p ** 2).sum())(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

train_step = jax.jit(train_step.__wrapped__.__wrapped__, static_argnames="optimizer")
params = jnp.ones(3)
stable = optax.adamw(1e-3)
state = stable.init(params)
fresh = sys.argv[1] == "fresh"
for _ in range(12):
    optimizer = optax.adamw(1e-3) if fresh else stable
    params, state = train_step(params, state, optimizer=optimizer)
print("done")
"""


@pytest.mark.parametrize("mode", ["stable", "fresh"])
def test_recompilation_watch(run_python, tmp_path: Path, mode: str) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "loop.py", RECOMPILE)
    result = run_python("-m", "raximport", "loop.py", mode, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr
    if mode == "stable":
        assert "compiled" not in result.stderr
    else:
        assert result.stderr.count("train_step has been compiled 5 times") == 1
        assert "static argument 'optimizer' is a new GradientTransformationExtraArgs object on each call" in result.stderr
        assert "build 'optimizer' once, outside the loop" in result.stderr
        assert f"at {tmp_path / 'loop.py'}:16" in result.stderr  # the user's call site


VARARGS = """
import jax.numpy as jnp
from jaxtyping import Array, Float

def blend(x: Float[Array, "n"], /, *others: Float[Array, "n"], flip: bool = False, **scales: float) -> Float[Array, "n"]:
    out = x * scales.get("x", 1.0) * scales.get("y", 1.0)
    for other in others:
        out = out + other
    return -out if flip else out
"""


def test_arguments_bind_as_python_binds_them(run_python, tmp_path: Path) -> None:
    """After `*args`, a flag is keyword-only: the second array is not taken for it (it was made static,
    and unhashable); `y=` goes to `**scales` and keeps its `float`
    (it was traced, and failed that check); `x=` too, and runs as plain Python (jit cannot hold a
    keyword named like a positional-only parameter static)."""
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "varargs.py", VARARGS)
    write(tmp_path / "main.py", """
import equinox as eqx, jax.numpy as jnp
import varargs
a, b = jnp.arange(3.0), jnp.ones(3)
print(varargs.blend(a, b, b).tolist(), varargs.blend(a, b, flip=True, y=2.0).tolist(), varargs.blend(a, x=3.0).tolist())
print(bool(eqx.tree_equal(a, a, a)), bool(eqx.tree_equal(a, a, b)), bool(eqx.tree_equal(a, a + 0.01, rtol=0.1)))
print(bool(eqx.tree_equal([a, 1], [a, 1], typematch=True)))
""")
    plain = run_python("main.py", cwd=tmp_path)
    result = run_python("-m", "raximport", "-p", "equinox", "--verbose", "main.py", cwd=tmp_path)
    assert plain.returncode == result.returncode == 0, result.stderr
    assert result.stdout == plain.stdout
    assert "runs without jit" not in result.stderr
    decisions = [line for line in result.stderr.splitlines() if line.startswith("raximport: jit ")]
    assert decisions == [  # not tree_equal: it returns `Bool[Array, ""] | bool`, and jit would make the bool an array
        "raximport: jit blend: static=()",
        "raximport: jit blend: static=('flip', 'y')",
    ]


EQX_MODEL = """
import equinox as eqx
import jax, jax.numpy as jnp
from jaxtyping import Array, Float

class Net(eqx.Module):
    mlp: eqx.nn.MLP
    dropout: eqx.nn.Dropout

def loss(model: eqx.nn.MLP, x: Float[Array, "b 2"], y: Float[Array, "b"]) -> Float[Array, ""]:
    return jnp.mean((jax.vmap(model)(x)[:, 0] - y) ** 2)

def predict(net: Net, x: Float[Array, "b 2"], key: Array) -> Float[Array, "b"]:
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda row, k: net.dropout(net.mlp(row), key=k))(x, keys)[:, 0]

def jittered(x: Float[Array, "n"], noise: dict) -> Float[Array, "n"]:
    return x + noise["rng"].normal()

def step(model: eqx.nn.MLP, x: Float[Array, "b 2"], y: Float[Array, "b"]) -> tuple[Float[Array, ""], eqx.nn.MLP]:
    value, grads = eqx.filter_value_and_grad(loss)(model, x, y)
    return value, eqx.apply_updates(model, jax.tree_util.tree_map(lambda g: -0.1 * g, grads))

def labelled(x: Float[Array, "n"]) -> tuple[Float[Array, "n"], str]:
    return 2 * x, "doubled"
"""

EQX_MAIN = """
import equinox as eqx, jax, jax.numpy as jnp, numpy as np
import model
mlp = eqx.nn.MLP(2, 1, 16, 2, key=jax.random.PRNGKey(0))  # holds its activation, jax.nn.relu
x = jax.random.normal(jax.random.PRNGKey(1), (8, 2))
y = x.sum(axis=1)
for _ in range(2):
    value, mlp = model.step(mlp, x, y)  # returns the module: its activation too
    print(f"{value:.5f} {model.loss(mlp, x, y):.5f}")  # jit's sums may round the last bit otherwise
print(mlp.activation is jax.nn.relu, [model.labelled(jnp.ones(2))[1] for _ in range(2)])
net = model.Net(mlp, eqx.nn.Dropout(0.5))
print(model.predict(net, x, jax.random.PRNGKey(2)).tolist())
print(model.predict(eqx.nn.inference_mode(net), x, jax.random.PRNGKey(2)).tolist())
rng = np.random.default_rng(0)
print([model.jittered(jnp.zeros(2), {"rng": rng}).tolist() for _ in range(2)])
"""


def test_equinox_modules_holding_functions_are_jitted_with_their_other_leaves_static(run_python, tmp_path: Path) -> None:
    """An eqx.nn.MLP holds jax.nn.relu: its arrays are traced, the rest static (equinox's rule), where
    jit failed on it and every run printed a fallback report; a step returns the module, and a
    result may hold a string: results are cut the same way. Dropout's `inference` flag is traced
    first (as jax.jit would), then static; a Generator in a dict runs as plain Python, said once
    under --verbose. Results are plain Python's, and a run prints nothing of its own."""
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "model.py", EQX_MODEL)
    write(tmp_path / "main.py", EQX_MAIN)
    plain = run_python("main.py", cwd=tmp_path)
    result = run_python("-m", "raximport", "main.py", cwd=tmp_path)
    assert plain.returncode == result.returncode == 0, result.stderr
    assert result.stdout == plain.stdout
    assert result.stderr == plain.stderr
    verbose = run_python("-m", "raximport", "--verbose", "main.py", cwd=tmp_path)
    assert verbose.returncode == 0 and verbose.stdout == plain.stdout, verbose.stderr
    lines = verbose.stderr.splitlines()
    assert "raximport: jit loss: static=(), static leaves in ('model',)" in lines
    assert "raximport: jit step: static=(), static leaves in ('model',)" in lines
    assert "raximport: labelled returns a str at [1], which is not an array: its results are cut from now on" in lines
    assert "raximport: predict: the Python numbers in net are static from now on (tracing them failed)" in lines
    assert lines.count("raximport: jittered runs as plain Python: argument 'noise' holds a Generator at ['rng'], "
                       "which jit can neither trace nor hold static") == 1
    assert "runs without jit" not in verbose.stderr


def test_auto_jit_off(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "model.py", AUTO)
    write(tmp_path / "main.py", "import model\nprint(getattr(model.forward, '__rax_autojit__', False))\n")
    assert run_python("-m", "raximport", "main.py", cwd=tmp_path).stdout.strip() == "True"
    assert run_python("-m", "raximport", "main.py", cwd=tmp_path, env={"RAX_AUTOJIT": "0"}).stdout.strip() == "False"


COUNTERS = """
import jax.numpy as jnp
from jaxtyping import Array, Float

def schedule(it, peak: Float[Array, ""]) -> Float[Array, ""]:
    return peak * 0.5 ** it

def pinned(it: int, peak: Float[Array, ""]) -> Float[Array, ""]:
    return peak * 0.5 ** it

def zeros_plus(x: Float[Array, ""], n) -> Float[Array, "m"]:
    return jnp.zeros(n) + x

def scaled(x: Float[Array, "n"], cfg: dict) -> Float[Array, "n"]:
    return x * cfg["scale"]
"""


def test_a_step_counter_stops_recompiling_and_a_shape_int_stays_static(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "counters.py", COUNTERS)
    write(tmp_path / "main.py", """
import jax.numpy as jnp
import counters
peak = jnp.float32(8.0)
print([float(counters.schedule(it, peak)) for it in range(10)])
print([float(counters.pinned(it, peak)) for it in range(10)])
print([counters.zeros_plus(jnp.float32(1.0), n).shape[0] for n in range(1, 9)])
print(counters.scaled(jnp.ones(2), {"scale": 2.0, "name": "a config with strings"}).tolist())
""")
    result = run_python("-m", "raximport", "--verbose", "main.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schedule, pinned, shapes, scaled = result.stdout.splitlines()
    assert eval(schedule) == eval(pinned) == [8.0 * 0.5**it for it in range(10)]
    assert eval(shapes) == list(range(1, 9))
    assert eval(scaled) == [2.0, 2.0]  # a dict holding strings: they are static, its numbers traced
    assert "schedule: it changes on every call: traced from now on" in result.stderr
    assert "'n' changes on every call and sets a shape" in result.stderr
    assert "pinned has been compiled 5 times" in result.stderr  # annotated `int`: it stays a Python int
    assert "runs without jit" not in result.stderr


def test_a_counter_beside_a_config_held_static_stops_recompiling(load, capfd: pytest.CaptureFixture[str]) -> None:
    """gpt's `get_lr(it, cfg)`: the config's numbers are held static (it steers Python's `max`), so
    the cut config holds no traced leaf; the counter must still be traced after a few compiles, and
    the config is no 'new object on each call' (jit sees the same static settings)."""
    mod = load("auto_lr", """
import jax.numpy as jnp
from jaxtyping import Array, Float

def lr(it: int | Array, cfg: dict) -> Float[Array, ""]:
    return cfg["peak"] * jnp.asarray(it, jnp.float32) / max(cfg["warmup"], 1)
""")
    cfg = {"peak": 1.0, "warmup": 10, "schedule": "linear"}
    assert [float(mod.lr(it, cfg)) for it in range(20)] == pytest.approx([it / 10 for it in range(20)])
    err = capfd.readouterr().err
    assert "has been compiled" not in err and "_Cut" not in err, err


def test_same_types_other_contents_are_decided_again(load) -> None:
    mod = load("auto_contents", """
import jax.numpy as jnp
from jaxtyping import Array, Float

def scaled(x: Float[Array, "n"], factors) -> Float[Array, "n"]:
    return x * jnp.asarray(factors).sum()
""")
    x = jnp.ones(2)
    assert mod.scaled(x, (1, 2)).tolist() == [3.0, 3.0]  # a tuple of ints: static
    assert mod.scaled(x, (jnp.float32(1), jnp.float32(3))).tolist() == [4.0, 4.0]  # of arrays: traced
    assert mod.scaled(x, (2, 2)).tolist() == [4.0, 4.0]


def test_parameters_annotated_as_python_values_stay_static(load) -> None:
    mod = load("auto_pyvalues", """
import jax.numpy as jnp
from jaxtyping import Array, Float

def sharpen(logits: Float[Array, "n"], temperature: float, top_k: int | None = None) -> Float[Array, "n"]:
    return logits / temperature
""")
    assert mod.sharpen(jnp.ones(2), 0.5).tolist() == [2.0, 2.0]  # a traced float would fail `float`
    assert mod.sharpen(jnp.ones(2), 0.25, top_k=None).tolist() == [4.0, 4.0]


@pytest.fixture
def jax_internals_without_private_api(monkeypatch: pytest.MonkeyPatch):
    """raximport.jax_internals as it resolves when `jax._src.core` has moved (checks resolved afresh)."""
    import jax.extend.core  # before the patch: it imports jax._src.core itself

    from raximport import jax_internals

    checks = (jax_internals.trace_state_clean_check, jax_internals._top_level_check)
    monkeypatch.setitem(sys.modules, "jax._src.core", None)  # `from jax._src.core import ...` now fails
    for check in checks:
        check.cache_clear()
    yield jax_internals
    for check in checks:
        check.cache_clear()


def test_private_jax_checks_have_public_fallbacks_that_agree(jax_internals_without_private_api) -> None:
    shim = jax_internals_without_private_api
    clean, top_level = shim.trace_state_clean_check(), shim._top_level_check()
    assert clean.__module__ == top_level.__module__ == "raximport.jax_internals"  # the fallbacks
    seen: dict[str, tuple[bool, bool]] = {}

    def probe(where: str):
        def f(x):
            seen[where] = (clean(), top_level())
            private = jax._src.core
            top = isinstance(getattr(private.trace_ctx.trace, "parent_trace", None), private.EvalTrace)
            assert seen[where] == (private.trace_state_clean(), top), where
            return x * 2.0
        return f

    assert clean()
    jax.jit(probe("jit"))(1.0)
    jax.jit(lambda x: jax.jit(probe("nested jit"))(x))(1.0)
    jax.grad(probe("grad"))(1.0)
    jax.vmap(probe("vmap"))(jnp.ones(2))
    assert seen == {"jit": (False, True), "nested jit": (False, False), "grad": (False, True),
                    "vmap": (False, True)}


def test_without_private_or_public_trace_api_auto_jit_and_memory_check_step_aside(
        jax_internals_without_private_api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jax.extend.core", None)
    shim = jax_internals_without_private_api
    with pytest.warns(raximport.RaxWarning, match="auto-jit is off"):
        clean = shim.trace_state_clean_check()
    with pytest.warns(raximport.RaxWarning, match="memory check before each new step is off"):
        top_level = shim._top_level_check()
    assert not clean() and not top_level()
