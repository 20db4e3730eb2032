"""The catalogue's entry for a failed annotation check (jaxtyping's TypeCheckError), in three steps.

`parse` reads jaxtyping's message and beartype's cause into `CheckFacts`: the parameter, its
annotation, the value received, the dimensions bound so far and what exactly did not match. For a
conflicting named dimension, `find_config` looks for the configuration value that sets it (seq ->
block_size) in the call's arguments, then in the user's frames. `explain_typecheck` phrases the
report and its fix from both. jaxtyping and beartype are never imported here: an exception of
theirs means they already are.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Mapping

from raximport.provenance import is_user_file
from raximport.report import Report, defined_at, short_repr

# Dimension names that a configuration usually sets (nanoGPT's names on the right).
DIM_TO_CONFIG = {
    "seq": "block_size", "seq_len": "block_size", "seqlen": "block_size", "T": "block_size",
    "time": "block_size", "block": "block_size", "block_size": "block_size", "ctx": "block_size",
    "batch": "batch_size", "B": "batch_size", "batch_size": "batch_size", "bs": "batch_size",
    "vocab": "vocab_size", "V": "vocab_size", "vocab_size": "vocab_size",
    "embed": "n_embd", "d_model": "n_embd", "C": "n_embd", "n_embd": "n_embd", "dim": "n_embd",
    "heads": "n_head", "H": "n_head", "n_head": "n_head", "n_heads": "n_head",
    "layer": "n_layer", "layers": "n_layer", "L": "n_layer", "n_layer": "n_layer",
}
_DTYPE_PREFIX = {"f": "float", "i": "int", "u": "uint", "c": "complex", "bf": "bfloat", "b": "bool"}
_EXPLANATION = {
    "shape-mismatch": "jaxtyping checked the call against its annotations: an axis has the size its annotation "
    "gives it, and a named dimension one size across all the arguments and the return value of a call.",
    "dtype-mismatch": "jaxtyping checked the call against its annotations: the dtype is part of the "
    "annotation (Float, Int, Bool...).",
    "type-mismatch": "jaxtyping and beartype checked the call against its annotations.",
}

# --- parsing the message ------------------------------------------------------------------------

_HEADER = re.compile(r"whilst checking the (parameters|return value) of (\S+?)\.?$", re.M)
_PARAM = re.compile(r"typechecking parameter '(\w+)'")
_ACTUAL = re.compile(r"^Actual value: (.*)$", re.M)
_EXPECTED = re.compile(r"^Expected type: (.*?)\.?$", re.M)
_ANNOTATION = re.compile(r"(\w+): \w+\[[^\[\]']*?, '([^']*)'\]")
_REASON = re.compile(r"violates type hint .*?, as (.*?)\.?\s*$", re.S)
_DIM_CONFLICT = re.compile(r"size of dimension (\S+) is (\d+) which does not equal the existing value of (\d+)")
_FIXED = re.compile(r"the dimension size (\d+) does not equal (?:(\d+) as expected|the existing value of (\S+)=(-?\d+))")
_DTYPE = re.compile(r"this array has dtype (\w+), not (?:any of )?\(?(.*?)\)?(?: as expected|$)")
_RANK = re.compile(r"this array has (\d+) dimensions, not the (\d+) expected")
_JAXTYPING_VALUE = re.compile(r"^(bool|bf|[fiuc])(\d*)\[([\d,\s]*)\]\((\w+)\)$")
_SHAPE_STR = re.compile(r", '([^']*)'\]$")  # an annotation's shape string: Float[Array, 'batch seq']
_VALUE_SHAPE = re.compile(r"^\w+\[([\d,]*)\]$")  # a value's shape, as reports show it: float32[4,28]
_MARKS = re.compile(r"([#*_?]*)(.*)")  # jaxtyping's marks on a dimension: #broadcast *variadic _anonymous ?treepath


@dataclass(frozen=True)
class CheckFacts:
    """What jaxtyping's message and beartype's cause say about one failed check."""

    function: str  # the checked function's qualified name
    parameter: str  # the parameter's name, or "return value"
    expected: str  # its annotation: "Int[Array, 'batch seq']"
    actual: str  # the value as the message shows it: "int32[4,32]"
    bindings: tuple[tuple[str, int], ...]  # the named dimensions' sizes bound so far
    reason: str  # beartype's words for the violation
    conflict: tuple[str, int, int] | None  # (dimension, its size here, the size bound first)
    fixed: tuple[str, int, int] | None  # (a fixed or symbolic dimension: "1", "dim+1"; its size here, expected)
    binders: tuple[tuple[str, str, int], ...]  # (dimension, the parameter before this one that bound it, axis)
    dtype: str  # the dtype received, when the dtype is what is wrong
    rank: tuple[int, int] | None  # (dimensions received, dimensions annotated)

    @property
    def returned(self) -> bool:
        return self.parameter == "return value"

    @property
    def what(self) -> str:
        """How a report names the checked value."""
        return "the return value" if self.returned else f"'{self.parameter}'"

    @property
    def shape_str(self) -> str:
        """The annotation's shape string ("batch seq"), "" if it is not a plain jaxtyping array."""
        match = _SHAPE_STR.search(self.expected)
        return match.group(1) if match else ""

    @property
    def bound_by(self) -> str:
        """The earlier parameter that bound the conflicting dimension, if known."""
        return next((name for dim, name, _ in self.binders if self.conflict and dim == self.conflict[0]), "")


def parse(exc: BaseException, message: str) -> CheckFacts:
    """The facts of jaxtyping's `message` and of beartype's exception behind `exc`."""
    header = _HEADER.search(message)
    param = _PARAM.search(message)
    parameter = "return value" if header and header.group(1) == "return value" else (param.group(1) if param else "")
    expected = _EXPECTED.search(message)
    actual = _ACTUAL.search(message)
    reason = _cause_reason(exc)
    conflict = _DIM_CONFLICT.search(reason)
    fixed = _FIXED.search(reason)
    dtype = _DTYPE.search(reason)
    rank = _RANK.search(reason)
    return CheckFacts(
        function=header.group(2) if header else "",
        parameter=parameter,
        expected=_pretty_type(expected.group(1)) if expected else "",
        actual=_pretty_value(actual.group(1)) if actual else "",
        bindings=_bindings(message),
        reason=reason,
        conflict=(conflict.group(1), int(conflict.group(2)), int(conflict.group(3))) if conflict else None,
        fixed=(fixed.group(2) or fixed.group(3), int(fixed.group(1)), int(fixed.group(2) or fixed.group(4)))
        if fixed else None,
        binders=_binders(message, parameter),
        dtype=dtype.group(1) if dtype else "",
        rank=(int(rank.group(1)), int(rank.group(2))) if rank else None,
    )


def _pretty_value(text: str) -> str:
    """jaxtyping's "i32[8,65](jax)" as "int32[8,65]"."""
    match = _JAXTYPING_VALUE.match(text.strip())
    if not match:
        return text.strip()
    prefix, bits, shape, _ = match.groups()
    dtype = "bool" if prefix == "bool" else _DTYPE_PREFIX[prefix] + bits
    return f"{dtype}[{shape}]"


def _pretty_type(text: str) -> str:
    """"<class 'Int[jaxlib._jax.Array, 'batch seq']'>" as "Int[Array, 'batch seq']"."""
    text = text.strip()
    if text.startswith("<class '") and text.endswith("'>"):
        text = text[len("<class '"):-2]
    text = re.sub(r"\bjaxtyping\.", "", text)
    return re.sub(r"\b(?:jaxlib\._jax|jaxlib\.xla_extension|jax)\.(?:Array|ArrayImpl)\b", "Array", text)


def _bindings(message: str) -> tuple[tuple[str, int], ...]:
    """jaxtyping's "The current values for each jaxtyping axis annotation are as follows." list."""
    if "are as follows." not in message:
        return ()
    found = []
    for line in message.split("are as follows.", 1)[1].splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and value.strip().lstrip("-").isdigit():
            found.append((name, int(value)))
    return tuple(found)


def _binders(message: str, parameter: str) -> tuple[tuple[str, str, int], ...]:
    """(dimension, parameter, axis): for each named dimension, the first parameter before `parameter`
    (any parameter, for the return value) whose annotation names it, and where. jaxtyping checks
    the parameters in order, so that one bound the size the later ones must agree with."""
    listed = message.split("Parameter annotations:", 1)
    annotations = _ANNOTATION.findall(listed[1]) if len(listed) == 2 else []
    names = [name for name, _ in annotations]
    if parameter != "return value":
        annotations = annotations[: names.index(parameter)] if parameter in names else []
    found: dict[str, tuple[str, int]] = {}
    for name, dim_str in annotations:
        for axis, dim in _axes(dim_str):
            if dim.isidentifier():
                found.setdefault(dim, (name, axis))
    return tuple((dim, name, axis) for dim, (name, axis) in found.items())


def _axes(dim_str: str) -> list[tuple[int, str]]:
    """(axis, dimension) for each axis a jaxtyping shape string names one by one, as jaxtyping
    reads it: marks dropped, `rows=3` is 3, counted from the end after `*name` or `...`."""
    tokens = dim_str.split()
    marked = [_MARKS.fullmatch(token).groups() for token in tokens]  # type: ignore[union-attr]
    variadic = next((i for i, (marks, _) in enumerate(marked) if "*" in marks or tokens[i] == "..."), len(tokens))
    return [(i if i < variadic else i - len(tokens), dim.split("=")[-1] if dim.count("=") == 1 else dim)
            for i, (_, dim) in enumerate(marked) if i != variadic]


def _cause_reason(exc: BaseException) -> str:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        match = _REASON.search(str(current))
        if match and type(current).__name__.startswith("Beartype"):
            return " ".join(match.group(1).split())
        current = current.__cause__ or current.__context__
    return ""


# --- the call and the configuration behind it ---------------------------------------------------


def _checked_call(exc: BaseException, qualified: str) -> tuple[Any, dict[str, Any]]:
    """The checked function (unwrapped) and its arguments by name, from what checks.check left on
    `exc`; (None, {}) for a check that raximport did not wrap."""
    fn, args, kwargs = getattr(exc, "__rax_call__", None) or (None, (), {})
    if fn is None or not (qualified == fn.__qualname__ or qualified.endswith("." + fn.__qualname__)):
        return None, {}
    target = inspect.unwrap(fn)
    try:
        return target, dict(inspect.signature(target).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return target, {}


def _value_of(container: Any, name: str) -> Any:
    if isinstance(container, Mapping):
        return container.get(name)
    if isinstance(container, (int, float, str, bytes)) or container is None:
        return None
    if dataclasses.is_dataclass(container) or hasattr(type(container), "_fields") or hasattr(container, "__dict__"):
        try:
            return getattr(container, name, None)
        except Exception:
            return None
    return None


def find_config(config_name: str, named: list[tuple[str, Any]]) -> tuple[str, int] | None:
    """(how the user's code spells it, value) of `config_name` in the first of `named` values that
    holds it as an int: the value itself, a field of a config object, or a key of a dict."""
    for name, value in named:
        if name == config_name and isinstance(value, int) and not isinstance(value, bool):
            return name, value
        found = _value_of(value, config_name)
        if isinstance(found, int) and not isinstance(found, bool):
            spelled = f"{name}['{config_name}']" if isinstance(value, Mapping) else f"{name}.{config_name}"
            return spelled, found
    return None


def _user_frame_values(tb: TracebackType | None) -> list[tuple[str, Any]]:
    """The locals of the user's frames in `tb`, innermost first."""
    frames = []
    while tb is not None:
        if is_user_file(tb.tb_frame.f_code.co_filename):
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    values: list[tuple[str, Any]] = []
    for frame in reversed(frames):
        try:
            values += [(k, v) for k, v in frame.f_locals.items() if not k.startswith("__")]
        except Exception:
            continue
    return values


def _other_holder(config_name: str, size: int, found: tuple[str, int],
                  named: list[tuple[str, Any]]) -> tuple[str, int] | None:
    """Another value among `named` whose `config_name` is `size`: what the mismatched value was built with."""
    for item in named:
        candidate = find_config(config_name, [item])
        if candidate is not None and candidate != found and candidate[1] == size:
            return candidate
    return None


# --- the report ---------------------------------------------------------------------------------


def explain_typecheck(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    """The report for a failed jaxtyping/beartype check: shape, dtype, rank or type mismatch."""
    facts = parse(exc, message)
    target, bound = _checked_call(exc, facts.function)
    defined = defined_at(target)
    got = _describe(bound[facts.parameter]) if facts.parameter in bound else ""
    base = Report(
        kind="type-mismatch", title="", where=where or defined,
        function=getattr(target, "__qualname__", "") or facts.function.rsplit(".", 1)[-1], defined_at=defined,
        parameter=facts.parameter, expected=facts.expected, got=got or facts.actual, bindings=facts.bindings,
    )
    if facts.conflict:
        report = _shape_conflict(base, facts, bound, exc.__traceback__)
    elif facts.fixed:
        report = _fixed_size(base, facts)
    else:
        report = _dtype(base, facts, bound) if facts.dtype else _rank(base, facts) if facts.rank else _wrong_type(base, facts, bound)
        if facts.reason:
            report = dataclasses.replace(report, details=(*report.details, f"beartype: {facts.reason}"))
    return dataclasses.replace(report, explanation=_EXPLANATION[report.kind])


def _describe(value: Any) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{getattr(dtype, 'name', dtype)}[{','.join(str(s) for s in shape)}]"
    return ""


def _value_shape(got: str) -> tuple[int, ...] | None:
    """The shape in a value as reports show it ("float32[4,28]"), if it is one."""
    match = _VALUE_SHAPE.match(got)
    return tuple(int(n) for n in match.group(1).split(",") if n) if match else None


def _where_bound(facts: CheckFacts, shape: tuple[int, ...] | None, dim: str, size: int,
                 expected: int) -> tuple[int | None, list[str]]:
    """The axis of the checked value where the annotation's `dim` is `size`, not `expected`; and the
    lines that say so and where each named dimension of the annotation got its size."""
    axes = _axes(facts.shape_str)
    axis = next((a for a, name in axes if name == dim and (shape is None or (-len(shape) <= a < len(shape)
                                                                           and shape[a] == size))), None)
    if axis is not None and shape:
        axis %= len(shape)
    lines = [f"axis {axis}: {size}, expected {expected}" + ("" if dim == str(expected) else f" ({dim})")] \
        if axis is not None else []
    bindings, binders = dict(facts.bindings), {d: (f"'{name}'", a) for d, name, a in facts.binders}
    for a, name in axes:  # a dimension no earlier parameter names was bound by an axis before this one
        if axis is not None and 0 <= a < axis:
            binders.setdefault(name, (facts.what, a))
    for name in dict.fromkeys(name for _, name in axes):
        if name in bindings:
            by = binders.get(name)
            lines.append(f"{name}={bindings[name]}: " + (f"bound by {by[0]} (axis {by[1]})" if by else "bound earlier in the call"))
    return axis, lines


def _reordering(dim_str: str, shape: tuple[int, ...] | None, bindings: dict[str, int]) -> tuple[int, ...] | None:
    """The order of `shape`'s axes that fits the annotation (channels last for first), for
    `x.transpose(order)`; None if none does or the annotation has a variadic part."""
    names = [name for _, name in _axes(dim_str)]
    if shape is None or len(names) != len(dim_str.split()) or len(names) != len(shape) or len(shape) > 6:
        return None
    return next((order for order in itertools.islice(itertools.permutations(range(len(shape))), 1, None)
                 if _fits(names, [shape[i] for i in order], bindings)), None)  # islice: not the order it has


def _fits(names: list[str], sizes: list[int], bindings: dict[str, int]) -> bool:
    """Whether `sizes` fit the dimensions `names` (symbolic ones always do), given the sizes bound so far."""
    memo = dict(bindings)
    for name, size in zip(names, sizes):
        if name.isdigit() and int(name) != size or name.isidentifier() and memo.setdefault(name, size) != size:
            return False
    return True


def _fixed_size(base: Report, facts: CheckFacts) -> Report:
    """A fixed (or symbolic) dimension of the annotation with another size: which axis, what to do."""
    assert facts.fixed is not None
    dim, size, expected = facts.fixed
    what = facts.what
    shape = _value_shape(base.got)
    axis, details = _where_bound(facts, shape, dim, size, expected)
    wanted = str(expected) if dim == str(expected) else f"{dim}={expected}"
    title = f"shape mismatch in {base.function}(): " + \
        (f"axis {axis} of {what} is {size}, the annotation says {wanted}" if axis is not None
         else f"{what} has a dimension of {size} where the annotation says {wanted}")
    order = _reordering(facts.shape_str, shape, dict(facts.bindings))
    if facts.returned:
        fix = (f"the function returned {size} where its annotation says {wanted}: fix the body (a missing "
               "transpose or reshape?) or the return annotation")
    elif order:
        fix = (f"{what} has the annotated sizes in another order: transpose it at the call site "
               f"(.transpose({', '.join(map(str, order))})), or fix the annotation")
    else:
        fix = f"give {what} the annotated shape at the call site (reshape, slice or pad it), or fix the annotation"
    extra: dict[str, object] = dict(axis=axis, size=size, expected_size=expected)
    if dim != str(expected):
        extra["dimension"] = dim
    return dataclasses.replace(base, kind="shape-mismatch", title=title, details=tuple(details), fix=fix, extra=extra)


def _shape_conflict(base: Report, facts: CheckFacts, bound: dict[str, Any], tb: TracebackType | None) -> Report:
    """A named dimension with two sizes: which configuration value sets it, and which side disagrees."""
    assert facts.conflict is not None
    dim, size, existing = facts.conflict
    what, bound_by = facts.what, facts.bound_by
    title = f"shape mismatch in {base.function}(): {what} has {dim}={size}, but " + \
        (f"'{bound_by}' set {dim}={existing}" if bound_by else f"{dim} is already {existing}")
    axis, details = _where_bound(facts, _value_shape(base.got), dim, size, existing)
    extra: dict[str, object] = dict(dimension=dim, size=size, expected_size=existing, bound_by=bound_by, axis=axis)
    config_name = DIM_TO_CONFIG.get(dim)
    frame_values = _user_frame_values(tb) if config_name else []
    found = None
    if config_name:
        extra["config"] = config_name
        found = find_config(config_name, list(bound.items())) or find_config(config_name, frame_values)
    if not found:
        source = f" ({dim} is usually {config_name})" if config_name else ""
        fix = (f"{what} must have {dim}={existing} like '{bound_by or 'the arguments before it'}'{source}: fix "
               f"the shape at the call site, or, if the sizes may differ, use a different dimension name")
        if facts.returned:
            fix = (f"the function returned {dim}={size} where its annotation says {dim}={existing}: fix the "
                   "body (a missing transpose, reshape or sum over an axis?) or the return annotation")
        return dataclasses.replace(base, kind="shape-mismatch", title=title, details=tuple(details), fix=fix,
                                   extra=extra)
    spelled, value = found
    extra.update(config_value=value, config_source=spelled)
    odd = what if size != value else (f"'{bound_by}'" if bound_by and existing != value else "")
    details.append(f"{dim} is set by {config_name}: {spelled} = {value}" + (f", which {odd} does not match" if odd else ""))
    culprit = _other_holder(config_name, size, found, frame_values) if size != value else None
    if culprit:
        details.append(f"also seen: {culprit[0]} = {culprit[1]}, the {dim} size of {what} (was {what} built with it?)")
        extra.update(culprit=culprit[0], culprit_value=culprit[1])
    fix = (f"{what} and '{bound_by or 'the first argument'}' must agree on {dim}; {dim} comes from "
           f"{config_name} ({spelled} = {value}): build the data with the same {config_name} as the "
           f"model, or, if the sizes may differ, give {what} its own dimension name in the annotation")
    return dataclasses.replace(base, kind="shape-mismatch", title=title, details=tuple(details), fix=fix, extra=extra)


def _dtype(base: Report, facts: CheckFacts, bound: dict[str, Any]) -> Report:
    wanted = facts.expected.split("[", 1)[0] or "the annotated dtype"
    cast = {"Int": "jnp.int32", "Float": "jnp.float32", "Bool": "bool", "Shaped": ""}.get(wanted, "")
    fix = (f"convert at the call site ({facts.parameter}.astype({cast}))" if cast and not facts.returned else
           "convert the value (x.astype(...))") + f", or change the annotation if {facts.dtype} is intended"
    own = base.got.split("[", 1)[0]
    converted = type(bound.get(facts.parameter)).__module__ == "numpy" and own.rstrip("_") != facts.dtype.rstrip("_")
    dtype = f"{own}, {facts.dtype} once JAX takes it" if converted else facts.dtype  # checks.py: as jit sees it
    return dataclasses.replace(base, kind="dtype-mismatch", title=f"dtype mismatch in {base.function}(): {facts.what} "
                               f"is {dtype}", fix=fix, extra={"dtype": facts.dtype})


def _rank(base: Report, facts: CheckFacts) -> Report:
    assert facts.rank is not None
    ndim, expected_ndim = facts.rank
    return dataclasses.replace(
        base, kind="shape-mismatch",
        title=f"shape mismatch in {base.function}(): {facts.what} has {ndim} dimensions, the annotation {expected_ndim}",
        fix="add or remove an axis at the call site (x[None], x.reshape(...), x.squeeze(axis)) or fix the annotation",
        extra={"ndim": ndim, "expected_ndim": expected_ndim},
    )


def _wrong_type(base: Report, facts: CheckFacts, bound: dict[str, Any]) -> Report:
    got = base.got
    if facts.parameter in bound:
        value = bound[facts.parameter]
        type_name = type(value).__name__
        if not got.startswith(type_name):
            got = f"{type_name} {short_repr(value)}"
    else:
        type_name = got.split(" ", 1)[0] or "value"
    return dataclasses.replace(
        base, kind="type-mismatch", got=got,
        title=f"type mismatch in {base.function}(): {facts.what} is a {type_name}, not "
        f"{facts.expected or 'the annotated type'}",
        fix="pass a value of the annotated type (jnp.asarray(...) for an array), or fix the annotation",
    )
