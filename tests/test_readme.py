"""The README's Python examples run as written, in order, in one namespace."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    runnable = [b for b in blocks if "NamedTuple" not in b]  # the contract sketch is not code to run
    assert len(runnable) >= 5
    namespace: dict = {}
    for block in runnable:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "PASS" in out  # the gradcheck example passes
    assert namespace["g"][0]["W"].shape == (32, 40, 64)
    assert float(out.splitlines()[0]) < 1e-5  # manual vs autodiff, max abs difference
