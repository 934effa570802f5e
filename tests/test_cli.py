"""``fnnet check``: the table, --json, exit 1 on a failing rule, exit 2 on usage errors."""

import json
import subprocess
import sys

import pytest

import fnnet as fn
from fnnet import catalog, cli


def test_check_prints_table_and_passes(capsys):
    assert cli.main(["check", "--only", "Dense(4)", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "vs autodiff" in out and "Dense(4)" in out and "pass" in out and "1/1 passed" in out


def test_check_json(capsys):
    assert cli.main(["check", "--only", "Tanh", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["dtype"] for r in data["rows"]} == {"float32", "float64"}
    assert data["failed"] == 0 and all(r["ok"] for r in data["rows"])
    assert data["tolerances"]["float64"]["autodiff"] == 1e-10


def test_check_exits_1_on_a_wrong_rule(monkeypatch, capsys):
    real = fn.Tanh()
    wrong = fn.Layer(real.init, real.forward, lambda p, c, dy: ((), dy * (1 - c)))  # forgot the square
    monkeypatch.setattr(catalog, "entries", lambda: (catalog.Entry("WrongTanh", lambda: wrong, (4,)),))
    assert cli.main(["check", "--dtype", "float64"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_usage_errors_exit_2_with_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "fnnet.cli", "check", "--dtype", "float8"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def test_help_exits_0():
    with pytest.raises(SystemExit) as e:
        cli.main(["check", "--help"])
    assert e.value.code == 0
