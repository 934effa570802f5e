"""The results page of the docs, generated from a dated, committed snapshot of ``claims.json`` files.

    python -m experiments.docs_tables --results results      # copy results/ into docs/snapshot/, write the page
    python -m experiments.docs_tables                        # rewrite docs/results.md from docs/snapshot/
    python -m experiments.docs_tables --check                # exit 1 if docs/results.md is not what it makes

The snapshot (``docs/snapshot/``, committed) holds, per experiment, a verbatim copy of its ``claims.json``
(``claims/<name>.json``) and, in ``snapshot.json``, where it comes from: the preset, the date it finished
(UTC, from its ``done.json``), the machine (``--machine``, in words), backend, versions and seconds.
``--results DIR`` replaces the snapshot's entries of the experiments finished in ``DIR`` and keeps the
others, so a snapshot can be assembled from several runs; the page says which preset and date each part
comes from. The page (``docs/results.md``) is made from the snapshot alone, so building the docs never
needs ``results/``, and a test checks that the committed page is what :func:`render_page` makes from
the committed snapshot: a hand edit fails it. The page depends on the snapshot alone, not on the
registry, so adding an experiment does not change it until a run of it is copied in.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from experiments import EXPERIMENTS, STUDY_OF
from experiments._common import atomic_write_json, atomic_write_text
from experiments._report import DONE, DamagedResults, headline, read_finished, tally

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "docs" / "snapshot"
PAGE = ROOT / "docs" / "results.md"
FORMAT = "fnnet.experiments.snapshot/1"
INDEX = "snapshot.json"


def _finished_on(folder: Path) -> str:
    """The UTC date ``folder``'s experiment finished: the modification time of its ``done.json``."""
    stamp = (folder / DONE).stat().st_mtime
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).date().isoformat()


def read_snapshot(snapshot: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """``(entries, claims)`` of the snapshot folder: experiment -> its provenance, and -> its claims."""
    index = snapshot / INDEX
    if not index.exists():
        return {}, {}
    record = json.loads(index.read_text(encoding="utf-8"))
    if record.get("format") != FORMAT or not isinstance(record.get("experiments"), dict):
        raise ValueError(f"{index} is not a snapshot index in the {FORMAT} format")
    entries = record["experiments"]
    claims = {name: json.loads((snapshot / "claims" / f"{name}.json").read_text(encoding="utf-8")) for name in entries}
    return entries, claims


def update_snapshot(results: Path, snapshot: Path, machine: str) -> list[str]:
    """Copy every experiment finished under ``results`` into ``snapshot``; return their names.

    Entries of experiments not finished under ``results`` are kept as they were.

    Raises:
        ValueError: ``results`` holds no finished experiment, or one whose results files are damaged.
    """
    entries, _ = read_snapshot(snapshot)
    copied = []
    for name in EXPERIMENTS:
        folder = Path(results) / name
        try:
            finished = read_finished(folder)
        except DamagedResults as e:
            raise ValueError(f"cannot snapshot {name}: {e}") from None
        if finished is None:
            continue
        status, claims, metrics = finished
        entries[name] = {
            "study": STUDY_OF[name],
            "title": status.get("title", name),
            "preset": status["preset"],
            "date": _finished_on(folder),
            "machine": machine,
            "backend": metrics.get("backend"),
            "versions": metrics.get("versions", {}),
            "seconds": round(float(status["seconds"]), 1),
            "config_hash": status["config_hash"],
        }
        atomic_write_text(snapshot / "claims" / f"{name}.json", (folder / "claims.json").read_text(encoding="utf-8"))
        copied.append(name)
    if not copied:
        raise ValueError(f"{results} holds no finished experiment (no <name>/{DONE}) to snapshot")
    ordered = {n: entries[n] for n in EXPERIMENTS if n in entries}
    ordered |= {n: e for n, e in entries.items() if n not in ordered}  # experiments no longer in the registry
    atomic_write_json(snapshot / INDEX, {"format": FORMAT, "experiments": ordered})
    return copied


def _text(x: Any) -> str:
    """A table cell: short numbers, no line breaks, and nothing Markdown or MyST would read as markup."""
    if isinstance(x, float):
        s = f"{x:.4g}"
    elif isinstance(x, list) and len(x) > 6:
        s = json.dumps(x[:6])[:-1] + ", …]"
    else:
        s = x if isinstance(x, str) else json.dumps(x)
    for a, b in (("\\", "\\\\"), ("|", "\\|"), ("$", "\\$"), ("*", "\\*"), ("<", "&lt;"), ("`", "\\`"), ("\n", " ")):
        s = s.replace(a, b)
    return s


def _verdict(c: dict[str, Any]) -> str:
    if c.get("kind") == "inconclusive":
        return "inconclusive"
    return "yes" if c["holds"] else "**no**"


_HEAD = [
    "| experiment | kind | claim | source | expected | measured | tolerance (basis) | seeds | holds | note |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def _row(name: str, c: dict[str, Any]) -> str:
    basis = c.get("tolerance_basis") or "basis not recorded"
    cells = [
        f"`{name}`",
        _text(c.get("kind") or "not recorded"),
        _text(c["claim"]),
        _text(c["source"]),
        _text(c["expected"]),
        _text(c["measured"]),
        f"{_text(c['tolerance'])} ({_text(basis)})",
        _text(c.get("seeds") or "not recorded"),
        _verdict(c),
        _text(c.get("note", "")),
    ]
    return "| " + " | ".join(cells) + " |"


def render_page(entries: dict[str, dict[str, Any]], claims: dict[str, list[dict[str, Any]]]) -> str:
    """docs/results.md for the snapshot ``(entries, claims)``: the counts, then every study's tables."""
    every = [c for name in entries for c in claims[name]]
    t = tally(every)
    lines = [
        "# Results",
        "",
        "<!-- Generated by `python -m experiments.docs_tables` from docs/snapshot/; do not edit by hand. -->",
        "",
        "The claims of the experiments, from a dated snapshot of their `claims.json` files (in `docs/snapshot/`, "
        "committed), generated by `python -m experiments.docs_tables`. A run of your own writes the same "
        "claims, and every figure, to `results/REPORT.md`; the [experiments page](experiments.md) states the "
        "claims standard and says what each experiment shows.",
        "",
        "## Where each part comes from",
        "",
        "| study | experiment | preset | finished (UTC) | machine | seconds | claims |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in entries.items():
        cells = [e["study"], f"`{name}`", e["preset"], e["date"], _text(e["machine"]), f"{e['seconds']:.1f}"]
        lines.append("| " + " | ".join([*cells, str(len(claims[name]))]) + " |")
    small = sorted({e["preset"] for e in entries.values()} - {"quick", "full"})
    if small:
        lines += ["", f"A part at the {' or '.join(small)} preset is a smoke test of the code, not evidence."]
    studies = list(dict.fromkeys(e["study"] for e in entries.values()))  # in the snapshot's (the registry's) order
    lines += ["", f"The snapshot holds {len(entries)} experiments, of the studies {', '.join(studies)}."]
    lines += ["", "## Counts", "", *headline(t, len(entries)), ""]
    failed = [(n, c) for n in entries for c in claims[n] if c.get("kind") in ("source", "fnnet") and not c["holds"]]
    inconclusive = [(n, c) for n in entries for c in claims[n] if c.get("kind") == "inconclusive"]
    lines += ["## Claims that fail, with the reason", ""]
    lines += [
        f"- `{n}`: {_text(c['claim'])}; measured {_text(c['measured'])}. {_text(c.get('note') or '')}".rstrip()
        for n, c in failed
    ] or ["None."]
    lines += ["", "## Inconclusive at this scale, with the setting that answers them", ""]
    lines += [f"- `{n}`: {_text(c['claim'])}. {_text(c.get('note') or '')}".rstrip() for n, c in inconclusive]
    lines += [] if inconclusive else ["None."]
    for study in studies:
        names = [n for n, e in entries.items() if e["study"] == study]
        rows = [_row(n, c) for n in names for c in claims[n] if c.get("kind") != "sanity"]
        if rows:
            lines += ["", f"## The `{study}` study", "", *_HEAD, *rows]
    sanity = [_row(n, c) for n in entries for c in claims[n] if c.get("kind") == "sanity"]
    lines += ["", "## Sanity checks (not counted as claims)", ""]
    lines += [*_HEAD, *sanity] if sanity else ["None."]
    return "\n".join(lines) + "\n"


def page_from(snapshot: Path) -> str:
    """The page :func:`render_page` makes from the snapshot folder ``snapshot``."""
    return render_page(*read_snapshot(snapshot))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.docs_tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, help="copy the experiments finished in this folder into the snapshot")
    p.add_argument("--snapshot", type=Path, default=SNAPSHOT, help="the snapshot folder (default: docs/snapshot)")
    p.add_argument("--page", type=Path, default=PAGE, help="the page to write (default: docs/results.md)")
    p.add_argument("--machine", default="", help="the machine the results were measured on, in words")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page is not what it makes")
    args = p.parse_args(argv)
    if args.results is not None:
        if args.check:
            p.error("--check compares the page with the snapshot as it is; it does not take --results")
        if not args.machine:
            p.error("--results needs --machine, the machine the results were measured on, in words")
        try:
            copied = update_snapshot(args.results, args.snapshot, args.machine)
        except ValueError as e:
            print(f"python -m experiments.docs_tables: error: {e}", file=sys.stderr)
            return 1
        print(f"snapshot {args.snapshot}: {len(copied)} experiment(s) from {args.results}: {', '.join(copied)}")
    page = page_from(args.snapshot)
    if args.check:
        same = args.page.exists() and args.page.read_text(encoding="utf-8") == page
        if not same:
            print(
                f"{args.page} is not what {args.snapshot} makes; run python -m experiments.docs_tables", file=sys.stderr
            )
        return 0 if same else 1
    atomic_write_text(args.page, page)
    print(f"wrote {args.page} from {args.snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
