"""How long ``fnnet check`` takes: the catalog in float32 and float64, cold and warm, and one rule.

Each measurement of a cold start runs in a fresh subprocess (empty in-memory compilation cache, JAX's
persistent cache off), so XLA compiles every program it needs, as on a user's first ``fnnet check``:

* **cold s**: ``catalog.check_all()`` (every entry × float32/float64, under jit) after ``import fnnet``;
* **warm s**: a second ``check_all()`` in the same process (compiled programs reused);
* **s/row**: cold s divided by the number of rows;
* **one rule s**: ``check_layer`` of one ``Dense(4)`` in float32, in a fresh process, beyond ``import fnnet``.

    python benchmarks/checker.py                      # measure the code in this checkout ("after")
    python benchmarks/checker.py --code DIR --label before   # a copy of fnnet/ under DIR, measured first

Each run stores its numbers in ``benchmarks/results/checker-<machine>.json`` under its label and writes
the table of every label measured so far to ``checker-<machine>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CATALOG = """
import json, time
t0 = time.perf_counter()
import fnnet
from fnnet import catalog
t1 = time.perf_counter()
rows = catalog.check_all()
t2 = time.perf_counter()
catalog.check_all()
t3 = time.perf_counter()
print(json.dumps(dict(rows=len(rows), failed=sum(not r.ok for r in rows), import_s=t1 - t0,
                      cold_s=t2 - t1, warm_s=t3 - t2)))
"""

_ONE_RULE = """
import json, time
import jax
import fnnet
from fnnet.checking import check_layer
t0 = time.perf_counter()
layer = fnnet.Dense(4)
_, params = layer.init(jax.random.key(0), (6,))
report = check_layer(layer, params, jax.random.normal(jax.random.key(1), (3, 6)))
t1 = time.perf_counter()
print(json.dumps(dict(ok=report.ok, one_rule_s=t1 - t0)))
"""


def _fresh(code: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(path), JAX_ENABLE_COMPILATION_CACHE="false")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=path, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(path: Path) -> dict:
    """The catalog cold and warm, and one rule, each in a fresh subprocess importing fnnet from ``path``."""
    numbers = _fresh(_CATALOG, path)
    numbers.update(_fresh(_ONE_RULE, path))
    numbers["s_per_row"] = numbers["cold_s"] / numbers["rows"]
    return numbers


def table(results: dict) -> str:
    head = "| code | rows | failed | cold s | warm s | s/row (cold) | one rule s (beyond import) | import s | load |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['rows']} | {r['failed']} | {r['cold_s']:.1f} | {r['warm_s']:.1f} | "
            f"{r['s_per_row']:.2f} | {r['one_rule_s']:.2f} | {r['import_s']:.2f} | {r.get('load', '-')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="directory holding the fnnet/ package to measure")
    parser.add_argument("--label", default="after", help="name of this measurement in the table")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from fnnet.bench.report import machine_info

    info = machine_info()
    results_dir = ROOT / "benchmarks" / "results"
    store = results_dir / f"checker-{info['name']}.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results.pop("machine", None)
    results[args.label] = dict(measure(args.code.resolve()), load=(info["load_before"] or ["-"])[0])
    store.write_text(json.dumps(dict(results, machine=info), indent=1) + "\n")
    print(write_markdown(results, info, results_dir))


def write_markdown(results: dict, info: dict, results_dir: Path) -> str:
    """Write the table of ``results`` to ``checker-<machine>.md`` under ``results_dir``; returns the table."""
    text = table(results)
    md = (
        f"# `fnnet check` timings on {info['name']}\n\n"
        f"{info['cpu']}, {info['cores']} cores, jax {info['jax']}, {info['date_utc']} UTC.\n"
        "Cold: fresh process, empty compilation cache; warm: a second pass in the same process; load: the 1-minute "
        "load average when the measurement started (the numbers scale with it on a shared machine).\n\n"
        f"{text}\n"
    )
    (results_dir / f"checker-{info['name']}.md").write_text(md)
    return text


if __name__ == "__main__":
    main()
