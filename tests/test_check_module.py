"""``fnnet check --module``: a user's own CATALOG, checked with the same table, bars and exit codes."""

import json
import subprocess
import sys
import textwrap

import pytest

from fnnet import catalog, cli

LAYERS = textwrap.dedent(
    """
    import jax.numpy as jnp

    import fnnet as fn
    from fnnet.catalog import Entry


    def Square(bug=False):
        def init(key, in_shape, dtype=jnp.float32):
            return in_shape, ()

        def forward(params, x, *, key=None, train=True):
            return x**2, x

        def backward(params, x, dy):
            return (), dy * (x if bug else 2 * x)

        return fn.Layer(init, forward, backward)


    CATALOG = [Entry("Square", Square, (4,))]
    """
)


def _write(tmp_path, text, name="my_layers.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_module_file_is_checked_with_the_table(tmp_path, capsys):
    path = _write(tmp_path, LAYERS)
    assert cli.main(["check", "--module", str(path), "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "Square" in out and "pass" in out and "1/1 passed" in out and "adjoint<=1e-10" in out


def test_a_module_by_dotted_name_fails_with_exit_1_and_a_hint(tmp_path, monkeypatch, capsys):
    _write(tmp_path, LAYERS.replace("Square, (4,))]", "lambda: Square(bug=True), (4,))]"), "buggy_layers.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["check", "--module", "buggy_layers", "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    assert "FAIL x" in out and "hint: x: manual = 0.5 x reference" in out and "missing factor 2" in out


@pytest.mark.parametrize(
    "text, message",
    [
        ("import fnnet\n", "has no CATALOG (a list of fnnet.catalog.Entry)"),
        ("CATALOG = 3\n", "CATALOG is a int, not a list of fnnet.catalog.Entry"),
        ("CATALOG = [('Square', None, (4,))]\n", "CATALOG[0] is a tuple, not a fnnet.catalog.Entry"),
        ("import no_such_package_here\n", "cannot be imported: ModuleNotFoundError"),
    ],
)
def test_a_module_that_cannot_be_checked_exits_2_with_one_line(tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    assert cli.main(["check", "--module", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fnnet check: error: --module {path}") and message in err[0]


def test_a_missing_module_exits_2(capsys):
    assert cli.main(["check", "--module", "no_such_module_xyz"]) == 2
    assert "--module no_such_module_xyz cannot be imported" in capsys.readouterr().err
    assert cli.main(["check", "--module", "./nowhere/my_layers.py"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_entry_is_documented_as_public():
    doc = catalog.Entry.__doc__
    for field in catalog.Entry._fields:
        assert f"{field}:" in doc, field
    assert "CATALOG" in doc and "A layer:" in doc and "A loss:" in doc


def test_json_reports_progress_on_stderr_and_keeps_stdout_pure(tmp_path):
    path = _write(tmp_path, LAYERS)
    r = subprocess.run(
        [sys.executable, "-m", "fnnet.cli", "check", "--module", str(path), "--json"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)  # nothing but the JSON document
    (f32, f64) = data["rows"]
    assert f32["adjoint_ok"] and f32["adjoint_bar"] == 1e-4 and f64["adjoint_bar"] == 1e-10
    assert f32["leaves"][0]["path"] == "x" and len(f32["leaves"][0]["worst_autodiff"]) == 2
    assert {"abs_autodiff", "abs_fd", "hints"} <= set(f32)
    assert "[1/2] Square float32 jit: pass" in r.stderr and "[2/2] Square float64 jit: pass" in r.stderr


def test_a_closed_pipe_ends_quietly_with_141():
    """``fnnet check | head -1``: the reader leaves after the header; the next row's write ends the command with
    141 (128 + SIGPIPE, as a shell reports a command killed by SIGPIPE) and no traceback."""
    p = subprocess.Popen(
        [sys.executable, "-m", "fnnet.cli", "check", "--only", "Tanh"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().startswith("entry")
    p.stdout.close()
    assert p.wait(timeout=600) == 141
    assert "Traceback" not in p.stderr.read()
    shell = subprocess.run(
        f"{sys.executable} -m fnnet.cli check --only Tanh --json | head -1", shell=True, capture_output=True, text=True
    )
    assert shell.stdout == "{\n" and "Traceback" not in shell.stderr and "Error" not in shell.stderr
