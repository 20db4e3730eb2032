"""JAX's persistent compilation cache, on by default, and what `rax cache info|clear` do with it.

A second run of a script then loads its compiled XLA executables from disk instead of compiling
them again. raximport must not import jax itself (the user's code does that, with its own flags),
so the cache is switched on through the JAX_* variables that JAX reads when it is first imported;
only if jax is already imported is `jax.config.update` used. A value the user set always wins.

Stdlib only at import: this module is imported at interpreter start when RAX_ENABLE is set.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from raximport import cachedir
from raximport.config import Config

# JAX's own file names (jax/_src/lru_cache.py): "<key>-cache" holds an entry, "<key>-atime" the
# last access (ns, little endian) when JAX's own LRU eviction is on; the key is the module's name
# and a sha256 (jax/_src/cache_key.py). JAX writes entries in place: it leaves no temp files.
#
# raximport's cap is enforced by raximport, once at the end of a run, never by JAX: JAX's LRU
# (`jax_compilation_cache_max_size`) lists the whole directory and reads every entry's -atime file
# under a file lock at each write, so a run's compiles grow quadratically with the cache (a test
# suite compiling thousands of small programs: 92 s plain, 164 s with it, equinox's, 2026-12-02).
CACHE_SUFFIX = "-cache"
ATIME_SUFFIX = "-atime"
ENTRY_NAME = re.compile(r".+-[0-9a-f]{64}-(?:cache|atime)")
LAST_RUN_FILE = "xla-last-run.json"
# The JAX_* variables raximport set, as JSON, so that a child process (or a test's subprocess)
# tells them from the user's own and chooses again. Not RAX_*: children often drop those.
ENV_MARK = "_RAXIMPORT_XLA_ENV"

# (jax config name, value raximport wants, JAX's default): a value other than the default was
# set by the user, and is left alone.
#  - min compile time 0 / min entry size -1: save every executable (JAX saves only those that
#    took >= 1 s to compile, but a training script's many small jits add up to seconds too);
#  - enable_xla_caches "none": otherwise the cache directory's own path enters the key, and a
#    moved or copied cache misses every time.
_SETTINGS: tuple[tuple[str, Any, Any], ...] = (
    ("jax_persistent_cache_min_compile_time_secs", 0.0, 1.0),
    ("jax_persistent_cache_min_entry_size_bytes", -1, 0),
    ("jax_persistent_cache_enable_xla_caches", "none", "xla_gpu_per_fusion_autotune_cache_dir"),
)
_DIR = "jax_compilation_cache_dir"
_MAX_SIZE = "jax_compilation_cache_max_size"

# jax.monitoring events (jax/_src/compiler.py, compilation_cache.py).
EVENT_REQUESTS = "/jax/compilation_cache/compile_requests_use_cache"
EVENT_HITS = "/jax/compilation_cache/cache_hits"
EVENT_WRITES = "/jax/compilation_cache/cache_misses"  # recorded as a missed entry is written


@dataclass
class Setup:
    """What `configure` decided for this process."""

    directory: Path
    owned: bool  # raximport chose the directory (so its cap applies), not the user
    max_size: int  # raximport's cap, enforced at exit; -1: none
    stats_file: Path
    started_ns: int


_setup: Setup | None = None
_counts: Counter[str] = Counter()
_watching = False


def stamp_name(entry: str) -> str:
    """The name of the "<key>-atime" stamp JAX's LRU keeps beside the entry "<key>-cache"."""
    return entry[: -len(CACHE_SUFFIX)] + ATIME_SUFFIX


def xla_dir(config: Config) -> Path:
    """raximport's default directory for the XLA cache."""
    return Path(config.cache_dir) / "xla"


def _set_by_raximport(environ: Mapping[str, str]) -> dict[str, str]:
    try:
        marked = json.loads(environ.get(ENV_MARK) or "{}")
    except ValueError:
        return {}
    if not isinstance(marked, dict):
        return {}
    return {k: v for k, v in marked.items() if environ.get(k) == v}


def user_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The JAX_* variables the user set (not raximport, in this process or a parent)."""
    environ = os.environ if environ is None else environ
    ours = _set_by_raximport(environ)
    return {k: v for k, v in environ.items() if k.startswith("JAX_") and k not in ours}


def resolve_dir(config: Config, environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """(the directory a run uses, whether raximport chose it): the user's
    JAX_COMPILATION_CACHE_DIR wins over `<cache_dir>/xla`."""
    theirs = user_env(environ).get("JAX_COMPILATION_CACHE_DIR")
    if theirs:
        return Path(theirs), False
    return xla_dir(config), True


def configure(config: Config) -> Setup | None:
    """Turn the persistent cache on for this process (and its children) unless config.xla_cache
    is off or raximport's directory is not safe to use (see cachedir.py); called by
    `raximport.install()`. Idempotent."""
    global _setup
    if not config.xla_cache:
        return None
    if _setup is not None:
        return _setup
    jax = sys.modules.get("jax")
    directory, owned = resolve_dir(config)
    their_dir = getattr(getattr(jax, "config", None), _DIR, None)  # set with jax.config.update
    if owned and their_dir and os.path.abspath(their_dir) != os.path.abspath(directory):
        directory, owned = Path(their_dir), False
    if owned and not cachedir.usable(directory, "JAX's persistent compilation cache"):
        return None  # JAX would warn on every compile; one warning said why
    # Never evict from the user's own directory; a cap the user gave JAX is JAX's to enforce.
    jax_evicts = owned and _MAX_SIZE.upper() in user_env()
    max_size = config.xla_cache_max_size if owned and not jax_evicts else -1
    wanted: dict[str, Any] = {name: value for name, value, _ in _SETTINGS}
    defaults: dict[str, Any] = {name: default for name, _, default in _SETTINGS}
    wanted[_DIR], defaults[_DIR] = str(directory), None
    if jax is None:
        users = user_env()
        mine = {}
        for name, value in wanted.items():
            if name.upper() not in users:
                os.environ[name.upper()] = mine[name.upper()] = str(value)
        os.environ[ENV_MARK] = json.dumps(mine)
    else:
        _update_loaded_jax(jax, wanted, defaults)
    if jax_evicts:
        _backfill_atimes(directory)
    _setup = Setup(
        directory=directory,
        owned=owned,
        max_size=max_size,
        stats_file=Path(config.cache_dir) / LAST_RUN_FILE,
        started_ns=time.time_ns(),
    )
    if jax is not None:
        watch_cache_events()
    atexit.register(_at_exit)
    if config.verbose:
        from raximport.report import note

        cap = f", cap {cachedir.human_size(max_size)}" if max_size > 0 else ""
        whose = "" if owned else " (the user's JAX_COMPILATION_CACHE_DIR)"
        note(f"XLA compilation cache in {directory}{whose}{cap}")
    return _setup


def _update_loaded_jax(jax: Any, wanted: dict[str, Any], defaults: dict[str, Any]) -> None:
    """jax is imported already: its env variables were read, so set what is still at its default."""
    for name, value in wanted.items():
        try:
            current = getattr(jax.config, name)
        except AttributeError:
            continue  # an older or newer jax without this option
        if current == defaults[name] and name.upper() not in user_env():
            jax.config.update(name, value)


def _backfill_atimes(directory: Path) -> None:
    """JAX's eviction reads "<key>-atime" for every entry and fails the write without it; entries
    written while its LRU was off (raximport's own cap, or a plain `python` run) have none, so
    date them by their last use."""
    found = dict(cachedir.files(directory, ENTRY_NAME))
    for name, status in found.items():
        atime = stamp_name(name)
        if name.endswith(CACHE_SUFFIX) and atime not in found:
            try:  # O_EXCL: never through a planted symbolic link, never over JAX's own write
                fd = os.open(directory / atime, os.O_WRONLY | os.O_CREAT | os.O_EXCL | cachedir.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(max(status.st_atime_ns, status.st_mtime_ns).to_bytes(8, "little"))
            except OSError:
                continue


def watch_cache_events() -> bool:
    """Count this process's cache hits and misses with jax.monitoring listeners, for
    xla-last-run.json. Call it once jax is imported and before the compiles to count (raximport
    never imports jax for this). Idempotent; False if jax is not imported yet."""
    global _watching
    if _watching:
        return True
    monitoring = getattr(sys.modules.get("jax"), "monitoring", None)
    if monitoring is None:
        return False
    _watching = True
    monitoring.register_event_listener(_on_event)
    return True


def _on_event(event: str, **kwargs: Any) -> None:
    if event.startswith("/jax/compilation_cache/"):
        _counts[event] += 1


def entries(directory: Path) -> list[tuple[Path, int, int]]:
    """(path, size, last use in ns) for each of JAX's entries, least recently used first.

    The last use is the entry's access time (on a `relatime` mount, the default on Linux, a read
    updates it at least once a day), its write time where reads leave no trace (`noatime`), or
    the -atime stamp JAX's own LRU wrote, whichever is latest."""
    found = dict(cachedir.files(directory, ENTRY_NAME))
    listed = []
    for name, status in found.items():
        if not name.endswith(CACHE_SUFFIX):
            continue
        used = max(status.st_atime_ns, status.st_mtime_ns)
        atime = stamp_name(name)
        if atime in found:
            try:
                used = max(used, int.from_bytes((directory / atime).read_bytes()[:8], "little"))
            except OSError:
                pass
        listed.append((directory / name, status.st_size, used))
    listed.sort(key=lambda item: item[2])
    return listed


def evict(directory: Path, max_size: int) -> list[Path]:
    """Remove least recently used entries until the directory holds at most `max_size` bytes."""
    if max_size < 0:
        return []
    found = entries(directory)
    total = sum(size for _, size, _ in found)
    removed = []
    for path, size, _ in found:
        if total <= max_size:
            break
        for victim in (path, path.with_name(stamp_name(path.name))):
            try:
                victim.unlink()
            except FileNotFoundError:
                pass
        removed.append(path)
        total -= size
    return removed


def run_stats(setup: Setup) -> dict[str, Any]:
    """This run's hits and misses: from jax.monitoring when watched, else read off the directory
    (entries written since start; hits are not told apart from other reads there: unknown)."""
    stats: dict[str, Any] = {
        "directory": str(setup.directory),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "script": _script(),
    }
    if _watching:
        requests, hits = _counts[EVENT_REQUESTS], _counts[EVENT_HITS]
        stats.update(source="jax.monitoring", hits=hits, misses=requests - hits, written=_counts[EVENT_WRITES])
        return stats
    written = sum(name.endswith(CACHE_SUFFIX) and status.st_mtime_ns >= setup.started_ns
                  for name, status in cachedir.files(setup.directory, ENTRY_NAME))
    stats.update(source="directory", hits=None, misses=written, written=written)
    return stats


def _script() -> str:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return str(main_file or (sys.argv[0] if sys.argv else ""))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (temp file + os.replace): a reader never sees half a file."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _at_exit() -> None:
    """Record the run's hits/misses (only runs that imported jax) and enforce the cap."""
    setup = _setup
    if setup is None or "jax" not in sys.modules:
        return
    try:
        evict(setup.directory, setup.max_size)
        write_json(setup.stats_file, run_stats(setup))
    except Exception:  # never turn a finished run into a failing one
        pass


def last_run(config: Config) -> dict[str, Any] | None:
    """The stats the last run that used jax wrote, or None."""
    try:
        data = json.loads((Path(config.cache_dir) / LAST_RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def info_lines(config: Config) -> list[str]:
    """What `rax cache info` says about the XLA caches: raximport's directory and, if the user set
    JAX_COMPILATION_CACHE_DIR, theirs, which runs use instead."""
    ours = xla_dir(config)
    used, owned = resolve_dir(config)
    if not config.xla_cache:
        state = "off (xla_cache = false)"
    elif not owned:
        state = "not used: your JAX_COMPILATION_CACHE_DIR is set"
    else:
        state = cachedir.state_of(ours)
    lines = _section("XLA compilation cache", ours, state)
    if not owned:
        state = "on, no cap; `rax cache clear` empties it only with --include-user-xla-dir"
        lines += ["", *_section("XLA compilation cache: your JAX_COMPILATION_CACHE_DIR", used, state)]
    elif config.xla_cache_max_size < 0:
        lines.append("cap:       none")
    else:
        cap = f"{cachedir.human_size(config.xla_cache_max_size)}, least recently used entries evicted beyond it at the end of each run"
        lines.append(f"cap:       {cap}")
    last = last_run(config)
    if last is None:
        lines.append("last run:  none recorded")
    else:
        hits = "?" if last.get("hits") is None else last.get("hits")
        where = "" if last.get("directory") == str(used) else f", in {last.get('directory')}"
        lines.append(
            f"last run:  {hits} hits, {last.get('misses')} misses, {last.get('written')} entries written"
            f" ({last.get('script') or '?'}, {last.get('timestamp')}{where})"
        )
    return lines


def _section(title: str, directory: Path, state: str) -> list[str]:
    found = cachedir.files(directory, ENTRY_NAME)
    count = sum(name.endswith(CACHE_SUFFIX) for name, _ in found)
    return cachedir.section(title, directory, state, count, sum(status.st_size for _, status in found))


def clear(directory: Path) -> tuple[int, int]:
    """Remove JAX's entries and their -atime files from `directory`, nothing else: (entries, bytes)."""
    removed = cachedir.remove(directory, ENTRY_NAME)
    return sum(name.endswith(CACHE_SUFFIX) for name, _ in removed), sum(size for _, size in removed)


# --- slow compiles ------------------------------------------------------------------------------
# Not the cache itself but why it matters: a long compile while the cache is off gets one report.

_compile_watch: dict[str, Any] = {"config": None, "reported": False}


def watch_compile_times(config: Config) -> None:
    """Report, once, a compile slower than config.slow_compile_secs while JAX's persistent cache is
    off (the listener is one per process: the first jit's config sets the threshold)."""
    if _compile_watch["config"] is not None:
        return
    monitoring = getattr(sys.modules.get("jax"), "monitoring", None)
    if monitoring is None:
        return
    _compile_watch["config"] = config
    monitoring.register_event_duration_secs_listener(_on_duration)


def _on_duration(event: str, duration: float, **kwargs: Any) -> None:
    if event != "/jax/core/compile/backend_compile_duration" or _compile_watch["reported"]:
        return
    config = _compile_watch["config"]
    if duration < config.slow_compile_secs:
        return
    jax = sys.modules.get("jax")
    try:
        cache_on = bool(jax.config.jax_compilation_cache_dir) and jax.config.jax_enable_compilation_cache  # type: ignore[union-attr]
    except Exception:
        cache_on = False
    if cache_on:
        return
    from raximport.explain import callee  # the reporting modules, only once there is something to report
    from raximport.report import Report, show, user_location

    _compile_watch["reported"] = True
    where = user_location()
    show(Report(
        kind="slow-compile", title=f"a compile took {duration:.1f} s and the persistent compilation cache is off",
        where=where, function=callee(where), got=f"{duration:.1f} s",
        explanation="XLA compiles every jitted function again in each new process unless JAX's persistent "
        "cache keeps the result on disk.",
        fix="let raximport turn the cache on (drop --no-xla-cache / RAX_XLA_CACHE=0), or set "
        "JAX_COMPILATION_CACHE_DIR: the next run loads the compiled step instead of compiling it",
        extra={"seconds": round(duration, 3), "at": time.time()},
    ), json_path=config.report_json)
