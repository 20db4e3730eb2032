"""The catalogue: what an exception means and how to fix it, as a report.Report.

`explain(exc)` classifies by exception type names and message text, so JAX, jaxtyping and beartype
are never imported here (an exception of theirs means they already are). Every entry names the
user's line (the innermost frame of the traceback in the user's code, i.e. the call site for
errors raised while tracing or type-checking), explains the error in a sentence or two, and gives
the fix. Anything unknown becomes a report of kind "error": shown as a clean traceback, never
swallowed. A failed annotation check, the richest entry, has its own module: explain_typecheck.py;
so has a shape error of the libraries in code with no annotations: explain_shapes.py.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import linecache
import os
import re
from types import FrameType, ModuleType, TracebackType
from typing import Any, Callable

from raximport.explain_shapes import explain_shapes, is_shape_error, lookup
from raximport.explain_typecheck import explain_typecheck
from raximport.jit import static_parameters
from raximport.provenance import is_raximport_file, is_user_file
from raximport.report import Report, defined_at, innermost_user_entry, user_location


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


def _calls_at(where: tuple[str, int] | None) -> list[ast.Call]:
    """The calls on the user's line, outermost first, if the line parses on its own."""
    if where is None:
        return []
    source = linecache.getline(where[0], where[1]).strip()
    try:
        tree = ast.parse(source.rstrip(":"))
    except SyntaxError:
        return []
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _call_at(where: tuple[str, int] | None) -> ast.Call | None:
    """The first call on the user's line, if the line parses on its own."""
    return next(iter(_calls_at(where)), None)


def _called_name(call: ast.Call | None) -> str:
    """The name a call calls (`step(x)`, `jax.lax.scan(...)` -> "step", "scan"), if plain."""
    func = getattr(call, "func", None)
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def callee(where: tuple[str, int] | None) -> str:
    """The name of the function called on the user's line (`step(x, [1, 2])` -> "step"), if plain."""
    return _called_name(_call_at(where))


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
    function = callee(where)
    call, entry = _call_at(where), innermost_user_entry(exc.__traceback__)
    jitted = _named_object(call.func, entry.tb_frame) if call and entry else None
    static = static_parameters(jitted)
    parameter = _unhashable_argument(call, static, type_name, entry.tb_frame) if call and entry and static else ""
    named = f"'{parameter}'" if parameter else ""
    return Report(
        kind="non-hashable-static-argument", title=f"{'static argument ' + named if named else 'a static argument'} "
        f"of {function or 'a jitted function'}() is a {type_name}, which cannot be hashed",
        where=where, function=function, defined_at=defined_at(inspect.unwrap(jitted)) if static else None,
        parameter=parameter, got=f"{type_name} {value}".strip(),
        explanation="jit keys its compiled versions on the values of static arguments, so they must be "
        "hashable (ints, strings, tuples, frozen dataclasses).",
        fix=f"pass {named + ' as ' if named else ''}a tuple instead of a {type_name} (tuple(...)), or a frozen "
        f"dataclass for settings; or, if it holds numbers, drop {named or 'it'} from static_argnums/static_argnames "
        "and pass it as an array",
    )


def _named_object(node: ast.expr, frame: FrameType) -> Any:
    """What `f` or `module.f` names in `frame` (None for anything else): read, never called, so no
    code of the user's runs."""
    if isinstance(node, ast.Name):
        return lookup(node.id, frame)[1]
    if isinstance(node, ast.Attribute):
        owner = _named_object(node.value, frame)
        return vars(owner).get(node.attr) if isinstance(owner, ModuleType) else None
    return None


def _unhashable_argument(call: ast.Call, static: tuple[list[str], set[str]], type_name: str, frame: FrameType) -> str:
    """The static parameter that got the unhashable `type_name` at this call: of the static
    arguments the call passes, the only one not known to be of another type; "" if unsure."""
    positional, static_names = static
    passed: list[tuple[str, ast.expr]] = []
    for index, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred):  # positions after *args are unknown
            break
        if index < len(positional) and positional[index] in static_names:
            passed.append((positional[index], arg))
    passed += [(kw.arg, kw.value) for kw in call.keywords if kw.arg in static_names]
    candidates = [name for name, node in passed if _type_name(node, frame) in (None, type_name)]
    return candidates[0] if len(candidates) == 1 else ""


_LITERAL_TYPES = {ast.List: "list", ast.ListComp: "list", ast.Dict: "dict", ast.DictComp: "dict", ast.Set: "set",
                  ast.SetComp: "set", ast.Tuple: "tuple"}


def _type_name(node: ast.expr, frame: FrameType) -> str | None:
    """The type of an argument written as a literal or a variable; None if it is not known."""
    if isinstance(node, ast.Constant):
        return type(node.value).__name__
    if isinstance(node, ast.Name):
        found, value = lookup(node.id, frame)
        return type(value).__name__ if found else None
    return _LITERAL_TYPES.get(type(node))


def _invalid_jax_type(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report:
    returned = _BAD_RETURN.search(message)
    if returned:
        type_name = _TYPE_NAME.sub(r"\1", returned.group(4))
        function = returned.group(1) if returned.group(1) not in ("<unknown>", "traced") else callee(where)
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
        function, type_text, path = callee(where), match.group(2), match.group(1)
    function = function.rsplit(".", 1)[-1] if function != "<lambda>" else function
    if function in ("traced", "auto"):  # raximport's wrappers carry the user's name elsewhere
        function = callee(where)
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


_CARRY_MISMATCH = re.compile(r"The input carry (?:component )?(\S+) has type (\S+) but the corresponding output "
                             r"carry component has type (\S+), so the (\w+(?: \w+)?) do not match")
_LOOP_BODIES = {"scan": (0, "f"), "fori_loop": (2, "body_fun"), "while_loop": (1, "body_fun")}  # where the body goes
_ARRAY_TYPE = re.compile(r"(\w+)\[([\d,]*)\]")


def _loop_carry(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report | None:
    """A scan/fori_loop/while_loop body that returns its carry with another shape or dtype."""
    mismatches = _CARRY_MISMATCH.findall(message)
    if not mismatches:
        return None
    path, was, now, what = mismatches[0]
    loop, body, defined, parameters = _loop_body(exc, where)
    if path.startswith("loop_carry[1]"):  # fori_loop's (i, carry): the carry is the body's second parameter
        path = (parameters[1] if len(parameters) > 1 else "init_val") + path[len("loop_carry[1]"):]
    more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
    fix = (f"make {body or 'the body'}() return {path} as {was}, the type it goes in with (reduce, reshape "
           f"or slice what the body computes for it), or start the loop with {path} as {now}"
           f"{_zeros_of(now)}") if what == "shapes" else (
           f"make {body or 'the body'}() return {path} as {was} (cast it back: {_cast_to(was)}), or start "
           f"the loop with {path} as {now}")
    return Report(
        kind="loop-carry", title=f"the carry of {loop or 'a loop'} changes type in {body or 'its body'}(): "
        f"{path} goes in as {was} and comes out as {now}{more}",
        where=where, function=body, defined_at=defined, parameter=path, expected=was, got=now,
        explanation=f"{loop or 'The loop'} compiles its body once and hands each step's carry to the next, "
        "so the body must return the carry with the very shape and dtype it was given.",
        fix=fix,
    )


def _zeros_of(type_text: str) -> str:
    """" (for instance jnp.zeros((3,), jnp.float32))" for "float32[3]"; "" for what does not parse."""
    match = _ARRAY_TYPE.fullmatch(type_text)
    if match is None:
        return ""
    dims = match.group(2)
    shape = f"({dims},)" if dims and "," not in dims else f"({dims})"
    return f" (for instance jnp.zeros({shape}, jnp.{match.group(1)}))"


def _cast_to(type_text: str) -> str:
    """".astype(jnp.int32)" for "int32[]"."""
    match = _ARRAY_TYPE.fullmatch(type_text)
    return f".astype(jnp.{match.group(1)})" if match else ".astype"


def _loop_body(exc: BaseException, where: tuple[str, int] | None
               ) -> tuple[str, str, tuple[str, int] | None, list[str]]:
    """(the loop, its body's name, where the body is defined, its parameters) from the loop's call on
    the user's line."""
    entry = innermost_user_entry(exc.__traceback__)
    for call in _calls_at(where):
        name = _called_name(call)
        if name not in _LOOP_BODIES:
            continue
        index, keyword = _LOOP_BODIES[name]
        node = call.args[index] if len(call.args) > index else next(
            (k.value for k in call.keywords if k.arg == keyword), None)
        if isinstance(node, ast.Lambda):
            return f"jax.lax.{name}", "<lambda>", where, [a.arg for a in node.args.args]
        fn = _named_object(node, entry.tb_frame) if node is not None and entry is not None else None
        code = getattr(fn, "__code__", None)
        return (f"jax.lax.{name}", getattr(fn, "__name__", ""), defined_at(fn) if callable(fn) else None,
                list(code.co_varnames[:code.co_argcount]) if code is not None else [])
    return "", "", None, []


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


# --- the catalogue, in order: first match wins ----------------------------------------------------

_CATALOGUE: list[tuple[Callable[[list[str], str, BaseException], bool],
                       Callable[[BaseException, str, tuple[str, int] | None], Report | None]]] = [
    (_name_is("TypeCheckError"), explain_typecheck),
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
    (_says("carry input and carry output must have equal types"), _loop_carry),
    (_says("Array has been deleted"), _deleted),
    (_says("RESOURCE_EXHAUSTED"), _resource_exhausted),
    (_says("encountered in", name="FloatingPointError"), _nan),
    (is_shape_error, explain_shapes),
    (lambda names, message, exc: bool(_NAN_WORD.search(message)) and not isinstance(exc, (SyntaxError, ImportError)),
     _nan_hint),
]
