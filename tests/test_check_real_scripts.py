"""scripts/check_real_scripts.py: its output normalisation and verdicts (offline), and one real
flax example run plain and under raximport (slow; skipped when flax's sdist cannot be fetched)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_real_scripts.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_real_scripts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


crs = _load()


def test_normalise_strips_timings_timestamps_and_addresses_but_keeps_the_numbers() -> None:
    a = (
        "I1202 17:29:45.200232 140135154875264 train.py:172] epoch:  1, train_loss: 2.4880, test_accuracy: 15.62\n"
        "Finished XLA compilation of jit(step) in 0.052341 sec\n"
        "step 3 took 12ms (3.1 it/s); total 1.5e-3s, 2 minutes\r\n"
        "dot_general=<function dot_general at 0x7fbfbb163100>\n"
        "2026-12-02 17:23:01,123 saved   \n"
    )
    b = (
        "I1203 09:01:02.000001 7 train.py:172] epoch:  1, train_loss: 2.4880, test_accuracy: 15.62\n"
        "Finished XLA compilation of jit(step) in 1.9 sec\n"
        "step 3 took 250 ms (0.4 it/s); total 7s, 11 minutes\n"
        "dot_general=<function dot_general at 0x55d0c0ffee00>\n"
        "2027-01-01T00:00:00.5 saved\n"
    )
    assert crs.normalise(a) == crs.normalise(b)
    assert crs.normalise(a).splitlines() == [
        "I<time> <thread> train.py:172] epoch:  1, train_loss: 2.4880, test_accuracy: 15.62",
        "Finished XLA compilation of jit(step) in <duration>",
        "step 3 took <duration> (<rate>); total <duration>, <duration>",
        "dot_general=<function dot_general at 0x<address>>",
        "<timestamp> saved",
    ]
    # what the programs print as results is left alone: a different loss, line or shape differs
    for kept in ("loss: 0.007890057750046253", "times called: 10010", "value=(5, 10)", "Param: 850 (3.4 KB)",
                 "train.py:172]", "5 samples"):
        assert kept in crs.normalise(kept)
    assert crs.normalise("train.py:172] loss 2.4880") != crs.normalise("train.py:173] loss 2.4880")
    assert crs.normalise("loss: 2.4880") != crs.normalise("loss: 2.4881")


def test_normalise_replaces_the_runs_own_directories() -> None:
    plain = crs.normalise("wrote /w/runs/x/plain/workdir/a.png", [("/w/runs/x/plain", "<run>")])
    rax = crs.normalise("wrote /w/runs/x/raximport/workdir/a.png", [("/w/runs/x/raximport", "<run>")])
    assert plain == rax == "wrote <run>/workdir/a.png"


def _run(tmp_path: Path, mode: str, *, exit: int = 0, stdout: str = "", stderr: str = "", compiles: int = 3, wall: float = 1.0):
    return crs.Run(exit, wall, stdout, stderr, compiles, 0, [], tmp_path / mode)


def _program(tmp_path: Path):
    return crs.Program("toy.py", tmp_path, ["toy.py"], ("common",))


def test_compare_passes_runs_that_differ_only_in_timings(tmp_path: Path) -> None:
    plain = _run(tmp_path, "plain", stdout="loss 0.5\nstep took 1.2 s\n", wall=2.0)
    rax = _run(tmp_path, "raximport", stdout="loss 0.5\nstep took 1.9 s\n", wall=3.0)
    result = crs.compare(_program(tmp_path), plain, rax)
    assert (result.status, result.output_identical, result.wall_ratio, result.symptoms) == ("ok", True, 1.5, [])


def test_compare_fails_a_different_number_an_error_or_an_extra_compile(tmp_path: Path) -> None:
    plain = _run(tmp_path, "plain", stdout="loss 0.5\n")
    differs = crs.compare(_program(tmp_path), plain, _run(tmp_path, "raximport", stdout="loss 0.6\n"))
    assert differs.status == "FAIL" and differs.symptoms == ["stdout differs"]
    assert "-loss 0.5" in differs.evidence and "+loss 0.6" in differs.evidence

    crashed = crs.compare(_program(tmp_path), plain, _run(
        tmp_path, "raximport", exit=1, stdout="loss 0.5\n", stderr="Traceback...\nraximport: the memory check failed\n"))
    assert crashed.status == "FAIL"
    assert crashed.symptoms[0] == "exits 1 under raximport (0 plain)"
    assert "raximport: the memory check failed" in crashed.evidence

    recompiled = crs.compare(_program(tmp_path), plain, _run(tmp_path, "raximport", stdout="loss 0.5\n", compiles=4))
    assert recompiled.status == "FAIL" and recompiled.symptoms == ["4 XLA compiles under raximport, 3 plain"]


def test_compare_tells_plain_varying_from_raximport_and_excuses_programs_failing_plain(tmp_path: Path) -> None:
    plain = _run(tmp_path, "plain", stdout="loss 0.5\n")
    rax = _run(tmp_path, "raximport", stdout="loss 0.6\n")
    again = _run(tmp_path, "plain-again", stdout="loss 0.7\n")
    assert crs.compare(_program(tmp_path), plain, rax, again).status == "plain varies"
    same_again = _run(tmp_path, "plain-again", stdout="loss 0.5\n")
    assert crs.compare(_program(tmp_path), plain, rax, same_again).status == "FAIL"

    error = "Traceback (most recent call last):\n  File ...\nTypeError: f() got an unexpected keyword argument 'x'\n"
    broken = crs.compare(_program(tmp_path), _run(tmp_path, "plain", exit=1, stderr=error),
                         _run(tmp_path, "raximport", exit=1, stderr=error + "\nraximport: f() ...\n"))
    assert (broken.status, broken.same_error) == ("fails plain", True)


@pytest.mark.slow
def test_one_flax_toy_example_runs_the_same_under_raximport(tmp_path: Path) -> None:
    version = crs.installed_version(sys.executable, "flax")
    cache = crs.default_cache() / "download"  # the user's own: a rerun needs no network
    try:
        crs.fetch_sdist(version, cache, sys.executable, log=lambda message: None)
    except crs.FetchError as exc:
        pytest.skip(f"flax {version}'s sdist cannot be fetched here: {exc}")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--work", str(tmp_path / "work"), "--sdist-cache", str(cache),
         "--only", "06_scan_over_layers", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout)
    [result] = summary["results"]
    assert result["program"] == "nnx_toy_examples/06_scan_over_layers.py"
    assert result["status"] == "ok", result
    assert result["plain_exit"] == result["raximport_exit"] == 0
    assert result["output_identical"] is True
    assert result["compiles_raximport"] == result["compiles_plain"] > 0  # the counter saw JAX compile
    assert "[1/1] nnx_toy_examples/06_scan_over_layers.py: ok" in out.stderr  # progress
