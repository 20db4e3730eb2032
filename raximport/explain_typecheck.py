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
    "shape-mismatch": "jaxtyping checked the call against its annotations: a named dimension has one size "
    "across all the arguments and the return value of a call.",
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
_DTYPE = re.compile(r"this array has dtype (\w+), not any of \(?(.*?)\)?(?: as expected|$)")
_RANK = re.compile(r"this array has (\d+) dimensions, not the (\d+) expected")
_JAXTYPING_VALUE = re.compile(r"^(bool|bf|[fiuc])(\d*)\[([\d,\s]*)\]\((\w+)\)$")


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
    bound_by: str  # the earlier parameter that bound the conflicting dimension, if known
    dtype: str  # the dtype received, when the dtype is what is wrong
    rank: tuple[int, int] | None  # (dimensions received, dimensions annotated)

    @property
    def returned(self) -> bool:
        return self.parameter == "return value"

    @property
    def what(self) -> str:
        """How a report names the checked value."""
        return "the return value" if self.returned else f"'{self.parameter}'"


def parse(exc: BaseException, message: str) -> CheckFacts:
    """The facts of jaxtyping's `message` and of beartype's exception behind `exc`."""
    header = _HEADER.search(message)
    param = _PARAM.search(message)
    parameter = "return value" if header and header.group(1) == "return value" else (param.group(1) if param else "")
    expected = _EXPECTED.search(message)
    actual = _ACTUAL.search(message)
    reason = _cause_reason(exc)
    conflict = _DIM_CONFLICT.search(reason)
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
        bound_by=_bound_first(message, parameter, conflict.group(1)) if conflict else "",
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


def _bound_first(message: str, parameter: str, dim: str) -> str:
    """The parameter before `parameter` (any parameter, for the return value) whose annotation names
    `dim`: its size is the one `parameter` disagrees with."""
    listed = message.split("Parameter annotations:", 1)
    annotations = _ANNOTATION.findall(listed[1]) if len(listed) == 2 else []
    names = [name for name, _ in annotations]
    if parameter == "return value":
        before = names
    else:
        before = names[: names.index(parameter)] if parameter in names else []
    return next((name for name, dims in annotations if name in before and dim in _dims(dims)), "")


def _dims(dim_str: str) -> list[str]:
    return [token.strip("*#?_") for token in dim_str.split() if token.strip("*#?_") and not token.strip("*#?_").isdigit()]


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
    else:
        report = _dtype(base, facts) if facts.dtype else _rank(base, facts) if facts.rank else _wrong_type(base, facts, bound)
        if facts.reason:
            report = dataclasses.replace(report, details=(*report.details, f"beartype: {facts.reason}"))
    return dataclasses.replace(report, explanation=_EXPLANATION[report.kind])


def _describe(value: Any) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{getattr(dtype, 'name', dtype)}[{','.join(str(s) for s in shape)}]"
    return ""


def _shape_conflict(base: Report, facts: CheckFacts, bound: dict[str, Any], tb: TracebackType | None) -> Report:
    """A named dimension with two sizes: which configuration value sets it, and which side disagrees."""
    assert facts.conflict is not None
    dim, size, existing = facts.conflict
    what, bound_by = facts.what, facts.bound_by
    title = f"shape mismatch in {base.function}(): {what} has {dim}={size}, but " + \
        (f"'{bound_by}' set {dim}={existing}" if bound_by else f"{dim} is already {existing}")
    details = [f"dimension '{dim}': {size} in {what}, {existing} bound first" + (f" by '{bound_by}'" if bound_by else "")]
    extra: dict[str, object] = dict(dimension=dim, size=size, expected_size=existing, bound_by=bound_by)
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


def _dtype(base: Report, facts: CheckFacts) -> Report:
    wanted = facts.expected.split("[", 1)[0] or "the annotated dtype"
    cast = {"Int": "jnp.int32", "Float": "jnp.float32", "Bool": "bool", "Shaped": ""}.get(wanted, "")
    fix = (f"convert at the call site ({facts.parameter}.astype({cast}))" if cast and not facts.returned else
           "convert the value (x.astype(...))") + f", or change the annotation if {facts.dtype} is intended"
    return dataclasses.replace(base, kind="dtype-mismatch", title=f"dtype mismatch in {base.function}(): {facts.what} "
                               f"is {facts.dtype}", fix=fix, extra={"dtype": facts.dtype})


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
