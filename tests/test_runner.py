"""The experiments runner: resume, --force, --strict, atomic results, a SIGKILL mid-run, determinism."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import experiments.__main__ as runner
from experiments._common import Claim, Result, cached_json

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class _Cfg:
    value: float = 1.0
    seed: int = 0


def _fake(name: str, holds: bool, calls: list) -> types.ModuleType:
    mod = types.ModuleType(f"experiments.{name}")
    mod.NAME, mod.TITLE = name, f"fake {name}"
    mod.PRESETS = {"tiny": _Cfg(), "quick": _Cfg(2.0), "full": _Cfg(3.0)}

    def run(config, out_dir):
        calls.append(config)
        return Result({"value": config.value}, [Claim("c", "s", 1.0, config.value, 0.0, holds)])

    mod.run = run
    return mod


@pytest.fixture
def fakes(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "experiments.fake_ok", _fake("fake_ok", True, calls))
    monkeypatch.setitem(sys.modules, "experiments.fake_bad", _fake("fake_bad", False, calls))
    monkeypatch.setattr(runner, "EXPERIMENTS", ("fake_ok", "fake_bad"))
    return calls


def test_rerun_skips_finished_work_and_force_reruns(fakes, tmp_path, capsys):
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    assert len(fakes) == 2
    first = (tmp_path / "fake_ok" / "metrics.json").read_bytes()
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    assert len(fakes) == 2  # nothing recomputed
    assert "skipped" in capsys.readouterr().out
    assert runner.main(["--preset", "quick", "--out", str(tmp_path), "--only", "fake_ok"]) == 0
    assert len(fakes) == 3  # a changed config reruns
    assert runner.main(["--preset", "quick", "--out", str(tmp_path), "--only", "fake_ok", "--force"]) == 0
    assert len(fakes) == 4
    assert (tmp_path / "fake_ok" / "metrics.json").read_bytes() != first


def test_report_and_strict(fakes, tmp_path):
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0  # a failing claim is data
    report = (tmp_path / "REPORT.md").read_text()
    assert "**2 claims, 1 hold**" in report and "| fake_bad | c | s |" in report
    claims = json.loads((tmp_path / "fake_bad" / "claims.json").read_text())
    assert claims[0]["holds"] is False and claims[0]["source"] == "s"
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path), "--strict"]) == 1
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_usage_errors_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "experiments", "--only", "nope"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2 and "unknown experiment nope" in r.stderr and "Traceback" not in r.stderr


def test_cached_json_resumes_a_sweep_point(tmp_path):
    calls = []
    compute = lambda: calls.append(1) or {"x": 1.5}
    assert cached_json(tmp_path / "p.json", compute) == {"x": 1.5}
    assert cached_json(tmp_path / "p.json", compute) == {"x": 1.5}
    assert len(calls) == 1


def _run(out: Path, names: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "experiments", "--preset", "tiny", "--only", names, "--out", str(out)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    names = "gradient_checks,worked_example"
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _run(killed, names)
    first_done = killed / "gradient_checks" / "done.json"
    deadline = time.time() + 240
    while not first_done.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert first_done.exists(), "the first experiment never finished"
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: during the second experiment (or just after the first)
    proc.wait()
    stamp = first_done.stat().st_mtime_ns, first_done.read_bytes()

    resumed = _run(killed, names)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert (first_done.stat().st_mtime_ns, first_done.read_bytes()) == stamp  # finished work not recomputed

    assert _run(clean, names).wait(timeout=300) == 0
    for name in names.split(","):
        assert (killed / name / "metrics.json").read_bytes() == (clean / name / "metrics.json").read_bytes()
        assert (killed / name / "claims.json").read_bytes() == (clean / name / "claims.json").read_bytes()
    assert not list(killed.rglob("*.tmp"))
