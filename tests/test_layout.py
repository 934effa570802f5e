"""The house rules of the code's layout, checked over the whole project.

* every submodule ``m`` of fnnet is what ``import fnnet.m as x`` and ``help('fnnet.m')`` find (no
  function of the same name hides it), and importing any module, ``__main__`` ones included, runs
  nothing;
* no import circle between the project's own modules, and no ``importlib`` loading of them;
* nothing in the code, docs or claims points users to a file or tracker they do not have.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import pydoc
import re
import types
from pathlib import Path

import pytest

import experiments
import fnnet

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fnnet", "experiments")


def _submodules(package: types.ModuleType) -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."))


@pytest.mark.parametrize("name", _submodules(fnnet))
def test_every_fnnet_submodule_is_found_by_its_dotted_name(name):
    module = importlib.import_module(name)  # a __main__ module must not run on import
    found = fnnet
    for part in name.split(".")[1:]:
        found = getattr(found, part)  # what `import fnnet.a.b as x` binds
    assert found is module, f"fnnet.{name.split('.', 1)[1]} is {type(found).__name__}, not the module"
    assert pydoc.locate(name) is module  # what help('fnnet.m') shows


def _module_files() -> dict[str, Path]:
    files = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, anywhere in its body (parent packages left out)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name and not name.startswith(t + ".")}
    return out


def test_no_import_circle_between_the_projects_modules():
    files = _module_files()
    graph = {name: _imports(name, path, set(files)) for name, path in files.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            pytest.fail("import circle: " + " -> ".join(cycle))


#: The one module that may use importlib: ``fnnet check --module`` loads the *user's* module by name or path.
_USER_MODULE_LOADERS = {"fnnet/cli/check.py"}


def test_no_importlib_loading_between_the_projects_modules():
    users = {str(p.relative_to(ROOT)) for p in _module_files().values() if re.search(r"\bimportlib\b", p.read_text())}
    assert users <= _USER_MODULE_LOADERS
    for path in users:  # and it never loads a module of the project
        assert not re.search(r"import_module\(\s*[\"'](fnnet|experiments)", (ROOT / path).read_text()), path


# Spelled in pieces so that this file does not match itself.
_POINTERS = re.compile("|".join(["shared" + "/", r"\bDESIGN" + r"\b", "analysis" + r"\.md", r"\b[Ii]ssue" + r" #?\d"]))


def test_nothing_points_users_to_a_file_or_tracker_they_do_not_have():
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in ("fnnet", "experiments", "tests", "benchmarks"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".toml", ".txt")]
    hits = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if _POINTERS.search(line)
    ]
    assert hits == []


def test_every_work_in_the_bibliography_is_complete_and_cited_by_its_title():
    from experiments import _sources as src

    assert len({w.title for w in src.BIBLIOGRAPHY}) == len(src.BIBLIOGRAPHY)
    for w in src.BIBLIOGRAPHY:
        assert re.search(r"(1[89]|20)\d\d|n\.d\.", w.short), w  # a year, or "n.d." where the work gives none
        assert w.title in w.entry or w.title.split(",")[0] in w.entry, w
        assert src.cited_in([w.cite("sec. 1")]) == [w]


def test_the_registry_lists_every_experiment_module_once():
    files = _module_files()
    parts = [name.split(".") for name in files]
    on_disk = {p[2] for p in parts if len(p) == 3 and p[1] in experiments.STUDIES and not p[2].startswith("_")}
    assert on_disk == set(experiments.EXPERIMENTS)
    assert len(experiments.EXPERIMENTS) == len(set(experiments.EXPERIMENTS))
