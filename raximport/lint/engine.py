"""The lint engine: find the files, run the selected rules on each (from the result cache when the
content was linted before, over several processes for large trees), apply `# noqa`, and fix.

A file that does not parse is one RAX000 finding; a rule that raises is an internal error,
reported once per rule, while the other rules and files are still linted (the run exits 2).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import tokenize
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from raximport.collecting import collecting_rarely
from raximport.lint import cache as result_cache
from raximport.lint import fix as fixes
from raximport.lint import noqa
from raximport.lint.registry import RULES, Edit, Finding, Fix
from raximport.lint.settings import Settings
from raximport.lint.source import SourceFile

PARALLEL_MIN_FILES = 64  # fewer files than this are linted in this process (a pool costs more)
MAX_FIX_PASSES = 10
ENGINE_CODES = ("RAX000", "RAX100")


@dataclass
class FileResult:
    path: Path
    text: str
    findings: list[Finding]
    fixed: int = 0


@dataclass
class Outcome:
    """A run's findings by file, its internal errors (one line per failing rule), and fix counts."""

    files: list[FileResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    cache_hits: int = 0

    @property
    def findings(self) -> int:
        return sum(len(f.findings) for f in self.files)

    @property
    def fixed(self) -> int:
        return sum(f.fixed for f in self.files)


def discover(paths: Iterable[Path], settings: Settings) -> list[Path]:
    """The Python files under `paths`, sorted; walking skips hidden, virtual-environment, build and
    excluded directories, but a path named here is linted whatever its name."""
    found: set[Path] = set()
    for path in paths:
        if path.is_file():
            found.add(path)
            continue
        for directory, dirs, files in os.walk(path):
            here = Path(directory)
            dirs[:] = sorted(d for d in dirs if not settings.excluded(here / d))
            found.update(here / f for f in files if f.endswith(".py") and not settings.excluded(here / f))
    return sorted(found)


def check(source: SourceFile, codes: frozenset[str]) -> tuple[list[Finding], dict[str, str]]:
    """The findings of the rules `codes` on `source`, `# noqa` applied, columns in characters; and
    the internal error of each rule that raised."""
    syntax = list(RULES["RAX000"].check(source))
    if syntax:
        return (syntax if "RAX000" in codes else []), {}
    findings: list[Finding] = []
    errors: dict[str, str] = {}
    for code in sorted(codes):
        if code in ENGINE_CODES:
            continue
        try:
            findings.extend(_in_characters(f, source.lines) for f in RULES[code].check(source))
        except Exception as exc:  # a rule's bug must not stop the run
            errors[code] = f"rule {code} ({RULES[code].name}) failed on {source.path}: {type(exc).__name__}: {exc}"
    rows = noqa.candidate_rows(source.text)
    needed = rows and ("RAX100" in codes or any(f.row in rows for f in findings))
    directives = noqa.directives(source.text) if needed else {}  # tokenizing costs more than the rules
    findings = noqa.apply(findings, directives)
    if "RAX100" in codes and directives and not errors:
        lines = {row: source.lines[row - 1] for row in directives if row <= len(source.lines)}
        findings += noqa.unused(directives, codes, frozenset(RULES), lines)
    return sorted(set(findings), key=_order), errors


def _order(finding: Finding) -> tuple[int, int, str, str]:
    return finding.row, finding.col, finding.code, finding.message


def _in_characters(finding: Finding, lines: list[str]) -> Finding:
    """Rules locate as ast does, in UTF-8 bytes; users and editors count characters."""
    def char(row: int, col: int) -> int:
        line = lines[row - 1] if 0 < row <= len(lines) else ""
        return col if line.isascii() else len(line.encode()[:col].decode("utf-8", "ignore"))

    fix = finding.fix
    if fix is not None:
        edits = tuple(Edit(e.row, char(e.row, e.col), e.end_row, char(e.end_row, e.end_col), e.text) for e in fix.edits)
        fix = Fix(fix.message, edits, fix.safe)
    return Finding(finding.code, finding.message, finding.row, char(finding.row, finding.col),
                   finding.end_row, char(finding.end_row, finding.end_col), fix)


def read(path: Path) -> tuple[bytes, str | None]:
    """The file's bytes and its text (None if it cannot be decoded as its coding line says)."""
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(iter(data.splitlines(keepends=True)).__next__)
        return data, data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError):
        return data, None


def lint_text(path: str, text: str | None, codes: frozenset[str], dimensions: frozenset[str],
              fix: bool = False, unsafe: bool = False) -> tuple[str | None, list[Finding], int, dict[str, str]]:
    """Lint one file's text (None: it could not be decoded), fixing it first if asked: the final
    text, its findings, how many fixes were applied, and internal errors."""
    if text is None:
        finding = Finding("RAX000", "SyntaxError: the file cannot be decoded (see its coding line)", 1, 0, 1, 0)
        return None, [finding] if "RAX000" in codes else [], 0, {}
    fixed = 0
    for _ in range(MAX_FIX_PASSES if fix else 0):
        with SourceFile(path, text, dimensions=dimensions) as source:
            findings, errors = check(source, codes)
        new_text, applied = fixes.apply(text, findings, unsafe)
        if not applied:
            return text, findings, fixed, errors
        text, fixed = new_text, fixed + applied
    with SourceFile(path, text, dimensions=dimensions) as source:
        findings, errors = check(source, codes)
    return text, findings, fixed, errors


Job = tuple[str, "str | None", frozenset[str]]


def _lint_batch(jobs: list[Job], dimensions: frozenset[str], fix: bool, unsafe: bool) -> list[tuple]:
    """A worker's share (a top-level function, so that a process pool can call it)."""
    with collecting_rarely():
        return [lint_text(path, text, codes, dimensions, fix, unsafe) for path, text, codes in jobs]


def _batches(sizes: list[int], count: int) -> list[list[int]]:
    """Indices into `sizes` in `count` batches of about equal total size, largest first."""
    batches: list[list[int]] = [[] for _ in range(count)]
    totals = [0] * count
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        smallest = totals.index(min(totals))
        batches[smallest].append(index)
        totals[smallest] += sizes[index]
    return [b for b in batches if b]


def run(paths: list[Path], settings: Settings, *, fix: bool = False, unsafe: bool = False,
        cache_dir: Path | None = None, jobs: int | None = None) -> Outcome:
    """Lint (and with `fix`, fix in place) the Python files under `paths`."""
    outcome = Outcome()
    cache = result_cache.ResultCache(cache_dir)
    todo: list[tuple[Path, str | None, frozenset[str], str]] = []
    texts: dict[Path, str] = {}
    for path in discover(paths, settings):
        codes = settings.codes_for(path)
        try:
            data, text = read(path)
        except OSError as exc:
            outcome.errors[f"read {path}"] = f"cannot read {path}: {exc.strerror}"
            continue
        texts[path] = text or ""
        entry = result_cache.key(data, codes, settings.dimensions)
        cached = cache.get(entry)
        has_fix = cached is not None and any(fixes.applicable(f, unsafe) for f in cached)
        if cached is not None and not (fix and has_fix):
            outcome.files.append(FileResult(path, texts[path], cached))
        else:
            todo.append((path, text, codes, entry))
    outcome.cache_hits = cache.hits
    for (path, text, codes, entry), (new_text, findings, fixed, errors) in zip(
        todo, _lint_all([(str(p), t, c) for p, t, c, _ in todo], settings.dimensions, fix, unsafe, jobs)
    ):
        for code, message in errors.items():
            outcome.errors.setdefault(code, message)
        if fixed and new_text is not None:
            data = new_text.encode(_encoding(path))  # as read: its coding, its line endings
            path.write_bytes(data)
            entry = result_cache.key(data, codes, settings.dimensions)
        if not errors:
            cache.put(entry, findings)
        outcome.files.append(FileResult(path, new_text if new_text is not None else texts[path], findings, fixed))
    cache.save()
    outcome.files.sort(key=lambda f: f.path)
    return outcome


def _encoding(path: Path) -> str:
    with path.open("rb") as fh:
        return tokenize.detect_encoding(fh.readline)[0]  # utf-8-sig writes the BOM read() dropped


def _lint_all(jobs: list[Job], dimensions: frozenset[str], fix: bool, unsafe: bool, workers: int | None) -> Iterator[tuple]:
    """Each job's result, in order; over a pool of processes when there are many files."""
    workers = workers if workers is not None else (os.cpu_count() or 1)
    workers = min(workers, len(jobs) // (PARALLEL_MIN_FILES // 2) or 1)
    if workers <= 1 or len(jobs) < PARALLEL_MIN_FILES:
        yield from _lint_batch(jobs, dimensions, fix, unsafe)
        return
    batches = _batches([len(text or "") for _, text, _ in jobs], workers * 4)
    results: dict[int, tuple] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        futures = [(batch, pool.submit(_lint_batch, [jobs[i] for i in batch], dimensions, fix, unsafe)) for batch in batches]
        for batch, future in futures:
            results.update(zip(batch, future.result()))
    yield from (results[i] for i in range(len(jobs)))


def _pool_context() -> multiprocessing.context.BaseContext:
    """How to start workers: by fork where this process has one thread (cheap: they inherit the
    loaded rules), else from a fork server, a clean process started once (forking a process with
    threads, JAX's in a test run for instance, can leave a lock held forever in the child)."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: the platform's default (spawn on macOS and Windows)
        return multiprocessing.get_context()
    if threads == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context
