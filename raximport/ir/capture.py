"""`--dump-ir DIR`: one record (record.py) per compiled signature of a run, from what JAX itself
compiles for the call.

raximport's jit sees each new signature when JAX traces it from plain Python (`expect_compile`,
as the memory check does); JAX then lowers that trace and compiles it, and the compile listener
(jax_internals.on_compile) hands over the program: the jaxpr JAX lowered, its StableHLO module,
the executable's optimized HLO and analyses, the compile's time, and a `jax.export` artifact
built from the same lowering. Nothing is traced, lowered or compiled a second time, so dumping
adds no compile and the IR is the one that runs. Records are appended as the run goes, one file
per process. With `dump_ir` off none of this is installed. A failure here is raximport's, never
the user's: one note, and the run goes on.
"""

from __future__ import annotations

import base64
import functools
import inspect
import linecache
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from raximport import jax_internals
from raximport.failsafe import stepped_aside
from raximport.ir.record import Cost, JsonlWriter, Memory, Record, Versions, shard_prefix, versions
from raximport.jit import static_names
from raximport.report import function_name

if TYPE_CHECKING:
    from raximport.config import Config

STAGE = "IR capture (--dump-ir)"


@dataclass(frozen=True)
class Expected:
    """A top-level trace whose program JAX is about to compile: recorded when that compile is done."""

    fun: Callable[..., Any]
    static_args: dict[str, str]
    config: "Config"


_expected: "jax_internals.NextCompile[Expected]" = jax_internals.NextCompile()


def expect_compile(traced: Callable[..., Any], fun: Callable[..., Any], options: dict[str, Any],
                   args: tuple[Any, ...], kwargs: dict[str, Any], config: "Config") -> None:
    """Called while `jax.jit(traced)` traces a new signature from plain Python: the program JAX
    then compiles for the call is recorded in `config.dump_ir`."""
    if not jax_internals.on_compile(_on_compile):
        return
    try:
        jax_internals.remember_jaxprs()
        static = static_arguments(fun, options, args, kwargs)
    except Exception as exc:
        stepped_aside(STAGE, function_name(fun), exc, config)
        return
    _expected.expect(f"jit({getattr(traced, '__name__', '')})", Expected(fun, static, config))


def static_arguments(fun: Callable[..., Any], options: dict[str, Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> dict[str, str]:
    """The repr of each static argument of the call, by parameter name."""
    positional, static = static_names(fun, options.get("static_argnums"), options.get("static_argnames"))
    given = {**dict(zip(positional, args)), **kwargs}
    return {name: repr(value) for name, value in given.items() if name in static}


def _on_compile(compilation: jax_internals.Compilation) -> None:
    expected = _expected.take(compilation.name)
    if expected is None:
        return
    try:
        record = build_record(expected, compilation)
        _writer(expected.config.dump_ir).write(dict(record))
    except Exception as exc:
        stepped_aside(STAGE, function_name(expected.fun), exc, expected.config)


def build_record(expected: Expected, compilation: jax_internals.Compilation) -> Record:
    """The record of one compiled signature: the function, and the IR JAX made of it."""
    computation, executable = compilation.computation, compilation.executable
    jaxpr = jax_internals.jaxpr_of(computation)
    avals = jax_internals.input_avals(computation)
    file, line, source = _where(expected.fun)
    return {
        "function": function_name(expected.fun),
        "file": file,
        "line": line,
        "source": source,
        "jaxpr": "" if jaxpr is None else str(jaxpr),
        "stablehlo": computation.as_text(),
        "hlo": executable.as_text(),
        "exported": _exported(expected, computation, jaxpr),
        "input_shapes": [list(getattr(aval, "shape", ())) for aval in avals],
        "input_dtypes": [str(getattr(aval, "dtype", type(aval).__name__)) for aval in avals],
        "static_args": expected.static_args,
        "cost_analysis": _cost(executable),
        "memory_analysis": _memory(executable),
        "compile_seconds": compilation.seconds,
        "versions": _versions(),
    }


def _exported(expected: Expected, computation: Any, jaxpr: Any) -> str:
    """base64 of the program's `jax.export` artifact; "" where JAX cannot export it (a host
    callback such as jax.debug.print), with one note: the rest of the record stands."""
    try:
        artifact = jax_internals.export_artifact(computation, jaxpr) if jaxpr is not None else None
    except Exception as exc:
        stepped_aside(f"{STAGE}: jax.export", function_name(expected.fun), exc, expected.config)
        return ""
    return "" if artifact is None else base64.b64encode(artifact).decode("ascii")


def _where(fun: Callable[..., Any]) -> tuple[str, int, str]:
    """(file relative to the working directory where possible, line, source) of the function
    the user wrote: its `def`, or a lambda's line."""
    while isinstance(fun, functools.partial):
        fun = fun.func
    fun = inspect.unwrap(fun)
    code = getattr(fun, "__code__", None)
    if code is None:
        return "", 0, ""
    file, line = code.co_filename, code.co_firstlineno
    if fun.__name__ == "<lambda>":
        source = linecache.getline(file, line).strip()
    else:
        try:
            source = textwrap.dedent(inspect.getsource(fun))
        except (OSError, TypeError):
            source = ""
    relative = os.path.relpath(file) if not file.startswith("<") else file
    return (file if relative.startswith("..") else relative), line, source


def _cost(executable: Any) -> Cost:
    """XLA's cost analysis, with `available` False where XLA gave none (JAX documents it as
    unreliable: it can be missing, or zero)."""
    try:
        analysis = executable.cost_analysis()
    except Exception:
        analysis = None
    analysis = analysis if isinstance(analysis, dict) else {}
    values = {key: analysis.get(name) for key, name in
              (("flops", "flops"), ("transcendentals", "transcendentals"), ("bytes_accessed", "bytes accessed"))}
    cost: Cost = {"available": any(v is not None for v in values.values()), **values}  # type: ignore[typeddict-item]
    return cost


def _memory(executable: Any) -> Memory:
    """XLA's memory analysis (bytes), with `available` False where XLA gave none."""
    try:
        stats = jax_internals.memory_stats(executable)
    except Exception:
        stats = None
    fields = ("argument", "output", "temp", "generated_code")
    values = {f"{f}_bytes": getattr(stats, f"{f}_size_in_bytes", None) for f in fields}
    memory: Memory = {"available": stats is not None, **values}  # type: ignore[typeddict-item]
    return memory


@functools.cache
def _versions() -> Versions:
    return versions()


_writers: dict[tuple[int, str], JsonlWriter] = {}


def _writer(directory: str | None) -> JsonlWriter:
    """This process's writer for `directory` (a forked child gets its own file)."""
    key = (os.getpid(), str(directory))
    if key not in _writers:
        _writers[key] = JsonlWriter(Path(str(directory)), shard_prefix("capture"))
    return _writers[key]
