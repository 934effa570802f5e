"""The tutorial "Check your own layer": its Python blocks run in order as written, the planted bug fails with
its hint, and the module it builds passes ``fnnet check --module``."""

import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "check_your_layer.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_python_blocks_run_in_order_and_the_planted_bug_fails_with_its_hint(capsys):
    module, check, bug = _blocks("python")
    namespace: dict = {}
    exec(compile(module, str(PAGE), "exec"), namespace)  # noqa: S102
    exec(compile(check, str(PAGE), "exec"), namespace)  # noqa: S102
    assert namespace["report"].ok
    exec(compile(bug, str(PAGE), "exec"), namespace)  # noqa: S102
    report = namespace["report"]
    assert not report.ok and report.failures == ["params['a']"]
    assert any("= 1/B (B = 3, the batch): a mean over the batch" in h for h in report.hints)
    out = _digits_masked(capsys.readouterr().out)
    printed = [_digits_masked(text) for text in _blocks("text")]
    assert out.startswith(printed[0]) and out.endswith(printed[2])  # the page shows the outputs as printed


def _digits_masked(text: str) -> str:
    """``text`` with the rounding-level numbers masked (they depend on XLA's optimization level): of each leaf's
    row the name, shape and verdict, of the other lines everything but the errors' digits."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("params[", "x ")):
            words = line.split()
            line = " ".join([words[0], words[1], words[-1]])
        lines.append(re.sub(r"\d\.\d+e[+-]\d\d", "#", line))
    return "\n".join(lines) + "\n"


def test_the_module_passes_fnnet_check_module(tmp_path):
    path = tmp_path / "my_layers.py"
    path.write_text(_blocks("python")[0])
    r = subprocess.run(
        [sys.executable, "-m", "fnnet.cli", "check", "--module", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    shown = _blocks("text")[1].splitlines()
    got = r.stdout.splitlines()
    assert [line.split()[:3] for line in got[:5]] == [line.split()[:3] for line in shown[:5]]
    assert "4/4 passed" in r.stdout and "4/4 passed" in _blocks("text")[1]
