"""`rax annotate`: jaxtyping annotations inferred from a run, written into the source text."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from raximport.annotate import Naming, SourceFile, Site, Slot, annotate, name_dims, split_runs
from raximport.shape_record import OTHER, ArrayInfo, ConfigValue, FunctionRecord, Recorder
from tests.helpers import write

RAX = "import sys; from raximport.cli import main; sys.exit(main())"


def f32(*shape: int) -> ArrayInfo:
    return ArrayInfo("float32", shape, numpy=False)


def i32(*shape: int) -> ArrayInfo:
    return ArrayInfo("int32", shape, numpy=False)


def record(name: str, params: tuple[str, ...], *calls: dict) -> FunctionRecord:
    return FunctionRecord("f.py", 1, name, params, calls=list(calls))


def dims(naming: Naming, rec: FunctionRecord, key: str, rank: int, index: int | None = None) -> list[str]:
    return [naming.dims[Slot(Site(rec, key, index), axis)] for axis in range(rank)]


# ------------------------------------------------------------------------------ naming


def test_batch_config_names_and_literals() -> None:
    """x and y share their leading axis: batch. 16 is the config's block_size, 65 is nobody's."""
    loss = record("loss", ("x", "y"), {"x": f32(8, 16, 65), "y": i32(8, 16), "return": f32()})
    head = record("head", ("h", "keys"), {"h": f32(8, 16, 65), "keys": ArrayInfo("key<fry>", (8,), False),
                                          "return": f32(8, 65)})
    sites = [Site(loss, "x"), Site(loss, "y"), Site(loss, "return"), Site(head, "h"), Site(head, "keys"),
             Site(head, "return")]
    naming = name_dims(sites, [ConfigValue("block_size", 16, given=True), ConfigValue("max_iters", 65, given=True)])
    assert dims(naming, loss, "x", 3) == ["batch", "block_size", "65"]  # max_iters is not a size's name
    assert dims(naming, loss, "y", 2) == ["batch", "block_size"]
    assert dims(naming, head, "h", 3) == ["batch", "block_size", "65"]  # the same size, the same name
    assert dims(naming, loss, "return", 0) == []
    assert dims(naming, head, "keys", 1) == ["8"]  # split keys: no batch


def test_varied_sizes_are_named_and_two_sizes_never_share_a_name() -> None:
    """A sequence axis that took 16 and 1 becomes `seq`; block_size's default (1024, a module global)
    loses to the value the run was given (16), so 1024 stays a literal."""
    embed = record("embed", ("idx",), {"idx": i32(4, 16), "return": f32(4, 16, 1024)},
                   {"idx": i32(4, 1), "return": f32(4, 1, 1024)})
    other = record("other", ("a", "b"), {"a": f32(4, 16), "b": f32(4, 1024)})
    sites = [Site(embed, "idx"), Site(embed, "return"), Site(other, "a"), Site(other, "b")]
    configs = [ConfigValue("block_size", 1024, given=False), ConfigValue("block_size", 16, given=True)]
    naming = name_dims(sites, configs)
    assert dims(naming, embed, "idx", 2) == ["batch", "seq"]
    assert dims(naming, embed, "return", 3) == ["batch", "seq", "1024"]
    assert dims(naming, other, "b", 2) == ["batch", "1024"]
    assert dims(naming, other, "a", 2) == ["batch", "block_size"]


def test_a_name_bound_to_two_sizes_in_one_call_is_demoted() -> None:
    """Leading axes 8 and 4 are both batch sizes somewhere; in one call of `pair` they differ, so
    the second cannot be `batch` too (jaxtyping would reject the very call that was seen)."""
    step = record("step", ("x", "y"), {"x": f32(8, 3), "y": f32(8)}, {"x": f32(4, 3), "y": f32(4)})
    pair = record("pair", ("a", "b"), {"a": f32(8, 3), "b": f32(4, 3)})
    sites = [Site(step, "x"), Site(step, "y"), Site(pair, "a"), Site(pair, "b")]
    naming = name_dims(sites, [])
    assert dims(naming, pair, "a", 2) == ["batch", "3"]
    assert dims(naming, pair, "b", 2) == ["4", "3"]


def test_ambiguous_config_value_stays_literal() -> None:
    f = record("f", ("x",), {"x": f32(2, 7)})
    naming = name_dims([Site(f, "x")], [ConfigValue("n_head", 2, given=True), ConfigValue("n_layer", 2, given=True)])
    assert dims(naming, f, "x", 2) == ["2", "7"]


# ------------------------------------------------------------------------------ the source text


def test_edits_keep_the_formatting_and_merge_the_import(tmp_path: Path) -> None:
    """Annotations go in at their positions (a decorator, a keyword-only default, a comment and a
    multi-line signature kept); `=None` gets `| None`; an annotated parameter and a non-array
    one are left alone; numpy arrays are annotated over the module's own numpy alias."""
    path = write(tmp_path / "m.py", '''
        """Doc."""
        import numpy as np
        from jaxtyping import Float


        @decorated
        def f(x, mask=None, *,
              scale=2.0):  # a comment kept
            return x


        def g(x: "already", y):
            return np.asarray(x)
    ''')
    calls = [{"x": f32(3), "mask": ArrayInfo("bool", (3,), False), "scale": OTHER, "return": f32(3)}]
    f = FunctionRecord(str(path), 6, "f", ("x", "mask", "scale"), calls=calls)
    g = FunctionRecord(str(path), 12, "g", ("x", "y"), calls=[{"x": f32(3), "y": ArrayInfo("int64", (2,), True),
                                                                  "return": ArrayInfo("float32", (3,), True)}])
    result = annotate([f, g], [])
    new = result.changed[str(path)][1]
    assert new == textwrap.dedent('''\
        """Doc."""
        import numpy as np
        from jaxtyping import Array, Bool, Float, Int


        @decorated
        def f(x: Float[Array, "batch"], mask: Bool[Array, "batch"] | None = None, *,
              scale=2.0) -> Float[Array, "batch"]:  # a comment kept
            return x


        def g(x: "already", y: Int[np.ndarray, "2"]) -> Float[np.ndarray, "batch"]:
            return np.asarray(x)
    ''')
    assert SourceFile(str(path)).find_def("f", 6) is not None


def test_recorder_sees_jitted_functions_at_trace_time_and_config_fields(tmp_path: Path) -> None:
    import jax
    import jax.numpy as jnp

    path = write(tmp_path / "user.py", '''
        import dataclasses
        import jax


        @dataclasses.dataclass(frozen=True)
        class Cfg:
            width: int = 5

            @property
            def hidden_size(self):
                return self.width * 2


        def forward(x, cfg):
            return x.sum(axis=1)


        @jax.jit
        def step(x):
            return forward(x, Cfg())
    ''')
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    with Recorder(lambda filename: filename == str(path), max_calls=2) as recorder:
        for _ in range(3):
            namespace["step"](jnp.ones((4, 5)))  # traced once: one call of step and forward
        namespace["forward"](jnp.ones((2, 5)), namespace["Cfg"]())
        namespace["forward"](jnp.ones((3, 5)), namespace["Cfg"]())  # past max_calls: not recorded
    by_name = {r.name: r for r in recorder.records()}
    assert [c["x"] for c in by_name["step"].calls] == [f32(4, 5)]
    assert [c["x"] for c in by_name["forward"].calls] == [f32(4, 5), f32(2, 5)]
    assert by_name["forward"].calls[0]["return"] == f32(4)
    assert {(c.name, c.value) for c in recorder.configs if c.given} >= {("width", 5), ("hidden_size", 10)}
    assert isinstance(jax.numpy.ones(1), jax.Array)


def test_the_recorders_own_failure_stops_recording_not_the_program() -> None:
    def is_ours(filename: str) -> bool:
        raise RuntimeError("broken filter")

    def user_code() -> int:
        return sum(range(4))

    with Recorder(is_ours, max_calls=2) as recorder:
        assert user_code() == 6
    assert isinstance(recorder.failure, RuntimeError) and recorder.records() == []


def test_a_call_that_raised_is_no_evidence(tmp_path: Path) -> None:
    """`mlp(params, x)` with x one column too wide fails at its matmul: annotating from that call
    would write the bug into the annotation (a dimension that "varied", 16 and 17)."""
    import numpy as np

    path = write(tmp_path / "user.py", """
        def mlp(w, x):
            return x @ w


        def careful(w, x):
            try:
                return mlp(w, x)
            except ValueError:
                return None
    """)
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    w = np.ones((16, 4))
    with Recorder(lambda filename: filename == str(path), max_calls=4) as recorder:
        namespace["mlp"](w, np.ones((8, 16)))
        with pytest.raises(ValueError):
            namespace["mlp"](w, np.ones((8, 17)))
        assert namespace["careful"](w, np.ones((2, 17))) is None  # it returns: recorded
    by_name = {r.name: r for r in recorder.records()}
    assert [c["x"].shape for c in by_name["mlp"].calls] == [(8, 16)]
    assert [c["x"].shape for c in by_name["careful"].calls] == [(2, 17)]
    assert [(r.name, r.raised) for r in recorder.raised()] == [("mlp", 2)]


def test_recording_stops_once_a_loop_shows_nothing_new(tmp_path: Path) -> None:
    """A loop repeating the shapes already seen removes the hook after QUIET_CALLS calls: the
    rest of the run is at full speed, and a function first called after that is not recorded."""
    import numpy as np

    from raximport.shape_record import QUIET_CALLS

    path = write(tmp_path / "loop.py", """
        def step(x):
            return x


        def later(x):
            return x
    """)
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    with Recorder(lambda filename: filename == str(path), max_calls=4) as recorder:
        for i in range(QUIET_CALLS + 2):
            namespace["step"](np.zeros(i % 2 + 1))
        hook_after_loop = sys.getprofile()
        namespace["later"](np.zeros(3))
    assert hook_after_loop is None
    assert [r.name for r in recorder.records()] == ["step"] and len(recorder.records()[0].calls) == 2


def test_then_separates_runs() -> None:
    assert split_runs(["cfg.py", "--x=1", "--then", "sample.py", "--n=2", "--then", "-m", "pkg.eval", "a"]) == (
        ["cfg.py", "--x=1"], [("sample.py", None, ["--n=2"]), (None, "pkg.eval", ["a"])]
    )


# ------------------------------------------------------------------------------ end to end

TRAIN = '''
    """A linear classifier trained with a jitted step: no annotations."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    batch_size = 8


    @dataclasses.dataclass(frozen=True)
    class Config:
        n_features: int = 5
        n_classes: int = 3


    def init(cfg, key):
        return {"w": jax.random.normal(key, (cfg.n_features, cfg.n_classes)) * 0.1, "b": jnp.zeros(cfg.n_classes)}


    def forward(params, x):
        return x @ params["w"] + params["b"]


    def loss_fn(params, x, y):
        logp = jax.nn.log_softmax(forward(params, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


    @jax.jit
    def train_step(params, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads), loss


    def make_batch(key, cfg, n):
        x = jax.random.normal(key, (n, cfg.n_features))
        return x, jnp.argmax(x[:, : cfg.n_classes], axis=1)


    def main():
        cfg = Config()
        params = init(cfg, jax.random.key(0))
        key = jax.random.key(1)
        for step in range(4):
            key, sub = jax.random.split(key)
            x, y = make_batch(sub, cfg, batch_size)
            params, loss = train_step(params, x, y)
            print(f"step {step}: loss {loss:.4f}")
        x, y = make_batch(key, cfg, 5)
        print(f"eval: loss {loss_fn(params, x, y):.4f}")


    main()
'''


@pytest.mark.slow
def test_annotate_a_training_script_then_catch_a_batch_mismatch(tmp_path: Path, run_python) -> None:
    """The diff names the batch axis and the config's sizes; the annotated script prints what it
    printed before, plain and under raximport; a y one row short is then reported as `y`."""
    script = write(tmp_path / "train.py", TRAIN)
    shown = run_python("-c", RAX, "annotate", "--check", "train.py", cwd=tmp_path)
    assert shown.returncode == 1, shown.stderr  # --check: annotations to add
    diff = shown.stdout
    assert "+from jaxtyping import Array, Float, Int, PRNGKeyArray" in diff
    assert '+def forward(params, x: Float[Array, "batch n_features"]) -> Float[Array, "batch n_classes"]:' in diff
    assert ('+def loss_fn(params, x: Float[Array, "batch n_features"], y: Int[Array, "batch"]) -> Float[Array, ""]:'
            in diff)
    assert '+def make_batch(key: PRNGKeyArray, cfg, n) -> tuple[Float[Array, "batch n_features"], Int[Array, "batch"]]:' \
        in diff
    assert script.read_text() == textwrap.dedent(TRAIN).lstrip()  # a diff only, unless --write
    written = run_python("-c", RAX, "annotate", "--write", "train.py", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    plain = run_python("train.py", cwd=tmp_path)
    checked = run_python("-m", "raximport", "train.py", cwd=tmp_path)
    assert plain.returncode == checked.returncode == 0, plain.stderr + checked.stderr
    assert plain.stdout == checked.stdout
    assert plain.stdout in shown.stderr  # the unannotated run printed the same (on stderr, beside the diff)
    assert "step 3: loss" in plain.stdout

    buggy = script.read_text().replace("train_step(params, x, y)", "train_step(params, x, y[1:])")
    write(tmp_path / "buggy.py", buggy)
    failed = run_python("-m", "raximport", "--report-json", "report.json", "buggy.py", cwd=tmp_path)
    assert failed.returncode == 1
    (report,) = json.loads((tmp_path / "report.json").read_text())["reports"]
    assert (report["function"], report["parameter"]) == ("train_step", "y")
    assert report["bindings"]["batch"] == 8


FLAX = '''
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    n_features = 6
    hidden = 16
    n_classes = 4


    class MLP(nn.Module):
        hidden: int
        n_classes: int

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.n_classes)(nn.relu(nn.Dense(self.hidden)(x)))


    model = MLP(hidden, n_classes)
    optimizer = optax.sgd(0.1)


    def loss_fn(params, x, labels):
        logits = model.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


    @jax.jit
    def train_step(params, opt_state, x, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, labels)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss


    x = jax.random.normal(jax.random.key(0), (32, n_features))
    labels = jnp.arange(32) % n_classes
    params = model.init(jax.random.key(1), x)
    opt_state = optimizer.init(params)
    for step in range(3):
        params, opt_state, loss = train_step(params, opt_state, x, labels)
        print(f"{step}: {loss:.4f}")
'''

EQUINOX = '''
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    in_size = 3
    out_size = 2


    class Linear(eqx.Module):
        weight: jax.Array
        bias: jax.Array

        def __init__(self, in_size, out_size, key):
            self.weight = jax.random.normal(key, (out_size, in_size))
            self.bias = jnp.zeros(out_size)

        def __call__(self, x):
            return self.weight @ x + self.bias


    @eqx.filter_jit
    def loss_fn(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)


    model = Linear(in_size, out_size, jax.random.key(0))
    x = jnp.ones((10, in_size))
    y = jnp.zeros((10, out_size))
    for step in range(2):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
        model = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, model, grads)
        print(f"{step}: {loss:.4f}")
'''


@pytest.mark.slow
@pytest.mark.parametrize("source, expected", [
    (FLAX, ['+    def __call__(self, x: Float[Array, "batch n_features"]) -> Float[Array, "batch n_classes"]:',
            '+def loss_fn(params, x: Float[Array, "batch n_features"], labels: Int[Array, "batch"]) -> Float[Array, ""]:']),
    (EQUINOX, ['+    weight: Float[Array, "out_size in_size"]', '+    bias: Float[Array, "out_size"]',
               '+    def __init__(self, in_size, out_size, key: PRNGKeyArray):',
               '+    def __call__(self, x: Float[Array, "in_size"]) -> Float[Array, "out_size"]:',
               '+def loss_fn(model, x: Float[Array, "batch in_size"], y: Float[Array, "batch out_size"]) -> Float[Array, ""]:']),
], ids=["flax", "equinox"])
def test_annotate_flax_and_equinox_scripts(tmp_path: Path, run_python, source: str, expected: list[str]) -> None:
    """A linen module's __call__ (seen inside apply, under jit) and an equinox module's (under
    vmap: one example) and its array fields (`weight: jax.Array`), sizes named after the config;
    the annotated scripts run the same, plain and under raximport."""
    write(tmp_path / "script.py", source)
    written = run_python("-c", RAX, "annotate", "--write", "script.py", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    for line in expected:
        assert line in written.stdout, written.stdout
    plain = run_python("script.py", cwd=tmp_path)
    checked = run_python("-m", "raximport", "script.py", cwd=tmp_path)
    assert plain.returncode == checked.returncode == 0, plain.stderr + checked.stderr
    assert plain.stdout == checked.stdout and plain.stdout in written.stderr
