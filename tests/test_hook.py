"""Which modules the finder takes, the bytecode cache, and living beside other import machinery."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

import raximport
from raximport.config import Config
from raximport.errors import RaxWarning
from raximport.hook import RaxFinder, RaxLoader
from tests.helpers import write

ANNOTATED = """
import numpy as np
from jaxtyping import Float

def f(x: Float[np.ndarray, "n"]) -> Float[np.ndarray, "n"]:
    return x
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root / "pyproject.toml", "")
    return root


@pytest.fixture
def clean_modules():
    """Forget modules a test imported, so the next test imports them afresh."""
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]
    sys.path[:] = path
    importlib.invalidate_caches()


def fresh_import(name: str):
    importlib.invalidate_caches()
    sys.modules.pop(name, None)
    return importlib.import_module(name)


# --- selection ---------------------------------------------------------------------------------


def test_selection_rules(tmp_path: Path) -> None:
    import sysconfig

    site = os.path.join(sysconfig.get_path("purelib"), "somepkg", "mod.py")
    stdlib = os.path.join(sysconfig.get_path("stdlib"), "colorsys.py")
    root = str(tmp_path)
    finder = RaxFinder(Config(project_root=root, packages=("somepkg",), exclude=("proj.gen", "*/vendored/*")))
    assert finder.selects("proj.model", f"{root}/proj/model.py")
    assert not finder.selects("elsewhere", "/opt/other/elsewhere.py")
    assert finder.selects("somepkg.mod", site)  # named packages are taken wherever they live
    assert not RaxFinder(Config(project_root=root)).selects("somepkg.mod", site)
    assert not finder.selects("colorsys", stdlib)
    assert not finder.selects("proj.gen.tables", f"{root}/proj/gen/tables.py")  # excluded by name
    assert not finder.selects("proj.vendored.x", f"{root}/proj/vendored/x.py")  # excluded by glob
    raximport_file = os.path.join(os.path.dirname(raximport.__file__), "checks.py")
    assert not RaxFinder(Config(project_root="/")).selects("raximport.checks", raximport_file)


@pytest.mark.filterwarnings("ignore::raximport.errors.RaxWarning")
def test_a_named_stdlib_module_is_instrumented_and_unnamed_ones_are_not(tmp_path: Path, clean_modules) -> None:
    with raximport.install(project_root=tmp_path, cache_dir=tmp_path / "c"):
        assert not isinstance(fresh_import("colorsys").__loader__, RaxLoader)
    with raximport.install(packages=["colorsys"], project_root=tmp_path, cache_dir=tmp_path / "c") as hook:
        assert isinstance(fresh_import("colorsys").__loader__, RaxLoader)
        assert "colorsys" in hook.instrumented


@pytest.mark.filterwarnings("ignore::raximport.errors.RaxWarning")
def test_paths_option_adds_a_directory_outside_the_project(tmp_path: Path, project: Path, clean_modules) -> None:
    extra = tmp_path / "shared_lib"
    write(extra / "extra_mod.py", ANNOTATED)
    sys.path.insert(0, str(extra))
    with raximport.install(project_root=project, cache_dir=tmp_path / "c"):
        assert not hasattr(fresh_import("extra_mod").f, "__wrapped__")
    with raximport.install(project_root=project, paths=[str(extra)], cache_dir=tmp_path / "c"):
        assert hasattr(fresh_import("extra_mod").f, "__wrapped__")


def test_uninstall_and_context_manager(tmp_path: Path) -> None:
    hook = raximport.install(project_root=tmp_path, cache_dir=tmp_path / "c")
    assert hook.finder in sys.meta_path
    hook.uninstall()
    assert hook.finder not in sys.meta_path
    with raximport.install(project_root=tmp_path, cache_dir=tmp_path / "c") as hook:
        assert sys.meta_path[0] is hook.finder
    assert hook.finder not in sys.meta_path
    raximport.install(project_root=tmp_path, cache_dir=tmp_path / "c")
    raximport.uninstall()
    assert not any(isinstance(f, RaxFinder) for f in sys.meta_path)


# --- bytecode cache ----------------------------------------------------------------------------


def test_cache_hits_across_finders_and_misses_on_a_same_size_edit(project: Path, tmp_path: Path, clean_modules) -> None:
    write(project / "cached_mod.py", ANNOTATED)
    sys.path.insert(0, str(project))
    cache = tmp_path / "c"
    with raximport.install(project_root=project, cache_dir=cache) as hook:
        fresh_import("cached_mod")
        assert (hook.finder.cache.hits, hook.finder.cache.misses) == (0, 1)
    with raximport.install(project_root=project, cache_dir=cache) as hook:
        fresh_import("cached_mod")
        assert (hook.finder.cache.hits, hook.finder.cache.misses) == (1, 0)
    source = (project / "cached_mod.py").read_text()
    stat = (project / "cached_mod.py").stat()
    (project / "cached_mod.py").write_text(source.replace("return x", "return -x"))  # same size
    os.utime(project / "cached_mod.py", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    with raximport.install(project_root=project, cache_dir=cache) as hook:
        mod = fresh_import("cached_mod")
        assert hook.finder.cache.misses == 1
        assert mod.f(mod.np.ones(1)).tolist() == [-1.0]
    assert len(list((cache / "pyc").iterdir())) == 1  # one file per source, overwritten on change


def test_cache_key_includes_the_options_that_change_the_rewrite(project: Path, tmp_path: Path, clean_modules) -> None:
    write(project / "opt_mod.py", ANNOTATED)
    sys.path.insert(0, str(project))
    cache = tmp_path / "c"
    with raximport.install(project_root=project, cache_dir=cache):
        assert hasattr(fresh_import("opt_mod").f, "__wrapped__")
    with raximport.install(project_root=project, cache_dir=cache, checks=False):
        assert not hasattr(fresh_import("opt_mod").f, "__wrapped__")


def test_cache_key_includes_the_optimisation_level(run_python, project: Path) -> None:
    write(project / "asserting.py", ANNOTATED + "\nassert False, 'asserts are on'\n")
    write(project / "main.py", "import asserting\nprint('imported')\n")
    for flags, expect_assert in ([], True), (["-O"], False), ([], True), (["-O"], False):
        result = run_python(*flags, "-m", "raximport", "main.py", cwd=project)
        assert ("asserts are on" in result.stderr) is expect_assert, result.stderr


def test_corrupt_or_unwritable_cache_is_not_an_error(project: Path, tmp_path: Path, clean_modules) -> None:
    write(project / "robust_mod.py", ANNOTATED)
    sys.path.insert(0, str(project))
    cache = tmp_path / "c"
    with raximport.install(project_root=project, cache_dir=cache):
        fresh_import("robust_mod")
    (cache_file,) = (cache / "pyc").iterdir()
    cache_file.write_bytes(cache_file.read_bytes()[:40])  # truncated
    with raximport.install(project_root=project, cache_dir=cache) as hook:
        assert hasattr(fresh_import("robust_mod").f, "__wrapped__")
        assert hook.finder.cache.misses == 1
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be")
    with pytest.warns(RaxWarning, match=f"not using {blocked}: it is not a directory") as caught:
        with raximport.install(project_root=project, cache_dir=blocked):
            assert hasattr(fresh_import("robust_mod").f, "__wrapped__")
            fresh_import("robust_mod")
    assert len(caught) == 1


def test_a_damaged_cache_entry_is_rebuilt_never_run_or_fatal(project: Path, tmp_path: Path, clean_modules) -> None:
    write(project / "damaged_mod.py", 'VALUE = "original"\n\ndef f(x: int) -> int:\n    return x + 1\n')
    sys.path.insert(0, str(project))
    cache = tmp_path / "c"
    with raximport.install(project_root=project, cache_dir=cache):
        fresh_import("damaged_mod")
    (entry,) = (cache / "pyc").iterdir()
    good = entry.read_bytes()
    # A changed constant unmarshals fine (and would run); flipping each byte in turn also reaches
    # marshal's SystemError ("bad argument to internal function").
    damaged = [good.replace(b"original", b"Original")]
    damaged += [good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1 :] for i in range(len(good))]
    with raximport.install(project_root=project, cache_dir=cache) as hook:
        for data in damaged:
            entry.write_bytes(data)
            mod = fresh_import("damaged_mod")
            assert (mod.VALUE, mod.f(1)) == ("original", 2)
        assert (hook.finder.cache.hits, hook.finder.cache.misses) == (0, len(damaged))
        assert entry.read_bytes() == good  # rebuilt, so the next run hits again
        fresh_import("damaged_mod")
        assert hook.finder.cache.hits == 1


def test_cache_key_includes_raximports_rewrite_code(project: Path, tmp_path: Path) -> None:
    """An editable install after `git pull`: a changed rewrite.py must not be served stale rewrites."""
    package = tmp_path / "site" / "raximport"
    shutil.copytree(Path(raximport.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    write(project / "pulled_mod.py", "def f(x: int) -> int:\n    return x\n")
    program = (
        "import sys, raximport\n"
        f"hook = raximport.install(project_root={str(project)!r}, cache_dir={str(tmp_path / 'c')!r})\n"
        f"sys.path.insert(0, {str(project)!r})\n"
        "import pulled_mod\n"
        "print(getattr(pulled_mod, 'REWRITTEN_BY', 'old'), hook.finder.cache.hits, hook.finder.cache.misses)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")} | {"PYTHONPATH": str(package.parent)}

    def run() -> str:
        result = subprocess.run(
            [sys.executable, "-c", program], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run() == "old 0 1"
    assert run() == "old 1 0"
    with open(package / "rewrite.py", "a") as fh:  # the new rewrite adds a name to every module
        fh.write(
            "\n_compile_source = compile_source\n\n\n"
            "def compile_source(source, filename, options=RewriteOptions(), **keywords):\n"
            "    return _compile_source(source + b'\\nREWRITTEN_BY = \"new\"\\n', filename, options, **keywords)\n"
        )
    assert run() == "new 0 1"
    assert run() == "new 1 0"


def test_cache_dirs_are_private_to_the_user(project: Path, tmp_path: Path, clean_modules) -> None:
    write(project / "private_mod.py", "X = 1\n")
    sys.path.insert(0, str(project))
    cache = tmp_path / "new" / "c"
    with raximport.install(project_root=project, cache_dir=cache):
        fresh_import("private_mod")
    (entry,) = (cache / "pyc").iterdir()
    modes = [stat.S_IMODE(path.stat().st_mode) for path in (cache, cache / "pyc", entry)]
    assert modes == [0o700, 0o700, 0o600]


OTHER_USER = 12345  # tests run as root: chown simulates a file another user made


@pytest.mark.parametrize(
    "planted", ["shared dir of another user", "dir others can write", "entry of another user", "entry others can write"]
)
def test_code_planted_in_the_cache_never_runs(project: Path, tmp_path: Path, clean_modules, planted: str) -> None:
    names = ("victim_a", "victim_b")
    for name in names:
        write(project / f"{name}.py", 'VALUE = "mine"\n')
    sys.path.insert(0, str(project))
    cache = tmp_path / "c"
    with raximport.install(project_root=project, cache_dir=cache) as hook:  # valid entries, evil code
        for name in names:
            path = str(project / f"{name}.py")
            key = hook.finder.cache.key(path, Path(path).read_bytes())
            hook.finder.cache.store(path, key, compile('VALUE = "planted"', path, "exec"))
    entries = sorted((cache / "pyc").iterdir())
    if planted == "shared dir of another user":
        for path in (cache, cache / "pyc", *entries):
            os.chown(path, OTHER_USER, OTHER_USER)
    elif planted == "dir others can write":
        cache.chmod(0o777)
    for entry in entries:
        if planted == "entry of another user":
            os.chown(entry, OTHER_USER, OTHER_USER)
        elif planted == "entry others can write":
            entry.chmod(0o666)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with raximport.install(project_root=project, cache_dir=cache) as hook:
            assert [fresh_import(name).VALUE for name in names] == ["mine", "mine"]
    (warning,) = [w for w in caught if issubclass(w.category, RaxWarning)]
    assert "could plant code there that runs as you" in str(warning.message)
    if planted.startswith("entry"):  # the user's own cache dir: the entries are rebuilt, and hit next time
        assert str(entries[0]) in str(warning.message) and "rebuilt" in str(warning.message)
        assert all(e.stat().st_uid == os.geteuid() and stat.S_IMODE(e.stat().st_mode) == 0o600 for e in entries)
        with raximport.install(project_root=project, cache_dir=cache) as hook:
            fresh_import(names[0])
            assert hook.finder.cache.hits == 1
    else:  # another user's or a shared dir: not used at all
        assert f"not using {cache}:" in str(warning.message) and "without its caches" in str(warning.message)
        assert hook.finder.cache.misses == 2 and sorted((cache / "pyc").iterdir()) == entries


def test_temp_files_of_killed_writes_are_swept_by_a_later_write(project: Path, tmp_path: Path, clean_modules) -> None:
    write(project / "swept_mod.py", "X = 1\n")
    sys.path.insert(0, str(project))
    cache = tmp_path / "c"
    cache.mkdir(mode=0o700)
    (cache / "pyc").mkdir(mode=0o700)
    entry = "model-0123456789abcdef.cpython-311.opt0.pyc"
    stale, recent = (cache / "pyc" / f"{entry}{tail}.tmp" for tail in ("abcd_123", "efgh_456"))
    for temp in (stale, recent):
        temp.write_bytes(b"half a write")
    os.utime(stale, (0, 0))  # long ago: its writer is gone; `recent` may be a concurrent write
    with raximport.install(project_root=project, cache_dir=cache):
        fresh_import("swept_mod")
    assert not stale.exists() and recent.exists()


def test_cache_works_with_dont_write_bytecode_and_leaves_the_source_tree_alone(run_python, project: Path, cache_dir: Path) -> None:
    write(project / "tree_mod.py", ANNOTATED)
    write(project / "main.py", "import tree_mod\n")
    before = sorted(p.name for p in project.rglob("*"))
    for _ in range(2):
        result = run_python("-m", "raximport", "main.py", cwd=project, env={"PYTHONDONTWRITEBYTECODE": "1"})
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in project.rglob("*")) == before  # no __pycache__, nothing written
    assert len(list((cache_dir / "pyc").glob("tree_mod-*.pyc"))) == 1


def test_concurrent_processes_share_the_cache(project: Path, cache_dir: Path) -> None:
    for i in range(8):
        write(project / f"conc_{i}.py", ANNOTATED)
    write(project / "main.py", "".join(f"import conc_{i}\n" for i in range(8)) + "print(conc_7.f(conc_7.np.ones(2)).sum())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")} | {"RAX_CACHE_DIR": str(cache_dir)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "raximport", "main.py"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert all(out.strip() == "2.0" for out, _ in outputs)
    files = list((cache_dir / "pyc").iterdir())
    assert len(files) == 9 and not [f for f in files if f.name.endswith(".tmp")]


# --- coexistence -------------------------------------------------------------------------------


def test_modules_imported_before_install_get_a_warning(project: Path, tmp_path: Path, clean_modules) -> None:
    write(project / "early_mod.py", ANNOTATED)
    sys.path.insert(0, str(project))
    fresh_import("early_mod")
    with pytest.warns(RaxWarning, match="early_mod was imported before raximport.install"):
        raximport.install(project_root=project, cache_dir=tmp_path / "c").uninstall()


def test_specs_from_other_meta_path_finders_are_instrumented(project: Path, tmp_path: Path, clean_modules) -> None:
    """Like setuptools' editable finder: the package is not on sys.path, a finder maps it."""
    src = tmp_path / "src" / "edit_pkg"
    write(src / "__init__.py", ANNOTATED)
    write(src / "sub.py", ANNOTATED)

    class EditableFinder:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == "edit_pkg":
                return importlib.util.spec_from_file_location(fullname, src / "__init__.py", submodule_search_locations=[str(src)])
            return None

    sys.meta_path.append(editable := EditableFinder())
    try:
        with raximport.install(project_root=project, paths=[str(src)], cache_dir=tmp_path / "c"):
            pkg = fresh_import("edit_pkg")
            sub = fresh_import("edit_pkg.sub")
        assert hasattr(pkg.f, "__wrapped__") and hasattr(sub.f, "__wrapped__")
    finally:
        sys.meta_path.remove(editable)


def test_zip_and_frozen_modules_are_left_alone(project: Path, tmp_path: Path, clean_modules) -> None:
    archive = project / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped_mod.py", ANNOTATED)
    sys.path.insert(0, str(archive))
    with raximport.install(project_root=project, packages=["zipped_mod", "__phello__"], cache_dir=tmp_path / "c") as hook:
        zipped = fresh_import("zipped_mod")
        frozen = hook.finder.find_spec("__phello__")
    assert not hasattr(zipped.f, "__wrapped__") and "zipimport" in type(zipped.__loader__).__module__
    assert frozen is not None and not isinstance(frozen.loader, RaxLoader)


def test_nested_installs_compose(project: Path, tmp_path: Path, clean_modules) -> None:
    write(project / "nest_mod.py", ANNOTATED)
    sys.path.insert(0, str(project))
    with raximport.install(project_root=project, cache_dir=tmp_path / "c"):
        with raximport.install(project_root=tmp_path / "elsewhere", cache_dir=tmp_path / "c"):
            assert hasattr(fresh_import("nest_mod").f, "__wrapped__")


def test_module_body_errors_have_no_extra_frames(run_python, project: Path) -> None:
    write(project / "raising.py", ANNOTATED + "\nraise RuntimeError('at import')\n")
    write(project / "main.py", "import raising\n")
    plain = run_python("main.py", cwd=project)
    hooked = run_python("main.py", cwd=project, env={"RAX_ENABLE": "1"})
    assert hooked.returncode == plain.returncode == 1
    assert hooked.stderr == plain.stderr


def test_pytest_assertion_rewriting_keeps_working(run_python, project: Path) -> None:
    write(project / "model_code.py", ANNOTATED)
    write(project / "test_sample.py", """
import numpy as np
import model_code

def test_checked():
    assert hasattr(model_code.f, "__wrapped__")

def test_introspection():
    value = 1
    assert value + 1 == 3
""")
    result = run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sample.py", cwd=project, env={"RAX_ENABLE": "1"})
    assert "1 failed, 1 passed" in result.stdout, result.stdout
    assert "assert (1 + 1) == 3" in result.stdout  # pytest's rewritten assertion message


def test_multiprocessing_spawn_children_inherit_the_hook(run_python, project: Path) -> None:
    write(project / "worker_mod.py", ANNOTATED + "\ndef is_checked(_):\n    return hasattr(f, '__wrapped__')\n")
    write(project / "main.py", """
import multiprocessing as mp
import worker_mod

if __name__ == "__main__":
    with mp.get_context("spawn").Pool(1) as pool:
        print("child", pool.map(worker_mod.is_checked, [0])[0])
""")
    result = run_python("-m", "raximport", "main.py", cwd=project)
    assert result.stdout.strip() == "child True", result.stderr


def test_coverage_still_measures_instrumented_modules(run_python, project: Path) -> None:
    write(project / "covered.py", ANNOTATED + "\ndef unused(x: Float[np.ndarray, 'n']):\n    return x\n")
    write(project / "main.py", "import covered\ncovered.f(covered.np.ones(1))\n")
    run = run_python("-m", "coverage", "run", "--include=covered.py", "-m", "raximport", "main.py", cwd=project)
    assert run.returncode == 0, run.stderr
    report = run_python("-m", "coverage", "report", "-m", cwd=project)
    line = next(line for line in report.stdout.splitlines() if line.startswith("covered"))
    assert line.split()[1:] == ["6", "1", "83%", "8"], report.stdout  # only unused()'s body missed


def test_a_user_module_named_like_a_stdlib_module_is_instrumented(run_python, project: Path) -> None:
    write(project / "profile.py", ANNOTATED)
    write(project / "main.py", "import profile\nprint(hasattr(profile.f, '__wrapped__'))\n")
    result = run_python("-m", "raximport", "main.py", cwd=project)
    assert result.stdout.strip() == "True", result.stderr


def test_star_imports_do_not_see_the_injected_names(run_python, project: Path) -> None:
    write(project / "starred.py", ANNOTATED + "\nimport jax\ng = jax.jit(f)\n")
    write(project / "main.py", "before = set(dir())\nfrom starred import *\nprint(sorted(n for n in set(dir()) - before if 'rax' in n))\n")
    result = run_python("-m", "raximport", "main.py", cwd=project)
    assert result.stdout.strip() == "[]", result.stderr
