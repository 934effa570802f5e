"""The README: its Python examples run as written, its set-up commands are CI's, its table is the registry."""

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


def test_ci_runs_the_readme_set_up_commands():
    """.ci/run installs and tests exactly as the README's second set-up command says."""
    bash = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    setup = [b.strip() for b in bash if "pip install" in b and "pytest" in b]
    assert len(setup) == 1
    install, test = [part.strip() for part in setup[0].split("&&")][-2:]
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert any(line.replace("--quiet ", "").strip() == install for line in ci), install
    assert ci[-1].strip() == test


def test_readme_table_of_studies_is_the_registry():
    """The README's table lists the studies and their experiments exactly as ``experiments.STUDIES`` does."""
    from experiments import STUDIES

    text = README.read_text()
    table = text[text.index("| study | experiments |") :].split("\n\n")[0].splitlines()[2:]
    listed = {}
    for row in table:
        study, names = row.strip("|").split("|")
        # the experiment names are the backticked words of the row, minus the parenthesised remarks
        listed[study.strip().strip("`")] = tuple(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", names)))
    assert list(listed) == list(STUDIES)
    assert listed == STUDIES
