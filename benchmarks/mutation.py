"""The checker's power: plant typical bugs in every rule of the catalog and count the ones each check catches.

Every mutant of :mod:`fnnet.mutation` (generic ones per output leaf, forward-rule ones, source-level ones per
family) is checked by the default check of ``fnnet check`` (reverse and forward mode, ``modes=("rev",
"fwd")``), in float64 and float32, and by ``jax.test_util.check_grads`` (order 1, its default tolerances) in
float64 for comparison. It writes ``benchmarks/results/mutation.json`` and ``mutation.md``: the detection
rate per mutant kind and check, per dtype, and every mutant the default check lets through.

    python benchmarks/mutation.py                       # the whole catalog (about 3,000 checks)
    python benchmarks/mutation.py --only Dense --dtype float64

Progress is kept in ``benchmarks/results/mutation.partial.json`` after each entry (written atomically), so an
interrupted run resumes where it stopped; a finished run removes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _outcome_row(o, check_grads: bool | None) -> dict:
    m = o.mutant
    return dict(
        entry=m.entry,
        kind=m.kind,
        rule=m.rule,
        where=m.where,
        dtype=o.dtype,
        equivalent=o.equivalent,
        caught=o.caught,
        check_grads=check_grads,
    )


def measure(entries, dtypes, partial: Path | None) -> list[dict]:
    """The outcome rows of every mutant of ``entries``; with ``partial``, resumed from and saved to it."""
    import jax

    from fnnet import mutation
    from fnnet._io import atomic_write
    from fnnet.checking import clear_compiled

    stored = json.loads(partial.read_text()) if partial is not None and partial.exists() else {}
    done = stored.get("done", {}) if stored.get("dtypes") == list(dtypes) else {}
    for i, entry in enumerate(entries):
        if entry.name in done:
            continue
        t0 = time.perf_counter()
        rows = []
        outcomes = mutation.run([entry], dtypes)
        for o in outcomes:
            cg = None
            if o.dtype == "float64" and not o.equivalent:
                try:
                    cg = mutation.check_grads_catches(o.mutant, "float64")
                except Exception as e:  # noqa: BLE001  (check_grads cannot run this mutant: say so)
                    cg = f"error: {type(e).__name__}"
            rows.append(_outcome_row(o, cg))
        done[entry.name] = rows
        clear_compiled()  # a mutant's programs are never run again; keeping them exhausts memory
        jax.clear_caches()
        if partial is not None:
            atomic_write(partial, (json.dumps(dict(dtypes=list(dtypes), done=done)) + "\n").encode())
        caught = sum(r["caught"]["default check"] for r in rows if not r["equivalent"])
        live = sum(not r["equivalent"] for r in rows)
        print(
            f"[{i + 1}/{len(entries)}] {entry.name}: {caught}/{live} caught by the default check "
            f"({len(rows) - live} equivalent), {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    return [r for name in (e.name for e in entries) for r in done[name]]


def summarize(rows: list[dict]) -> dict:
    from fnnet.mutation import CHECKS

    table: dict = {}
    for r in rows:
        cell = table.setdefault(r["dtype"], {}).setdefault(r["kind"], {"mutants": 0, "equivalent": 0})
        if r["equivalent"]:
            cell["equivalent"] += 1
            continue
        cell["mutants"] += 1
        for check in CHECKS:
            hit = r["caught"][check]
            if hit is not None:
                caught, n = cell.get(check, (0, 0))
                cell[check] = (caught + int(hit), n + 1)
        if isinstance(r["check_grads"], bool):
            caught, n = cell.get("check_grads", (0, 0))
            cell["check_grads"] = (caught + int(r["check_grads"]), n + 1)
    return table


def _rate(cell: dict, check: str) -> str:
    caught, n = cell.get(check, (0, 0))
    return "–" if n == 0 else f"{caught}/{n}"


def markdown(rows: list[dict], info: dict) -> str:
    from fnnet.mutation import CHECKS

    table = summarize(rows)
    lines = [
        "# The checker's power: mutants caught",
        "",
        f"{info['entries']} catalog entries; jax {info['jax']}; {info['date_utc']} UTC. Each mutant is one planted bug "
        "(see `fnnet.mutation`); a cell is caught/applicable. *equivalent*: the mutant changes nothing at the checked "
        "point (e.g. zeroing a gradient that is exactly 0 there), so no check can catch it. *default check*: what "
        "`fnnet check` runs (reverse and forward mode, with determinism, the zero cotangent and kink awareness), "
        "caught if any of its parts fails; the columns after `check_grads` are those parts. "
        "`check_grads`: `jax.test_util.check_grads`, order 1, its "
        "default tolerances, float64, on the same mutants through `fn.custom_vjp` / `fn.custom_jvp`.",
    ]
    checks = list(CHECKS)
    for dtype, kinds in table.items():
        # the verdicts side by side first (fnnet's default check, then check_grads), then each part of fnnet's
        cols = ["default check"] + (["check_grads"] if dtype == "float64" else [])
        cols += [c for c in checks if c != "default check"]
        lines += ["", f"## {dtype}", "", "| mutant | n | equivalent | " + " | ".join(cols) + " |"]
        lines.append("|---|---:|---:|" + "---:|" * len(cols))
        total: dict = {"mutants": 0, "equivalent": 0}
        for kind, cell in kinds.items():
            lines.append(
                f"| {kind} | {cell['mutants']} | {cell['equivalent']} | "
                + " | ".join(_rate(cell, c) for c in cols)
                + " |"
            )
            total["mutants"] += cell["mutants"]
            total["equivalent"] += cell["equivalent"]
            for c in cols:
                a, b = total.get(c, (0, 0))
                x, y = cell.get(c, (0, 0))
                total[c] = (a + x, b + y)
        lines.append(
            f"| **all** | {total['mutants']} | {total['equivalent']} | "
            + " | ".join(f"**{_rate(total, c)}**" for c in cols)
            + " |"
        )
        survivors = [
            r for r in rows if r["dtype"] == dtype and not r["equivalent"] and not r["caught"]["default check"]
        ]
        lines += ["", f"Survivors of the default check in {dtype}: {len(survivors)}."]
        lines += [f"- {r['entry']}: {r['kind']} at {r['where']}" for r in survivors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="entries whose name contains this text")
    p.add_argument("--dtype", choices=["float32", "float64", "all"], default="all")
    args = p.parse_args(argv)

    import jax

    from fnnet import catalog
    from fnnet._io import atomic_write
    from fnnet.bench.report import machine_info

    entries = [e for e in catalog.entries() if args.only is None or args.only in e.name]
    dtypes = ("float64", "float32") if args.dtype == "all" else (args.dtype,)
    RESULTS.mkdir(parents=True, exist_ok=True)
    full = args.only is None and args.dtype == "all"
    partial = RESULTS / "mutation.partial.json" if full else None  # only a full run resumes and is stored
    t0 = time.perf_counter()
    rows = measure(entries, dtypes, partial)
    info = machine_info()
    info.update(entries=len(entries), seconds=time.perf_counter() - t0, jax=jax.__version__)
    md = markdown(rows, info)
    if full:
        atomic_write(RESULTS / "mutation.json", (json.dumps(dict(machine=info, rows=rows), indent=0) + "\n").encode())
        atomic_write(RESULTS / "mutation.md", md.encode())
        partial.unlink()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
