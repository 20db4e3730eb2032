"""`rax annotate SCRIPT [ARGS...]`: jaxtyping annotations inferred from one run of the script.

shape_record.py records the arrays each of the user's functions took and returned, and the array
fields of the user's dataclasses and modules they were given; here each axis of each of them (a
slot) gets a dimension name, and the annotations are written into the source text at their
positions (the file's own formatting kept), with the jaxtyping import added. A field is rewritten
only where it is annotated with a bare array type (`weight: jax.Array`).

Naming, strongest rule first: the leading axis shared by a call's data arguments, and any leading
axis of those sizes, is `batch`; a size that never varied and equals exactly one config value
with a dimension-like name (`block_size`, `n_embd`, `vocab_size`...) is named after it, else it
stays a literal; sizes that varied between calls are named dimensions, one name per set of sizes
seen (`seq` for the axis after `batch`). Two different constant sizes never share a name, and a
call that would bind one name to two sizes demotes the later slot.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import os
import re
import sys
import tokenize
from collections import defaultdict
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from raximport.shape_record import ArrayInfo, ConfigValue, FunctionRecord, Observed, Recorder, user_file_filter

DEFAULT_MAX_CALLS = 16
THEN = "--then"  # separates the runs of one `rax annotate`
RETURN = "return"
SELF_NAMES = ("self", "cls")
BARE_ARRAY_TYPES = ("jax.Array", "Array", "jnp.ndarray", "jax.numpy.ndarray", "np.ndarray", "numpy.ndarray")
# Config names that say "a size": a count of something an axis runs over.
_SIZE_NAME = re.compile(
    r"size|dim|embd|embed|vocab|hidden|width|head|class|feature|channel|len|units|latent|token|seq|context|"
    r"^n_|^num_|^n[a-z]$", re.IGNORECASE,
)


@dataclass(frozen=True)
class Site:
    """One annotatable array: a parameter, the return, or one element of a returned tuple."""

    record: FunctionRecord
    key: str
    index: int | None = None

    def seen(self) -> list[tuple[int, ArrayInfo | None]]:
        """(call number, observation) for each call that showed this site."""
        out = []
        for number, call in enumerate(self.record.calls):
            value = call.get(self.key, _MISSING)
            if self.index is not None:
                value = value[self.index] if isinstance(value, tuple) else _MISSING
            # None returned may be a raise; a None field, an instance equinox built to filter a module
            if value is not _MISSING and not (value is None and (self.key == RETURN or self.record.is_class)):
                out.append((number, value))
        return out

    def arrays(self) -> list[tuple[int, ArrayInfo]]:
        return [(n, v) for n, v in self.seen() if isinstance(v, ArrayInfo)]


_MISSING = object()


@dataclass(frozen=True)
class Slot:
    site: Site
    axis: int

    def sizes(self) -> list[tuple[int, int]]:
        return [(n, info.shape[self.axis]) for n, info in self.site.arrays()]


def _is_key(info: ArrayInfo) -> bool:
    return info.dtype.startswith("key<")


def annotatable_sites(record: FunctionRecord) -> list[Site]:
    """The sites whose every observation is an array of one rank (None allowed for a parameter)."""
    sites = [Site(record, name) for name in record.params if name not in SELF_NAMES]
    if record.is_class:
        return [site for site in sites if _uniform(site)]
    returns = [call[RETURN] for call in record.calls if call.get(RETURN) is not None]
    lengths = {len(r) if isinstance(r, tuple) else None for r in returns}
    if len(lengths) == 1 and (length := lengths.pop()) is not None:
        elements = [Site(record, RETURN, i) for i in range(length)]
        sites += elements if all(map(_uniform, elements)) else []
    else:
        sites.append(Site(record, RETURN))
    return [site for site in sites if site.index is not None or _uniform(site)]


def _uniform(site: Site) -> bool:
    seen = site.seen()
    arrays = [v for _, v in seen if isinstance(v, ArrayInfo)]
    return bool(arrays) and all(v is None or isinstance(v, ArrayInfo) for _, v in seen) and (
        len({len(a.shape) for a in arrays}) == 1 and len({_is_key(a) for a in arrays}) == 1
    )


def config_values(configs: list[ConfigValue]) -> dict[str, int]:
    """Each dimension-like config name's value: the last one the code was given (a config
    argument: the run's own, after any defaults passed before it), else its module global's."""
    chosen: dict[str, ConfigValue] = {}
    for value in configs:
        held = chosen.get(value.name)
        if _SIZE_NAME.search(value.name) and (held is None or value.given or not held.given):
            chosen[value.name] = value
    return {name: value.value for name, value in chosen.items()}


def config_names(values: dict[str, int]) -> dict[int, str]:
    """Size -> the one config name holding it (not batch_size: that axis is `batch`); a size two
    names hold is left unnamed."""
    by_size: dict[int, set[str]] = defaultdict(set)
    for name, size in values.items():
        if size > 1 and name != "batch_size":
            by_size[size].add(name)
    return {size: names.pop() for size, names in by_size.items() if len(names) == 1}


def batch_sizes(sites: list[Site], values: dict[str, int]) -> set[int]:
    """Sizes of a leading axis two data arguments of one call shared, and the config's batch_size."""
    sizes = {values["batch_size"]} if values.get("batch_size", 0) > 1 else set()
    by_call: dict[tuple[int, int], list[int]] = defaultdict(list)
    for site in sites:
        if site.key == RETURN or site.record.is_class:
            continue
        for number, info in site.arrays():
            if info.shape and not _is_key(info):
                by_call[(id(site.record), number)].append(info.shape[0])
    for leading in by_call.values():
        sizes |= {size for size in leading if leading.count(size) > 1 and size > 1}
    return sizes


@dataclass
class Naming:
    """A name or literal for every slot, and the facts behind them (for the summary)."""

    dims: dict[Slot, str] = field(default_factory=dict)
    meaning: dict[str, str] = field(default_factory=dict)  # name -> why (its sizes, its config)


def name_dims(sites: list[Site], configs: list[ConfigValue]) -> Naming:
    naming = Naming()
    values = config_values(configs)
    batch = batch_sizes(sites, values)
    by_config = config_names(values)
    slots = [Slot(site, axis) for site in sites for axis in range(len(site.arrays()[0][1].shape))]
    varied: dict[frozenset[int], list[Slot]] = defaultdict(list)
    for slot in slots:
        sizes = {size for _, size in slot.sizes()}
        data = not (slot.site.record.is_class or _is_key(slot.site.arrays()[0][1]))  # not a module's weights, keys
        if slot.axis == 0 and sizes <= batch and data:
            naming.dims[slot] = "batch"
        elif len(sizes) > 1:
            varied[frozenset(sizes)].append(slot)
        else:
            (size,) = sizes
            naming.dims[slot] = by_config.get(size, str(size))
    if batch:
        naming.meaning["batch"] = "leading axis of the data, sizes " + ", ".join(map(str, sorted(batch)))
    for size, name in by_config.items():
        naming.meaning[name] = f"{size}, the config value {name}"
    used = set(naming.dims.values())
    for sizes, group in varied.items():
        after_batch = any(s.axis == 1 and naming.dims.get(Slot(s.site, 0)) == "batch" for s in group)
        name = _fresh("seq" if after_batch else "dim", used)
        naming.meaning[name] = "varied: " + ", ".join(map(str, sorted(sizes)))
        for slot in group:
            naming.dims[slot] = name
    _demote_conflicts(slots, naming)
    return naming


def _fresh(stem: str, used: set[str]) -> str:
    name = stem if stem not in used else next(f"{stem}{i}" for i in range(2, 10**6) if f"{stem}{i}" not in used)
    used.add(name)
    return name


def _demote_conflicts(slots: list[Slot], naming: Naming) -> None:
    """jaxtyping binds a name once per call: a slot whose size disagrees, in some call, with an
    earlier slot of the same name becomes its literal size, or `_` (any size) if it varied."""
    by_record: dict[int, list[Slot]] = defaultdict(list)
    for slot in slots:
        by_record[id(slot.site.record)].append(slot)
    for group in by_record.values():
        bound: dict[tuple[int, str], int] = {}
        for slot in group:
            name = naming.dims[slot]
            if name.isdigit():
                continue
            sizes = slot.sizes()
            if any(bound.setdefault((n, name), size) != size for n, size in sizes):
                distinct = {size for _, size in sizes}
                naming.dims[slot] = str(distinct.pop()) if len(distinct) == 1 else "_"


# ------------------------------------------------------------------------------ annotations


_KINDS = (("key<", "PRNGKeyArray"), ("bool", "Bool"), ("uint", "UInt"), ("int", "Int"), ("float", "Float"),
          ("bfloat", "Float"), ("complex", "Complex"))


def _kind(dtype: str) -> str:
    return next((kind for prefix, kind in _KINDS if dtype.startswith(prefix)), "Shaped")


def site_annotation(site: Site, naming: Naming, numpy_alias: str | None) -> tuple[str, set[str]] | None:
    """The annotation text of a site and the jaxtyping names it uses; None if it cannot be written
    (a numpy array in a module that does not import numpy)."""
    arrays = [info for _, info in site.arrays()]
    kinds = {_kind(info.dtype) for info in arrays}
    kind = kinds.pop() if len(kinds) == 1 else "Shaped"
    optional = " | None" if any(v is None for _, v in site.seen()) else ""
    if kind == "PRNGKeyArray" and not arrays[0].shape:
        return "PRNGKeyArray" + optional, {"PRNGKeyArray"}
    kind = "Key" if kind == "PRNGKeyArray" else kind
    if all(info.numpy for info in arrays):
        if numpy_alias is None:
            return None
        container, names = f"{numpy_alias}.ndarray", {kind}
    else:
        container, names = "Array", {kind, "Array"}
    dims = " ".join(naming.dims[Slot(site, axis)] for axis in range(len(arrays[0].shape)))
    return f'{kind}[{container}, "{dims}"]{optional}', names


def function_annotations(
    sites: list[Site], naming: Naming, numpy_alias: str | None
) -> dict[str, tuple[str, set[str]]]:
    """One function's sites -> parameter name or "return" -> (annotation text, the jaxtyping names
    it uses). A returned tuple is annotated only if each of its elements can be."""
    out: dict[str, tuple[str, set[str]]] = {}
    elements: list[tuple[str, set[str]] | None] = []
    for site in sites:
        written = site_annotation(site, naming, numpy_alias)
        if site.index is not None:
            elements.append(written)
        elif written is not None:
            out[site.key] = written
    if elements and all(elements):
        texts, names = zip(*elements)  # type: ignore[misc]
        out[RETURN] = f"tuple[{', '.join(texts)}]", set().union(*names)
    return out


# ------------------------------------------------------------------------------ the source text


@dataclass(frozen=True)
class Edit:
    """Replace the text from `start` to `end` ((line, column), 1-based lines, columns in characters)."""

    start: tuple[int, int]
    end: tuple[int, int]
    text: str


def apply_edits(source: str, edits: list[Edit]) -> str:
    lines = source.splitlines(keepends=True) + [""]  # an edit may start at the line after the last
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        (l0, c0), (l1, c1) = edit.start, edit.end
        head, tail = lines[l0 - 1][:c0], lines[l1 - 1][c1:]
        lines[l0 - 1 : l1] = [head + edit.text + tail]
    return "".join(lines)


class SourceFile:
    """One of the user's files: its text, syntax tree and tokens, and the edits that annotate it."""

    def __init__(self, path: str) -> None:
        self.path = path
        with tokenize.open(path) as handle:
            self.text = handle.read()
        self.lines = self.text.splitlines(keepends=True)
        self.tree = ast.parse(self.text, path)
        self.tokens = list(tokenize.generate_tokens(io.StringIO(self.text).readline))

    def position(self, lineno: int, byte_col: int) -> tuple[int, int]:
        """ast's (line, UTF-8 byte offset) as (line, character offset)."""
        return lineno, len(self.lines[lineno - 1].encode()[:byte_col].decode(errors="replace"))

    def find_def(self, name: str, firstlineno: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The def whose code object starts at `firstlineno` (its first decorator's line)."""
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                if min([d.lineno for d in node.decorator_list] + [node.lineno]) == firstlineno:
                    return node
        return None

    def find_class(self, qualname: str) -> ast.ClassDef | None:
        body: list[ast.stmt] = self.tree.body
        node = None
        for name in qualname.split("."):
            node = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == name), None)
            if node is None:
                return None
            body = node.body
        return node

    def field_edits(self, node: ast.ClassDef, annotations: dict[str, str]) -> dict[str, Edit]:
        """`weight: jax.Array` -> `weight: Float[Array, "out in"]`: only fields annotated with a
        bare array type are rewritten."""
        edits = {}
        for stmt in node.body:
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and stmt.target.id in annotations and ast.unparse(stmt.annotation) in BARE_ARRAY_TYPES):
                start = self.position(stmt.annotation.lineno, stmt.annotation.col_offset)
                end = self.position(stmt.annotation.end_lineno, stmt.annotation.end_col_offset)  # type: ignore[arg-type]
                edits[stmt.target.id] = Edit(start, end, annotations[stmt.target.id])
        return edits

    def numpy_alias(self) -> str | None:
        for node in self.tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "numpy":
                        return alias.asname or "numpy"
        return None

    def def_edits(self, node: ast.FunctionDef | ast.AsyncFunctionDef, annotations: dict[str, str]) -> dict[str, Edit]:
        """Annotations for the parameters and return that have none: `x` -> `x: T`, `x=1` ->
        `x: T = 1` (`x=None` -> `x: T | None = None`), `)` -> `) -> T`; by parameter name."""
        edits = {}
        args = node.args
        positional = args.posonlyargs + args.args
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        for arg, default in [*zip(positional, defaults), *zip(args.kwonlyargs, args.kw_defaults)]:
            text = annotations.get(arg.arg)
            if text is None or arg.annotation is not None:
                continue
            start = self.position(arg.lineno, arg.end_col_offset)  # type: ignore[arg-type]
            if default is None:
                edits[arg.arg] = Edit(start, start, f": {text}")
                continue
            if isinstance(default, ast.Constant) and default.value is None and not text.endswith(" | None"):
                text += " | None"
            edits[arg.arg] = Edit(start, self.position(default.lineno, default.col_offset), f": {text} = ")
        if node.returns is None and RETURN in annotations:
            end = self._signature_end(node)
            edits[RETURN] = Edit(end, end, f" -> {annotations[RETURN]}")
        return edits

    def _signature_end(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
        """The position just after the `)` closing the parameter list."""
        begin = self.position(node.lineno, node.col_offset)
        tokens = iter(t for t in self.tokens if t.start >= begin)
        next(t for t in tokens if t.type == tokenize.NAME and t.string == "def")
        depth = 0
        for token in tokens:
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth == 0:
                    return token.end
        raise ValueError(f"no parameter list for {node.name} in {self.path}")

    def import_edit(self, needed: set[str]) -> Edit | None:
        """`from jaxtyping import ...` for the names not bound yet: merged into a one-line jaxtyping
        import if there is one, else a line after the leading imports."""
        bound = {alias.asname or alias.name.split(".")[0] for node in self.tree.body
                 if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        missing = needed - bound
        if not missing:
            return None
        for node in self.tree.body:
            if (isinstance(node, ast.ImportFrom) and node.module == "jaxtyping" and node.lineno == node.end_lineno
                    and all(a.asname is None for a in node.names) and "(" not in self.lines[node.lineno - 1]):
                names = sorted({a.name for a in node.names} | missing)
                return Edit(self.position(node.lineno, node.col_offset), self.position(node.lineno, node.end_col_offset),
                            f"from jaxtyping import {', '.join(names)}")
        line = f"from jaxtyping import {', '.join(sorted(missing))}\n"
        after = 0
        for index, node in enumerate(self.tree.body):
            docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if isinstance(node, (ast.Import, ast.ImportFrom)) or docstring:
                after = node.end_lineno or node.lineno
            else:
                break
        return Edit((after + 1, 0), (after + 1, 0), line)


# ------------------------------------------------------------------------------ the command


@dataclass
class Result:
    """What one run inferred: per file, the original and the annotated text; the naming."""

    changed: dict[str, tuple[str, str]]
    naming: Naming
    annotated: int  # functions and classes given at least one annotation


def annotate(records: list[FunctionRecord], configs: list[ConfigValue]) -> Result:
    """The annotated text of every file holding a recorded function."""
    by_record = {id(record): annotatable_sites(record) for record in records}
    naming = name_dims([site for sites in by_record.values() for site in sites], configs)
    by_file: dict[str, list[FunctionRecord]] = defaultdict(list)
    for record in records:
        by_file[record.filename].append(record)
    changed: dict[str, tuple[str, str]] = {}
    annotated = 0
    shown: set[str] = set()  # the dimension names the annotations use
    for path, file_records in by_file.items():
        try:
            source = SourceFile(path)
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:  # gone, or changed, since it ran
            sys.stderr.write(f"rax annotate: {path} left alone ({type(exc).__name__}: {exc})\n")
            continue
        edits: list[Edit] = []
        needed: set[str] = set()
        for record in file_records:
            node = source.find_class(record.name) if record.is_class else source.find_def(record.name, record.firstlineno)
            if node is None:
                continue
            annotations = function_annotations(by_record[id(record)], naming, source.numpy_alias())
            texts = {key: text for key, (text, _) in annotations.items()}
            function_edits = source.field_edits(node, texts) if isinstance(node, ast.ClassDef) else \
                source.def_edits(node, texts)
            if function_edits:
                annotated += 1
                edits += function_edits.values()
                needed = needed.union(*(annotations[key][1] for key in function_edits))
                shown |= {dim for key in function_edits for dims in re.findall(r'"([^"]*)"', annotations[key][0])
                          for dim in dims.split()}
        if edits:
            import_edit = source.import_edit(needed)
            changed[path] = (source.text, apply_edits(source.text, edits + ([import_edit] if import_edit else [])))
    naming.meaning = {name: why for name, why in naming.meaning.items() if name in shown}
    return Result(changed, naming, annotated)


def unified_diff(changed: dict[str, tuple[str, str]]) -> str:
    out = []
    for path, (old, new) in sorted(changed.items()):
        shown = os.path.relpath(path)
        out += difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                    fromfile=f"a/{shown}", tofile=f"b/{shown}")
    return "".join(out)


Run = tuple[str | None, str | None, list[str]]  # (script, -m module, its arguments)


def split_runs(args: list[str]) -> tuple[list[str], list[Run]]:
    """`script a b --then other.py c --then -m mod d` -> the first script's arguments, the later runs."""
    from raximport.cli import split_run_argv

    segments: list[list[str]] = [[]]
    for token in args:
        if token == THEN:
            segments.append([])
        else:
            segments[-1].append(token)
    later = []
    for segment in segments[1:]:
        _, script, module, rest = split_run_argv(segment, set())
        later.append((script, module, rest))
    return segments[0], later


def record_runs(runs: list[Run], max_calls: int) -> tuple[Recorder, list[int]]:
    """Run each script (or -m module) in turn in this process under raximport, their output on
    stderr, recording the calls of the functions of the first one's project."""
    from raximport.config import load_config
    from raximport.runner import run_module, run_path
    from raximport.session import install

    first = runs[0][0]
    config = load_config({}, root=Path(first).resolve().parent if first else Path.cwd())
    installation = install(config=config)
    recorder = Recorder(user_file_filter(installation.finder.roots), max_calls)
    statuses = []
    try:
        with redirect_stdout(sys.stderr), recorder:
            for script, module, args in runs:
                recorder.arm()  # again for each run: the hook may have removed itself in the last one
                try:
                    status = run_module(module, args, config) if module else run_path(script, args, config)  # type: ignore[arg-type]
                    statuses.append(status)
                except SystemExit as exc:
                    statuses.append(exc.code if isinstance(exc.code, int) else 1)
    finally:
        installation.uninstall()
    return recorder, statuses


USAGE = ("%(prog)s [--write | --check] [--max-calls N] script.py [args ...] [--then script2.py [args ...]]\n"
         "       %(prog)s [...] -m module [args ...] [--then ...]")
DESCRIPTION = """\
Run a script under raximport, record the dtypes and shapes of the arrays its functions take and
return (jitted functions while JAX traces them: no extra compile), and print the jaxtyping
annotations they imply as a unified diff (the script's own output goes to stderr). `--then`
runs another script of the same project in the same process (train, then sample), so the
annotations cover the calls of both.
"""


def main(argv: list[str], prog: str = "rax annotate") -> int:
    """`rax annotate`: record the runs, print the diff (or write it), say how each name was chosen."""
    from raximport.cli import split_run_argv

    parser = argparse.ArgumentParser(prog=prog, usage=USAGE, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the annotations into the files")
    mode.add_argument("--check", action="store_true", help="exit 1 if any annotation would be added")
    parser.add_argument("--max-calls", type=int, default=DEFAULT_MAX_CALLS, metavar="N",
                        help=f"record up to N calls with distinct shapes per function (default {DEFAULT_MAX_CALLS})")
    options, script, module, args = split_run_argv(argv, {"--max-calls"})
    ns = parser.parse_args(options)
    if script is None and module is None:
        parser.error("a script or -m module is required")
    args, later = split_runs(args)
    recorder, statuses = record_runs([(script, module, args), *later], ns.max_calls)
    if recorder.failure is not None:
        sys.stderr.write(f"rax annotate: recording stopped early ({type(recorder.failure).__name__}: "
                         f"{recorder.failure}); what it saw is annotated\n")
    if any(statuses):
        sys.stderr.write(f"rax annotate: exit statuses {statuses}; annotating the calls made\n")
    raised = recorder.raised()
    if raised:
        count = sum(r.raised for r in raised)
        sys.stderr.write(f"rax annotate: left out {count} call{'s' * (count > 1)} that raised, of "
                         f"{', '.join(r.name for r in raised)}: the shapes of a failing call are no evidence\n")
    result = annotate(recorder.records(), recorder.configs)
    sys.stdout.write(unified_diff(result.changed))
    for name, why in sorted(result.naming.meaning.items()):
        sys.stderr.write(f"  {name}: {why}\n")
    if ns.write:
        for path, (_, new) in result.changed.items():
            Path(path).write_text(new, encoding="utf-8", newline="")
    sys.stderr.write(f"rax annotate: {result.annotated} functions and classes in {len(result.changed)} files"
                     f"{' annotated' if ns.write else ' to annotate'}\n")
    return 1 if ns.check and result.changed else 0
