"""The import hook: a `sys.meta_path` finder that picks the user's modules, and a loader that
compiles them through rewrite.py, with raximport's own bytecode cache.

The finder asks the finders after it (editable installs included) for a spec and only swaps the
loader of plain `.py` source specs it selects; everything else is returned untouched. The loader
overrides `get_code` only, so importlib's own `exec_module` runs the module and tracebacks keep no
extra frames. Stdlib only.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import importlib.machinery
import importlib.util
import marshal
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from types import CodeType, ModuleType
from typing import Callable, Sequence

from raximport import __version__
from raximport import cachedir
from raximport.config import Config
from raximport.failsafe import stepped_aside
from raximport.provenance import RAXIMPORT_DIR, is_library_file, is_raximport_file
from raximport.report import note, note_once
from raximport.rewrite import CONFIG, compile_source

# An entry: CACHE_MAGIC, the key (32 bytes), the sha256 of the payload (32 bytes), the marshalled code.
CACHE_MAGIC = b"RAXPYC2\n"
# An entry's name (BytecodeCache.path_for), and that of a write's temp file: the entry's name, 8
# characters from mkstemp, ".tmp". A temp file is left only by a killed write, once it is old.
ENTRY_NAME = re.compile(r".+-[0-9a-f]{16}\.[\w.-]+\.opt\d+\.pyc")
TEMP_NAME = re.compile(ENTRY_NAME.pattern + r"[a-z0-9_]{8}\.tmp")
STALE_TEMP_NS = 3600 * 10**9
# `from raximport.x import`, `from .x import`, `import raximport.x`, `from raximport import x, y`.
_OWN_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(?:raximport)?\.(\w+)[ \t]+import|import[ \t]+raximport\.(\w+)"
    r"|from[ \t]+(?:raximport|\.)[ \t]+import[ \t]+\(?([\w, \t]+))",
    re.MULTILINE,
)


@functools.cache
def rewrite_digest() -> bytes:
    """sha256 of the source of rewrite.py and of the raximport modules it imports: the code that
    shapes a rewrite. The version alone misses an editable install's `git pull`. Once per process."""
    digest = hashlib.sha256()
    pending, seen = ["rewrite"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            source = Path(RAXIMPORT_DIR, name + ".py").read_text("utf-8")
        except OSError:
            continue  # a name, not a module; or no source installed, and then the version says it all
        digest.update(f"{name}\0{len(source)}\0{source}".encode())
        for match in _OWN_IMPORT.finditer(source):
            pending += [part.strip() for part in (match[1] or match[2] or match[3]).split(",")]
    return digest.digest()


class BytecodeCache:
    """Rewritten code objects, one file per source and interpreter, keyed on everything that matters.

    Files live in a central directory rather than in `__pycache__`, so the cache works with
    read-only source trees and with PYTHONDONTWRITEBYTECODE=1 (which only concerns importlib's own
    pycs). A file's header holds the key: source hash, raximport version and rewrite code, rewrite options,
    optimisation level and the interpreter's magic number; and a checksum of the marshalled code,
    since marshal trusts its input (damaged data can load as other code, or raise SystemError).
    Writes are atomic. The directories are the user's alone (see cachedir.py): checked on first use.
    """

    def __init__(self, directory: Path, rewrite_key: str) -> None:
        self.directory = pyc_dir(directory)
        self.rewrite_key = rewrite_key
        self.hits = 0
        self.misses = 0
        self._usable: bool | None = None
        self._swept = False

    def usable(self) -> bool:
        """Whether the directory is safe to use (created 0700 if missing); checked once."""
        if self._usable is None:
            self._usable = cachedir.usable(self.directory, "the bytecode cache")
        return self._usable

    def path_for(self, source_path: str) -> Path:
        """One file per source path, interpreter and optimisation level; it is overwritten on change."""
        name_hash = hashlib.sha256(source_path.encode()).hexdigest()[:16]
        tag = f"{sys.implementation.cache_tag}.opt{sys.flags.optimize}"
        return self.directory / f"{Path(source_path).stem}-{name_hash}.{tag}.pyc"

    def key(self, source_path: str, source: bytes) -> bytes:
        material = b"\0".join(
            [
                hashlib.sha256(source).digest(),
                __version__.encode(),
                rewrite_digest(),
                self.rewrite_key.encode(),
                str(sys.flags.optimize).encode(),
                importlib.util.MAGIC_NUMBER,
                source_path.encode(),
            ]
        )
        return hashlib.sha256(material).digest()

    def load(self, source_path: str, key: bytes) -> CodeType | None:
        """The cached code, or None (rebuild) for an entry that is missing, stale, damaged, or that
        someone else could have written."""
        if not self.usable():
            return None
        path = self.path_for(source_path)
        try:
            fd = os.open(path, os.O_RDONLY | cachedir.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fh:
            try:
                why = cachedir.untrusted(os.fstat(fd))
                data = fh.read()
            except OSError:
                return None
        if why is not None:
            message = f"raximport: ignoring the cache entry {path}: {why}; it is rebuilt"
            cachedir.warn_once(f"{self.directory} entries", message)
            return None
        header = CACHE_MAGIC + key
        payload = data[len(header) + 32 :]
        if data[: len(header)] != header or data[len(header) : len(header) + 32] != hashlib.sha256(payload).digest():
            return None
        try:
            code = marshal.loads(payload)
        except Exception:  # checksummed, so not expected; but a cache must never break an import
            return None
        return code if isinstance(code, CodeType) else None

    def store(self, source_path: str, key: bytes, code: CodeType) -> None:
        """Write atomically; a failed write (a full disk) only makes the next start slower."""
        if not self.usable():
            return
        if not self._swept:  # on the first write only: a run of hits reads no directory
            self._swept = True
            cachedir.remove(self.directory, TEMP_NAME, older_than_ns=time.time_ns() - STALE_TEMP_NS)
        path = self.path_for(source_path)
        payload = marshal.dumps(code)
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(CACHE_MAGIC + key + hashlib.sha256(payload).digest() + payload)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass


def pyc_dir(cache_dir: Path) -> Path:
    """The bytecode cache's directory in raximport's cache directory."""
    return Path(cache_dir) / "pyc"


def info_lines(cache_dir: Path) -> list[str]:
    """What `rax cache info` says about the bytecode cache."""
    directory = pyc_dir(cache_dir)
    found = cachedir.files(directory, ENTRY_NAME)
    size = sum(status.st_size for _, status in found)
    state = cachedir.state_of(directory)
    return cachedir.section("bytecode cache (rewritten modules)", directory, state, len(found), size)


def clear(directory: Path) -> tuple[int, int, int]:
    """Remove the entries and the temp files of interrupted writes from the bytecode cache's
    `directory`, nothing else: (entries, their bytes, temp files)."""
    entries = cachedir.remove(directory, ENTRY_NAME)
    return len(entries), sum(size for _, size in entries), len(cachedir.remove(directory, TEMP_NAME))


class RaxLoader(importlib.machinery.SourceFileLoader):
    """A SourceFileLoader whose code is rewritten; importlib's exec_module does the rest."""

    def __init__(self, fullname: str, path: str, config: Config, cache: BytecodeCache) -> None:
        super().__init__(fullname, path)
        self.config = config
        self.cache = cache

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """A module that holds, before its code runs, the config its rewritten jit binds to."""
        module = ModuleType(spec.name)
        module.__dict__[CONFIG] = self.config
        return module

    def get_code(self, fullname: str) -> CodeType:
        return load_rewritten(self.path, self.config, self.cache, self.get_data(self.path))


def load_rewritten(
    path: str,
    config: Config,
    cache: BytecodeCache,
    source: bytes | None = None,
    *,
    then: Callable[[ast.Module], None] | None = None,
) -> CodeType:
    """The rewritten code of the file at `path`, from the cache when it is still valid.

    `then`, a further rewrite after raximport's (pytest's assertion rewrite), must be part of the
    cache's key: the caller gives it a BytecodeCache whose `rewrite_key` names it.
    """
    if source is None:
        source = Path(path).read_bytes()
    key = cache.key(path, source)
    code = cache.load(path, key)
    if code is not None:
        cache.hits += 1
        return code
    cache.misses += 1
    try:
        code = compile_source(source, path, config.rewrite_options(), then=then)
    except SyntaxError:
        raise  # the user's own error, reported as Python reports it
    except Exception as exc:
        stepped_aside("the rewrite", path, exc, config)
        return _compile_unrewritten(source, path, then)
    cache.store(path, key, code)
    return code


def _compile_unrewritten(source: bytes, path: str, then: Callable[[ast.Module], None] | None) -> CodeType:
    """The module as it runs without raximport (after `then`): what runs when the rewrite fails."""
    if then is None:
        return compile(source, path, "exec", dont_inherit=True)
    tree = ast.parse(source, path)
    then(tree)
    return compile(tree, path, "exec", dont_inherit=True)


def note_other_hook(loader: object, fullname: str) -> None:
    """One note per import hook that takes modules raximport was asked to check: never silently off."""
    hook = f"{type(loader).__module__}.{type(loader).__qualname__}"
    note_once(f"modules such as {fullname} are loaded by another import hook ({hook}), "
              "so raximport does not check them")


def note_instrumented(config: Config, fullname: str, origin: str) -> None:
    """--verbose: one line per module instrumented; the runner says it for the main script, which
    no finder sees."""
    if config.verbose:
        note(f"instrumenting {fullname} ({origin})")


class RaxFinder:
    """Selects the user's modules: the project root, `paths` and `packages`, minus `exclude`,
    the standard library, site-packages (unless named in `packages`) and raximport itself."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cache = BytecodeCache(config.cache_dir, config.rewrite_key())
        roots = [config.project_root] if config.project_root else []
        self.roots = tuple(os.path.join(os.path.abspath(r), "") for r in (*roots, *config.paths))
        self.instrumented: list[str] = []
        self.declined: list[str] = []  # selected, but another import hook's loader has them

    def _named(self, fullname: str, names: Sequence[str]) -> bool:
        return any(fullname == n or fullname.startswith(n + ".") for n in names)

    def _excluded(self, fullname: str, path: str) -> bool:
        return any(
            fullname == pattern
            or fullname.startswith(pattern + ".")
            or fnmatch.fnmatch(path, pattern)
            for pattern in self.config.exclude
        )

    def selects(self, fullname: str, path: str) -> bool:
        """Whether the module `fullname` at `path` is instrumented."""
        if is_raximport_file(path) or self._excluded(fullname, path):
            return False
        if self._named(fullname, self.config.packages):
            return True
        if is_library_file(path):
            return False
        return path.startswith(self.roots)

    def _could_select(self, fullname: str, search_path: Sequence[str] | None) -> bool:
        """Cheap early exit for stdlib names and for submodules of packages outside our roots."""
        if self._named(fullname, self.config.packages):
            return True
        if search_path is None:
            return fullname not in sys.stdlib_module_names or self._shadowed(fullname)
        return any(
            os.path.join(os.path.abspath(entry), "").startswith(self.roots)
            and not is_library_file(os.path.join(os.path.abspath(entry), ""))
            for entry in search_path
            if isinstance(entry, str)
        )

    def _shadowed(self, name: str) -> bool:
        """A user module named like a stdlib one (`profile.py`) that an import path entry of ours holds."""
        for entry in sys.path:
            directory = os.path.abspath(entry or ".")
            if os.path.join(directory, "").startswith(self.roots) and (
                os.path.isfile(os.path.join(directory, name + ".py")) or os.path.isdir(os.path.join(directory, name))
            ):
                return True
        return False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not self._could_select(fullname, path):
            return None
        spec = self._spec_from_others(fullname, path, target)
        if spec is None:
            return None
        origin = spec.origin or ""
        if not origin.endswith(".py") or not self.selects(fullname, origin):
            return spec  # extension, zip, frozen, namespace, or not the user's: untouched
        loader = self.loader_for(fullname, origin, spec.loader)
        if loader is None:
            note_other_hook(spec.loader, fullname)
            self.declined.append(fullname)
            return spec  # another import hook's module: it keeps it
        spec.loader = loader
        self.instrumented.append(fullname)
        note_instrumented(self.config, fullname, origin)
        return spec

    def loader_for(self, fullname: str, origin: str, found: object) -> RaxLoader | None:
        """raximport's loader for a selected module whose spec, from the finders after this one, has
        loader `found`; None if `found` is another import hook's, which then keeps the module. (The
        pytest plugin's finder also takes the modules of pytest's assertion rewriter.)"""
        if type(found) is not importlib.machinery.SourceFileLoader:
            return None
        return RaxLoader(fullname, origin, self.config, self.cache)

    def _spec_from_others(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        # Only the finders after this one: asking an earlier RaxFinder would recurse back here.
        later = sys.meta_path[sys.meta_path.index(self) + 1 :] if self in sys.meta_path else sys.meta_path
        for finder in later:
            if not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None
