"""Flax NNX's `nnx.jit` and Equinox's `eqx.filter_jit` in instrumented code: the library's own
object, watched like jax.jit (memory check with the batch size that fits, recompilation reports)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from raximport.config import Config
from raximport.jit import library_jit
from raximport.rewrite import LIBRARY_JIT, rewrite_tree
from tests.helpers import write
from tests.test_memory import limit_with_room


def rewritten(source: str) -> str:
    tree = ast.parse(source)
    rewrite_tree(tree, source)
    return ast.unparse(tree)


def test_library_jits_are_redirected_in_every_spelling() -> None:
    source = """
import equinox as eqx
import flax.nnx as nnx2
from flax import nnx
from functools import partial
from equinox import filter_jit as fj

@eqx.filter_jit
def a(x): return x

@eqx.filter_jit(donate="all")
def b(x): return x

@nnx.jit
def c(m): return m

d = partial(nnx2.jit, static_argnums=1)
"""
    text = rewritten(source)
    assert f"@{LIBRARY_JIT}(eqx.filter_jit)\ndef a" in text
    assert f"@{LIBRARY_JIT}(eqx.filter_jit)(donate='all')\ndef b" in text
    assert f"@{LIBRARY_JIT}(nnx.jit)\ndef c" in text
    assert f"partial({LIBRARY_JIT}(nnx2.jit), static_argnums=1)" in text
    assert f"fj = {LIBRARY_JIT}(fj)" in text


def test_other_modules_named_like_the_libraries_are_left_alone() -> None:
    text = rewritten("import mylib as nnx\nimport jax\n\n@nnx.jit\ndef c(m): return m\n")
    assert LIBRARY_JIT not in text


def test_the_library_object_comes_back_and_modules_pass_through() -> None:
    import equinox as eqx
    import jax.numpy as jnp
    from flax import nnx

    config = Config()

    def f(x):
        return x * 2

    jitted = library_jit(eqx.filter_jit, config=config)(f)
    assert type(jitted) is type(eqx.filter_jit(f))
    assert float(jitted(jnp.ones(()))) == 2.0
    assert type(library_jit(nnx.jit, config=config)(f)) is nnx.transforms.compilation.JitWrapped
    scaled = library_jit(nnx.jit, config=config)(static_argnums=1)(lambda x, k: x * k)
    assert type(scaled) is nnx.transforms.compilation.JitWrapped and float(scaled(jnp.ones(()), 3)) == 3.0
    mlp = eqx.nn.MLP(2, 1, 4, 1, key=__import__("jax").random.key(0))  # a callable whose arrays equinox traces
    assert library_jit(eqx.filter_jit, config=config)(mlp)(jnp.ones(2)).shape == (1,)


EQX_STEP = """
import sys
import equinox as eqx
import jax, jax.numpy as jnp, optax

class MLP(eqx.Module):
    layers: list

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(32, 4096, key=k1), jax.nn.relu, eqx.nn.Linear(4096, 1, key=k2)]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

@eqx.filter_jit
def step(model, opt_state, x, y):
    def loss_fn(model):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
    updates, opt_state = optim.update(grads, opt_state, model)
    return eqx.apply_updates(model, updates), opt_state, loss

model = MLP(jax.random.key(0))
optim = optax.adam(1e-3)
opt_state = optim.init(eqx.filter(model, eqx.is_array))
n = int(sys.argv[1])
x, y = jnp.ones((n, 32)), jnp.ones((n, 1))
try:
    model, opt_state, loss = step(model, opt_state, x, y)
except MemoryError as exc:
    print("suggested", exc.suggested_batch_size)
    raise
print("ran", float(loss))
"""

NNX_STEP = """
import sys
import jax, jax.numpy as jnp, optax
from flax import nnx

class MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(32, 4096, rngs=rngs)
        self.l2 = nnx.Linear(4096, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.relu(self.l1(x)))

@nnx.jit
def step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

model = MLP(nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
n = int(sys.argv[1])
x, y = jnp.ones((n, 32)), jnp.ones((n, 1))
try:
    loss = step(model, optimizer, x, y)
except MemoryError as exc:
    print("suggested", exc.suggested_batch_size)
    raise
print("ran", float(loss))
"""


@pytest.mark.slow
@pytest.mark.parametrize("source", [EQX_STEP, NNX_STEP], ids=["equinox", "nnx"])
def test_an_oversized_step_is_refused_and_the_suggested_batch_runs(run_python, tmp_path: Path, source: str) -> None:
    limit = limit_with_room(run_python, tmp_path, source, "step")
    refused = run_python("-m", "raximport", "--memory-limit", limit, "step.py", "8192", cwd=tmp_path)
    assert refused.returncode == 1 and "ran" not in refused.stdout, refused.stderr
    assert "step would run out of memory: refused before running it" in refused.stderr
    assert "batch axis: axis 0 of x, y (size 8192)" in refused.stderr
    suggested = int(re.search(r"suggested (\d+)", refused.stdout).group(1))
    assert 64 < suggested < 8192
    assert f"batch_size 8192 -> {suggested} fits" in refused.stderr  # a training step, never "evaluate in batches"
    fits = run_python("-m", "raximport", "--memory-limit", limit, "step.py", str(suggested), cwd=tmp_path)
    assert fits.returncode == 0 and "ran" in fits.stdout, fits.stderr


REBUILT = {
    "equinox": ("""
import equinox as eqx
import jax, jax.numpy as jnp, optax

@eqx.filter_jit
def step(model, optim, opt_state, x):
    loss, grads = eqx.filter_value_and_grad(lambda m: jnp.mean(jax.vmap(m)(x) ** 2))(model)
    updates, opt_state = optim.update(grads, opt_state, model)
    return eqx.apply_updates(model, updates), opt_state, loss

model = eqx.nn.MLP(4, 1, 16, 2, key=jax.random.key(0))
opt_state = optax.sgd(1e-2).init(eqx.filter(model, eqx.is_array))
for i in range(6):
    model, opt_state, loss = step(model, optax.sgd(1e-2), opt_state, jnp.ones((8, 4)))
print("ran", float(loss))
""", "static argument 'optim' is a new GradientTransformationExtraArgs object on each call", "build 'optim' once"),
    "nnx": ("""
import jax, jax.numpy as jnp, optax
from flax import nnx

@nnx.jit
def step(model, optimizer, x):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
    optimizer.update(model, grads)
    return loss

model = nnx.Linear(4, 1, rngs=nnx.Rngs(0))
for i in range(6):
    optimizer = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)
    loss = step(model, optimizer, jnp.ones((8, 4)))
print("ran", float(loss))
""", "static part 'optimizer.tx' of argument 'optimizer' is a new GradientTransformationExtraArgs object on each call",
        "build 'optimizer.tx' once"),
}


@pytest.mark.parametrize("library", REBUILT)
def test_an_optimizer_rebuilt_in_the_loop_is_reported(run_python, tmp_path: Path, library: str) -> None:
    source, what, fix = REBUILT[library]
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "train.py", source)
    result = run_python("-m", "raximport", "train.py", cwd=tmp_path)
    assert result.returncode == 0 and "ran" in result.stdout, result.stderr
    assert "step has been compiled 5 times" in result.stderr
    assert "train.py:" in result.stderr and what in result.stderr and fix in result.stderr
    assert result.stderr.count("has been compiled") == 1  # once, not on every later compile


@pytest.mark.parametrize("source", [EQX_STEP, NNX_STEP], ids=["equinox", "nnx"])
def test_a_healthy_library_step_runs_the_same_under_the_nan_guard_with_one_compile(run_python, tmp_path: Path,
                                                                                   source: str) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "step.py", source)
    plain = run_python("step.py", "64", cwd=tmp_path)
    guarded = run_python("-m", "raximport", "--nan-guard", "step.py", "64", cwd=tmp_path,
                         env={"JAX_LOG_COMPILES": "1", "RAX_XLA_CACHE": "0"})
    assert plain.returncode == guarded.returncode == 0, guarded.stderr
    assert guarded.stdout == plain.stdout and "ran" in plain.stdout
    assert guarded.stderr.count("Compiling jit(step)") == 1


def test_an_unchanged_nnx_step_compiles_once_and_says_nothing(run_python, tmp_path: Path) -> None:
    source = REBUILT["nnx"][0].replace("for i in range(6):\n    optimizer", "optimizer").replace(
        "    loss = step", "for i in range(6):\n    loss = step")
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "train.py", source)
    result = run_python("-m", "raximport", "train.py", cwd=tmp_path, env={"JAX_LOG_COMPILES": "1"})
    assert result.returncode == 0 and "ran" in result.stdout, result.stderr
    assert "has been compiled" not in result.stderr
    assert result.stderr.count("Compiling jit(step)") <= 1  # one compile (none on a persistent-cache hit)


def test_a_shape_mismatch_under_nnx_jit_names_the_parameter_and_dimension(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "train.py", """
        import jax.numpy as jnp
        from flax import nnx
        from jaxtyping import Array, Float

        class Head(nnx.Module):
            def __init__(self, rngs):
                self.linear = nnx.Linear(4, 1, rngs=rngs)

            def __call__(self, x: Float[Array, "batch 4"], y: Float[Array, "batch 1"]) -> Float[Array, ""]:
                return jnp.mean((self.linear(x) - y) ** 2)

        @nnx.jit
        def loss(model, x, y):
            return model(x, y)

        print(loss(Head(nnx.Rngs(0)), jnp.ones((8, 4)), jnp.ones((7, 1))))
    """)
    result = run_python("-m", "raximport", "train.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "'y'" in result.stderr and "batch=8" in result.stderr and "7" in result.stderr, result.stderr
    assert "train.py:" in result.stderr
