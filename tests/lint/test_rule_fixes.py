"""The fixes of the JAX rules do what they promise when the code runs: RAX304's safe fix turns item
assignments that raise into functional updates with the values the author meant, and RAX203's
unsafe fix makes a typed key that draws the same numbers as the legacy one did."""

from __future__ import annotations

import numpy as np
import pytest

from raximport.lint import engine

UPDATES = """import jax.numpy as jnp

def build():
    x = jnp.zeros(4)
    x[0] = 1.0
    x[1] += 2.0
    x[2:] -= 3.0
    m = jnp.ones((2, 3))
    m[:, 0] = 7.0
    return x, m
"""


def _fixed(text: str, code: str, *, unsafe: bool = False) -> str:
    fixed, findings, applied, errors = engine.lint_text("x.py", text, frozenset({code}), frozenset(), fix=True, unsafe=unsafe)
    assert not errors and applied and not findings
    assert fixed is not None
    return fixed


def _run(text: str, name: str) -> object:
    namespace: dict[str, object] = {}
    exec(compile(text, "x.py", "exec"), namespace)
    return namespace[name]()  # type: ignore[operator]


def test_item_assignment_fix_computes_what_the_assignments_meant() -> None:
    with pytest.raises(TypeError):
        _run(UPDATES, "build")  # JAX arrays are immutable: the original cannot run
    x, m = _run(_fixed(UPDATES, "RAX304"), "build")
    np.testing.assert_allclose(x, [1.0, 2.0, -3.0, -3.0])
    np.testing.assert_allclose(m, [[7.0, 1.0, 1.0], [7.0, 1.0, 1.0]])


def test_legacy_key_fix_draws_from_a_typed_key() -> None:
    legacy = "import jax\n\ndef draw():\n    return jax.random.normal(jax.random.PRNGKey(0), (3,))\n"
    assert "jax.random.key(0)" in _fixed(legacy, "RAX203", unsafe=True)
    typed = _run(_fixed(legacy, "RAX203", unsafe=True), "draw")
    np.testing.assert_array_equal(typed, _run(legacy, "draw"))  # the default PRNG: the same numbers
