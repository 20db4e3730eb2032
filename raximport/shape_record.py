"""What `rax annotate` observes while the user's script runs: at each call of the user's
functions, the dtype and shape of every array argument and of the returned arrays, and the
integers that could name a dimension (config values).

A `sys.setprofile` hook sees each call with its frame's arguments and each return with its
value; a call that an exception ends is left out (its shapes may be the very bug). Jitted
functions are seen while JAX traces them, with tracers that carry shapes and
dtypes, so recording compiles nothing. Each function is recorded until it showed `max_calls`
distinct signatures (a repeated one does not count: a later run, sampling after training, still
adds its shapes). Once QUIET_CALLS calls of the user's functions in a row showed nothing new (a
training loop repeating its steps), the hook is removed: the rest of the run is at full speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import dis
import inspect
import sys
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any, Callable, Iterator

from raximport.provenance import is_user_file

# Generators, coroutines and async generators: their 'return' events are yields, not returns.
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_RETURN = "return"
# A 'return' event at another instruction is an exception unwinding the frame.
_RETURN_OPS = frozenset(dis.opmap[name] for name in ("RETURN_VALUE", "RETURN_CONST") if name in dis.opmap)
QUIET_CALLS = 1000


@dataclass(frozen=True)
class ArrayInfo:
    """One array as seen: a jax.Array (or a tracer of one) or a numpy array."""

    dtype: str
    shape: tuple[int, ...]
    numpy: bool


class Other:
    """A value that is neither an array, None, nor a tuple of those: never annotated."""

    def __repr__(self) -> str:
        return "OTHER"


OTHER = Other()
Observed = Any  # ArrayInfo | None | OTHER | tuple[Observed, ...]


def describe(value: Any) -> Observed:
    """`value` as recorded: arrays by dtype and shape, tuples element by element. JAX and numpy
    are looked up, never imported: before the script imports them no value can be their array,
    and `rax annotate` must not start JAX before the hook has set up its compilation cache."""
    if value is None:
        return None
    jax_array = getattr(sys.modules.get("jax"), "Array", None)
    numpy_array = getattr(sys.modules.get("numpy"), "ndarray", None)
    if jax_array is not None and isinstance(value, jax_array):
        return ArrayInfo(str(value.dtype), tuple(int(n) for n in value.shape), numpy=False)
    if numpy_array is not None and isinstance(value, numpy_array):
        return ArrayInfo(str(value.dtype), tuple(value.shape), numpy=True)
    if type(value) is tuple and 0 < len(value) <= 8:
        return tuple(describe(item) for item in value)
    return OTHER


@dataclass(eq=False)  # one per def: compared and hashed by identity
class FunctionRecord:
    """The calls seen of one function of the user's, each distinct one once: per call, each
    parameter's observation and the return's (under "return"). For a class of the user's (a
    dataclass, an equinox or flax module, a NamedTuple), `params` are its fields and `calls` the
    distinct instances its functions were given."""

    filename: str
    firstlineno: int  # 0 for a class
    name: str  # a class's qualified name
    params: tuple[str, ...]
    calls: list[dict[str, Observed]] = field(default_factory=list)
    signatures: set[tuple] = field(default_factory=set, repr=False)  # the calls recorded, as keys
    raised: int = 0  # calls left out because an exception ended them: their shapes may be the bug

    @property
    def is_class(self) -> bool:
        return self.firstlineno == 0


def field_names(value: Any) -> tuple[str, ...] | None:
    """The fields of a dataclass instance (equinox and flax modules are dataclasses) or a NamedTuple."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(f.name for f in dataclasses.fields(value))
    if isinstance(value, tuple) and hasattr(type(value), "_fields"):
        return tuple(type(value)._fields)
    return None


@dataclass(frozen=True)
class ConfigValue:
    """An integer the user named: a module global, or a field of a config the code was given or
    returned (a dataclass, an argparse namespace, a dict). `given` (seen passing through a call)
    outranks a module global, which may be a default the run overrode."""

    name: str
    value: int
    given: bool


def config_ints(value: Any, depth: int = 2) -> Iterator[tuple[str, int]]:
    """The named integers inside a config object: a dict with string keys, a dataclass instance
    (a frozen one's properties too: values derived from its fields) or an argparse namespace,
    nested configs included."""
    if isinstance(value, argparse.Namespace):
        items = vars(value).items()
    elif isinstance(value, dict):
        items = ((k, v) for k, v in value.items() if isinstance(k, str))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
        if value.__dataclass_params__.frozen:  # type: ignore[attr-defined]  # derived sizes: GPTConfig.head_dim
            items += _properties(value)
    else:
        return
    for name, item in items:
        if name.startswith("_"):
            continue
        if isinstance(item, int) and not isinstance(item, bool):
            yield name, item
        elif depth > 1:
            yield from config_ints(item, depth - 1)


def _properties(value: Any) -> list[tuple[str, Any]]:
    out = []
    for name, member in vars(type(value)).items():
        if isinstance(member, property):
            try:
                out.append((name, member.__get__(value)))
            except Exception:  # a property that cannot be read here names nothing
                continue
    return out


class Recorder:
    """The profile hook: records calls of functions defined in files `is_ours` accepts."""

    def __init__(self, is_ours: Callable[[str], bool], max_calls: int) -> None:
        self.is_ours = is_ours
        self.failure: Exception | None = None  # the recorder's own, which stopped it
        self.max_calls = max_calls
        self.functions: dict[CodeType, FunctionRecord | None] = {}
        # One record per def: a file run as __main__ and imported again has two code objects per def.
        self._by_place: dict[tuple[str, int, str], FunctionRecord] = {}
        self._configs: dict[ConfigValue, None] = {}  # an ordered set
        self._open: dict[int, tuple[FunctionRecord, dict[str, Observed]]] = {}  # id(frame) -> call awaiting return
        self._module_globals: dict[int, dict[str, Any]] = {}
        self._classes: dict[type, FunctionRecord | None] = {}
        self._quiet = 0  # calls of the user's functions since one last showed new shapes

    def __enter__(self) -> "Recorder":
        self.arm()
        return self

    def arm(self) -> None:
        """(Re)install the hook, for a run (`--then`: each run may call new functions)."""
        self._quiet = 0
        if self.failure is None:
            sys.setprofile(self._profile)

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)
        for module_globals in self._module_globals.values():
            self._configs.update(dict.fromkeys(ConfigValue(n, v, given=False)
                                               for n, v in config_ints(dict(module_globals), depth=3)))

    def records(self) -> list[FunctionRecord]:
        return [record for record in self._by_place.values() if record.calls]

    def raised(self) -> list[FunctionRecord]:
        """The functions some of whose calls an exception ended (those calls left out)."""
        return [record for record in self._by_place.values() if record.raised]

    def _record_for(self, frame: FrameType) -> FunctionRecord | None:
        code = frame.f_code
        if code.co_name.startswith("<") or code.co_flags & _RESUMABLE or not self.is_ours(code.co_filename):
            return None
        self._module_globals.setdefault(id(frame.f_globals), frame.f_globals)
        count = code.co_argcount + code.co_kwonlyargcount
        place = (code.co_filename, code.co_firstlineno, code.co_name)
        if place not in self._by_place:
            self._by_place[place] = FunctionRecord(*place, params=code.co_varnames[:count])
        return self._by_place[place]

    def _class_record(self, value: Any) -> FunctionRecord | None:
        cls = type(value)
        fields = field_names(value)
        filename = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if fields is None or not filename or not self.is_ours(filename) or "<locals>" in cls.__qualname__:
            return None
        place = (filename, 0, cls.__qualname__)
        return self._by_place.setdefault(place, FunctionRecord(*place, params=fields))

    def _observe_instance(self, value: Any) -> None:
        """The array fields of an instance of one of the user's classes, once per distinct shapes."""
        record = self._classes.get(type(value), False)
        if record is False:
            record = self._classes[type(value)] = self._class_record(value)
        if record is None or len(record.calls) >= self.max_calls:
            return
        fields = {name: describe(getattr(value, name, None)) for name in record.params}
        signature = tuple(fields.items())
        if signature not in record.signatures:
            record.signatures.add(signature)
            record.calls.append(fields)

    def _read_config(self, value: Any) -> None:
        """The named integers of a config the user's code was given or returned (parse_config's
        dict); one seen again moves to the end (the last seen is the run's own)."""
        for name, number in config_ints(value):
            found = ConfigValue(name, number, given=True)
            self._configs.pop(found, None)
            self._configs[found] = None

    @property
    def configs(self) -> list[ConfigValue]:
        """The config values in the order last seen, module globals (read at exit) last."""
        return list(self._configs)

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        try:
            self._observe(frame, event, arg)
        except Exception as exc:  # never the user's failure: stop recording, the run goes on
            sys.setprofile(None)
            self.failure = exc

    def _observe(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            record = self.functions.get(code, False)
            if record is False:
                record = self.functions[code] = self._record_for(frame)
            if record is None:
                return
            if len(record.calls) >= self.max_calls:
                self._hush()
                return
            values = frame.f_locals
            call = {name: describe(values.get(name)) for name in record.params}
            for name in record.params:
                value = values.get(name)
                self._observe_instance(value)
                self._read_config(value)
            record.calls.append(call)
            self._open[id(frame)] = (record, call)
        elif event == _RETURN:
            record, call = self._open.pop(id(frame), (None, None))
            if record is not None and frame.f_code.co_code[frame.f_lasti] not in _RETURN_OPS:
                record.calls.remove(call)  # it raised (a shape error, say): no evidence of the shapes it takes
                record.raised += 1
            elif record is not None:
                call[_RETURN] = describe(arg)
                self._read_config(arg)
                signature = tuple(call.items())
                if signature in record.signatures:  # seen before: only new shapes count towards max_calls
                    record.calls.remove(call)
                    self._hush()
                else:
                    record.signatures.add(signature)
                    self._quiet = 0

    def _hush(self) -> None:
        """One more call with nothing new; after QUIET_CALLS of them in a row (a loop repeating
        the steps already recorded) the hook is removed, and the run goes on at full speed."""
        self._quiet += 1
        if self._quiet >= QUIET_CALLS:
            sys.setprofile(None)


def user_file_filter(roots: tuple[str, ...]) -> Callable[[str], bool]:
    """The files whose functions are recorded: the user's (provenance) under the hook's roots."""
    return lambda filename: is_user_file(filename) and filename.startswith(roots)
