"""``fnnet bench``: hand-written rules against ``jax.grad``, in time and memory, on this machine.

For every model of the set (MLPs small to wide, a CNN, an RNN and an LSTM over 50 steps, BatchNorm
and residual MLPs) it compiles one jitted train step (forward + backward + SGD update) per gradient
source — ``manual`` (the hand-written rules), ``autodiff`` (``jax.value_and_grad`` of the same
forward) and ``custom_vjp`` (``jax.grad`` through the rules) — checks that the three agree, and
measures the step time (median of interleaved samples after warm-up; see :mod:`fnnet.bench.timing`),
the compile time, the peak temporary memory of the compiled program (``memory_analysis()``), the
analytic FLOPs and the achieved GFLOP/s as a fraction of the fp32 matmul peak **measured in the same
run**. With torch installed (``--no-torch`` to leave it out), each entry's PyTorch eager twin (same
model, parameters, loss and SGD step) is timed interleaved with fnnet's steps: the "fnnet / PyTorch"
column and table (:mod:`fnnet.bench.peers`). Then the sweep throughput: 64 MNIST-1D MLPs as one
vmapped program, as a Python loop of jitted runs, and as a PyTorch eager loop (when torch is installed).

    fnnet bench                      # the full set; writes benchmarks/results/<machine>.{json,md}
    fnnet bench --quick              # a small set in seconds (a smoke test)
    fnnet bench --only mlp,sweep     # entries whose name contains any of the words
    fnnet bench --only gpu --no-torch-compile   # the subset for a GPU host (one of each kind, the sweep)
    python -m fnnet.bench --json     # the same, JSON on stdout

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from fnnet._io import dumps
from fnnet.bench import models as bench_models
from fnnet.bench import peers, report, sweep, timing
from fnnet.cli.parser import UsageParser, plain, quiet_on_closed_pipe

TARGETS = report.TARGETS


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``fnnet bench`` on the ``fnnet`` command's subparsers."""
    summary = "time manual vs autodiff vs custom_vjp train steps, and vmapped sweeps"
    return configure(subparsers.add_parser("bench", help=summary, description=plain(__doc__, 1)))


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of ``fnnet bench`` to ``p``."""
    p.add_argument("--quick", action="store_true", help="a small set and short timings (a smoke test)")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated words: run only the entries whose name contains one ('sweep' for the sweep; "
        "'gpu' for the GPU subset: " + ", ".join(bench_models.GPU_SUBSET) + ")",
    )
    p.add_argument(
        "--out",
        default="benchmarks/results",
        help="directory for <machine>.json and <machine>.md ('' to write nothing); --quick writes <machine>-quick.*",
    )
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the tables")
    p.add_argument(
        "--torch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time each entry's PyTorch eager twin too, interleaved (default: on when torch is installed; "
        "torch.compile is tried outside --quick)",
    )
    p.add_argument(
        "--torch-compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time torch.compile of each twin too (default: on, except with --quick)",
    )
    p.add_argument("--repeats", type=_positive_int, default=None, help="timed samples per source (default 7, quick 3)")
    p.add_argument(
        "--min-time",
        type=_positive_float,
        default=None,
        help="seconds per timed sample (default 0.2, quick 0.02); short steps are repeated back to back",
    )
    p.add_argument("--models", type=_positive_int, default=None, help="models in the sweep (default 64, quick 4)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs of the sweep (default 10, quick 1)")
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


PRESETS = {"gpu": bench_models.GPU_SUBSET}


def _select(names: list[str], only: str | None) -> list[str]:
    """The names that ``--only`` picks: those containing one of its words, and every name of a preset word."""
    if only is None:
        return names
    words = [w.strip() for w in only.split(",") if w.strip()]
    exact = {n for w in words for n in PRESETS.get(w, ())}
    return [n for n in names if n in exact or any(w in n for w in words if w not in PRESETS)]


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args``; print a table (or JSON) and write the result files."""
    quick = bool(args.quick)
    repeats = args.repeats or (3 if quick else 7)
    min_time = args.min_time if args.min_time is not None else (0.02 if quick else 0.2)
    models = args.models or (4 if quick else 64)
    epochs = args.epochs or (1 if quick else 10)
    entries = bench_models.entries(quick)
    chosen = set(_select([e.name for e in entries] + ["sweep"], args.only))
    if not chosen:
        print(f"fnnet bench: no entry matches --only {args.only!r}", file=sys.stderr)
        return 2
    say = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print  # noqa: E731

    result: dict[str, Any] = {"machine": report.machine_info(), "quick": quick, "settings": {}}
    result["settings"] = dict(repeats=repeats, min_time_s=min_time, sweep_models=models, sweep_epochs=epochs)
    t_start = time.perf_counter()
    say(f"fnnet bench on {result['machine']['name']} (load average {result['machine']['load_before']})")
    sizes = (256, 512, 1024) if quick else (512, 1024, 2048, 4096)
    result["matmul_peak"] = timing.matmul_peak(sizes, repeats)
    say(
        f"measured fp32 matmul peak: {result['matmul_peak']['gflops']:.1f} GFLOP/s "
        f"(jitted {result['matmul_peak']['n']}x{result['matmul_peak']['n']} matmul)"
    )
    use_torch = bool(args.torch) and peers.torch_version() is not None
    if args.torch and not use_torch:
        say(peers.SKIPPED)
    result["settings"]["torch"] = use_torch
    result["settings"]["torch_compile"] = use_torch and bool(args.torch_compile) and not quick
    rows = []
    for entry in entries:
        if entry.name not in chosen:
            continue
        row = timing.bench_entry(entry, repeats=repeats, min_time=min_time, check_grads=not quick)
        report.add_peak_fraction(row, result["matmul_peak"]["gflops"])
        if use_torch:
            row["torch"] = peers.bench_torch(
                entry,
                repeats=repeats,
                min_time=min_time,
                peak_gflops=result["matmul_peak"]["gflops"],
                fnnet_loss=row["sources"]["manual"]["loss"],
                compile=bool(args.torch_compile) and not quick,
            )
        rows.append(row)
        if not args.json:
            report.print_row(row, first=len(rows) == 1)
    result["entries"] = rows
    if use_torch and rows and not args.json:
        peers.print_table(rows)
    if "sweep" in chosen:
        say(f"sweep: {models} MNIST-1D MLPs x {epochs} epochs, vmapped vs loop of jitted runs vs PyTorch eager ...")
        result["sweep"] = sweep.bench_sweep(models=models, epochs=epochs, peak_gflops=result["matmul_peak"]["gflops"])
        if "torch_skipped" in result["sweep"]:
            say(result["sweep"]["torch_skipped"])
        if not args.json:
            report.print_sweep(result["sweep"])
    result["machine"]["load_after"] = report.load_average()
    result["wall_s"] = time.perf_counter() - t_start
    result["targets"] = report.targets(result)
    if args.json:
        print(dumps(result, indent=1))
    else:
        report.print_summary(result)
    if args.out:
        stem = result["machine"]["name"] + ("-quick" if quick else "")
        paths = report.write(result, Path(args.out), stem)
        say("wrote " + ", ".join(str(p) for p in paths))
    return 0


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fnnet.bench``: the same options as ``fnnet bench``."""
    return run(configure(UsageParser(prog="python -m fnnet.bench", description=plain(__doc__, 1))).parse_args(argv))
