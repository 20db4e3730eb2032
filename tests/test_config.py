"""Options from pyproject.toml, RAX_* variables and the command line, in that order of strength."""

from __future__ import annotations

from pathlib import Path

import pytest

from raximport.config import ConfigError, find_project_root, load_config
from tests.helpers import write


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
    with pytest.raises(ConfigError, match="environment: checks must be true or false"):
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
