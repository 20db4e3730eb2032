"""The catalogue: what an exception means and how to fix it, as a report.Report.

`explain(exc)` classifies by exception type names and message text, so JAX, jaxtyping and beartype
are never imported here (an exception of theirs means they already are). Every entry names the
user's line (the innermost frame of the traceback in the user's code, i.e. the call site for
errors raised while tracing or type-checking), explains the error in a sentence or two, and gives
the fix. Anything unknown becomes a report of kind "error": shown as a clean traceback, never
swallowed.

The slow-compile entry is not an exception: `watch_compile_times` listens to JAX's compile
durations and reports a long compile when the persistent compilation cache is off.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import linecache
import os
import re
import sys
import time
from types import TracebackType
from typing import Any, Callable, Mapping

from raximport.provenance import is_raximport_file, is_user_file
from raximport.report import Report, show, user_location

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
SLOW_COMPILE_SECS = 5.0  # RAX_SLOW_COMPILE_SECS overrides
_DTYPE_PREFIX = {"f": "float", "i": "int", "u": "uint", "c": "complex", "bf": "bfloat", "b": "bool"}


def explain(exc: BaseException) -> Report:
    """The report for `exc` (kind "error" when raximport has nothing to add)."""
    tb = exc.__traceback__
    where = user_location(tb) if tb is not None else None
    own = getattr(exc, "report", None)
    if isinstance(own, Report):  # RaxOutOfMemoryError and friends carry their report
        return dataclasses.replace(own, where=own.where or where, error=own.error or _first_line(exc))
    names = [cls.__name__ for cls in type(exc).__mro__]
    message = str(exc)
    for matches, build in _CATALOGUE:
        if matches(names, message, exc):
            report = build(exc, message, where)
            if report is not None:
                return dataclasses.replace(report, error=report.error or _first_line(exc))
    return Report(kind="error", title=_first_line(exc), where=where, error=_first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _name_is(*wanted: str) -> Callable[[list[str], str, BaseException], bool]:
    return lambda names, message, exc: any(w in names for w in wanted)


def _says(*markers: str, name: str | None = None) -> Callable[[list[str], str, BaseException], bool]:
    return lambda names, message, exc: (name is None or name in names) and any(m in message for m in markers)


# --- pieces of JAX's messages -------------------------------------------------------------------

_TRACING = re.compile(r"(?:while tracing the function|being traced when the value leaked was) (\S+) at (\S+?):(\d+)")
_ARGUMENT = re.compile(r"depends on the values? of the arguments? (.+?)\.\s*$", re.M)
_ABSTRACT_ARG = re.compile(r"Error interpreting argument to (?:<function )?(\S+?)(?: at 0x[0-9a-f]+>)? as an abstract array\. "
                           r"The problematic value is of type (<class '[^']+'>) and was passed to the function at path (\S+?)\.")
_BAD_RETURN = re.compile(r"function (\S+)(?: at (\S+?):(\d+))? traced for \w+ returned a value of type (<class '[^']+'>)")
_BAD_ARG_TYPE = re.compile(r"Argument '([^']*)' of type (<class '[^']+'>) is not a valid JAX type")
_LEAKED_AT = re.compile(r"leaked intermediate value was created on line (\S+?):(\d+)(?::\d+)? \(([^)]*)\)")
_TYPE_NAME = re.compile(r"<class '(?:[\w.]+\.)?([^'.]+)'>")


def _entry_frame(tb: TracebackType | None) -> Any:
    """The user function that JAX (or raximport) called, innermost: the traced function."""
    found, caller_is_user = None, False
    while tb is not None:
        user = is_user_file(tb.tb_frame.f_code.co_filename)
        if user and not caller_is_user and tb.tb_frame.f_code.co_name != "<module>":
            found = tb.tb_frame
        caller_is_user = user
        tb = tb.tb_next
    return found


def _traced_function(message: str, exc: BaseException | None = None) -> tuple[str, tuple[str, int] | None]:
    """(name, definition) of the function being traced, from JAX's message or else the traceback."""
    match = _TRACING.search(message)
    if match and not is_raximport_file(match.group(2)):
        return match.group(1), (match.group(2), int(match.group(3)))
    frame = _entry_frame(exc.__traceback__) if exc is not None else None
    if frame is None:
        return "", None
    return frame.f_code.co_name, (frame.f_code.co_filename, frame.f_code.co_firstlineno)


def _traced_argument(message: str, exc: BaseException | None = None) -> str:
    """The argument a traced value depends on; JAX's "values[1]" (a wrapper's *values) as the user's name."""
    match = _ARGUMENT.search(message)
    name = match.group(1) if match else ""
    positional = re.fullmatch(r"\w+\[(\d+)\]", name)
    frame = _entry_frame(exc.__traceback__) if exc is not None and positional else None
    if frame is not None:
        code = frame.f_code
        index = int(positional.group(1))  # type: ignore[union-attr]
        if index < code.co_argcount:
            return code.co_varnames[index]
    return name


def _callee(where: tuple[str, int] | None) -> str:
    """The name of the function called on the user's line (`step(x, [1, 2])` -> "step"), if plain."""
    if where is None:
        return ""
    source = linecache.getline(where[0], where[1]).strip()
    try:
        tree = ast.parse(source.rstrip(":"))
    except SyntaxError:
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                return func.id
            if isinstance(func, ast.Attribute):
                return func.attr
    return ""


def _static_fix(arg: str, function: str) -> str:
    name = function or "f"
    return f"jax.jit({name}, static_argnames=('{arg}',))" if arg else f"jax.jit({name}, static_argnames=(...))"


# --- the JAX entries ----------------------------------------------------------------------------


def _tracer_report(kind: str, title: str, explanation: str, fix: Callable[[str, str], str]):
    def build(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
        function, defined = _traced_function(message, exc)
        arg = _traced_argument(message, exc)
        hint = [line.strip() for line in message.splitlines() if line.startswith("The problem arose with")]
        return Report(kind=kind, title=title + (f" in {function}()" if function else ""), where=where,
                      function=function, defined_at=defined, parameter=arg,
                      got=f"a traced value that depends on '{arg}'" if arg else "",
                      explanation=explanation, details=tuple(hint), fix=fix(arg, function))

    return build


_concretization = _tracer_report(
    "concretization", "a concrete value was needed while tracing",
    "jit traces the function with abstract arrays (shape and dtype, no values); this line needs an "
    "actual value, which only exists when the compiled function runs.",
    lambda arg, fn: (f"if '{arg}' is a setting (a size, a count, a flag), make it static: {_static_fix(arg, fn)}; "
                     if arg else "make the argument static (static_argnames); ")
    + "if it is data, stay in jax.numpy: x.astype(int) instead of int(x), jnp.where instead of if",
)
_bool_conversion = _tracer_report(
    "tracer-bool-conversion", "Python `if`/`while`/`and`/`or` on a traced array",
    "Python control flow needs a True/False value, but while jit traces, arrays have no values.",
    lambda arg, fn: "use jnp.where(cond, a, b) or jax.lax.cond(cond, true_fn, false_fn, ...) "
    "(jax.lax.while_loop for loops)" + (f", or, if '{arg}' is a setting, make it static: {_static_fix(arg, fn)}" if arg
                                        else ", or make the condition's argument static (static_argnames)"),
)
_array_conversion = _tracer_report(
    "tracer-array-conversion", "numpy called on a traced array",
    "numpy (np.asarray, np.* functions, .tolist(), float()) needs real values; inside jit arrays are "
    "abstract until the compiled function runs.",
    lambda arg, fn: "use jax.numpy (jnp.*) inside the jitted function, and convert to numpy only after "
    "it returns (np.asarray(result))",
)
_integer_conversion = _tracer_report(
    "tracer-integer-conversion", "a traced array used as a Python int",
    "A list index, range(), or a shape needs a Python int, but while jit traces, arrays have no values.",
    lambda arg, fn: "index with arrays instead (jnp.asarray(the_list)[i], jnp.take), loop with "
    "jax.lax.fori_loop" + (f", or make '{arg}' static: {_static_fix(arg, fn)}" if arg else ", or make it static"),
)


def _unexpected_tracer(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    function, defined = _traced_function(message, exc)
    leaked = _LEAKED_AT.search(message)
    if leaked and function in ("", "<unknown>"):
        function = leaked.group(3).rsplit(".", 1)[-1]
    details = (f"the leaked value was created at {leaked.group(1)}:{leaked.group(2)} (in {leaked.group(3)})",) if leaked else ()
    return Report(
        kind="unexpected-tracer", title="a traced value escaped its jit" + (f" ({function})" if function else ""),
        where=where, function=function, defined_at=defined, details=details,
        explanation="A side effect (appending to a list, assigning a global or an attribute) saved a value "
        "from inside a traced function, and it was used after the trace had ended.",
        fix="return the value from the function instead of storing it"
        + (f" (line {leaked.group(2)} of {os.path.basename(leaked.group(1))})" if leaked else "")
        + "; keep jitted functions free of side effects",
    )


def _non_hashable(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    match = re.search(r"object of type (<class '[^']+'>), (.*?)\. The error was", message, re.S)
    type_name = _TYPE_NAME.sub(r"\1", match.group(1)) if match else "value"
    value = match.group(2) if match else ""
    function = _callee(where)
    return Report(
        kind="non-hashable-static-argument", title=f"a static argument of {function or 'a jitted function'}() "
        f"is a {type_name}, which cannot be hashed",
        where=where, function=function, got=f"{type_name} {value}".strip(),
        explanation="jit keys its compiled versions on the values of static arguments, so they must be "
        "hashable (ints, strings, tuples, frozen dataclasses).",
        fix=f"pass a tuple instead of a {type_name} (tuple(...)), or a frozen dataclass for settings; "
        "or, if it holds numbers, drop it from static_argnums/static_argnames and pass it as an array",
    )


def _invalid_jax_type(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    returned = _BAD_RETURN.search(message)
    if returned:
        type_name = _TYPE_NAME.sub(r"\1", returned.group(4))
        function = returned.group(1) if returned.group(1) not in ("<unknown>", "traced") else _callee(where)
        defined = (returned.group(2), int(returned.group(3))) if returned.group(2) else None
        return Report(
            kind="invalid-jax-type", title=f"{function or 'a jitted function'}() returns a {type_name} from jit",
            where=where, function=function, defined_at=defined,
            parameter="return value", expected="arrays (or pytrees of arrays)", got=type_name,
            explanation="A jitted function can only return arrays and pytrees (tuples, lists, dicts) of arrays.",
            fix=f"return arrays only; build the {type_name} outside the jitted function, from its results",
        )
    match = _ABSTRACT_ARG.search(message) or _BAD_ARG_TYPE.search(message)
    if match is None:
        return None  # type: ignore[return-value]
    if match.re is _ABSTRACT_ARG:
        function, type_text, path = match.group(1), match.group(2), match.group(3)
    else:
        function, type_text, path = _callee(where), match.group(2), match.group(1)
    function = function.rsplit(".", 1)[-1] if function != "<lambda>" else function
    if function in ("traced", "auto"):  # raximport's wrappers carry the user's name elsewhere
        function = _callee(where)
    type_name = _TYPE_NAME.sub(r"\1", type_text)
    return Report(
        kind="invalid-jax-type", title=f"argument '{path}' of {function or 'a jitted function'}() is a {type_name}, "
        "not an array",
        where=where, function=function, parameter=path, expected="an array (or a pytree of arrays)", got=type_name,
        explanation="jit traces every argument that is not static as an array; a "
        f"{type_name} cannot be traced.",
        fix=f"make '{path}' static: {_static_fix(path, function)} (it must be hashable), or, for your "
        "own class, register it as a pytree (jax.tree_util.register_dataclass)",
    )


def _concrete_shape(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    function, defined = _traced_function(message, exc)
    arg = _traced_argument(message, exc)
    got = re.search(r"Tracer\(~?([^)]*)\)", message)
    return Report(
        kind="concrete-shape", title="an array shape depends on a traced value" + (f" in {function}()" if function else ""),
        where=where, function=function, defined_at=defined, parameter=arg,
        got=f"a traced {got.group(1)}" if got else "a traced value",
        explanation="Shapes must be known when jit compiles; jnp.zeros(n), jnp.arange(n), x[:n] or a "
        "reshape were given a value that exists only when the compiled function runs.",
        fix=(f"make '{arg}' static: {_static_fix(arg, function)} (one compile per value); " if arg
             else "make the size a static argument (static_argnames), one compile per value; ")
        + "or keep the shape fixed and mask: jnp.where(jnp.arange(max_n) < n, x, 0), jax.lax.dynamic_slice",
    )


def _key_reuse(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    return Report(
        kind="key-reuse", title="a PRNG key was used twice", where=where, got=_first_line(exc).split(": ", 1)[-1],
        explanation="Two random draws from the same key give the same numbers (found by JAX's key-reuse "
        "checker, which --debug-keys turns on).",
        fix="split before each use: key, subkey = jax.random.split(key); draw with subkey and keep key for "
        "the next split",
    )


def _nan(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    match = re.search(r"invalid value \((nan|inf)\) encountered in (\S+)", message)
    value, op = (match.group(1), match.group(2)) if match else ("nan", "")
    function, defined = _traced_function(message, exc)
    return Report(
        kind="nan", title=f"{value.upper() if value == 'inf' else 'NaN'} produced" + (f" by {op}" if op else "")
        + (f" in {function}()" if function else ""),
        where=where, function=function, defined_at=defined, got=f"{value} (from {op})" if op else value,
        extra={"operation": op},
        explanation=f"With --debug-nans, JAX re-ran the computation op by op and stopped at the first "
        f"operation that produced a {value}: this line" + (f" ({op})" if op else "") + ".",
        fix="guard this operation's input: jnp.log(jnp.maximum(x, eps)), jnp.sqrt(jnp.maximum(x, 0)), "
        "jnp.where(d != 0, n / d, 0); if it appears only after some steps, lower the learning rate or clip gradients",
    )


_NAN_WORD = re.compile(r"\b(nan|inf|infinite|non-finite)\b", re.I)


def _nan_hint(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    return Report(
        kind="nan-detected", title=_first_line(exc), where=where,
        explanation="Your code stopped on a NaN or Inf; where it first appeared is not known yet.",
        fix="run again with --debug-nans: JAX then stops at the first operation that produces a NaN, "
        "and raximport points at its line",
    )


def _deleted(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    shape = re.search(r"shape=(\S+?)\.?$", message.splitlines()[0] if message else "")
    return Report(
        kind="deleted-array", title="an array was used after it was donated", where=where,
        got=f"a deleted array ({shape.group(1)})" if shape else "a deleted array",
        explanation="This array was donated to a jitted function (donate_argnums/donate_argnames): XLA "
        "reused its memory for the result, so it no longer exists.",
        fix="use what the function returned instead of the donated input (x = step(x)), or take the argument "
        "out of donate_argnums if you still need it afterwards",
    )


def _resource_exhausted(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    size = re.search(r"allocating (\d+) bytes", message)
    got = f"{int(size.group(1)) / 2**30:.1f} GiB requested" if size else ""
    return Report(
        kind="out-of-memory", title="out of memory (XLA RESOURCE_EXHAUSTED)", where=where, got=got,
        explanation="XLA could not allocate the memory this computation needs.",
        fix="lower batch_size (or block_size / the model size); run with --memory-report to see each compiled "
        "function's predicted peak, and with --memory-limit SIZE raximport refuses a step that would not fit "
        "before it runs (and suggests a batch size that does)",
        extra={"requested_bytes": int(size.group(1))} if size else {},
    )


# --- type checks (jaxtyping + beartype) ---------------------------------------------------------

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


def _find_config(config_name: str, named: list[tuple[str, Any]]) -> tuple[str, Any] | None:
    """(how to spell it, value) of `config_name` in the first of `named` values that holds it."""
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


def _describe(value: Any) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{getattr(dtype, 'name', dtype)}[{','.join(str(s) for s in shape)}]"
    return ""


def _typecheck(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    header = _HEADER.search(message)
    qualified = header.group(2) if header else ""
    returned = bool(header and header.group(1) == "return value")
    call = getattr(exc, "__rax_call__", None)  # (fn, args, kwargs) from checks.check
    fn, args, kwargs = call if call else (None, (), {})
    if fn is not None and not (qualified == fn.__qualname__ or qualified.endswith("." + fn.__qualname__)):
        fn, args, kwargs = None, (), {}  # raised by a checked function that raximport did not wrap
    target = inspect.unwrap(fn) if fn is not None else None
    function = getattr(target, "__qualname__", "") or qualified.rsplit(".", 1)[-1]
    defined = _definition(target)
    parameter = "return value" if returned else (_PARAM.search(message).group(1) if _PARAM.search(message) else "")
    bound: dict[str, Any] = {}
    if target is not None:
        try:
            bound = dict(inspect.signature(target).bind_partial(*args, **kwargs).arguments)
        except (TypeError, ValueError):
            bound = {}
    actual = _ACTUAL.search(message)
    got = _describe(bound.get(parameter)) if parameter in bound else ""
    got = got or (_pretty_value(actual.group(1)) if actual else "")
    expected_match = _EXPECTED.search(message)
    expected = _pretty_type(expected_match.group(1)) if expected_match else ""
    bindings: list[tuple[str, int]] = []
    if "are as follows." in message:
        for line in message.split("are as follows.", 1)[1].splitlines():
            name, sep, value = line.strip().partition("=")
            if sep and value.strip().lstrip("-").isdigit():
                bindings.append((name, int(value)))
    annotations = _ANNOTATION.findall(message.split("Parameter annotations:", 1)[1]) if "Parameter annotations:" in message else []
    reason = _cause_reason(exc)
    details: list[str] = []
    extra: dict[str, object] = {}
    kind, title, fix = "type-mismatch", f"{function}() {parameter} does not match its annotation", ""
    what = "the return value" if returned else f"'{parameter}'"
    conflict = _DIM_CONFLICT.search(reason)
    dtype = _DTYPE.search(reason)
    rank = _RANK.search(reason)
    if conflict:
        dim, size, existing = conflict.group(1), int(conflict.group(2)), int(conflict.group(3))
        kind = "shape-mismatch"
        before = [name for name, dims in annotations if name != parameter] if returned else \
            [name for name, _ in annotations[: [n for n, _ in annotations].index(parameter)]] \
            if parameter in [n for n, _ in annotations] else []
        bound_by = next((name for name, dims in annotations if name in before and dim in _dims(dims)), "")
        title = f"shape mismatch in {function}(): {what} has {dim}={size}, but " + \
            (f"'{bound_by}' set {dim}={existing}" if bound_by else f"{dim} is already {existing}")
        details.append(f"dimension '{dim}': {size} in {what}, {existing} bound first" +
                       (f" by '{bound_by}'" if bound_by else ""))
        extra.update(dimension=dim, size=size, expected_size=existing, bound_by=bound_by)
        config_name = DIM_TO_CONFIG.get(dim)
        found = None
        if config_name:
            found = _find_config(config_name, list(bound.items())) or _find_config(
                config_name, _user_frame_values(exc.__traceback__))
            extra["config"] = config_name
        if found:
            spelled, value = found
            extra.update(config_value=value, config_source=spelled)
            odd = what if size != value else (f"'{bound_by}'" if bound_by and existing != value else "")
            details.append(f"{dim} is set by {config_name}: {spelled} = {value}" +
                           (f", which {odd} does not match" if odd else ""))
            culprit = _find_config(config_name, [(k, v) for k, v in _user_frame_values(exc.__traceback__)
                                                 if _find_config(config_name, [(k, v)]) not in (None, found)
                                                 and _find_config(config_name, [(k, v)])[1] == size])  # type: ignore[index]
            if culprit and size != value:
                details.append(f"also seen: {culprit[0]} = {culprit[1]}, the {dim} size of {what} "
                               f"(was {what} built with it?)")
                extra.update(culprit=culprit[0], culprit_value=culprit[1])
            fix = (f"{what} and '{bound_by or 'the first argument'}' must agree on {dim}; {dim} comes from "
                   f"{config_name} ({spelled} = {value}): build the data with the same {config_name} as the "
                   f"model, or, if the sizes may differ, give {what} its own dimension name in the annotation")
        else:
            source = f" ({dim} is usually {config_name})" if config_name else ""
            fix = (f"{what} must have {dim}={existing} like '{bound_by or 'the arguments before it'}'{source}: fix "
                   f"the shape at the call site, or, if the sizes may differ, use a different dimension name")
            if returned:
                fix = (f"the function returned {dim}={size} where its annotation says {dim}={existing}: fix the "
                       "body (a missing transpose, reshape or sum over an axis?) or the return annotation")
    elif dtype:
        kind = "dtype-mismatch"
        title = f"dtype mismatch in {function}(): {what} is {dtype.group(1)}"
        wanted = expected.split("[", 1)[0] or "the annotated dtype"
        cast = {"Int": "jnp.int32", "Float": "jnp.float32", "Bool": "bool", "Shaped": ""}.get(wanted, "")
        fix = (f"convert at the call site ({parameter}.astype({cast}))" if cast and not returned else
               "convert the value (x.astype(...))") + f", or change the annotation if {dtype.group(1)} is intended"
        extra.update(dtype=dtype.group(1))
    elif rank:
        kind = "shape-mismatch"
        title = f"shape mismatch in {function}(): {what} has {rank.group(1)} dimensions, the annotation {rank.group(2)}"
        fix = ("add or remove an axis at the call site (x[None], x.reshape(...), x.squeeze(axis)) "
               "or fix the annotation")
        extra.update(ndim=int(rank.group(1)), expected_ndim=int(rank.group(2)))
    else:
        value = bound.get(parameter, None) if parameter in bound else None
        type_name = type(value).__name__ if parameter in bound else (got.split(" ", 1)[0] or "value")
        if parameter in bound and not got.startswith(type_name):
            got = f"{type_name} {_short(value)}"
        title = f"type mismatch in {function}(): {what} is a {type_name}, not {expected or 'the annotated type'}"
        fix = "pass a value of the annotated type (jnp.asarray(...) for an array), or fix the annotation"
    if reason and not conflict:
        details.append(f"beartype: {reason}")
    if returned and not conflict and not fix:
        fix = "fix the function's body or its return annotation"
    return Report(
        kind=kind, title=title, where=where or defined, function=function, defined_at=defined, parameter=parameter,
        expected=expected, got=got, bindings=tuple(bindings), details=tuple(details), fix=fix, extra=extra,
        explanation=_TYPECHECK_EXPLANATION.get(kind, ""),
    )


_TYPECHECK_EXPLANATION = {
    "shape-mismatch": "jaxtyping checked the call against its annotations: a named dimension has one size "
    "across all the arguments and the return value of a call.",
    "dtype-mismatch": "jaxtyping checked the call against its annotations: the dtype is part of the "
    "annotation (Float, Int, Bool...).",
    "type-mismatch": "jaxtyping and beartype checked the call against its annotations.",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _definition(fn: Any) -> tuple[str, int] | None:
    """Where `fn` is defined; for a generated method (a dataclass's __init__), its class."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    if not code.co_filename.startswith("<"):
        return code.co_filename, code.co_firstlineno
    owner: Any = sys.modules.get(getattr(fn, "__module__", "") or "")
    for part in getattr(fn, "__qualname__", "").split(".")[:-1]:
        owner = getattr(owner, part, None)
    if isinstance(owner, type):
        try:
            return inspect.getsourcefile(owner) or "", inspect.findsource(owner)[1] + 1
        except (OSError, TypeError):
            return None
    return None


# --- the catalogue, in order: first match wins ----------------------------------------------------

_CATALOGUE: list[tuple[Callable[[list[str], str, BaseException], bool],
                       Callable[[BaseException, str, tuple[str, int] | None], Report | None]]] = [
    (_name_is("TypeCheckError"), _typecheck),
    (_name_is("TracerBoolConversionError"), _bool_conversion),
    (_name_is("TracerArrayConversionError"), _array_conversion),
    (_name_is("TracerIntegerConversionError"), _integer_conversion),
    (_name_is("UnexpectedTracerError"), _unexpected_tracer),
    (_name_is("KeyReuseError"), _key_reuse),
    (_says("Shapes must be 1D sequences of concrete values", "Slice entries must be static integers",
           "must be static integers"), _concrete_shape),
    (_name_is("ConcretizationTypeError"), _concretization),
    (_says("Non-hashable static arguments"), _non_hashable),
    (_says("is not a valid JAX type", "as an abstract array"), _invalid_jax_type),
    (_says("Array has been deleted"), _deleted),
    (_says("RESOURCE_EXHAUSTED"), _resource_exhausted),
    (_says("encountered in", name="FloatingPointError"), _nan),
    (lambda names, message, exc: bool(_NAN_WORD.search(message)) and not isinstance(exc, (SyntaxError, ImportError)),
     _nan_hint),
]


# --- slow compiles ------------------------------------------------------------------------------

_compile_watch: dict[str, Any] = {"on": False, "reported": False}


def watch_compile_times() -> None:
    """Report, once, a compile slower than SLOW_COMPILE_SECS while JAX's persistent cache is off."""
    if _compile_watch["on"]:
        return
    monitoring = getattr(sys.modules.get("jax"), "monitoring", None)
    if monitoring is None:
        return
    _compile_watch["on"] = True
    monitoring.register_event_duration_secs_listener(_on_duration)


def _slow_compile_secs() -> float:
    try:
        return float(os.environ.get("RAX_SLOW_COMPILE_SECS", SLOW_COMPILE_SECS))
    except ValueError:
        return SLOW_COMPILE_SECS


def _on_duration(event: str, duration: float, **kwargs: Any) -> None:
    if event != "/jax/core/compile/backend_compile_duration" or _compile_watch["reported"]:
        return
    if duration < _slow_compile_secs():
        return
    jax = sys.modules.get("jax")
    try:
        cache_on = bool(jax.config.jax_compilation_cache_dir) and jax.config.jax_enable_compilation_cache  # type: ignore[union-attr]
    except Exception:
        cache_on = False
    if cache_on:
        return
    _compile_watch["reported"] = True
    where = user_location()
    show(Report(
        kind="slow-compile", title=f"a compile took {duration:.1f} s and the persistent compilation cache is off",
        where=where, function=_callee(where), got=f"{duration:.1f} s",
        explanation="XLA compiles every jitted function again in each new process unless JAX's persistent "
        "cache keeps the result on disk.",
        fix="let raximport turn the cache on (drop --no-xla-cache / RAX_XLA_CACHE=0), or set "
        "JAX_COMPILATION_CACHE_DIR: the next run loads the compiled step instead of compiling it",
        extra={"seconds": round(duration, 3), "at": time.time()},
    ))
