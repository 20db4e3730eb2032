"""Options from pyproject.toml, RAX_* variables and the command line, in that order of strength."""

from __future__ import annotations

from pathlib import Path

import pytest

import sys

import raximport
from raximport.config import OPTIONS, ConfigError, find_project_root, load_config, options_markdown
from raximport.errors import RaxOutOfMemoryError
from tests.helpers import write

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_project_root_discovery(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    assert find_project_root(tmp_path / "src" / "deep") == tmp_path.resolve()
    config = load_config(root=tmp_path / "src" / "deep", environ={})
    assert config.project_root == str(tmp_path.resolve())
    assert config.checks and not config.verbose and config.packages == ()


def test_pyproject_then_env_then_options(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", """
        [tool.raximport]
        packages = ["optax"]
        exclude = ["gen"]
        checks = false
        verbose = true
    """)
    assert load_config(root=tmp_path, environ={}).packages == ("optax",)
    config = load_config(root=tmp_path, environ={"RAX_PACKAGES": "a,b", "RAX_CHECKS": "1"})
    assert config.packages == ("a", "b") and config.checks and config.verbose and config.exclude == ("gen",)
    config = load_config({"packages": ("c",), "verbose": False}, root=tmp_path, environ={"RAX_PACKAGES": "a"})
    assert config.packages == ("c",) and not config.verbose


def test_bad_options_name_their_origin_and_the_valid_keys(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.raximport]\npackage = ['typo']\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.raximport\]: unknown option 'package'; valid options: .*packages"):
        load_config(root=tmp_path, environ={})
    with pytest.raises(ConfigError, match="RAX_CHECKS: checks: must be true or false"):
        load_config(root=tmp_path.parent, environ={"RAX_CHECKS": "maybe"})


def test_cli_options_reach_the_hook_and_the_child_environment(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.raximport]\nverbose = true\n")
    write(tmp_path / "mod_a.py", "import numpy as np\nfrom jaxtyping import Float\ndef f(x: Float[np.ndarray, 'n']): return x\n")
    write(tmp_path / "main.py", "import os, mod_a\nprint(hasattr(mod_a.f, '__wrapped__'), os.environ['RAX_EXCLUDE'], os.environ['RAX_ENABLE'])\n")
    result = run_python("-m", "raximport", "--exclude", "mod_a", "main.py", cwd=tmp_path)
    assert result.stdout.split() == ["False", "mod_a", "1"], result.stderr
    result = run_python("-m", "raximport", "main.py", cwd=tmp_path)
    assert result.stdout.split()[0] == "True"
    assert "raximport: instrumenting mod_a" in result.stderr  # verbose from pyproject.toml
    result = run_python("-m", "raximport", "--no-checks", "main.py", cwd=tmp_path)
    assert result.stdout.split()[0] == "False"
    result = run_python("-m", "raximport", "main.py", cwd=tmp_path, env={"RAX_CHECKS": "0"})
    assert result.stdout.split()[0] == "False"
    write(tmp_path / "pyproject.toml", "[tool.raximport]\nbogus = 1\n")
    result = run_python("-m", "raximport", "main.py", cwd=tmp_path)
    assert result.returncode == 2 and "unknown option 'bogus'" in result.stderr


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-inf", "1e400GB"])
def test_sizes_that_are_not_numbers_are_config_errors(value: str) -> None:
    for name in ("MEMORY_LIMIT", "XLA_CACHE_MAX_SIZE"):
        with pytest.raises(ConfigError, match=f"RAX_{name}: {name.lower()}: "):
            load_config(environ={f"RAX_{name}": value})


def test_unreadable_pyproject_settings_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.raximport]\ncache_dir = 5\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.raximport\]: cache_dir: must be a path"):
        load_config(root=tmp_path, environ={})
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.raximport]\nverbose = true # caf\xe9\n")
    with pytest.raises(ConfigError, match="pyproject.toml: cannot read it"):
        load_config(root=tmp_path, environ={})


def test_a_bad_setting_under_rax_enable_is_one_warning_and_the_script_runs(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "main.py", "print('ran')\n")
    for env in ({"RAX_MEMORY_LIMIT": "inf"}, {"RAX_TRACEBACK": "long"}):
        result = run_python("main.py", cwd=tmp_path, env={"RAX_ENABLE": "1", **env})
        assert result.returncode == 0 and result.stdout == "ran\n"
        assert "Traceback" not in result.stderr
        assert result.stderr.count("raximport: not enabled:") == 1, result.stderr
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.raximport]\n\xff = 1\n")
    result = run_python("main.py", cwd=tmp_path, env={"RAX_ENABLE": "1"})
    assert result.stdout == "ran\n" and "Traceback" not in result.stderr and "cannot read it" in result.stderr


def test_every_option_travels_to_a_child_process_through_to_env(tmp_path: Path) -> None:
    changed = {"packages": ("a", "b"), "paths": (str(tmp_path / "x"), str(tmp_path / "y")), "exclude": ("gen",),
               "project_root": str(tmp_path), "checks": False, "jit": False, "autojit": False, "memory_check": False,
               "memory_limit": "3GB", "memory_report": True, "verbose": True, "cache_dir": str(tmp_path / "c"),
               "xla_cache": False, "xla_cache_max_size": "1GB", "slow_compile_secs": 0.5, "traceback": "full",
               "strict": True, "nan_guard": True, "debug_nans": True, "debug_keys": True,
               "dump_ir": str(tmp_path / "ir")}
    assert set(changed) == {o.name for o in OPTIONS if o.inherit}, "a new option needs a value here"
    parent = load_config(changed, environ={})
    child = load_config(environ=parent.to_env())
    assert child == parent
    assert all(child.origin(name) == f"RAX_{name.upper()}" for name in changed if name != "project_root")


def test_every_option_has_its_flag_variable_and_help(run_python, tmp_path: Path) -> None:
    help_text = run_python("-m", "raximport", "--help", cwd=tmp_path).stdout
    for row in OPTIONS:
        assert row.help and all(flag in help_text for flag in row.cli_flags), row.name
        assert f"[{row.env}]" in " ".join(help_text.split()), row.name


def test_the_readme_options_table_is_the_options_table() -> None:
    readme = (REPO / "README.md").read_text()
    begin, end = "<!-- options:begin -->\n", "\n<!-- options:end -->"
    assert begin in readme and end in readme
    table = readme.split(begin, 1)[1].split(end, 1)[0]
    assert table == options_markdown(), (
        "README's options table is stale: replace it with the output of "
        "python -c 'from raximport.config import options_markdown; print(options_markdown())'")


def test_memory_limit_reports_name_where_the_limit_was_set(run_python, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / "step.py", """
        import jax, jax.numpy as jnp
        outer = jax.jit(lambda x: (x[:, None] * x[None, :]).sum())
        print(outer(jnp.ones(3000)))
    """)
    cases = [(["--memory-limit", "1MB"], {}, "memory_limit from --memory-limit"),
             ([], {"RAX_MEMORY_LIMIT": "1MB"}, "memory_limit from RAX_MEMORY_LIMIT")]
    for args, env, source in cases:
        result = run_python("-m", "raximport", *args, "step.py", cwd=tmp_path, env={"RAX_XLA_CACHE": "0", **env})
        assert result.returncode == 1 and source in result.stderr, result.stderr
    write(tmp_path / "pyproject.toml", "[tool.raximport]\nmemory_limit = '1MB'\n")
    result = run_python("-m", "raximport", "step.py", cwd=tmp_path, env={"RAX_XLA_CACHE": "0"})
    assert f"memory_limit from {tmp_path.resolve() / 'pyproject.toml'} [tool.raximport]" in result.stderr


@pytest.fixture
def steps(tmp_path: Path, cache_dir: Path):
    """A module of jitted steps, imported inside `with raximport.install(...)`: options given there."""
    project = tmp_path / "proj"
    write(project / "bound_steps.py", """
        import jax

        @jax.jit
        def outer(x):
            return (x[:, None] * x[None, :]).sum()
    """)
    sys.path.insert(0, str(project))

    def load(**options):
        with raximport.install(project_root=project, cache_dir=cache_dir, xla_cache=False, **options):
            import bound_steps
        return bound_steps

    yield load
    sys.path.remove(str(project))
    sys.modules.pop("bound_steps", None)


def test_install_options_hold_for_calls_after_the_with_block(steps) -> None:
    import jax.numpy as jnp

    module = steps(memory_limit="1MB")
    with pytest.raises(RaxOutOfMemoryError) as info:
        module.outer(jnp.ones(3000))  # 36 MB of temporaries, first traced after the block
    assert "memory_limit from install(memory_limit=...)" in "\n".join(info.value.report.details)


def test_install_report_json_holds_for_reports_after_the_with_block(steps, tmp_path: Path) -> None:
    import json

    import jax.numpy as jnp

    module = steps(report_json=str(tmp_path / "reports.json"))
    for size in range(1, 7):  # a new shape on every call: a recompilation report
        module.outer(jnp.ones(size))
    kinds = [r["kind"] for r in json.loads((tmp_path / "reports.json").read_text())["reports"]]
    assert kinds == ["recompilation"]
