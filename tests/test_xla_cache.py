"""JAX's persistent compilation cache, switched on by raximport: hits across processes, the user's
own settings win, the off switch, `rax cache info|clear`, the LRU cap."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from raximport import cachedir, xla_cache
from raximport.config import Config, ConfigError, load_config, parse_size

RAX = ("-c", "import sys; from raximport.cli import main; sys.exit(main(sys.argv[1:]))")

# Counts cache events itself (jax.monitoring), independently of raximport's own counting.
SCRIPT = """\
import collections, json, sys
import numpy as np
import jax, jax.numpy as jnp

counts = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kw: counts.update([event]))

def make(i):
    def f(x):
        return jnp.tanh(x @ x.T + i).sum()
    f.__name__ = f"step{i}"
    return jax.jit(f)

for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    make(i)(np.ones((32, 32), np.float32)).block_until_ready()
print(json.dumps({
    "hits": counts["/jax/compilation_cache/cache_hits"],
    "requests": counts["/jax/compilation_cache/compile_requests_use_cache"],
    "dir": jax.config.jax_compilation_cache_dir,
    "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
    "max_size": jax.config.jax_compilation_cache_max_size,
}))
"""


def _env(cache_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAX_", "JAX_", "_RAXIMPORT"))}
    env.update({"RAX_CACHE_DIR": str(cache_dir), "JAX_PLATFORMS": "cpu", "NO_COLOR": "1"})
    env.update(extra)
    return env


def _python(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def _run(script: Path, cache_dir: Path, *args: str, options: tuple[str, ...] = (), **env: str) -> dict:
    proc = _python("-m", "raximport", *options, str(script), *args, cwd=script.parent, env=_env(cache_dir, **env))
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """The same script run twice under `python -m raximport` with one cache."""
    root = tmp_path_factory.mktemp("proj")
    script = root / "train.py"
    script.write_text(SCRIPT)
    cache = root / "rax-cache"
    first = _run(script, cache)
    second = _run(script, cache)
    return cache, first, second


def test_second_process_hits_the_cache(two_runs: tuple[Path, dict, dict]) -> None:
    cache, first, second = two_runs
    assert first["dir"] == str(cache / "xla")
    assert [stat.S_IMODE(path.stat().st_mode) for path in (cache, cache / "xla")] == [0o700, 0o700]
    assert first["min_time"] == 0.0  # every executable is saved, however fast it compiled
    # In the first run, each step's own compile hits the entry written moments before by the
    # compile of raximport's memory check; everything else misses and is written.
    assert first["requests"] > first["hits"] >= 0
    assert second["hits"] == second["requests"] == first["requests"]
    last = json.loads((cache / "xla-last-run.json").read_text())
    assert (last["hits"], last["misses"], last["written"]) == (second["hits"], 0, 0)
    assert last["script"].endswith("train.py")


def test_info_and_clear(two_runs: tuple[Path, dict, dict], tmp_path: Path) -> None:
    cache = tmp_path / "copy"
    shutil.copytree(two_runs[0], cache)
    env = _env(cache)
    info = _python(*RAX, "cache", "info", cwd=tmp_path, env=env).stdout
    n = two_runs[1]["requests"] - two_runs[1]["hits"]  # the entries the first run wrote
    pyc, xla, lint = info.split("\n\n")
    assert f"directory: {cache / 'pyc'}\n" in pyc and "entries:   1\n" in pyc  # the rewritten train.py
    assert f"directory: {cache / 'xla'}\n" in xla and f"entries:   {n}\n" in xla
    assert " KB" in xla and "cap:       4.0 GB" in xla
    assert f"last run:  {two_runs[1]['requests']} hits, 0 misses" in xla
    cleared = _python(*RAX, "cache", "clear", cwd=tmp_path, env=env).stdout
    assert cleared.splitlines()[1].startswith(f"removed {n} entries (") and str(cache / "xla") in cleared
    assert not list((cache / "xla").glob("*-cache")) and not list((cache / "xla").glob("*-atime"))
    assert not list((cache / "pyc").iterdir())
    info = _python(*RAX, "cache", "info", "--cache-dir", str(cache), cwd=tmp_path, env=env).stdout
    assert info.count("entries:   0\n") == 3 and info.count("size:      0 B") == 3


PYC_NAME = "model-0123456789abcdef.cpython-311.opt0.pyc"  # hook.BytecodeCache.path_for's pattern
XLA_KEY = "jit_step-" + "ab" * 32  # JAX's: module name, sha256 of the computation


def _fill(cache: Path, theirs: Path | None = None) -> None:
    """A cache as runs leave it, with files raximport and JAX did not write beside the entries."""
    for directory in (cache, cache / "pyc", cache / "xla", cache / "lint"):
        directory.mkdir(mode=0o700)  # as raximport makes them, whatever the umask
    (cache / "pyc" / PYC_NAME).write_bytes(b"x" * 1000)
    (cache / "pyc" / PYC_NAME.replace("model", "data")).write_bytes(b"x" * 500)
    (cache / "pyc" / (PYC_NAME + "k3j_9zqa.tmp")).write_bytes(b"x" * 10)  # a killed write's temp file
    (cache / "xla" / f"{XLA_KEY}-cache").write_bytes(b"x" * 2000)
    (cache / "xla" / f"{XLA_KEY}-atime").write_bytes(b"x" * 8)
    (cache / "lint" / "results-0123456789abcdef.json").write_text('{"k": []}\n')
    (cache / "lint" / "notes.txt").write_text("the user's own file")
    for directory in (cache / "pyc", cache / "xla", *([theirs] if theirs else [])):
        (directory / "notes.txt").write_text("the user's own file")
        (directory / "old-cache").write_text("named like an entry, but not JAX's")
    (cache / "xla" / ".lockfile").write_text("")  # filelock's, possibly held by a running process
    if theirs:
        (theirs / f"{XLA_KEY}-cache").write_bytes(b"x" * 3000)


def _rax(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from raximport.cli import main

    assert main(list(args)) == 0
    return capsys.readouterr().out


@pytest.fixture
def no_user_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("RAX_", "JAX_")) or name == xla_cache.ENV_MARK:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_cache_info_covers_both_caches(tmp_path: Path, capsys, no_user_env) -> None:
    cache = tmp_path / "c"
    _fill(cache)
    info = _rax(capsys, "cache", "info", "--cache-dir", str(cache))
    pyc, xla, lint = info.split("\n\n")
    assert pyc.splitlines() == [
        "bytecode cache (rewritten modules)",
        f"directory: {cache / 'pyc'}",
        "state:     on",
        "entries:   2",
        "size:      1.5 KB",
    ]
    assert xla.splitlines()[:5] == [
        "XLA compilation cache",
        f"directory: {cache / 'xla'}",
        "state:     on",
        "entries:   1",
        "size:      2.0 KB",
    ]
    assert lint.splitlines() == ["lint cache (rax lint's results)", f"directory: {cache / 'lint'}", "state:     on",
                                 "entries:   1", "size:      10 B"]
    os.chown(cache / "pyc", 12345, 12345)
    info = _rax(capsys, "cache", "info", "--cache-dir", str(cache))
    assert "state:     refused: it belongs to another user (uid 12345)" in info


def test_cache_clear_removes_only_what_raximport_and_jax_wrote(tmp_path: Path, capsys, no_user_env) -> None:
    cache = tmp_path / "c"
    _fill(cache)
    out = _rax(capsys, "cache", "clear", "--cache-dir", str(cache))
    assert out.splitlines() == [
        f"removed 2 entries (1.5 KB) from {cache / 'pyc'}, and 1 temp file of an interrupted write",
        f"removed 1 entries (2.0 KB) from {cache / 'xla'}",
        f"removed 1 entries (10 B) from {cache / 'lint'}",
    ]
    assert sorted(p.name for p in (cache / "pyc").iterdir()) == ["notes.txt", "old-cache"]
    assert sorted(p.name for p in (cache / "xla").iterdir()) == [".lockfile", "notes.txt", "old-cache"]
    assert sorted(p.name for p in (cache / "lint").iterdir()) == ["notes.txt"]


def test_cache_clear_never_follows_a_symlinked_directory(tmp_path: Path, capsys, no_user_env) -> None:
    elsewhere = tmp_path / "elsewhere"
    _fill(elsewhere)
    cache = tmp_path / "c"
    cache.mkdir()
    for name in ("pyc", "xla", "lint"):
        (cache / name).symlink_to(elsewhere / name, target_is_directory=True)
    before = sorted(elsewhere.rglob("*"))
    out = _rax(capsys, "cache", "clear", "--cache-dir", str(cache))
    assert out.splitlines() == [f"skipped {cache / name}: a symbolic link, not followed" for name in ("pyc", "xla", "lint")]
    assert sorted(elsewhere.rglob("*")) == before


def test_the_users_jax_cache_dir_is_listed_and_emptied_only_when_asked(tmp_path: Path, capsys, no_user_env) -> None:
    cache, theirs = tmp_path / "c", tmp_path / "theirs"
    theirs.mkdir()
    _fill(cache, theirs)
    no_user_env.setenv("JAX_COMPILATION_CACHE_DIR", str(theirs))
    info = _rax(capsys, "cache", "info", "--cache-dir", str(cache))
    ours_block, theirs_block = info.split("\n\n")[1:3]
    assert "state:     not used: your JAX_COMPILATION_CACHE_DIR is set" in ours_block
    assert theirs_block.splitlines()[:5] == [
        "XLA compilation cache: your JAX_COMPILATION_CACHE_DIR",
        f"directory: {theirs}",
        "state:     on, no cap; `rax cache clear` empties it only with --include-user-xla-dir",
        "entries:   1",
        "size:      3.0 KB",
    ]
    out = _rax(capsys, "cache", "clear", "--cache-dir", str(cache))
    assert f"removed 1 entries (2.0 KB) from {cache / 'xla'}" in out
    assert f"left {theirs} alone (your JAX_COMPILATION_CACHE_DIR): --include-user-xla-dir empties it too" in out
    assert (theirs / f"{XLA_KEY}-cache").exists()
    out = _rax(capsys, "cache", "clear", "--cache-dir", str(cache), "--include-user-xla-dir")
    assert out.splitlines()[-1] == f"removed 1 entries (3.0 KB) from {theirs}"
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt", "old-cache"]


def test_cache_help_explains_the_user_dir_flag(capsys) -> None:
    from raximport.cli import main

    with pytest.raises(SystemExit):
        main(["cache", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--include-user-xla-dir" in text and "JAX_COMPILATION_CACHE_DIR" in text and "bytecode" in text


def test_users_own_settings_win(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    mine = tmp_path / "mine"
    out = _run(script, tmp_path / "rax", JAX_COMPILATION_CACHE_DIR=str(mine),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    assert out["dir"] == str(mine) and out["min_time"] == 0.5
    assert out["max_size"] == -1  # raximport's cap is for its own directory only
    assert not (tmp_path / "rax" / "xla").exists()


def test_off_leaves_jax_alone(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    for options, env in (("--no-xla-cache",), {}), ((), {"RAX_XLA_CACHE": "0"}):
        out = _run(script, tmp_path / "rax", options=options, **env)
        assert (out["dir"], out["min_time"], out["max_size"]) == (None, 1.0, -1)
    assert not (tmp_path / "rax" / "xla").exists()


def test_jax_imported_before_install_uses_config_update(tmp_path: Path) -> None:
    script = tmp_path / "late.py"
    script.write_text(
        "import jax, jax.numpy as jnp, numpy as np, json\n"
        "import raximport\n"
        "raximport.install()\n"
        "jax.jit(lambda x: x * 2)(np.ones(3)).block_until_ready()\n"
        "print(json.dumps({'dir': jax.config.jax_compilation_cache_dir}))\n"
    )
    proc = _python(str(script), cwd=tmp_path, env=_env(tmp_path / "rax"))
    assert json.loads(proc.stdout)["dir"] == str(tmp_path / "rax" / "xla")
    last = json.loads((tmp_path / "rax" / "xla-last-run.json").read_text())
    assert last["source"] == "jax.monitoring" and last["written"] >= 1 and last["hits"] == 0


def test_users_jax_config_dir_wins_when_jax_came_first(tmp_path: Path) -> None:
    script = tmp_path / "theirs.py"
    script.write_text(
        "import jax, json, sys\n"
        "jax.config.update('jax_compilation_cache_dir', sys.argv[1])\n"
        "import raximport\n"
        "raximport.install()\n"
        "print(json.dumps({'dir': jax.config.jax_compilation_cache_dir,\n"
        "                  'max_size': jax.config.jax_compilation_cache_max_size,\n"
        "                  'min_time': jax.config.jax_persistent_cache_min_compile_time_secs}))\n"
    )
    proc = _python(str(script), str(tmp_path / "mine"), cwd=tmp_path, env=_env(tmp_path / "rax"))
    assert json.loads(proc.stdout) == {"dir": str(tmp_path / "mine"), "max_size": -1, "min_time": 0.0}


def test_lru_cap_is_enforced_at_exit_not_at_each_compile(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cache = tmp_path / "rax"
    out = _run(script, cache, "6", RAX_XLA_CACHE_MAX_SIZE="20KiB")  # entries are ~8 KB here
    # JAX's own LRU would list the directory and read every entry's stamp at each write: a run's
    # compiles would slow down quadratically with the cache's size.
    assert out["max_size"] == -1
    found = xla_cache.entries(cache / "xla")
    assert 0 < len(found) < 6 and sum(size for _, size, _ in found) <= 20480
    names = [path.name for path, _, _ in found]
    assert any(name.startswith("jit_step5-") for name in names)
    assert not any(name.startswith("jit_step0-") for name in names)


@pytest.mark.skipif(importlib.util.find_spec("filelock") is None, reason="JAX refuses a cap without filelock")
def test_a_cap_the_user_gives_jax_works_on_raximports_directory(tmp_path: Path) -> None:
    earlier, script = tmp_path / "earlier.py", tmp_path / "train.py"
    earlier.write_text(SCRIPT.replace("x.T + i", "x.T + i + 100"))  # other programs, not read again
    script.write_text(SCRIPT)
    cache = tmp_path / "rax"
    _run(earlier, cache, "2")  # entries written while JAX's LRU is off: no -atime stamps
    env = _env(cache, JAX_COMPILATION_CACHE_MAX_SIZE="10000000")
    proc = _python("-m", "raximport", str(script), "2", cwd=tmp_path, env=env)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["max_size"] == 10_000_000  # the user's, JAX's to enforce
    assert "Error writing persistent compilation cache" not in proc.stderr, proc.stderr
    assert len(xla_cache.entries(cache / "xla")) == 4


def test_eviction_order_is_the_last_use(tmp_path: Path) -> None:
    key = [f"jit_f{i}-{str(i) * 64}" for i in range(4)]  # JAX's names: module name, sha256
    for i, size in enumerate((400, 300, 200, 100)):
        path = tmp_path / f"{key[i]}-cache"
        path.write_bytes(b"x" * size)
        os.utime(path, ns=(i * 10**9, i * 10**9))  # written (and last read) in order
    (tmp_path / f"{key[0]}-atime").write_bytes((5 * 10**9).to_bytes(8, "little"))  # JAX's LRU stamp: k0 used last
    os.utime(tmp_path / f"{key[1]}-cache", ns=(6 * 10**9, 10**9))  # k1 read after that
    (tmp_path / "other.txt").write_text("not an entry")
    (tmp_path / "backup-cache").write_text("not JAX's entry either")
    assert [p.name for p, _, _ in xla_cache.entries(tmp_path)] == [f"{key[i]}-cache" for i in (2, 3, 0, 1)]
    removed = xla_cache.evict(tmp_path, 750)
    assert [p.name for p in removed] == [f"{key[2]}-cache", f"{key[3]}-cache"]
    left = [f"{key[0]}-atime", f"{key[0]}-cache", f"{key[1]}-cache"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*left, "backup-cache", "other.txt"])


def test_an_entry_read_since_is_used_more_recently_than_one_written_after_it(tmp_path: Path) -> None:
    old, new = (tmp_path / f"jit_{name}-{c * 64}-cache" for name, c in (("old", "a"), ("new", "b")))
    for path, t in ((old, 1), (new, 2)):
        path.write_bytes(b"x" * 100)
        os.utime(path, ns=(t * 10**9, t * 10**9))
    old.read_bytes()  # as JAX loads an entry
    if old.stat().st_atime_ns == 10**9:
        pytest.skip("this file system does not record reads (noatime): eviction falls back to write times")
    assert [p.name for p in xla_cache.evict(tmp_path, 100)] == [new.name]


def test_an_unusable_xla_dir_leaves_jaxs_cache_off_with_one_note(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cache = tmp_path / "rax"
    cache.mkdir(mode=0o700)
    (cache / "xla").write_text("a file where the XLA cache directory should be")
    proc = _python("-m", "raximport", str(script), "3", cwd=tmp_path, env=_env(cache))
    assert json.loads(proc.stdout.strip().splitlines()[-1])["dir"] is None  # JAX's cache stays off
    assert proc.stderr.count("RaxWarning") == 1, proc.stderr
    assert f"not using {cache / 'xla'}: it is not a directory; JAX's persistent compilation cache is off" in proc.stderr
    assert "Error" not in proc.stderr  # none of JAX's per-entry warnings


CONFIGURE = """\
import json, os, sys
from raximport import xla_cache
from raximport.config import Config
config = Config(cache_dir=sys.argv[1])
setups = [xla_cache.configure(config), xla_cache.configure(config)]
print(json.dumps([setups == [None, None], os.environ.get("JAX_COMPILATION_CACHE_DIR")]))
"""


@pytest.mark.parametrize("planted", ["dir of another user", "dir others can write"])
def test_an_xla_dir_others_control_is_refused(tmp_path: Path, planted: str) -> None:
    cache = tmp_path / "rax"
    cache.mkdir(mode=0o700)
    (cache / "xla").mkdir(mode=0o700)
    if planted == "dir of another user":
        os.chown(cache / "xla", 12345, 12345)
    else:
        (cache / "xla").chmod(0o777)
    proc = _python("-c", CONFIGURE, str(cache), cwd=tmp_path, env=_env(cache))
    assert json.loads(proc.stdout) == [True, None]
    assert proc.stderr.count("RaxWarning") == 1 and f"not using {cache / 'xla'}: " in proc.stderr
    assert "could plant code there that runs as you; JAX's persistent compilation cache is off" in proc.stderr


def test_atime_backfill_never_writes_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    cache = tmp_path / "xla"
    cache.mkdir()
    (cache / f"jit_f-{'a' * 64}-cache").write_bytes(b"entry")
    (cache / f"jit_f-{'a' * 64}-atime").symlink_to(victim)
    xla_cache._backfill_atimes(cache)
    assert victim.read_text() == "precious"


def test_env_set_by_a_raximport_parent_is_not_the_users(tmp_path: Path) -> None:
    config = Config(cache_dir=tmp_path)
    parent = {"JAX_COMPILATION_CACHE_DIR": "/elsewhere/xla",
              xla_cache.ENV_MARK: json.dumps({"JAX_COMPILATION_CACHE_DIR": "/elsewhere/xla"})}
    assert xla_cache.resolve_dir(config, parent) == (tmp_path / "xla", True)
    users = {**parent, "JAX_COMPILATION_CACHE_DIR": "/mine"}
    assert xla_cache.resolve_dir(config, users) == (Path("/mine"), False)


def test_off_configures_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    before = dict(os.environ)
    assert xla_cache.configure(Config(cache_dir=tmp_path, xla_cache=False)) is None
    assert dict(os.environ) == before


def test_sizes() -> None:
    assert parse_size("4GB") == 4 * 10**9 and parse_size("512MB") == 512 * 10**6
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("1.5k") == 1500 and parse_size(4096) == 4096
    assert parse_size("unlimited") == parse_size("-1") == -1
    for bad in ("0", "GB", "5x", "-3"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert load_config(environ={"RAX_XLA_CACHE_MAX_SIZE": "1GB", "RAX_XLA_CACHE": "off"}).xla_cache_max_size == 10**9
    with pytest.raises(ConfigError, match="xla_cache_max_size"):
        load_config({"xla_cache_max_size": "lots"}, environ={})
    assert cachedir.human_size(6900) == "6.9 KB" and cachedir.human_size(12) == "12 B"
