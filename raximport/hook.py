"""The import hook: a `sys.meta_path` finder that picks the user's modules, and a loader that
compiles them through rewrite.py, with raximport's own bytecode cache.

The finder asks the finders after it (editable installs included) for a spec and only swaps the
loader of plain `.py` source specs it selects; everything else is returned untouched. The loader
overrides `get_code` only, so importlib's own `exec_module` runs the module and tracebacks keep no
extra frames. Stdlib only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.machinery
import importlib.util
import marshal
import os
import sys
import tempfile
from pathlib import Path
from types import CodeType, ModuleType
from typing import Sequence

from raximport import __version__
from raximport.config import Config
from raximport.provenance import is_library_file, is_raximport_file
from raximport.report import note
from raximport.rewrite import compile_source

CACHE_MAGIC = b"RAXPYC1\n"


class BytecodeCache:
    """Rewritten code objects, one file per source and interpreter, keyed on everything that matters.

    Files live in a central directory rather than in `__pycache__`, so the cache works with
    read-only source trees and with PYTHONDONTWRITEBYTECODE=1 (which only concerns importlib's own
    pycs). A file's header holds the key: source hash, raximport version, rewrite options,
    optimisation level and the interpreter's magic number. Writes are atomic.
    """

    def __init__(self, directory: Path, rewrite_key: str) -> None:
        self.directory = directory / "pyc"
        self.rewrite_key = rewrite_key
        self.hits = 0
        self.misses = 0

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
                self.rewrite_key.encode(),
                str(sys.flags.optimize).encode(),
                importlib.util.MAGIC_NUMBER,
                source_path.encode(),
            ]
        )
        return hashlib.sha256(material).digest()

    def load(self, source_path: str, key: bytes) -> CodeType | None:
        path = self.path_for(source_path)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        header = CACHE_MAGIC + key
        if not data.startswith(header):
            return None
        try:
            code = marshal.loads(data[len(header) :])
        except (EOFError, ValueError, TypeError):
            return None
        return code if isinstance(code, CodeType) else None

    def store(self, source_path: str, key: bytes, code: CodeType) -> None:
        """Write atomically; an unwritable cache is not an error, only a slower next start."""
        path = self.path_for(source_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(CACHE_MAGIC + key + marshal.dumps(code))
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass


class RaxLoader(importlib.machinery.SourceFileLoader):
    """A SourceFileLoader whose code is rewritten; importlib's exec_module does the rest."""

    def __init__(self, fullname: str, path: str, config: Config, cache: BytecodeCache) -> None:
        super().__init__(fullname, path)
        self.config = config
        self.cache = cache

    def get_code(self, fullname: str) -> CodeType:
        return load_rewritten(self.path, self.config, self.cache, self.get_data(self.path))


def load_rewritten(path: str, config: Config, cache: BytecodeCache, source: bytes | None = None) -> CodeType:
    """The rewritten code of the file at `path`, from the cache when it is still valid."""
    if source is None:
        source = Path(path).read_bytes()
    key = cache.key(path, source)
    code = cache.load(path, key)
    if code is not None:
        cache.hits += 1
        return code
    cache.misses += 1
    code = compile_source(source, path, config.rewrite_options())
    cache.store(path, key, code)
    return code


class RaxFinder:
    """Selects the user's modules: the project root, `paths` and `packages`, minus `exclude`,
    the standard library, site-packages (unless named in `packages`) and raximport itself."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cache = BytecodeCache(config.cache_dir, config.rewrite_key())
        roots = [config.project_root] if config.project_root else []
        self.roots = tuple(os.path.join(os.path.abspath(r), "") for r in (*roots, *config.paths))
        self.instrumented: list[str] = []

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
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return spec  # extension, zip, frozen, namespace, or another hook's module: untouched
        origin = spec.origin or ""
        if not origin.endswith(".py") or not self.selects(fullname, origin):
            return spec
        spec.loader = RaxLoader(fullname, origin, self.config, self.cache)
        self.instrumented.append(fullname)
        if self.config.verbose:
            note(f"instrumenting {fullname} ({origin})")
        return spec

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
