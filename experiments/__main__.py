"""``python -m experiments``: run every experiment, write results/<name>/ and results/REPORT.md.

    python -m experiments                  # quick preset of everything
    python -m experiments --full           # the bigger settings (meant for a GPU host); = --preset full
    python -m experiments --preset tiny    # the smoke-test settings (measured times: --list)
    python -m experiments --only worked_example,activations
    python -m experiments --out DIR --force --strict
    python -m experiments --list           # name, study, title and measured seconds at each preset;
                                           # each study's quick budget beside its measured seconds

A rerun skips experiments already finished with the same config (``--force`` reruns them); an
interrupted experiment resumes from its cached sweep points, kept per config hash in
``<out>/<name>/cache/<hash>/``: a changed config never reads another config's points, the runner
deletes the caches of other configs, and ``--force`` deletes them all. A damaged results or cache
file is reported in one line and that work alone is redone. Ctrl-C stops with one line and exit
130; what finished stays, and the same command resumes. A claim that does not hold never makes the
runner fail, unless ``--strict`` is given (exit 1). A claim that breaks the claims standard
(:func:`experiments._common.check_claim`: its kind, seeds, tolerance basis, source) makes its experiment
fail with an error naming the experiment and the claim, and nothing of that run is written. Usage
errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from experiments import EXPERIMENTS, STUDIES, STUDY_BUDGET_SECONDS, STUDY_OF, load
from experiments._common import (
    ClaimStandardError,
    atomic_write_json,
    check_claims,
    config_hash,
    point_cache,
    prune_point_caches,
    run_metadata,
    to_jsonable,
)
from experiments._report import DONE, DamagedResults, read_finished, write_report
from fnnet._io import remove_stale_temporaries
from fnnet.cli.parser import UsageParser, plain, quiet_on_closed_pipe

#: preset -> what it is, for --help.
PRESETS = {"tiny": "a smoke test", "quick": "the default", "full": "the bigger settings, meant for a GPU host"}

#: Seconds per experiment at each preset, measured by running them (never estimated), with where and when.
SECONDS_FILE = Path(__file__).with_name("measured_seconds.json")


def measured_seconds() -> dict[str, dict]:
    """preset -> its entry in :data:`SECONDS_FILE`.

    A measured preset has ``machine``, ``date`` and ``seconds`` (experiment name -> seconds, the
    ``seconds`` of its ``timing.json``; an experiment may be missing); an unmeasured one has only
    ``not_measured``, the words that say so.
    """
    return json.loads(SECONDS_FILE.read_text(encoding="utf-8"))["presets"]


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min"


def _cell(entry: dict, name: str) -> str:
    seconds = entry.get("seconds", {})
    return _duration(seconds[name]) if name in seconds else "-"


def _preset_help(times: dict[str, dict]) -> str:
    parts = []
    for preset, what in PRESETS.items():
        entry = times[preset]
        if "seconds" not in entry:
            parts.append(f"{preset}: {what}, {entry['not_measured']}")
            continue
        seconds = [entry["seconds"][n] for n in EXPERIMENTS if n in entry["seconds"]]
        share = "all" if len(seconds) == len(EXPERIMENTS) else f"{len(seconds)} of {len(EXPERIMENTS)}"
        took = f"{share} experiments in {_duration(sum(seconds))} on {entry['machine']}, {entry['date']}"
        parts.append(f"{preset}: {what}, {took}")
    return "; ".join(parts) + ". Per experiment: --list"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = UsageParser(prog="python -m experiments", description=plain(__doc__))
    p.add_argument("--full", action="store_true", help="run the full preset instead of quick (= --preset full)")
    p.add_argument("--preset", choices=list(PRESETS), default=None, help=_preset_help(measured_seconds()))
    p.add_argument("--only", default=None, help="comma-separated experiment names (see --list)")
    p.add_argument("--out", default="results", help="results folder (default: results/)")
    p.add_argument(
        "--force", action="store_true", help="rerun finished experiments from scratch (their cached points deleted)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any claim does not hold")
    p.add_argument(
        "--list",
        action="store_true",
        help="list the experiments, one a line (name, study, measured seconds at each preset, title), and exit",
    )
    args = p.parse_args(argv)
    if args.full and args.preset not in (None, "full"):
        p.error(f"--full and --preset {args.preset} disagree; give one of them")
    args.preset = args.preset or ("full" if args.full else "quick")
    names = list(EXPERIMENTS)
    if args.only is not None:
        names = list(dict.fromkeys(n.strip() for n in args.only.split(",") if n.strip()))
        if not names:
            p.error(f"--only: expected comma-separated experiment names, got {args.only!r}; see --list")
        unknown = [n for n in names if n not in EXPERIMENTS]
        if unknown:
            p.error(f"unknown experiment {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    args.names = names
    return args


def _notice(message: str) -> None:
    print(f"experiments: {message}", file=sys.stderr, flush=True)


def run_one(name: str, preset: str, out: Path, force: bool) -> dict:
    """Run experiment ``name`` unless it already finished with this config; return its status row.

    Finished means: ``done.json`` records this config's hash and ``claims.json`` and ``metrics.json``
    read back whole and agree with it (:func:`experiments._report.read_finished`); a damaged file is
    reported in one line and the experiment rerun. Before a run, ``done.json`` is deleted (an
    interrupted rerun is never taken for finished) and so are the point caches of other configs (all
    of them under ``force``).
    """
    module = load(name)
    config = module.PRESETS[preset]
    digest = config_hash(config)
    out_dir = out / name
    done = out_dir / DONE
    if not force:
        try:
            finished = read_finished(out_dir)
        except DamagedResults as e:
            _notice(f"{e}; rerunning {name}")
            finished = None
        if finished is not None and finished.status["config_hash"] == digest:
            try:
                check_claims(name, finished.claims)
            except ClaimStandardError:
                _notice(
                    f"{out_dir / 'claims.json'} was written before its claims met the claims standard; rerunning {name}"
                )
            else:
                return {**finished.status, "skipped": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    prune_point_caches(out_dir, keep=None if force else digest)
    for folder in (out_dir, point_cache(out_dir, config).folder):
        remove_stale_temporaries(folder)  # left by a run killed mid-write; never a finished file
    t0 = time.perf_counter()
    result = module.run(config, out_dir)
    seconds = time.perf_counter() - t0
    check_claims(name, result.claims)  # a claim that breaks the standard is refused before anything is written
    metrics = {**run_metadata(config), "preset": preset, "metrics": result.metrics}
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_json(out_dir / "claims.json", result.claims)
    atomic_write_json(out_dir / "timing.json", {"seconds": seconds, **result.timings})
    status = {
        "name": name,
        "title": module.TITLE,
        "config_hash": digest,
        "preset": preset,
        "seconds": seconds,
        "figures": to_jsonable(result.figures),
        "claims": len(result.claims),
        "holds": sum(bool(c.holds) for c in result.claims),
    }
    atomic_write_json(done, status)  # written last: its presence means the experiment finished
    status["skipped"] = False
    return status


def print_list() -> None:
    """``--list``: one line per experiment on stdout, starting with its name; the column heads and where the
    seconds were measured go to stderr, so ``python -m experiments --list | cut -d' ' -f1`` gives the names."""
    times = measured_seconds()
    width = max(map(len, EXPERIMENTS))
    heads = " ".join(f"{p:>6}" for p in PRESETS)
    print(f"{'name':<{width}} {'study':<14} {heads}  title", file=sys.stderr, flush=True)
    for name in EXPERIMENTS:
        cells = " ".join(f"{_cell(times[p], name):>6}" for p in PRESETS)
        print(f"{name:<{width}} {STUDY_OF[name]:<14} {cells}  {load(name).TITLE}")
    sys.stdout.flush()
    presets_by_where: dict[str, list[str]] = {}  # presets measured on one machine and date share a clause
    for preset, entry in times.items():
        where = f"measured on {entry['machine']}, {entry['date']}" if "seconds" in entry else entry["not_measured"]
        presets_by_where.setdefault(where, []).append(preset)
    clauses = "; ".join(f"{' and '.join(presets)} {where}" for where, presets in presets_by_where.items())
    print(f"seconds per experiment (-: not measured): {clauses}", file=sys.stderr)
    print(f"quick budget per study: {study_budgets(times['quick'])}", file=sys.stderr)


def study_budgets(quick: dict) -> str:
    """Each study's quick budget (:data:`experiments.STUDY_BUDGET_SECONDS`) beside the quick seconds measured."""
    parts = []
    for study, names in STUDIES.items():
        seconds = quick.get("seconds", {})
        measured = [seconds[n] for n in names if n in seconds]
        share = "" if len(measured) == len(names) else f", {len(measured)} of {len(names)} experiments"
        took = f"measured {_duration(sum(measured))}{share}" if measured else "not measured"
        parts.append(f"{study} {_duration(STUDY_BUDGET_SECONDS[study])} ({took})")
    return "; ".join(parts)


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print_list()
        return 0
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"python -m experiments: error: cannot create --out {out}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        return _run_all(args, out)
    except KeyboardInterrupt:
        print(flush=True)  # end the progress line
        print(
            "python -m experiments: interrupted; finished work is kept, the same command resumes",
            file=sys.stderr,
            flush=True,
        )
        return 130


def _run_all(args: argparse.Namespace, out: Path) -> int:
    statuses, failed = [], []
    t_all = time.perf_counter()
    for i, name in enumerate(args.names, 1):
        print(f"[{i}/{len(args.names)}] {name} ...", end=" ", flush=True)
        try:
            status = run_one(name, args.preset, out, args.force)
        except Exception as e:  # a bug in one experiment must not stop the others
            print(f"FAILED: {type(e).__name__}: {e}", flush=True)
            failed.append(name)
            continue
        statuses.append(status)
        if status["skipped"]:
            print(f"skipped (finished earlier in {status['seconds']:.1f} s)", flush=True)
        else:
            print(f"{status['seconds']:.1f} s, {status['holds']}/{status['claims']} claims hold", flush=True)
    report = write_report(out, EXPERIMENTS)
    total = time.perf_counter() - t_all
    print(
        f"{report.n_claims} claims: {report.n_hold} hold, {report.n_fail} fail, {report.n_inconclusive} inconclusive; "
        f"{report.n_sanity} sanity checks apart; report: {out / 'REPORT.md'} ({total:.1f} s)"
    )
    if failed:
        print(f"{len(failed)} experiment(s) raised an error: {', '.join(failed)}", file=sys.stderr)
        return 1
    broken = report.n_fail + report.n_sanity_fail + report.n_unclassified
    if args.strict and broken:
        print(
            f"--strict: {report.n_fail} claim(s) fail, {report.n_sanity_fail} sanity check(s) fail, "
            f"{report.n_unclassified} claim(s) have no kind",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
