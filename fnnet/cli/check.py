"""``fnnet check``: the catalog's parity checks on this backend, one table (or JSON); exit 1 when a rule fails."""

from __future__ import annotations

import argparse
import sys

import jax

from fnnet import catalog
from fnnet._io import dumps
from fnnet.checking import TOLERANCES, x64_available

__all__ = ["add_parser", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``check`` on an ``add_subparsers()`` object; returns its parser."""
    p = sub.add_parser(
        "check",
        help="check every hand-written rule against jax.grad and finite differences",
        description=(
            "Run the catalog's parity checks on the current backend and print one table: entry, dtype, "
            "relative error vs autodiff, vs central finite differences (float64), adjoint identity, pass/fail. "
            "Exits 1 if any entry fails."
        ),
    )
    p.add_argument("--dtype", choices=["float32", "float64", "all"], default="all", help="dtype(s) to check")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--only", default=None, help="only the entry of this name, or else those whose name contains it")
    p.add_argument("--vmap", action="store_true", help="check under vmap as well as jit")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``fnnet check`` with parsed ``args``; returns the exit status."""
    backend = jax.default_backend()
    dtypes = ["float32", "float64"] if args.dtype == "all" else [args.dtype]
    notes = []
    if "float64" in dtypes and not x64_available():
        dtypes.remove("float64")
        notes.append(f"float64 skipped: the {backend} backend has no float64")
    entries = list(catalog.entries())
    if args.only is not None:
        exact = [e for e in entries if e.name == args.only]
        entries = exact or [e for e in entries if args.only in e.name]
    if not entries:
        print(f"fnnet check: no catalog entry matches --only {args.only!r}", file=sys.stderr)
        return 2
    transforms = ("jit", "vmap") if args.vmap else ("jit",)
    rows = []

    def on_row(row: catalog.CheckRow) -> None:
        rows.append(row._asdict())
        if not args.json:
            _print_row(rows[-1], first=len(rows) == 1)

    catalog.check_all(entries, dtypes=tuple(dtypes), transforms=transforms, on_row=on_row)
    failed = sum(not r["ok"] for r in rows)
    summary = f"{len(rows) - failed}/{len(rows)} passed on {backend} ({jax.devices()[0].device_kind})"
    if args.json:
        bars = {d: TOLERANCES[d]._asdict() for d in dtypes}
        print(dumps(dict(backend=backend, tolerances=bars, notes=notes, rows=rows, failed=failed), indent=1))
    else:
        for note in notes:
            print(note)
        print(summary)
        print(
            "bars: "
            + "; ".join(f"{d} autodiff<={TOLERANCES[d].autodiff:.0e} FD<={TOLERANCES[d].fd:.0e}" for d in dtypes)
        )
    return 1 if failed else 0


def _print_row(row: dict, first: bool) -> None:
    fd = "skipped" if row["rel_fd"] is None else f"{row['rel_fd']:.1e}"  # no FD at a kink or a tie
    if first:
        print(f"{'entry':<34} {'dtype':<8} {'xform':<5} {'vs autodiff':>11} {'vs FD':>9} {'adjoint':>9}  result")
    print(
        f"{row['entry']:<34} {row['dtype']:<8} {row['transform']:<5} {row['rel_autodiff']:>11.1e} "
        f"{fd:>9} {row['adjoint']:>9.1e}  {'pass' if row['ok'] else 'FAIL ' + ','.join(row['failures'])}",
        flush=True,
    )
