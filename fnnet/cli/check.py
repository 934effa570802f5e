"""``fnnet check``: the catalog's parity checks on this backend, one table (or JSON); exit 1 when a rule fails.

``--module my_pkg.my_layers`` (or a file path ``./my_layers.py``) checks a user module's own ``CATALOG``, a list
of :class:`fnnet.catalog.Entry`, with the same table, bars and exit codes: 0 all pass, 1 any fail, 2 a usage
error (a module that cannot be imported, has no ``CATALOG``, or holds something else in it). Rows are printed
as they finish; with ``--json`` stdout holds only the JSON document and progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

import jax

from fnnet import catalog
from fnnet._io import dumps
from fnnet.checking import TOLERANCES, GradcheckReport, x64_available

__all__ = ["add_parser", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``check`` on an ``add_subparsers()`` object; returns its parser."""
    p = sub.add_parser(
        "check",
        help="check every hand-written rule against jax.grad and finite differences",
        description=(
            "Run the catalog's parity checks on the current backend and print one table: entry, dtype, "
            "relative error vs autodiff, vs central finite differences (float64), adjoint identity, the forward-mode "
            "rule's error vs jax.jvp (its FD and adjoint checks count in the verdict), pass/fail. Every rule is "
            "also run twice (the results must be identical) and, for a layer, at the zero cotangent (the gradient "
            "must be exactly 0). A finite-difference probe that crosses a kink is re-probed at a shifted point "
            "and the row says so. Exits 1 if any entry fails."
        ),
    )
    p.add_argument("--dtype", choices=["float32", "float64", "all"], default="all", help="dtype(s) to check")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--only", default=None, help="only the entry of this name, or else those whose name contains it")
    p.add_argument("--vmap", action="store_true", help="check under vmap as well as jit")
    p.add_argument(
        "--modes",
        default="rev,fwd",
        choices=["rev", "rev,fwd"],
        help="rules to check: the reverse-mode (backward) rules, and by default the forward-mode (jvp) rules too, "
        "three ways: vs jax.jvp, vs FD of the forward, and the adjoint identity between the two hand-written "
        "rules (an entry without a jvp is checked in reverse mode only: 'n/a')",
    )
    p.add_argument(
        "--order",
        type=int,
        default=1,
        choices=[1, 2],
        help="2: also check each rule's own derivative (as gradgradcheck does): vs jax forward-over-reverse, vs "
        "FD of the rule, symmetry, and each loss's hand-written hvp; a '2nd' column",
    )
    p.add_argument(
        "--module",
        default=None,
        help="check this module's CATALOG (a list of fnnet.catalog.Entry) instead of fnnet's: a dotted name "
        "(my_pkg.my_layers) or a path to a .py file",
    )
    return p


class ModuleError(Exception):
    """A ``--module`` that cannot be checked; the message names the module and what is wrong."""


def load_catalog(spec: str) -> list[catalog.Entry]:
    """The ``CATALOG`` of the module ``spec`` (a dotted name, or a path to a ``.py`` file)."""
    what = "a list of fnnet.catalog.Entry"
    try:
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            path = Path(spec)
            if not path.is_file():
                raise ModuleError(f"--module {spec}: no such file")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[loader.name] = module  # as an import would: dataclasses and pickling look it up
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(spec)
    except ModuleError:
        raise
    except Exception as e:  # the user's module failed to import: name it and the error, not a traceback
        raise ModuleError(f"--module {spec} cannot be imported: {type(e).__name__}: {e}") from e
    entries = getattr(module, "CATALOG", None)
    if entries is None:
        raise ModuleError(f"--module {spec} has no CATALOG ({what})")
    if not isinstance(entries, (list, tuple)):
        raise ModuleError(f"--module {spec}: CATALOG is a {type(entries).__name__}, not {what}")
    for i, e in enumerate(entries):
        if not isinstance(e, catalog.Entry):
            raise ModuleError(f"--module {spec}: CATALOG[{i}] is a {type(e).__name__}, not a fnnet.catalog.Entry")
    if not entries:
        raise ModuleError(f"--module {spec}: CATALOG is empty")
    return list(entries)


def run(args: argparse.Namespace) -> int:
    """Run ``fnnet check`` with parsed ``args``; returns the exit status."""
    backend = jax.default_backend()
    dtypes = ["float32", "float64"] if args.dtype == "all" else [args.dtype]
    notes = []
    if "float64" in dtypes and not x64_available():
        dtypes.remove("float64")
        notes.append(f"float64 skipped: the {backend} backend has no float64")
    try:
        entries = load_catalog(args.module) if args.module else list(catalog.entries())
    except ModuleError as e:
        print(f"fnnet check: error: {e}", file=sys.stderr)
        return 2
    if args.only is not None:
        exact = [e for e in entries if e.name == args.only]
        entries = exact or [e for e in entries if args.only in e.name]
    if not entries:
        print(f"fnnet check: error: no catalog entry matches --only {args.only!r}", file=sys.stderr)
        return 2
    transforms = ("jit", "vmap") if args.vmap else ("jit",)
    total = len(entries) * len(dtypes) * len(transforms)
    rows = []

    def on_report(row: catalog.CheckRow, report: GradcheckReport) -> None:
        rows.append(_row(row, report))
        if args.json:
            print(
                f"[{len(rows)}/{total}] {row.entry} {row.dtype} {row.transform}: {_verdict(rows[-1])}", file=sys.stderr
            )
            sys.stderr.flush()
        else:
            _print_row(rows[-1], first=len(rows) == 1)

    modes = tuple(args.modes.split(","))
    catalog.check_all(
        entries, dtypes=tuple(dtypes), transforms=transforms, on_report=on_report, modes=modes, order=args.order
    )
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
            + "; ".join(
                f"{d} autodiff<={TOLERANCES[d].autodiff:.0e} FD<={TOLERANCES[d].fd:.0e} "
                f"adjoint<={TOLERANCES[d].adjoint_bar:.0e}"
                for d in dtypes
            )
        )
    return 1 if failed else 0


def _row(row: catalog.CheckRow, report: GradcheckReport) -> dict:
    """One row of the table and of ``--json``: the catalog row, plus absolute errors, the adjoint verdict, the
    per-leaf errors with the index of each leaf's worst element, and the hints of a failure."""
    leaves = [
        dict(
            path=leaf.path,
            shape=list(leaf.shape),
            rel_autodiff=leaf.rel_autodiff,
            abs_autodiff=leaf.abs_autodiff,
            worst_autodiff=list(leaf.worst_autodiff),
            rel_fd=None if report.fd_dtype == "skipped" else leaf.rel_fd,
            abs_fd=None if report.fd_dtype == "skipped" else leaf.abs_fd,
            worst_fd=leaf.worst_fd if not isinstance(leaf.worst_fd, tuple) else list(leaf.worst_fd),
            ok=leaf.ok,
        )
        for leaf in report.leaves
    ]
    return dict(
        row._asdict(),
        abs_autodiff=report.abs_autodiff,
        abs_fd=None if report.fd_dtype == "skipped" else report.abs_fd,
        adjoint_bar=report.tolerance.adjoint_bar,
        adjoint_ok=report.dot_ok,
        leaves=leaves,
        hints=list(report.hints),
        forward_report=None if report.forward is None else str(report.forward),
        second_report=None if report.second is None else str(report.second),
        nondeterminism=report.nondeterminism,
        zero=report.zero,
    )


def _verdict(row: dict) -> str:
    return "pass" if row["ok"] else "FAIL " + ",".join(row["failures"] or ["adjoint identity"])


def _forward_cell(row: dict, key: str = "forward") -> str:
    """The forward-mode (or second-order) column: the error vs autodiff, '!' when any of its checks fails."""
    f = row[key]
    return "n/a " if f is None else f"{f['autodiff']:.1e}{' ' if f['ok'] else '!'}"


def _print_row(row: dict, first: bool) -> None:
    skipped = row["rel_fd"] is None  # no FD at a kink or a tie
    fd = "skipped" if skipped else f"{row['rel_fd']:.1e}"
    abs_fd = "-" if skipped else f"{row['abs_fd']:.1e}"
    second = row["second"] is not None
    if first:
        print(
            f"{'entry':<34} {'dtype':<8} {'xform':<5} {'vs autodiff':>11} {'abs':>8} {'vs FD':>9} {'abs':>8} "
            f"{'adjoint':>9}  {'fwd':>8}  " + (f"{'2nd':>8}  " if second else "") + "result"
        )
    print(
        f"{row['entry']:<34} {row['dtype']:<8} {row['transform']:<5} {row['rel_autodiff']:>11.1e} "
        f"{row['abs_autodiff']:>8.1e} {fd:>9} {abs_fd:>8} {row['adjoint']:>9.1e}{' ' if row['adjoint_ok'] else '!'} "
        f"{_forward_cell(row):>9} " + (f"{_forward_cell(row, 'second'):>9} " if second else "") + _verdict(row)
    )
    if row["kink"] is not None:
        print(f"    {row['kink']}")
    if not row["ok"]:
        for leaf in row["leaves"]:
            if not leaf["ok"]:
                print(
                    f"    {leaf['path']}: worst |manual - autodiff| = {leaf['abs_autodiff']:.2e} at index "
                    f"{tuple(leaf['worst_autodiff'])}"
                )
        if not row["adjoint_ok"]:
            print(f"    adjoint identity: rel error {row['adjoint']:.2e} > bar {row['adjoint_bar']:.0e}")
        if row["forward_report"] is not None and not row["forward"]["ok"]:
            print(f"    {row['forward_report']}")
        if row["second_report"] is not None and not row["second"]["ok"]:
            print(f"    {row['second_report']}")
        for hint in row["hints"]:
            print(f"    hint: {hint}")
    sys.stdout.flush()
