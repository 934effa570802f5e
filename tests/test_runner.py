"""The experiments runner: resume, --force, --strict, atomic results, damaged files, Ctrl-C, a SIGKILL mid-run."""

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
from experiments._common import CACHE, Claim, Result, check_experiment, config_hash, point_cache
from experiments._report import write_report

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class _Cfg:
    value: float = 1.0
    seed: int = 0


class _Calls(list):
    """The configs each fake's ``run`` was called with; ``points``: those its cached sweep point was computed for."""

    def __init__(self):
        super().__init__()
        self.points: list = []
        self.modules: dict = {}


def _fake(name: str, holds: bool, calls: _Calls) -> types.ModuleType:
    """An experiment with one cached sweep point, whose measured number is that point's."""
    mod = types.ModuleType(f"experiments.{name}")
    mod.NAME, mod.TITLE = name, f"fake {name}"
    mod.PRESETS = {"tiny": _Cfg(), "quick": _Cfg(2.0), "full": _Cfg(3.0)}

    def run(config, out_dir):
        calls.append(config)
        p = point_cache(out_dir, config).point("p", lambda: calls.points.append(config) or dataclasses.asdict(config))
        basis = "rounding: a fake's exact comparison"
        return Result(p, [Claim("c", "s", 1.0, p["value"], 0.0, holds, "", "fnnet", 1, basis)])

    mod.run = run
    return mod


@pytest.fixture
def fakes(monkeypatch):
    calls = _Calls()
    fakes = {name: _fake(name, name == "fake_ok", calls) for name in ("fake_ok", "fake_bad")}
    monkeypatch.setattr(runner, "EXPERIMENTS", tuple(fakes))
    monkeypatch.setattr(runner, "load", lambda name: check_experiment(fakes[name], name))  # in no study
    calls.modules = fakes
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
    assert (
        "**2 claims: 1 hold, 1 fail, 0 inconclusive at this scale**" in report
        and "| fake_bad | fnnet | c | s |" in report
    )
    claims = json.loads((tmp_path / "fake_bad" / "claims.json").read_text())
    assert claims[0]["holds"] is False and claims[0]["source"] == "s"
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path), "--strict"]) == 1
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_usage_errors_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "experiments", "--only", "nope"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2 and "unknown experiment nope" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", ""], "--only: expected comma-separated experiment names, got ''"),
        (["--only", ","], "--only: expected comma-separated experiment names, got ','"),
        (["--only", " , "], "--only: expected comma-separated experiment names, got ' , '"),
        (["--full", "--preset", "tiny"], "--full and --preset tiny disagree"),
    ],
)
def test_empty_only_and_conflicting_presets_are_usage_errors(fakes, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        runner.main([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0]
    assert fakes == [] and not (tmp_path / "REPORT.md").exists()


@pytest.fixture
def seconds_file(tmp_path, monkeypatch):
    """A measured-seconds file with two tiny timings and one quick one, in place of the committed one."""
    presets = {
        "tiny": {
            "machine": "a test box",
            "date": "2026-01-02",
            "seconds": {"worked_example": 4.44, "mean_field": 80.8},
        },
        "quick": {"machine": "a test box", "date": "2026-01-02", "seconds": {"worked_example": 12.0}},
        "full": {"not_measured": "not measured here (GPU-sized)"},
    }
    path = tmp_path / "measured_seconds.json"
    path.write_text(json.dumps({"about": "test", "presets": presets}))
    monkeypatch.setattr(runner, "SECONDS_FILE", path)


def test_help_lists_the_presets_with_their_measured_totals(capsys, seconds_file):
    with pytest.raises(SystemExit):
        runner.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--preset {tiny,quick,full}" in out
    n = len(runner.EXPERIMENTS)
    assert f"tiny: a smoke test, 2 of {n} experiments in 85 s on a test box, 2026-01-02" in out
    assert f"quick: the default, 1 of {n} experiments in 12 s on a test box, 2026-01-02" in out
    assert "full: the bigger settings, meant for a GPU host, not measured here (GPU-sized)" in out


def test_list_gives_name_study_measured_seconds_and_title_one_a_line(capsys, seconds_file):
    from experiments import EXPERIMENTS, STUDIES, STUDY_BUDGET_SECONDS, STUDY_OF, load

    assert runner.main(["--list"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split(" ")[0] for line in lines] == list(EXPERIMENTS)  # `--list | cut -d' ' -f1`: the names
    rows = dict(zip(EXPERIMENTS, lines))
    assert rows["worked_example"].split()[:7] == ["worked_example", "texts", "4.4", "s", "12", "s", "-"]
    assert rows["mean_field"].split()[:6] == ["mean_field", "initialization", "81", "s", "-", "-"]
    assert rows["conv_toy"].split()[2:5] == ["-", "-", "-"]  # not measured at any preset
    for name, line in rows.items():
        assert line.split()[1] == STUDY_OF[name] and line.endswith("  " + load(name).TITLE)
    head, foot, budgets = err.splitlines()  # on stderr, out of the way of cut
    assert head.split() == ["name", "study", "tiny", "quick", "full", "title"]
    assert foot == (
        "seconds per experiment (-: not measured): tiny and quick measured on a test box, 2026-01-02; "
        "full not measured here (GPU-sized)"
    )
    n_texts = len(STUDIES["texts"])
    assert budgets.startswith("quick budget per study: checks 90 s (not measured); ")
    assert f"texts {STUDY_BUDGET_SECONDS['texts']} s (measured 12 s, 1 of {n_texts} experiments)" in budgets
    assert budgets.count(" s (") == len(STUDIES)  # one budget per study


def test_the_committed_seconds_are_measurements_of_real_experiments():
    from experiments import EXPERIMENTS

    times = runner.measured_seconds()
    assert set(times) == set(runner.PRESETS)
    for preset, entry in times.items():
        if "seconds" in entry:
            assert entry["machine"] and entry["date"] and set(entry["seconds"]) <= set(EXPERIMENTS), preset
            assert all(s > 0 for s in entry["seconds"].values()), preset
        else:
            assert entry["not_measured"].startswith("not measured"), preset


def test_list_into_a_closed_pipe_exits_141_without_a_traceback():
    """``python -m experiments --list | head -1`` once head has exited."""
    read, write = os.pipe()
    os.close(read)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "experiments", "--list"], stdout=write, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
    finally:
        os.close(write)
    assert r.returncode == 141 and "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr


def test_a_config_change_recomputes_the_cached_points(fakes, tmp_path, monkeypatch):
    out = ["--preset", "tiny", "--out", str(tmp_path), "--only", "fake_ok"]
    folder = tmp_path / "fake_ok"
    assert runner.main(out) == 0
    monkeypatch.setitem(fakes.modules["fake_ok"].PRESETS, "tiny", _Cfg(seed=1))  # a seed change
    assert runner.main(out) == 0
    assert fakes.points == [_Cfg(), _Cfg(seed=1)]  # seed 0's point is not reused under seed 1
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["seed"] == 1 and metrics["metrics"]["seed"] == 1
    assert [p.name for p in (folder / CACHE).iterdir()] == [config_hash(_Cfg(seed=1))]  # other configs' removed


def test_force_recomputes_the_cached_points(fakes, tmp_path):
    out = ["--preset", "tiny", "--out", str(tmp_path), "--only", "fake_ok"]
    assert runner.main(out) == 0
    assert runner.main([*out, "--force"]) == 0
    assert len(fakes) == 2 and fakes.points == [_Cfg(), _Cfg()]


def _truncate(path: Path) -> None:
    path.write_text(path.read_text()[:-7])


@pytest.mark.parametrize(
    "file, damage",
    [
        ("done.json", _truncate),
        ("done.json", lambda p: p.write_text("[]")),
        ("claims.json", _truncate),
        ("claims.json", Path.unlink),
        ("claims.json", lambda p: p.write_text("[]")),  # parses, but holds no claim where done.json counts one
        ("metrics.json", _truncate),
        ("metrics.json", Path.unlink),
        ("cache/*/p.json", _truncate),
    ],
)
def test_a_damaged_file_is_reported_and_that_experiment_alone_rerun(fakes, tmp_path, capsys, file, damage):
    out = ["--preset", "tiny", "--out", str(tmp_path)]
    assert runner.main(out) == 0
    (path,) = (tmp_path / "fake_ok").glob(file)
    damage(path)
    if file.startswith("cache"):  # a damaged point is found when the experiment reruns
        (tmp_path / "fake_ok" / "done.json").unlink()
    capsys.readouterr()
    assert runner.main(out) == 0
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and str(path) in err[0] and "damaged" in err[0] and "Traceback" not in captured.err
    assert len(fakes) == 3 and fakes[-1] == _Cfg()  # fake_ok rerun once, fake_bad skipped
    assert len(fakes.points) == 2 + file.startswith("cache")  # the cached point reused unless it was damaged
    assert "**2 claims: 1 hold, 1 fail, 0 inconclusive at this scale**" in (tmp_path / "REPORT.md").read_text()
    assert runner.main(out) == 0 and len(fakes) == 3  # repaired: the next run skips both


@pytest.mark.parametrize("file", ["done.json", "claims.json", "metrics.json"])
def test_the_report_writer_leaves_out_a_damaged_experiment_and_says_so(fakes, tmp_path, capsys, file):
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    _truncate(tmp_path / "fake_bad" / file)
    capsys.readouterr()
    summary = write_report(tmp_path, ("fake_ok", "fake_bad"))
    err = capsys.readouterr().err.strip().splitlines()
    path = str(tmp_path / "fake_bad" / file)
    assert len(err) == 1 and "leaves out fake_bad" in err[0] and path in err[0]
    assert (summary.n_claims, summary.n_hold, summary.experiments) == (1, 1, 1) and len(summary.left_out) == 1
    report = (tmp_path / "REPORT.md").read_text()
    assert (
        "**1 claims: 1 hold, 0 fail, 0 inconclusive at this scale**" in report
        and "| fake_bad " not in report
        and path in report
    )


def test_ctrl_c_exits_130_with_one_line_and_a_rerun_resumes(fakes, tmp_path, capsys, monkeypatch):
    mod = fakes.modules["fake_bad"]
    real, ctrl_c = mod.run, [True]

    def run(config, out_dir):  # Ctrl-C during the first run of fake_bad
        if ctrl_c.pop() if ctrl_c else False:
            raise KeyboardInterrupt
        return real(config, out_dir)

    monkeypatch.setattr(mod, "run", run)
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "resumes" in err[0]
    assert (tmp_path / "fake_ok" / "done.json").exists() and not (tmp_path / "fake_bad" / "done.json").exists()
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    assert fakes == [_Cfg(), _Cfg()]  # fake_ok ran once (skipped on the rerun), fake_bad once to the end


_SLOW_RUNNER = """
import dataclasses, sys, time, types
import experiments.__main__ as runner
from experiments._common import Claim, Result

@dataclasses.dataclass(frozen=True)
class Cfg:
    seed: int = 0

def run(config, out_dir):
    (out_dir / "started").write_text("")
    time.sleep(60)

mod = types.ModuleType("experiments.slow")
mod.NAME, mod.TITLE, mod.PRESETS, mod.run = "slow", "slow", dict.fromkeys(("tiny", "quick", "full"), Cfg()), run
runner.EXPERIMENTS = ("slow",)
runner.load = lambda name: mod
sys.exit(runner.main(["--preset", "tiny", "--out", sys.argv[1]]))
"""


def test_sigint_prints_one_line_and_exits_130(tmp_path):
    cmd = [sys.executable, "-c", _SLOW_RUNNER, str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "slow" / "started").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (line,) = err.strip().splitlines()  # one line, no traceback
    assert line == "python -m experiments: interrupted; finished work is kept, the same command resumes"
    assert out.startswith("[1/1] slow ...")


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


def test_a_module_that_breaks_the_contract_is_refused_by_name(fakes, tmp_path, capsys):
    broken = fakes.modules["fake_bad"]
    del broken.TITLE
    broken.PRESETS = {"tiny": _Cfg()}  # no quick or full
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 1  # the others still run
    out = capsys.readouterr().out
    assert "fake_ok ... " in out and "claims hold" in out
    assert (
        "fake_bad ... FAILED: TypeError: experiment module experiments.fake_bad breaks the experiment contract: "
        "TITLE must be a non-empty string; PRESETS['quick'] must be a frozen dataclass config, got NoneType; "
        "PRESETS['full'] must be a frozen dataclass config, got NoneType" in out
    )
    assert not (tmp_path / "fake_bad").exists()  # refused before anything ran or was written
