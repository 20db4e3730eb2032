"""The grammar `rax ir generate` writes functions from: per category, templates that compose random
expressions, shapes, ranks and dtypes into the Python source of one JAX function, with the
inputs to call it on.

A `Spec` is pure text and numbers (no JAX here): generate.py executes the source and traces it.
Templates draw everything from the `Gen` they are given, so a function is a pure function of its
seed. Values are kept where the functions are smooth and finite: floats in [-2, 2] (or [0.5, 2]
where a `log`/`sqrt` needs them positive), ints in [-5, 5], index inputs in range, matrices made
positive definite before a solve, so a backward pass can be checked by finite differences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from jaxtyping import Shaped

FLOATS = ("float32", "float64")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
INTS = ("int32", "int64")
DIMS = (1, 2, 3, 4, 5, 6, 8)

FLOAT_UNARY = (
    "jnp.sin({})", "jnp.cos({})", "jnp.tanh({})", "jax.nn.sigmoid({})", "jax.nn.softplus({})",
    "jnp.arctan({})", "jax.nn.gelu({})", "jax.nn.silu({})", "jnp.exp(-({}) ** 2)", "jnp.log1p(({}) ** 2)",
    "jnp.sqrt(({}) ** 2 + 1.0)", "jnp.sinh(jnp.tanh({}))", "jnp.square({})", "jax.nn.elu({})",
    "jnp.logaddexp({}, 0.5)", "-({})", "jax.scipy.special.erf({})", "jnp.expm1(jnp.tanh({}))",
    "jnp.cosh(jnp.tanh({}))", "jax.nn.soft_sign({})",
)
POSITIVE_UNARY = ("jnp.log({})", "jnp.sqrt({})", "jax.lax.rsqrt({})", "({}) ** 1.5", "jnp.log2({})",
                  "jnp.reciprocal({})", "jnp.power({}, 0.25)", "jnp.log10({})")
FLOAT_BINARY = ("({} + {})", "({} - {})", "({} * {})", "({} / (1.0 + ({}) ** 2))")
SMOOTH_BINARY = ("jnp.logaddexp({}, {})", "jnp.hypot({}, {} + 3.0)", "(({}) * jnp.tanh({}))")
INT_UNARY = ("jnp.abs({})", "-({})", "(({}) % 7)", "jnp.sign({})", "(({}) >> 1)", "(({}) // 2)")
INT_BINARY = ("({} + {})", "({} - {})", "({} * {})", "jnp.maximum({}, {})", "jnp.minimum({}, {})",
              "({} // (jnp.abs({}) + 1))", "({} & {})", "({} | {})", "({} ^ {})")


@dataclass(frozen=True)
class Input:
    """One argument: its name, shape and dtype, and the range its values are drawn from
    (floats uniform in [low, high), ints uniform in [low, high])."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    low: float = -2.0
    high: float = 2.0

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOATS

    def sample(self, rng: np.random.Generator) -> Shaped[np.ndarray, "..."]:
        if self.is_float:
            return rng.uniform(self.low, self.high, self.shape).astype(self.dtype)
        return rng.integers(int(self.low), int(self.high), self.shape, endpoint=True).astype(self.dtype)


@dataclass
class Spec:
    """A function's body (lines, the last a `return`), its inputs, and whether it has a backward
    pass (JAX can reverse-differentiate it with respect to its float inputs)."""

    inputs: list[Input]
    body: list[str]
    differentiable: bool

    def source(self, name: str) -> str:
        params = ", ".join(i.name for i in self.inputs)
        return f"def {name}({params}):\n" + "".join(f"    {line}\n" for line in self.body)


@dataclass
class Gen:
    """A template's random choices, all from one generator; `dtype` is the function's."""

    rng: np.random.Generator
    dtype: str
    inputs: list[Input] = field(default_factory=list)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOATS

    def pick(self, options: Sequence[object]) -> object:
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def int(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high, endpoint=True))

    def shape(self, low_rank: int = 0, high_rank: int = 3) -> tuple[int, ...]:
        return tuple(int(self.pick(DIMS)) for _ in range(self.int(low_rank, high_rank)))  # type: ignore[call-overload]

    def arg(self, shape: tuple[int, ...], dtype: str | None = None, low: float | None = None,
            high: float | None = None) -> str:
        """A new input named x, y, z, w, v, u in order: its name."""
        dtype = dtype or self.dtype
        floating = dtype in FLOATS
        low = (-2.0 if floating else -5) if low is None else low
        high = (2.0 if floating else 5) if high is None else high
        count = sum(not i.name.startswith("i") for i in self.inputs)
        name = "xyzwvu"[count] if count < 6 else f"a{count}"
        self.inputs.append(Input(name, tuple(shape), dtype, low, high))
        return name

    def index_arg(self, shape: tuple[int, ...], bound: int) -> str:
        """An integer input whose values index an axis of length `bound`."""
        name = f"i{sum(i.name.startswith('i') for i in self.inputs)}"
        self.inputs.append(Input(name, tuple(shape), str(self.pick(INTS)), 0, bound - 1))
        return name

    def const(self) -> str:
        if self.is_float:
            value = float(self.rng.uniform(0.25, 2.0)) * (1 if self.chance(0.7) else -1)
            return f"{value:.2f}"
        return str(self.int(1, 4))

    def expr(self, leaves: Sequence[str], depth: int, unary: Sequence[str] | None = None,
             binary: Sequence[str] | None = None) -> str:
        """A random elementwise expression over `leaves` (all of them used)."""
        unary = unary or (FLOAT_UNARY if self.is_float else INT_UNARY)
        binary = binary or (FLOAT_BINARY if self.is_float else INT_BINARY)
        text = self._expr(list(leaves), depth, unary, binary)
        for leaf in leaves:
            if not re.search(rf"(?<![\w.]){re.escape(leaf)}(?!\w)", text):
                text = str(self.pick(binary)).format(text, leaf)
        return text

    def _expr(self, leaves: list[str], depth: int, unary: Sequence[str], binary: Sequence[str]) -> str:
        if depth <= 0 or self.chance(0.2):
            return self.const() if self.chance(0.15) else str(self.pick(leaves))
        if self.chance(0.4):
            inner = self._expr(leaves, depth - 1, unary, binary)
            if _NUMBER.fullmatch(inner):  # jnp.sin(0.5) would be a float64 constant under x64
                return inner
            return str(self.pick(unary)).format(inner)
        left, right = self._expr(leaves, depth - 1, unary, binary), self._expr(leaves, depth - 1, unary, binary)
        return str(self.pick(binary)).format(left, right if right != left else self.const())  # not x - x


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _axis(g: Gen, rank: int) -> int:
    return g.int(0, rank - 1)


# --- the categories -------------------------------------------------------------------------------


def arithmetic(g: Gen) -> list[str]:
    """Elementwise +, -, *, / (floats), integer arithmetic and bit operations, with broadcasting."""
    shape = g.shape()
    leaves = [g.arg(shape) for _ in range(g.int(1, 3))]
    if shape and g.chance(0.4):
        leaves.append(g.arg(shape[-1:] if g.chance(0.5) else ()))
    lines = []
    for step in range(g.int(0, 2)):
        lines.append(f"t{step} = {g.expr(leaves, g.int(1, 2))}")
        leaves = [*leaves[1:], f"t{step}"]
    return [*lines, f"return {g.expr(leaves, g.int(1, 3))}"]


def math(g: Gen) -> list[str]:
    """Transcendental and special functions, composed; log/sqrt/powers on positive inputs."""
    shape = g.shape()
    leaves = [g.arg(shape) for _ in range(g.int(1, 2))]
    if g.chance(0.5):
        positive = g.arg(shape, low=0.5, high=2.0)
        leaves.append(str(g.pick(POSITIVE_UNARY)).format(positive))
    binary = FLOAT_BINARY + SMOOTH_BINARY
    return [f"return {g.expr(leaves, g.int(1, 4), binary=binary)}"]


def array_ops(g: Gen) -> list[str]:
    """Structural ops in a chain: transpose, reshape, concatenate, stack, flip, roll, pad,
    slices, broadcast, tile, repeat, swap/move axes, sort; the shape is tracked as it goes."""
    shape = g.shape(1, 3)
    current = g.arg(shape)
    lines = []
    for step in range(g.int(1, 4)):
        text, shape = _array_step(g, current, shape)
        lines.append(f"t{step} = {text}")
        current = f"t{step}"
    if g.chance(0.4):
        lines.append(f"t{len(lines)} = {g.expr([current], 1)}")
        current = f"t{len(lines) - 1}"
    return [*lines, f"return {current}"]


def _array_step(g: Gen, v: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    rank = len(shape)
    axis = _axis(g, rank)
    options: list[Callable[[], tuple[str, tuple[int, ...]]]] = [
        lambda: (f"jnp.flip({v}, axis={axis})", shape),
        lambda: (f"jnp.roll({v}, {g.int(1, 3)}, axis={axis})", shape),
        lambda: (f"{v}.reshape(-1)", (_size(shape),)),
        lambda: (f"jnp.concatenate([{v}, {g.expr([v], 1)}], axis={axis})",
                 shape[:axis] + (2 * shape[axis],) + shape[axis + 1:]),
        lambda: (f"jnp.stack([{v}, {g.expr([v], 1)}], axis={axis})", shape[:axis] + (2,) + shape[axis:]),
        lambda: _pad(g, v, shape),
        lambda: (f"jnp.broadcast_to({v}[None], ({(k := g.int(2, 3))},) + {v}.shape)", (k,) + shape),
        lambda: (f"jnp.repeat({v}, {(r := g.int(2, 3))}, axis={axis})",
                 shape[:axis] + (r * shape[axis],) + shape[axis + 1:]),
        lambda: (f"jnp.sort({v}, axis={axis})", shape),
        lambda: (f"jnp.expand_dims({v}, {axis})", shape[:axis] + (1,) + shape[axis:]),
    ]
    if rank >= 2:
        perm = [int(p) for p in g.rng.permutation(rank)]
        options += [
            lambda: (f"jnp.transpose({v}, {tuple(perm)})", tuple(shape[p] for p in perm)),
            lambda: (f"jnp.swapaxes({v}, 0, {rank - 1})", (shape[-1],) + shape[1:-1] + (shape[0],)),
            lambda: (f"jnp.moveaxis({v}, 0, -1)", shape[1:] + shape[:1]),
            lambda: (f"{v}.reshape({shape[0]}, -1)", (shape[0], _size(shape[1:]))),
        ]
    if rank == 1 and shape[0] % 2 == 0:
        options.append(lambda: (f"{v}.reshape(2, {shape[0] // 2})", (2, shape[0] // 2)))
    if shape[0] >= 2:
        start = g.int(0, shape[0] - 2)
        options.append(lambda: (f"{v}[{start}:]", (shape[0] - start,) + shape[1:]))
        options.append(lambda: (f"{v}[::2]", ((shape[0] + 1) // 2,) + shape[1:]))
    if rank <= 2 and _size(shape) <= 64:
        reps = tuple(g.int(1, 2) for _ in shape)
        options.append(lambda: (f"jnp.tile({v}, {reps})", tuple(s * r for s, r in zip(shape, reps))))
    while True:
        text, new_shape = g.pick(options)()  # type: ignore[operator]
        if _size(new_shape) <= 4096:
            return text, new_shape


def _pad(g: Gen, v: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    pads = tuple((g.int(0, 2), g.int(0, 2)) for _ in shape)
    mode = g.pick(('', ', mode="edge"', ', mode="reflect"')) if min(shape) >= 3 else ""
    return f"jnp.pad({v}, {pads}{mode})", tuple(s + a + b for s, (a, b) in zip(shape, pads))


def linear_algebra(g: Gen) -> list[str]:
    """Matrix products and einsums (ints too), solves, factorizations, norms, traces."""
    m, k, n = (int(g.pick(DIMS)) for _ in range(3))  # type: ignore[call-overload]
    act = (lambda e: str(g.pick(FLOAT_UNARY)).format(e)) if g.is_float else (lambda e: e)
    if not g.is_float or g.chance(0.4):
        return [_products(g, m, k, n, act)]
    s = max(n, 2)
    a = g.arg((s, s))
    spd = f"{a} @ {a}.T + {s}.0 * jnp.eye({s}, dtype={a}.dtype)"
    lines = [f"spd = {spd}"]
    choices = [
        lambda: f"return jnp.linalg.solve(spd, {g.arg((s,) if g.chance(0.5) else (s, k))})",
        lambda: f"return {act('jnp.linalg.cholesky(spd)')}",
        lambda: f"return jnp.linalg.inv(spd) @ {g.arg((s, k))}",
        lambda: "return jnp.linalg.slogdet(spd)[1]",
        lambda: (f"return jax.scipy.linalg.solve_triangular(jnp.tril(spd), {g.arg((s, k))}, "
                 f"lower=True)"),
        lambda: "return jnp.linalg.eigh(spd)[0]",
        lambda: f"return jnp.linalg.norm({act(a)}, ord={g.pick(('None', '1', '2', 'jnp.inf', repr('fro')))})",
        lambda: f"return jnp.trace({act(a)} @ {a}.T)",
        lambda: f"return jnp.linalg.matrix_power({act(a)} / {s}.0, {g.int(2, 4)})",
        lambda: f"return jnp.linalg.qr({a} + {s}.0 * jnp.eye({s}, dtype={a}.dtype))[1] @ {g.arg((s,))}",
    ]
    return [*lines, g.pick(choices)()]  # type: ignore[operator]


def _products(g: Gen, m: int, k: int, n: int, act: Callable[[str], str]) -> str:
    b = int(g.pick(DIMS))  # type: ignore[call-overload]
    forms: list[Callable[[], str]] = [
        lambda: f"return {act(f'{g.arg((m, k))} @ {g.arg((k, n))}')}",
        lambda: f"return {act(f'{g.arg((m, k))} @ {g.arg((k, n))}')} @ {g.arg((n, k))}",
        lambda: f"return {g.arg((b, m, k))} @ {g.arg((b, k, n))}",
        lambda: f"return jnp.dot({g.arg((k,))}, {g.arg((k, n))})",
        lambda: f"return jnp.outer({g.arg((m,))}, {act(g.arg((n,)))})",
        lambda: f"return jnp.einsum('ij,jk->ik', {g.arg((m, k))}, {g.arg((k, n))})",
        lambda: f"return jnp.einsum('ij,ij->i', {g.arg((m, k))}, {g.arg((m, k))})",
        lambda: f"return jnp.einsum('bij,bjk->bik', {g.arg((b, m, k))}, {g.arg((b, k, n))})",
        lambda: f"return jnp.einsum('bi,bj->bij', {g.arg((b, m))}, {act(g.arg((b, n)))})",
        lambda: f"return jnp.einsum('ij,kj->ik', {g.arg((m, k))}, {g.arg((n, k))})",
        lambda: f"return jnp.einsum('ii->', {act(g.arg((n, n)))})",
        lambda: f"return jnp.einsum('ijk->kji', {g.arg((b, m, k))}) * {g.const()}",
        lambda: f"return jnp.tensordot({g.arg((b, m, k))}, {g.arg((k, n))}, axes=1)",
        lambda: f"return jnp.vdot({g.arg((m, n))}, {act(g.arg((m, n)))})",
        lambda: f"return jnp.kron({g.arg((2, m))}, {g.arg((n, 2))})",
    ]
    return g.pick(forms)()  # type: ignore[operator]


def reductions(g: Gen) -> list[str]:
    """sum, mean, max, min, prod, logsumexp, var, std, norm, cumulative ops, softmax, argmax,
    over one axis, several or all, with or without keepdims, sometimes nested."""
    shape = g.shape(1, 3)
    x = g.arg(shape)
    rank = len(shape)
    inner = g.expr([x], 1) if g.chance(0.5) else x
    axes = ["None", str(_axis(g, rank))] + ([str(tuple(sorted({0, rank - 1})))] if rank >= 2 else [])
    axis = g.pick(axes)
    keep = ", keepdims=True" if g.chance(0.3) else ""
    ops = ["jnp.sum", "jnp.max", "jnp.min", "jnp.mean"] if g.is_float else ["jnp.sum", "jnp.max", "jnp.min"]
    if g.is_float:
        ops += ["jax.nn.logsumexp", "jnp.var", "jnp.std", "jnp.linalg.norm"]
    reduced = f"{g.pick(ops)}({inner}, axis={axis}{keep})"
    one_axis = _axis(g, rank)
    scans = [f"jnp.cumsum({inner}, axis={one_axis})", f"jax.lax.cummax({inner}, axis={one_axis})",
             f"jnp.argmax({inner}, axis={one_axis})"]
    if g.is_float:
        scans += [f"jax.nn.softmax({inner}, axis={one_axis})", f"jax.nn.log_softmax({inner}, axis={one_axis})",
                  f"jnp.cumprod(1.0 + 0.1 * {inner}, axis={one_axis})",
                  f"jnp.prod(1.0 + 0.1 * jnp.tanh({inner}), axis={one_axis})"]
    else:
        scans += [f"jnp.prod(jnp.clip({inner}, -2, 2), axis={one_axis})"]
    choice = g.int(0, 2)
    if choice == 0:
        return [f"return {reduced}"]
    if choice == 1:
        return [f"return {g.pick(scans)}"]
    outer = "jnp.sum" if not g.is_float else g.pick(("jnp.sum", "jnp.max", "jnp.mean", "jax.nn.logsumexp"))
    return [f"r = {g.pick(scans)}", f"return {outer}(r) + {g.pick(ops)}({x})"]


def indexing(g: Gen) -> list[str]:
    """Static and strided slices, gathers by an index input, scatters (`.at[...].set/add/max/mul`),
    dynamic slices and dynamic updates at a traced offset."""
    shape = g.shape(1, 3)
    x = g.arg(shape)
    n0 = shape[0]
    rest = shape[1:]
    forms: list[Callable[[], list[str]]] = [
        lambda: [f"return {x}[{g.int(0, n0 - 1)}:] * {g.const()}" if n0 > 1 else f"return {x}[0]"],
        lambda: [f"return {x}[::-1] + {x}[{g.int(0, n0 - 1)}]"],
        lambda: [f"return {x}[{g.index_arg((g.int(1, 6),), n0)}]"],
        lambda: [f"return jnp.take({x}, {g.index_arg((g.int(1, 6),), shape[-1])}, axis={len(shape) - 1})"],
        lambda: [f"return {x}.at[{g.index_arg((k := g.int(1, 5),), n0)}].add({g.arg((k,) + rest)})"],
        lambda: [f"return {x}.at[{g.int(0, n0 - 1)}].set({g.const()})"],
        lambda: [f"return {x}.at[{g.index_arg((k := g.int(1, 5),), n0)}].max({g.arg((k,) + rest)})"],
        lambda: [f"return {x}.at[{g.index_arg((k := g.int(1, 5),), n0)}].min({g.arg((k,) + rest)})"],
        lambda: _dynamic_slice(g, x, shape),
        lambda: _dynamic_update(g, x, shape),
        lambda: _unique_rows(g, x, shape, "set"),
        lambda: _unique_rows(g, x, shape, "mul"),
    ]
    if len(shape) >= 2:
        forms.append(lambda: [f"return jnp.take_along_axis({x}, "
                              f"{g.index_arg(shape[:-1] + (g.int(1, 3),), shape[-1])}, axis=-1)"])
        forms.append(lambda: [f"return {x}[:, {g.int(0, shape[1] - 1)}] + {x}[..., -1].sum()"])
    lines = g.pick(forms)()  # type: ignore[operator]
    return lines


def _dynamic_slice(g: Gen, x: str, shape: tuple[int, ...]) -> list[str]:
    size = g.int(1, shape[0])
    start = g.index_arg((), shape[0] - size + 1)
    return [f"s = jax.lax.dynamic_slice_in_dim({x}, {start}, {size}, axis=0)",
            f"return {g.expr(['s'], 1)}"]


def _dynamic_update(g: Gen, x: str, shape: tuple[int, ...]) -> list[str]:
    size = g.int(1, shape[0])
    update = g.arg((size,) + shape[1:])
    start = g.index_arg((), shape[0] - size + 1)
    return [f"return jax.lax.dynamic_update_slice_in_dim({x}, {g.expr([update], 1)}, {start}, axis=0)"]


def _unique_rows(g: Gen, x: str, shape: tuple[int, ...], method: str) -> list[str]:
    """`.at[rows].set/mul(...)` at distinct rows: with repeated rows the winner of a set is
    unspecified, and JAX differentiates a scatter-multiply only at unique indices."""
    rows = sorted(int(r) for r in g.rng.choice(shape[0], size=g.int(1, shape[0]), replace=False))
    update = g.arg((len(rows),) + shape[1:])
    return [f"return {x}.at[jnp.array({rows})].{method}({g.expr([update], 1)}, unique_indices=True)"]


def gradients(g: Gen) -> list[str]:
    """A function that differentiates an inner one: grad (of one or two arguments),
    value_and_grad, jacfwd, jacrev, hessian, jvp, a gradient of a gradient's norm."""
    shape = g.shape(1, 2) if g.chance(0.7) else (g.int(2, 5),)
    x = g.arg(shape)
    body = g.expr(["a"], g.int(1, 3), binary=FLOAT_BINARY + SMOOTH_BINARY)
    scalar = [f"def h(a):", f"    return jnp.sum({body})"]
    vector = [f"def v(a):", f"    return {body}"]
    small = (g.int(2, 5),)
    forms: list[Callable[[], list[str]]] = [
        lambda: [*scalar, f"return jax.grad(h)({x})"],
        lambda: [*scalar, f"value, grad = jax.value_and_grad(h)({x})", "return value, grad"],
        lambda: ["def h2(a, b):", f"    return jnp.sum({g.expr(['a', 'b'], g.int(1, 3))})",
                 f"return jax.grad(h2, argnums=(0, 1))({x}, {g.arg(shape)})"],
        lambda: [*scalar, f"return jax.grad(lambda a: jnp.sum(jax.grad(h)(a) ** 2))({x})"],
        lambda: [*vector, f"return jax.jvp(v, ({x},), ({g.arg(shape)},))"],
        lambda: [*vector, f"return jax.{g.pick(('jacfwd', 'jacrev'))}(v)({x}.reshape(-1)[:{small[0]}])"],
        lambda: [*scalar, f"return jax.hessian(h)({x}.reshape(-1)[:{small[0]}])"],
    ]
    return g.pick(forms)()  # type: ignore[operator]


def vmap(g: Gen) -> list[str]:
    """jax.vmap of an inner function: over rows, with a broadcast argument (in_axes None), over
    another axis (in_axes/out_axes 1), nested."""
    batch = int(g.pick(DIMS))  # type: ignore[call-overload]
    row = g.shape(1, 2)
    x = g.arg((batch,) + row)
    reduce_ = "jnp.sum" if not g.is_float else g.pick(("jnp.sum", "jnp.max", "jnp.mean", "jax.nn.logsumexp"))
    forms: list[Callable[[], list[str]]] = [
        lambda: ["def inner(r):", f"    return {g.expr(['r'], g.int(1, 3))}",
                 f"return jax.vmap(inner)({x})"],
        lambda: ["def inner(r):", f"    return {reduce_}({g.expr(['r'], g.int(1, 2))})",
                 f"return jax.vmap(inner)({x})"],
        lambda: ["def inner(r, c):", f"    return {g.expr(['r', 'c'], g.int(1, 3))}",
                 f"return jax.vmap(inner, in_axes=(0, None))({x}, {g.arg(row)})"],
        lambda: ["def inner(r, m):", "    return m @ r" if len(row) == 1 else "    return (m @ r.T).T",
                 f"return jax.vmap(inner, in_axes=(0, None))({x}, {g.arg((int(g.pick(DIMS)), row[-1]))})"],  # type: ignore[call-overload]
        lambda: ["def inner(c):", f"    return {g.expr(['c'], g.int(1, 2))}",
                 f"return jax.vmap(inner, in_axes=1, out_axes=1)(jnp.moveaxis({x}, 0, 1))"],
        lambda: ["def inner(e):", f"    return {g.expr(['e'], g.int(1, 3))}",
                 f"return jax.vmap(jax.vmap(inner))({x})"],
        lambda: ["def inner(r, s):", f"    return {reduce_}(r) * s",
                 f"return jax.vmap(inner)({x}, {g.arg((batch,))})"],
    ]
    return g.pick(forms)()  # type: ignore[operator]


def cond_select(g: Gen) -> list[str]:
    """jnp.where, lax.select, lax.cond on a reduction, lax.switch on an index input, jnp.select,
    clip, maximum/minimum."""
    shape = g.shape()
    x = g.arg(shape)
    y = g.arg(shape)
    zero = "0.0" if g.is_float else "0"
    tests = [f"{x} > {y}", f"{x} > {zero}", f"jnp.abs({x}) < {'1.0' if g.is_float else '2'}",
             f"({x} > {zero}) & ({y} < {'0.5' if g.is_float else '1'})"]
    branch = lambda *leaves: g.expr(list(leaves), g.int(1, 2))  # noqa: E731 (one line, used three times)
    forms: list[Callable[[], list[str]]] = [
        lambda: [f"return jnp.where({g.pick(tests)}, {branch(x, y)}, {branch(x)})"],
        lambda: [f"return jax.lax.select({g.pick(tests)}, {branch(x)}, {branch(y, x)})"],
        lambda: [f"return jax.lax.cond(jnp.sum({x}) > jnp.sum({y}), lambda a, b: {branch('a', 'b')}, "
                 f"lambda a, b: {branch('a', 'b')}, {x}, {y})"],
        lambda: _switch(g, x, y, shape),
        lambda: [f"return jnp.select([{x} < {y}, {x} > {zero}], [{branch(x)}, {branch(y)}], {branch(x, y)})"],
        lambda: [f"return jnp.clip({branch(x, y)}, {g.pick(('-1.0', '-0.5')) if g.is_float else '-3'}, "
                 f"{g.pick(('1.0', '0.5')) if g.is_float else '3'})"],
        lambda: [f"return jnp.{g.pick(('maximum', 'minimum'))}({branch(x)}, {branch(y)})"],
    ]
    return g.pick(forms)()  # type: ignore[operator]


def _switch(g: Gen, x: str, y: str, shape: tuple[int, ...]) -> list[str]:
    count = g.int(2, 4)
    branches = ", ".join(f"lambda a, b: {g.expr(['a', 'b'], g.int(1, 2))}" for _ in range(count))
    index = g.index_arg((), count)
    return [f"return jax.lax.switch({index}, [{branches}], {x}, {y})"]


def loops(g: Gen) -> list[str]:
    """lax.scan (a running state, an RNN cell, reversed, unrolled), fori_loop with static bounds,
    while_loop (forward only: JAX cannot reverse-differentiate it)."""
    steps = g.int(2, 8)
    n = int(g.pick(DIMS))  # type: ignore[call-overload]
    forms: list[Callable[[], list[str]]] = [
        lambda: _scan(g, steps, n),
        lambda: _rnn(g, steps, n) if g.is_float else _scan(g, steps, n),
        lambda: ["def body(i, c):", f"    return {g.expr(['c'], g.int(1, 2))}"
                 + (" * 0.9 + 0.1 * jnp.sin(i * 0.5).astype(c.dtype)" if g.is_float else " % 97 + i"),
                 f"return jax.lax.fori_loop(0, {steps}, body, {g.arg((n,))})"],
        lambda: _while(g, steps, n),
    ]
    return g.pick(forms)()  # type: ignore[operator]


def _scan(g: Gen, steps: int, n: int) -> list[str]:
    xs = g.arg((steps, n))
    init = g.arg((n,))
    new = g.expr(["c", "t"], g.int(1, 2))
    if not g.is_float:
        new = f"({new}) % 101"
    reverse = ", reverse=True" if g.chance(0.3) else ""
    unroll = f", unroll={g.int(2, 3)}" if g.chance(0.2) else ""
    out = g.pick(("carry, ys", "ys", "carry"))
    return ["def step(c, t):", f"    c = {new}", f"    return c, {g.expr(['c'], 1)}",
            f"carry, ys = jax.lax.scan(step, {init}, {xs}{reverse}{unroll})", f"return {out}"]


def _rnn(g: Gen, steps: int, n: int) -> list[str]:
    xs = g.arg((steps, n))
    w = g.arg((n, n))
    h0 = g.arg((n,))
    act = g.pick(("jnp.tanh", "jax.nn.sigmoid", "jax.nn.soft_sign"))
    return ["def cell(h, t):", f"    h = {act}(h @ {w} * 0.5 + t)", "    return h, jnp.sum(h)",
            f"h, ys = jax.lax.scan(cell, {h0}, {xs})", "return h, ys"]


def _while(g: Gen, steps: int, n: int) -> list[str]:
    x = g.arg((n,))
    bound = "100.0" if g.is_float else "1000"
    new = g.expr(["c"], g.int(1, 2))
    return ["def cond(s):", f"    return (s[0] < {steps}) & (jnp.max(jnp.abs(s[1])) < {bound})",
            "def body(s):", "    c = s[1]", f"    return s[0] + 1, {new}",
            f"count, final = jax.lax.while_loop(cond, body, (0, {x}))", "return count, final"]


CATEGORIES: dict[str, Callable[[Gen], list[str]]] = {
    "arithmetic": arithmetic, "math": math, "array_ops": array_ops, "linear_algebra": linear_algebra,
    "reductions": reductions, "indexing": indexing, "gradients": gradients, "vmap": vmap,
    "cond_select": cond_select, "loops": loops,
}
FLOAT_ONLY = frozenset({"math", "gradients"})


def spec(category: str, rng: np.random.Generator) -> Spec:
    """One function of `category`, its dtype drawn first (float32 or float64; int32 or int64
    where the category has integer programs)."""
    floating = category in FLOAT_ONLY or rng.random() < 0.75
    g = Gen(rng, str(rng.choice(FLOATS if floating else INTS, p=[0.6, 0.4])))
    body = CATEGORIES[category](g)
    differentiable = g.is_float and not any("while_loop" in line or "argmax" in line for line in body)
    return Spec(g.inputs, body, differentiable)
