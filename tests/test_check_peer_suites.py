"""scripts/check_peer_suites.py: the junit parsing and outcome comparison (offline), a tiny fake
suite run plain and under raximport, and (slow) one jaxtyping test file for real."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_peer_suites.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_peer_suites", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_peer_suites"] = mod
    spec.loader.exec_module(mod)
    return mod


cps = _load()

PLAIN_XML = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="6">
  <testcase classname="tests.test_a" name="test_ok" file="tests/test_a.py" line="3" time="0.1"/>
  <testcase classname="tests.test_a.TestK" name="test_m[1-2]" file="tests/test_a.py" line="9" time="0.1"/>
  <testcase classname="tests.test_a" name="test_skip" file="tests/test_a.py" line="12" time="0">
    <skipped type="pytest.skip" message="no torch">tests/test_a.py:12: no torch</skipped></testcase>
  <testcase classname="tests.test_a" name="test_teardown" file="tests/test_a.py" line="20" time="0"/>
  <testcase classname="tests.test_a" name="test_teardown" file="tests/test_a.py" line="20" time="0">
    <error message="failed on teardown with &quot;OSError&quot;">OSError: busy</error></testcase>
  <testcase classname="tests.test_a" name="test_gone" file="tests/test_a.py" line="30" time="0"/>
</testsuite></testsuites>
"""

RAX_XML = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="6">
  <testcase classname="tests.test_a" name="test_ok" file="tests/test_a.py" line="3" time="0.1"/>
  <testcase classname="tests.test_a.TestK" name="test_m[1-2]" file="tests/test_a.py" line="9" time="0.1">
    <failure message="jaxtyping.TypeCheckError: Type-check error whilst checking the parameters of f.">line one
line two
line three</failure></testcase>
  <testcase classname="tests.test_a" name="test_skip" file="tests/test_a.py" line="12" time="0">
    <skipped type="pytest.skip" message="no torch">tests/test_a.py:12: no torch</skipped></testcase>
  <testcase classname="tests.test_a" name="test_teardown" file="tests/test_a.py" line="20" time="0">
    <error message="failed on teardown with &quot;OSError&quot;">OSError: busy</error></testcase>
  <testcase classname="tests.test_a" name="test_new" file="tests/test_a.py" line="40" time="0"/>
</testsuite></testsuites>
"""


def test_parse_junit_node_ids_and_outcomes(tmp_path: Path) -> None:
    (tmp_path / "p.xml").write_text(PLAIN_XML)
    res = cps.parse_junit(tmp_path / "p.xml")
    assert set(res) == {
        "tests/test_a.py::test_ok",
        "tests/test_a.py::TestK::test_m[1-2]",
        "tests/test_a.py::test_skip",
        "tests/test_a.py::test_teardown",
        "tests/test_a.py::test_gone",
    }
    assert res["tests/test_a.py::test_skip"].outcome == "skipped"
    # a pass followed by a teardown error keeps the worst outcome
    assert res["tests/test_a.py::test_teardown"].outcome == "error"
    assert cps.counts(res) == {"passed": 3, "failed": 0, "skipped": 1, "error": 1}


def test_compare_lists_every_difference_with_the_failure(tmp_path: Path) -> None:
    (tmp_path / "p.xml").write_text(PLAIN_XML)
    (tmp_path / "r.xml").write_text(RAX_XML)
    diffs = cps.compare(cps.parse_junit(tmp_path / "p.xml"), cps.parse_junit(tmp_path / "r.xml"))
    got = {(d.node_id, d.plain, d.raximport) for d in diffs}
    assert got == {
        ("tests/test_a.py::TestK::test_m[1-2]", "passed", "failed"),
        ("tests/test_a.py::test_gone", "passed", "missing"),
        ("tests/test_a.py::test_new", "missing", "passed"),
    }
    failed = next(d for d in diffs if d.raximport == "failed")
    assert failed.raximport_failure.splitlines()[0].startswith("jaxtyping.TypeCheckError")
    assert "line three" in failed.raximport_failure
    assert cps.first_lines("a\nb\nc\nd", 2) == "a\nb\n... (2 more lines)"


def test_node_id_without_file_attribute() -> None:
    import xml.etree.ElementTree as ET

    case = ET.fromstring('<testcase classname="test.test_x" name="test_y"/>')
    assert cps._node_id(case) == "test.test_x::test_y"


def test_unpack_sdist_takes_only_tests_and_config(tmp_path: Path) -> None:
    src = tmp_path / "pkg-1.0"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("")
    (src / "tests").mkdir()
    (src / "tests" / "test_x.py").write_text("def test_x(): pass\n")
    (src / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="pkg-1.0")
    dest = tmp_path / "out"
    assert cps.unpack_sdist(archive, "tests", dest)
    assert (dest / "tests" / "test_x.py").is_file() and (dest / "pyproject.toml").is_file()
    assert not (dest / "pkg").exists()  # never shadows the installed package
    assert not cps.unpack_sdist(archive, "test", tmp_path / "none")


def test_fake_suite_plain_and_under_raximport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny installed 'library' with a wrong annotation and its tests, fed in through a fake
    sdist: the test the annotation breaks is the one reported as differing."""
    site = tmp_path / "site"
    (site / "fakelib_rax").mkdir(parents=True)
    (site / "fakelib_rax" / "__init__.py").write_text(
        "from jaxtyping import Array, Float\n"
        "def good(x: Float[Array, 'n']) -> Float[Array, 'n']:\n    return x * 2\n"
        "def wrong(x: Float[Array, 'n']) -> Float[Array, 'n']:\n    return x.sum()\n"
    )
    (site / "fakelib_rax-1.0.dist-info").mkdir()
    (site / "fakelib_rax-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fakelib-rax\nVersion: 1.0\n")
    src = tmp_path / "fakelib_rax-1.0"
    (src / "tests").mkdir(parents=True)
    (src / "tests" / "test_fake.py").write_text(
        "import jax.numpy as jnp\nimport fakelib_rax as f\n"
        "def test_good():\n    assert f.good(jnp.ones(3)).shape == (3,)\n"
        "def test_wrong():\n    assert float(f.wrong(jnp.ones(3))) == 3.0\n"
    )
    work = tmp_path / "work"
    (work / "downloads").mkdir(parents=True)
    with tarfile.open(work / "downloads" / "fakelib_rax-1.0.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="fakelib_rax-1.0")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO)]))
    monkeypatch.setitem(
        cps.SUITES,
        "fakelib",
        {"dist": "fakelib_rax", "package": "fakelib_rax", "tests": "tests", "test_deps": [], "default_files": None},
    )
    out = tmp_path / "r.json"
    status = cps.main(["--suites", "fakelib", "--work", str(work), "--offline", "--timeout", "0",
                       "--json", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    (suite,) = data["suites"]
    assert suite["plain"]["counts"]["passed"] == 2, suite
    assert status == 1
    (d,) = suite["differences"]
    assert d["node_id"] == "tests/test_fake.py::test_wrong"
    assert (d["plain"], d["raximport"]) == ("passed", "failed")
    assert "wrong" in d["raximport_failure"]


def test_help_explains() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "--source" in proc.stdout and "Exit status" in proc.stdout


@pytest.mark.slow
def test_one_jaxtyping_file_for_real(tmp_path: Path) -> None:
    """Fetches the jaxtyping sdist; it ships no tests, so a local clone is needed
    (RAX_PEER_JAXTYPING_SOURCE, a git clone with tag vVERSION); skipped otherwise."""
    source = os.environ.get("RAX_PEER_JAXTYPING_SOURCE")
    work = tmp_path / "work"
    args = ["--suites", "jaxtyping", "--work", str(work), "--files", "jaxtyping=test/test_array.py",
            "--json", str(tmp_path / "r.json"), "--suite-timeout", "600"]  # fmt: skip
    if source:
        args += ["--source", f"jaxtyping={source}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900, env=env)
    data = json.loads((tmp_path / "r.json").read_text())
    (suite,) = data["suites"]
    if "skipped" in suite:
        pytest.skip(f"jaxtyping's tests could not be fetched: {suite['skipped']}")
    assert suite["tests"] > 0, proc.stderr
    assert suite["differences"] == [], proc.stdout
    assert proc.returncode == 0, proc.stdout
