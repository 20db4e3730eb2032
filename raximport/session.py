"""install() and uninstall(): putting the finder on `sys.meta_path` and taking it off again."""

from __future__ import annotations

import atexit
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Callable, Iterable

from raximport.config import Config, load_config
from raximport.errors import RaxWarning
from raximport.hook import RaxFinder, RaxLoader
from raximport.report import note
from raximport.xla_cache import configure as configure_xla_cache


class Installation:
    """A live import hook. Use as a context manager, or call `uninstall()`."""

    def __init__(self, finder: RaxFinder) -> None:
        self.finder = finder

    @property
    def config(self) -> Config:
        return self.finder.config

    @property
    def instrumented(self) -> list[str]:
        """Names of the modules this hook has rewritten so far."""
        return list(self.finder.instrumented)

    def uninstall(self) -> None:
        """Stop instrumenting new imports; modules already imported stay as they are."""
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)

    def __enter__(self) -> "Installation":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.uninstall()


def main_script_dir() -> Path:
    """The directory of the script being run, else the working directory."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file and sys.argv and os.path.isfile(sys.argv[0]):
        main_file = sys.argv[0]
    return Path(main_file).resolve().parent if main_file else Path.cwd()


def install(
    packages: Iterable[str] | None = None,
    *,
    paths: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    checks: bool | None = None,
    verbose: bool | None = None,
    project_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    config: Config | None = None,
    finder: Callable[[Config], RaxFinder] = RaxFinder,
    **options: object,
) -> Installation:
    """Instrument the user's modules imported from now on.

    By default these are the modules under the main script's project directory (the nearest
    parent with pyproject.toml, setup.py, setup.cfg or .git); `packages` and `paths` add more,
    `exclude` removes some. Unset options come from RAX_* variables, then from
    pyproject.toml's [tool.raximport]. Any other Config field can be passed by name
    (`memory_limit="2GB"`, `autojit=False`...). Pass `config` to skip that merge. `finder` makes
    the finder from the config (the pytest plugin's also composes pytest's assertion rewrite).
    """
    if config is None:
        overrides = {
            "packages": tuple(packages) if packages is not None else None,
            "paths": tuple(str(p) for p in paths) if paths is not None else None,
            "exclude": tuple(exclude) if exclude is not None else None,
            "checks": checks,
            "verbose": verbose,
            "project_root": str(project_root) if project_root is not None else None,
            "cache_dir": cache_dir,
            **options,
        }
        config = load_config(overrides, root=main_script_dir())
    configure_xla_cache(config)
    configure_jax_debugging(config)
    if config.memory_report:
        atexit.register(_show_memory_table, config)
    hook = finder(config)
    sys.meta_path.insert(0, hook)
    _warn_already_imported(hook)
    atexit.register(_note_taken_by_earlier_hooks, hook, set(sys.modules))
    return Installation(hook)


def _show_memory_table(config: Config) -> None:
    from raximport.memory import ANALYSES, memory_table
    from raximport.report import show

    if ANALYSES:
        show(memory_table(), json_path=config.report_json)


def configure_jax_debugging(config: Config) -> None:
    """--debug-nans, --debug-keys and full tracebacks, as JAX's own settings. JAX reads its JAX_*
    variables when first imported (by the script, after this); a value the user set wins."""
    wanted = {"jax_debug_nans": config.debug_nans, "jax_debug_key_reuse": config.debug_keys,
              "jax_traceback_filtering": "off" if config.full_tracebacks else None}
    jax = sys.modules.get("jax")
    for name, value in wanted.items():
        if not value or name.upper() in os.environ:
            continue
        if jax is None:
            os.environ[name.upper()] = "True" if value is True else str(value)
        else:
            jax.config.update(name, value)


def uninstall() -> None:
    """Remove every raximport finder from `sys.meta_path`."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, RaxFinder)]


def _unchecked(finder: RaxFinder, names: Iterable[str]) -> list[tuple[str, ModuleType]]:
    """The modules among `names` that `finder` selects but did not load (.py files only)."""
    found = []
    for name in names:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if (name != "__main__" and isinstance(file, str) and file.endswith(".py")
                and not isinstance(getattr(module, "__loader__", None), RaxLoader)
                and finder.selects(name, os.path.abspath(file))):
            found.append((name, module))
    return found


def _note_taken_by_earlier_hooks(finder: RaxFinder, before: set[str]) -> None:
    """At exit: the user's modules that an import hook ahead of raximport's took (pytest's
    assertion rewriter under `python -m raximport -m pytest`), so that they were not checked;
    never silently off. Modules of hooks after raximport's had a note when they were imported."""
    if finder not in sys.meta_path:
        return
    by_hook: dict[str, list[str]] = {}
    for name, module in _unchecked(finder, set(sys.modules) - before - set(finder.declined)):
        loader = type(getattr(module, "__loader__", None))
        by_hook.setdefault(f"{loader.__module__}.{loader.__qualname__}", []).append(name)
    for hook, names in by_hook.items():
        shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        note(f"{len(names)} of the modules to check were imported through another import hook ahead of "
             f"raximport's ({hook}) and were not checked: {shown}")


def missed_modules(finder: RaxFinder) -> list[str]:
    """The modules `finder` would instrument that are already imported without it, sorted."""
    return sorted(name for name, _ in _unchecked(finder, list(sys.modules)))


def _warn_already_imported(finder: RaxFinder) -> None:
    missed = missed_modules(finder)
    if missed:
        shown = ", ".join(missed[:10]) + (f" and {len(missed) - 10} more" if len(missed) > 10 else "")
        warnings.warn(
            f"raximport: {shown} {'was' if len(missed) == 1 else 'were'} imported before "
            "raximport.install() and will not be checked; install earlier, or run the script "
            "with `python -m raximport`",
            RaxWarning,
            stacklevel=3,
        )
