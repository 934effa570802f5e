"""``fnnet check``: the table, --json, exit 1 on a failing rule, exit 2 on usage errors."""

import json
import os
import re
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


# ------------------------------------------------------------------------ the dispatcher: --version, --help, pipes


def run_with_stdout_closed(*cmd: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` with stdout a pipe whose reader is gone: what ``cmd | head -1`` is once head has exited."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(write)


def test_version_prints_the_package_version_and_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"fnnet {fn.__version__}\n"


def test_a_closed_stdout_pipe_ends_any_command_quietly_with_141():
    """The dispatcher's one handler: ``fnnet train ... | head -1`` once head has exited, no traceback."""
    argv = ["train", "--data", "xor", "--hidden", "4", "--batch-size", "4", "--epochs", "1", "--no-progress"]
    r = run_with_stdout_closed(sys.executable, "-m", "fnnet.cli", *argv)
    assert r.returncode == 141 and "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr
    assert r.stderr.startswith("fnnet train: xor")  # it ran: the closed pipe was met at the summary line


def _help(main, argv) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stdout(out):
        main(argv)
    assert e.value.code == 0
    return out.getvalue()


#: Sphinx or Markdown markup, or a private module's name (a leading underscore), in a --help text.
MARKUP = re.compile(r"``|\*\*|:(?:func|class|mod|meth|data|attr|exc):|(?<![\w-])_[a-z]\w*|\._[a-z]|_[a-z]+_util")


@pytest.mark.parametrize(
    "command", ["fnnet", "fnnet check", "fnnet train", "fnnet bench", "python -m fnnet.bench", "python -m experiments"]
)
def test_every_help_is_plain_text_without_private_names(command):
    from experiments import __main__ as runner
    from fnnet.cli import bench

    main, argv = {"python -m fnnet.bench": (bench.main, []), "python -m experiments": (runner.main, [])}.get(
        command, (cli.main, command.split()[1:])
    )
    text = _help(main, [*argv, "--help"])
    assert text.startswith(f"usage: {command} ") and not MARKUP.findall(text), MARKUP.findall(text)


def test_check_table_shows_absolute_errors_worst_index_adjoint_bar_and_hint(monkeypatch, capsys):
    real = fn.Tanh()
    flipped = real._replace(backward=lambda p, c, dy: ((), -real.backward(p, c, dy)[1]))  # a sign flip
    monkeypatch.setattr(catalog, "entries", lambda: (catalog.Entry("FlippedTanh", lambda: flipped, (4,)),))
    assert cli.main(["check", "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:8] == ["entry", "dtype", "xform", "vs", "autodiff", "abs", "vs", "FD"]
    assert "x: worst |manual - autodiff|" in out and "at index (" in out
    assert "adjoint identity: rel error" in out and "> bar 1e-10" in out
    assert "hint: x: manual = -reference" in out and "sign flip" in out and "adjoint<=1e-10" in out
