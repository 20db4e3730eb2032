"""Shape errors in code with no annotations, explained at the user's line.

A TypeError or ValueError about shapes, dtypes or ranks raised inside jax, optax, flax or equinox
names none of the user's variables ("indices and arr must have the same number of dimensions; 3
vs. 2"). The innermost frame of the user's code still holds them: the call (or operator) that
failed is found in the original source at the failing instruction's position, and the shapes and
dtypes of its operands are read from that frame's variables. Inside jit those are tracers, which
carry shapes; the jitted function's own arguments come from the frame of raximport's jit wrapper.

The operands are read by a whitelist evaluator that runs none of the user's code: names,
attributes found in an instance's `__dict__` (or slots, or a module), items of plain dicts, lists
and tuples under constant keys, an array's shape/dtype/ndim/size/T, and operators over those,
computed on shapes alone (jax.eval_shape). A call, a property or anything else is shown as not
evaluated, so nothing with a side effect runs twice. Nothing here runs until an error is explained.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import linecache
import operator
import re
from types import FrameType, ModuleType, TracebackType
from typing import AbstractSet, Any, Callable

from raximport.jit import describe_call
from raximport.provenance import installed_package
from raximport.report import Report, function_name, innermost_user_entry, short_repr
from raximport.tracebacks import JAX_NOTE

LIBRARIES = ("jax", "jaxlib", "optax", "flax", "equinox")
_SHAPE_WORDS = re.compile(r"\b(?:shapes?|dimensions?|ndims?|rank|broadcast\w*|ax[ie]s|sizes?)\b", re.I)
_DTYPE_WORDS = re.compile(r"\bdtypes?\b", re.I)
_ARRAY_ATTRIBUTES = ("shape", "dtype", "ndim", "size")
_ARRAY_VIEWS: dict[str, Callable[[Any], Any]] = {"T": lambda a: a.T, "mT": lambda a: a.mT}
_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.MatMult: operator.matmul,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}
_NUMBERS = (bool, int, float, complex)
_KEYS = (int, str, bytes, slice, type(None), type(Ellipsis))
_MAX_LEAVES = 12  # of the jitted function's arguments, before "… N more"
_MAX_MESSAGE_LINES = 8
_MAX_HELD = 4  # arrays of a called object (a layer's weight and bias) shown with its call
_MISSING = object()
_JIT_FILE = describe_call.__code__.co_filename  # where raximport's jit wrapper, `traced`, runs


class NotEvaluated(Exception):
    """An expression the evaluator leaves alone: it could run the user's code, or has no value here."""


# --- which errors ---------------------------------------------------------------------------------


def is_shape_error(names: list[str], message: str, exc: BaseException) -> bool:
    """A TypeError/ValueError whose message is about shapes, raised in jax, optax, flax or equinox
    under the user's code."""
    return (("TypeError" in names or "ValueError" in names)
            and bool(_SHAPE_WORDS.search(message) or _DTYPE_WORDS.search(message)) and bool(_library(exc)))


def _library(exc: BaseException) -> str:
    """The library that raised `exc` below the user's innermost frame ("" if none of LIBRARIES)."""
    entry = innermost_user_entry(exc.__traceback__)
    tb = entry.tb_next if entry is not None else None
    while tb is not None:
        package = installed_package(tb.tb_frame.f_code.co_filename)
        if package in LIBRARIES:
            return package
        tb = tb.tb_next
    notes = getattr(exc, "__notes__", None) or []
    return "jax" if entry is not None and any(JAX_NOTE in str(n) for n in notes) else ""


# --- the failing call in the original source --------------------------------------------------------


def _failing_node(entry: TracebackType) -> tuple[ast.AST, str] | None:
    """The call, operator or augmented assignment the user's frame was executing, and its file's source."""
    frame = entry.tb_frame
    source = "".join(linecache.getlines(frame.f_code.co_filename, frame.f_globals))
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    line = entry.tb_lineno
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Call, ast.BinOp, ast.AugAssign))
             and n.lineno <= line <= (n.end_lineno or n.lineno)]
    span = _position(entry)
    if span is not None:
        exact = [n for n in nodes if _span(n) == span]
        if exact:
            return exact[0], source
        covering = [n for n in nodes if _span(n)[:2] <= span[:2] and _covers(n, span)]
        if covering:
            return min(covering, key=_size), source
    starting = [n for n in nodes if n.lineno == line]
    return (max(starting, key=_size), source) if starting else None


def _position(entry: TracebackType) -> tuple[int, int, int, int] | None:
    """(line, end line, column, end column) of the failing instruction (Python 3.11+)."""
    positions = getattr(entry.tb_frame.f_code, "co_positions", None)
    if positions is None or entry.tb_lasti < 0:
        return None
    found = next(itertools.islice(positions(), entry.tb_lasti // 2, None), None)
    return found if found is not None and None not in found else None  # type: ignore[return-value]


def _span(node: ast.AST) -> tuple[int, int, int, int]:
    return node.lineno, node.end_lineno or node.lineno, node.col_offset, node.end_col_offset or 0  # type: ignore[attr-defined]


def _covers(node: ast.AST, span: tuple[int, int, int, int]) -> bool:
    line, end_line, column, end_column = _span(node)
    return (line, column) <= (span[0], span[2]) and (end_line, end_column) >= (span[1], span[3])


def _size(node: ast.AST) -> tuple[int, int]:
    line, end_line, column, end_column = _span(node)
    return end_line - line, end_column - column


def _operands(node: ast.AST, source: str) -> tuple[ast.expr | None, list[tuple[str, ast.expr]]]:
    """What a call calls (`x.reshape`, `self.dense`, `optax.l2_loss`), and (source text,
    expression) of each operand: the call's arguments and keywords (the elements of a list or
    tuple written in place), an operator's two sides."""
    callee = None
    if isinstance(node, ast.BinOp):
        found = [node.left, node.right]
    elif isinstance(node, ast.AugAssign):
        found = [node.target, node.value]
    else:
        assert isinstance(node, ast.Call)
        callee = node.func
        found = [a.value if isinstance(a, ast.Starred) else a for a in node.args] + [kw.value for kw in node.keywords]
    expanded = [e for n in found for e in (n.elts if isinstance(n, (ast.List, ast.Tuple)) else [n])]
    labels = {id(kw.value): f"{kw.arg}=" if kw.arg else "**" for kw in getattr(node, "keywords", [])}
    return callee, [(labels.get(id(e), "") + _text(e, source), e) for e in expanded]


def _text(node: ast.AST, source: str) -> str:
    """The node's source on one line, as written (a call over several lines without its comments)."""
    if node.lineno != node.end_lineno and isinstance(node, ast.Call):  # type: ignore[attr-defined]
        parts = [_text(a, source) for a in node.args] + [
            f"{kw.arg}={_text(kw.value, source)}" if kw.arg else f"**{_text(kw.value, source)}" for kw in node.keywords]
        return f"{_text(node.func, source)}({', '.join(parts)})"
    text = " ".join((ast.get_source_segment(source, node) or ast.unparse(node)).split())
    return re.sub(r"([(\[{]) | ([)\]}])", r"\1\2", text)


# --- the evaluator ----------------------------------------------------------------------------------


def evaluate(node: ast.expr, frame: FrameType) -> Any:
    """The value of `node` in `frame`, computed without running any of the user's code; arrays
    derived from others are jax.ShapeDtypeStructs. Raises NotEvaluated for anything else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        found, value = lookup(node.id, frame)
        if not found:
            raise NotEvaluated("not defined here")
        return value
    if isinstance(node, ast.Attribute):
        return _attribute(evaluate(node.value, frame), node.attr)
    if isinstance(node, ast.Subscript):
        return _item(evaluate(node.value, frame), evaluate(node.slice, frame))
    if isinstance(node, ast.Slice):
        return slice(*(evaluate(part, frame) if part is not None else None for part in (node.lower, node.upper, node.step)))
    if isinstance(node, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in node.elts):
        values = [evaluate(e, frame) for e in node.elts]
        return tuple(values) if isinstance(node, ast.Tuple) else values
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _apply(_OPERATORS[type(node.op)], evaluate(node.left, frame), evaluate(node.right, frame))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _apply(_UNARY[type(node.op)], evaluate(node.operand, frame))
    raise NotEvaluated("a call: not run again" if isinstance(node, ast.Call) else "not evaluated")


def _value(node: ast.expr, frame: FrameType) -> Any:
    """`evaluate`, with what it leaves alone (and why) as a NotEvaluated value."""
    try:
        return evaluate(node, frame)
    except NotEvaluated as why:
        return why


def _stored_arrays(owner: Any) -> list[tuple[str, Any]]:
    """The arrays an object (an equinox or flax layer) holds in its instance dict, directly or in a
    variable (an `nnx.Param`), read without running its code."""
    if isinstance(owner, (ModuleType, NotEvaluated)):
        return []
    slot = next((vars(k)["__dict__"] for k in type(owner).__mro__ if "__dict__" in vars(k)), None)
    if not inspect.isgetsetdescriptor(slot):  # no instance dict, or a class's own __dict__ property
        return []
    stored = slot.__get__(owner, type(owner))
    if type(stored) is not dict:
        return []
    held = ((name, value if is_array(value) else _array_in_slots(value)) for name, value in stored.items())
    return [(name, value) for name, value in held if value is not None][:_MAX_HELD]


def _array_in_slots(holder: Any) -> Any:
    """The array a variable object keeps in a slot of its class (flax's `Variable._raw_value`), or None."""
    for klass in type(holder).__mro__:
        slots = vars(klass).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            member = vars(klass).get(name)
            try:
                value = member.__get__(holder, type(holder)) if inspect.ismemberdescriptor(member) else None
            except AttributeError:  # a slot never set
                continue
            if is_array(value):
                return value
    return None


def lookup(name: str, frame: FrameType) -> tuple[bool, Any]:
    """(found, value) of a variable as the code of `frame` sees it."""
    for scope in (frame.f_locals, frame.f_globals, frame.f_builtins):
        if name in scope:
            return True, scope[name]
    return False, None


def is_array(value: Any) -> bool:
    """A JAX or numpy array, a tracer, or a shape-and-dtype stand-in."""
    import jax
    import numpy as np

    return isinstance(value, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic))


def _attribute(owner: Any, name: str) -> Any:
    """`owner.name` if reading it runs no code: an array's shape and dtype, a module's global, a
    NamedTuple field, a value stored in the instance (or its slots) or a plain class attribute."""
    if is_array(owner):
        if name in _ARRAY_ATTRIBUTES:
            return getattr(owner, name)
        if name in _ARRAY_VIEWS:
            return _apply(_ARRAY_VIEWS[name], owner)
        raise NotEvaluated(f"array attribute .{name}")
    if isinstance(owner, ModuleType):
        if name in vars(owner):
            return vars(owner)[name]
        raise NotEvaluated("not in the module")
    fields = getattr(type(owner), "_fields", None)
    if isinstance(owner, tuple) and isinstance(fields, tuple) and name in fields:
        return tuple.__getitem__(owner, fields.index(name))
    static = inspect.getattr_static(owner, name, _MISSING)
    if static is _MISSING:
        raise NotEvaluated("not a stored attribute")
    if inspect.ismemberdescriptor(static):  # a __slots__ field
        return static.__get__(owner, type(owner))
    if hasattr(type(static), "__get__"):
        raise NotEvaluated("a property or method: not run")
    return static


def _item(owner: Any, key: Any) -> Any:
    """`owner[key]` for a constant key, on an array (its shape) or a plain dict, list or tuple."""
    if not _is_key(key):
        raise NotEvaluated("the key is not a constant")
    if is_array(owner):
        return _apply(lambda a: a[key], owner)
    kind = next((t for t in (dict, list, tuple) if isinstance(owner, t)), None)
    if kind is None or getattr(type(owner), "__getitem__", None) is not kind.__getitem__:
        raise NotEvaluated("a container of the user's: not read")
    if kind is dict and not dict.__contains__(owner, key):  # a defaultdict would insert the key
        raise NotEvaluated("no such key")
    try:
        return kind.__getitem__(owner, key)
    except (IndexError, TypeError) as error:
        raise NotEvaluated(str(error)) from None


def _is_key(key: Any) -> bool:
    if isinstance(key, tuple):
        return all(map(_is_key, key))
    if isinstance(key, slice):
        return all(_is_key(part) and not isinstance(part, slice) for part in (key.start, key.stop, key.step))
    return type(key) in _KEYS


def _apply(op: Callable[..., Any], *operands: Any) -> Any:
    """`op` over numbers directly, over arrays on their shapes and dtypes alone (jax.eval_shape)."""
    if all(type(o) in _NUMBERS for o in operands):
        if op is operator.pow and abs(operands[1]) > 64:
            raise NotEvaluated("too large")
        return op(*operands)
    if all(isinstance(o, tuple) and not hasattr(type(o), "_fields") for o in operands) and op is operator.add:
        return op(*operands)
    if not any(is_array(o) for o in operands) or not all(is_array(o) or type(o) in _NUMBERS for o in operands):
        raise NotEvaluated("not an array operation")
    import jax

    arrays = [i for i, o in enumerate(operands) if is_array(o)]

    def on_shapes(*stand_ins: Any) -> Any:
        values = list(operands)
        for index, stand_in in zip(arrays, stand_ins):
            values[index] = stand_in
        return op(*values)

    try:
        return jax.eval_shape(on_shapes, *(jax.ShapeDtypeStruct(operands[i].shape, operands[i].dtype) for i in arrays))
    except Exception as error:
        raise NotEvaluated(f"fails: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def describe(value: Any) -> str:
    """`int32[128,1]` for an array, the value of a number or a tuple of ints, else its type."""
    if is_array(value):
        dtype = getattr(value.dtype, "name", value.dtype)
        return f"{dtype}[{','.join(str(s) for s in value.shape)}]"
    if isinstance(value, (*_NUMBERS, str, type(None))) or (
            isinstance(value, tuple) and all(type(v) in _NUMBERS for v in value)):
        return short_repr(value)
    return f"a {type(value).__name__}"


# --- what the shapes say ----------------------------------------------------------------------------


def observe(shapes: list[tuple[str, tuple[int, ...]]], message: str,
            held: AbstractSet[str] = frozenset()) -> tuple[str, str, dict[str, object]] | None:
    """What stands out between two operands' shapes, as (sentence, fix, facts): a size one more
    than the other's, or an axis one has and the other lacks. Each shape is also compared with
    the other's without its last axis (labels and logits) or its first. Two sizes are said to be
    off by one only where the library's message, if it names sizes, names both (a matmul's
    mismatch is between axes that a side-by-side comparison does not pair). Two arrays of the
    called layer (`held`: its weight and bias) are never compared: they agree by construction."""
    numbers = {int(n) for n in re.findall(r"\d+", message)}
    found = []
    for (name, shape), (other, other_shape) in itertools.permutations(shapes, 2):
        if shape == other_shape or {name, other} <= held:
            continue
        variants = [(f"'{other}'", other_shape), (f"'{other}' without its last axis", other_shape[:-1]),
                    (f"'{other}' without its first axis", other_shape[1:])]
        for rank, (against, target) in enumerate(variants):
            if rank and not target:
                continue
            finding = _compare(name, shape, against, target, whole=rank == 0)
            if finding is None:
                continue
            facts = finding[3]
            if facts["kind"] == "off-by-one" and numbers and not {facts["size"], facts["other_size"]} <= numbers:
                continue
            found.append((finding[0], rank, finding[1:]))
    if not found:
        return None
    _, _, best = min(found, key=lambda f: f[:2])
    return best


def _compare(name: str, shape: tuple[int, ...], against: str, target: tuple[int, ...],
             whole: bool) -> tuple[int, str, str, dict[str, object]] | None:
    """(preference, sentence, fix, facts) for `shape` against `target`: an off-by-one size first,
    then an extra axis of size 1, then (against a whole shape only) another extra or missing axis."""
    if len(shape) == len(target):
        differ = [axis for axis in range(len(shape)) if shape[axis] != target[axis]]
        if len(differ) == 1 and shape[differ[0]] == target[differ[0]] + 1:
            axis = differ[0]
            skip = ":, " * axis
            return (0, f"axis {axis} of '{name}' is {shape[axis]}, one more than {against} ({target[axis]})",
                    f"make axis {axis} of '{name}' {target[axis]} long like {against}: one element too many, often "
                    f"a shifted slice ([{skip}1:] / [{skip}:-1]) or a size set one too large where it was built",
                    dict(kind="off-by-one", operand=name, axis=axis, size=shape[axis], other_size=target[axis]))
    elif len(shape) == len(target) + 1:
        for axis in range(len(shape)):
            if shape[:axis] + shape[axis + 1:] == target and (shape[axis] == 1 or whole):
                return (1 if shape[axis] == 1 else 2,
                        f"'{name}' has an extra axis {axis} (of size {shape[axis]}) that {against} does not have",
                        f"drop the extra axis: {name}.squeeze({axis})" if shape[axis] == 1 else
                        f"remove axis {axis} of '{name}' (index, sum or reshape it away), or add it to the other operand",
                        dict(kind="extra-axis", operand=name, axis=axis, size=shape[axis]))
    elif len(shape) + 1 == len(target) and whole:
        for axis in range(len(target)):
            if target[:axis] + target[axis + 1:] == shape:
                return (2, f"'{name}' lacks axis {axis} (of size {target[axis]}) that {against} has",
                        f"add the missing axis: jnp.expand_dims({name}, {axis})" + (
                            "" if target[axis] == 1 else f" (then broadcast or repeat it to {target[axis]})"),
                        dict(kind="missing-axis", operand=name, axis=axis, size=target[axis]))
    return None


# --- the report -------------------------------------------------------------------------------------


def explain_shapes(exc: BaseException, message: str, where: tuple[str, int] | None) -> Report | None:
    """The shapes and dtypes of what the user's failing line passed to the library; None if the
    line holds no call with an array operand (the error is then shown as it is)."""
    entry = innermost_user_entry(exc.__traceback__)
    failing = _failing_node(entry) if entry is not None else None
    if entry is None or failing is None:
        return None
    node, source = failing
    frame = entry.tb_frame
    values, held = _operand_values(node, source, frame)
    shapes = [(text, tuple(value.shape)) for text, value in values if is_array(value)]
    if not shapes:
        return None
    operands = {text: f"({value})" if isinstance(value, NotEvaluated) else describe(value) for text, value in values}
    library, call = _library(exc), _text(node, source)
    width = max(map(len, operands)) + 1
    details = [f"{'call' if isinstance(node, ast.Call) else 'operation'}: {call}",
               *(f"  {text + ':':<{width}} {shape}" for text, shape in operands.items())]
    if any(type(value).__name__ == "BatchTracer" for _, value in values):
        details.append("  (inside jax.vmap: shapes per example, without the mapped axis)")
    extra: dict[str, object] = {"call": call, "operands": operands, "library": library}
    jitted, arguments = _jitted_arguments(exc.__traceback__, entry)
    if jitted:
        details += [f"{jitted}() is being traced by jit with:", *_leaf_lines(arguments)]
        extra.update(jitted_function=jitted, jitted_arguments=arguments)
    found = observe(shapes, message, held)
    if found:  # the title says it
        extra["observation"] = found[2]
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    details.append(f"{library} says: {type(exc).__name__}: {lines[0]}")
    details += [f"  {line}" for line in lines[1:_MAX_MESSAGE_LINES] if line.strip()]
    function = frame.f_code.co_name if frame.f_code.co_name != "<module>" else ""
    what = "dtype" if _DTYPE_WORDS.search(message) and not _SHAPE_WORDS.search(message) else "shape"
    return Report(
        kind="shape-error", title=f"{what} error{f' in {function}()' if function else ''}: {found[0] if found else lines[0]}",
        where=where, function=function,
        defined_at=(frame.f_code.co_filename, frame.f_code.co_firstlineno) if function else None,
        explanation=f"{library} rejected the {what}s this line gave it; here they are, as your code names them.",
        details=tuple(details), extra=extra,
        fix=found[1] if found else f"compare the {what}s above with what the call expects (its documentation), "
        "and reshape, transpose, slice or convert at this line",
    )


def _operand_values(node: ast.AST, source: str, frame: FrameType) -> tuple[list[tuple[str, Any]], set[str]]:
    """(source text, value or NotEvaluated) of each operand of the failing `node`, and the texts of
    those a called layer holds: an array's method also shows the array, a called layer
    (`self.dense(x)`) the arrays it holds."""
    callee, written = _operands(node, source)
    values = [(text, _value(expression, frame)) for text, expression in written]
    if callee is None:
        return values, set()
    owner = callee.value if isinstance(callee, ast.Attribute) else None
    receiver = _value(owner, frame) if owner is not None else None
    if owner is not None and is_array(receiver):
        values.insert(0, (_text(owner, source), receiver))
    held = [(f"{_text(callee, source)}.{name}", array) for name, array in _stored_arrays(_value(callee, frame))]
    return values + held, {text for text, _ in held}


def _jitted_arguments(tb: TracebackType | None, entry: TracebackType) -> tuple[str, dict[str, str]]:
    """The user's jitted function being traced around `entry` (its name) and each leaf of its
    arguments, from the innermost frame of raximport's jit wrapper outside the user's line."""
    wrapper = None
    while tb is not None and tb is not entry:
        code = tb.tb_frame.f_code
        if code.co_name == "traced" and code.co_filename == _JIT_FILE:
            wrapper = tb.tb_frame
        tb = tb.tb_next
    if wrapper is None:
        return "", {}
    scope = wrapper.f_locals
    fun, args, kwargs = scope.get("fun"), scope.get("args", ()), scope.get("kwargs", {})
    leaves: dict[str, str] = {}
    for name, (how, value) in describe_call(fun, args, kwargs).items():  # type: ignore[arg-type]
        if how == "traced":
            avals, _ = value
            leaves.update({name + path: aval for path, aval in avals.items()})
        else:
            leaves[name] = f"static {short_repr(value)}"
    return function_name(fun), leaves


def _leaf_lines(leaves: dict[str, str]) -> list[str]:
    shown = list(leaves.items())[:_MAX_LEAVES]
    width = max((len(name) for name, _ in shown), default=0) + 1
    lines = [f"  {name + ':':<{width}} {aval}" for name, aval in shown]
    if len(leaves) > _MAX_LEAVES:
        lines.append(f"  … {len(leaves) - _MAX_LEAVES} more")
    return lines
