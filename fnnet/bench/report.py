"""Tables, targets and files of ``fnnet bench``: the printed table, JSON and markdown."""

from __future__ import annotations

import datetime
import math
import os
import platform
import re
from pathlib import Path

import jax

from fnnet._io import atomic_write, dumps
from fnnet.bench import peers
from fnnet.bench.models import ATTENTION, GPT_BLOCK

LARGE_MLP = "mlp_784-1024-1024-10_b256"
TARGETS = {
    "geomean_ratio": 1.00,  # manual ÷ autodiff step time, geometric mean over the set
    "max_ratio": 1.10,  # ... and on every entry
    "large_mlp_peak_fraction": 0.85,  # the large MLP's manual step, of the measured matmul peak
    "sweep_vs_torch": 20.0,  # vmapped sweep over a PyTorch eager loop
    "sweep_vs_jit_loop": 5.0,  # vmapped sweep over a Python loop of jitted runs
    "sweep_2x": 2.0,  # the same, the faster of K keys and one key (the performance issue's target)
    "gpt_block_ratio": 1.00,  # manual ÷ autodiff step time of the GPT block
    "attention_ratio": 1.10,  # ... of attention alone (each of T = 1024 and T = 4096)
    "attention_memory_t1024": 1 / 3,  # temp memory of value_and_grad, manual ÷ autodiff, attention at T = 1024
    "attention_memory_t4096": 1 / 10,  # ... at T = 4096
}
SOURCES = ("manual", "autodiff", "custom_vjp")


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Backend, device, CPU, cores, versions, XLA flags, date and load: where the numbers come from."""
    import jaxlib

    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    cpu, cores = _cpu_model(), os.cpu_count()
    what = cpu if backend == "cpu" else device
    name = re.sub(r"[^a-z0-9]+", "-", f"{backend} {what}".lower()).strip("-")
    if backend == "cpu":
        name += f"-{cores}core"
    return {
        "name": name,
        "backend": backend,
        "device": device,
        "cpu": cpu,
        "cores": cores,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "load_before": load_average(),
    }


def add_peak_fraction(row: dict, peak_gflops: float) -> None:
    for s in row["sources"].values():
        s["peak_fraction"] = s["gflops"] / peak_gflops if s.get("gflops") else None


# ----------------------------------------------------------------------------------------------
# the printed table


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.2f}"


def _flops(f: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if f >= scale:
            return f"{f / scale:.2f}{unit}"
    return f"{f:.0f}"


COLUMNS = [
    ("entry", 34, lambda r: r["entry"]),
    ("B", 4, lambda r: str(r["batch"])),
    ("FLOPs", 7, lambda r: _flops(r["flops"])),
    ("manual ms", 9, lambda r: f"{r['sources']['manual']['step_s'] * 1e3:.3f}"),
    ("autodiff ms", 11, lambda r: f"{r['sources']['autodiff']['step_s'] * 1e3:.3f}"),
    ("cvjp ms", 9, lambda r: f"{r['sources']['custom_vjp']['step_s'] * 1e3:.3f}"),
    ("man/auto", 8, lambda r: f"{r['ratio_manual_autodiff']:.3f}"),
    ("compile s m/a/c", 15, lambda r: "/".join(f"{r['sources'][s]['compile_s']:.2f}" for s in SOURCES)),
    ("temp MiB m/a/c", 17, lambda r: "/".join(_mib(r["sources"][s]["temp_bytes"]) for s in SOURCES)),
    ("GFLOP/s", 7, lambda r: f"{r['sources']['manual']['gflops']:.1f}"),
    ("% peak", 6, lambda r: f"{100 * r['sources']['manual']['peak_fraction']:.0f}%"),
    ("man/torch", 9, lambda r: peers.ratio_text(r.get("torch", {}).get("ratio_manual_torch"))),
]


def print_row(row: dict, first: bool) -> None:
    if first:
        print("  ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (h, w, _) in enumerate(COLUMNS)))
    print("  ".join(f"{f(row):>{w}}" if i else f"{f(row):<{w}}" for i, (_, w, f) in enumerate(COLUMNS)), flush=True)


def print_sweep(sw: dict) -> None:
    steps = sw["steps_per_model"]
    print(f"sweep: {sw['models']} x {sw['model']}, B={sw['batch']}, {steps} steps each")
    frac = f", {sw['vmapped_peak_fraction']:.0%} of matmul peak" if "vmapped_peak_fraction" in sw else ""
    print(
        f"  vmapped (one program)   {sw['vmapped_s']:8.2f} s   {sw['vmapped_gflops']:.1f} GFLOP/s{frac} "
        f"(compile {sw['vmapped_compile_s']:.1f} s)"
    )
    print(f"  vmapped, one key        {sw['vmapped_one_key_s']:8.2f} s   (one batch order for all models)")
    print(
        f"  loop of jitted runs     {sw['jit_loop_s']:8.2f} s   vmapped is {sw['speedup_vs_jit_loop']:.1f}x faster, "
        f"with one key {sw['speedup_one_key_vs_jit_loop']:.1f}x"
    )
    for t in sw.get("torch_runs", []):
        print(
            f"  PyTorch eager loop      {t['seconds']:8.2f} s   vmapped is {t['seconds'] / sw['vmapped_s']:.1f}x "
            f"faster (torch {sw['torch_version']}, {t['threads']} threads)"
        )
    print(f"  ({_bound_text(sw)})")


def _bound_text(sw: dict) -> str:
    """The compute bound on the speed-ups, in words."""
    bounds = [(k, sw[f"bound_speedup_vs_{k}"]) for k in ("jit_loop", "torch_eager") if f"bound_speedup_vs_{k}" in sw]
    if not bounds:
        return "no compute bound: no matmul peak"
    names = {"jit_loop": "the loop of jitted runs", "torch_eager": "the PyTorch eager loop"}
    return (
        f"{_flops(sw['flops_per_step'])}FLOP per model step: even at the measured matmul peak the vmapped sweep "
        "could be at most " + " and ".join(f"{v:.1f}x faster than {names[k]}" for k, v in bounds)
    )


def print_summary(result: dict) -> None:
    print(f"targets ({result['machine']['name']}, load average {result['machine']['load_after']}):")
    for t in result["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"  {t['target']:<58} {t['measured']:<28} {state}")


# ----------------------------------------------------------------------------------------------
# targets


def targets(result: dict) -> list[dict]:
    """Each performance target with what was measured and whether it is met (None: not in this run)."""
    rows = [r for r in result.get("entries", []) if "ratio_manual_autodiff" in r]
    out = []
    ratios = [r["ratio_manual_autodiff"] for r in rows]
    geo = math.exp(sum(math.log(v) for v in ratios) / len(ratios)) if ratios else None
    out.append(_t(f"manual/autodiff geo-mean <= {TARGETS['geomean_ratio']:.2f}", geo, "{:.3f}", "<=", "geomean_ratio"))
    worst = max(rows, key=lambda r: r["ratio_manual_autodiff"], default=None)
    out.append(
        _t(
            f"manual/autodiff on every entry <= {TARGETS['max_ratio']:.2f}",
            worst and worst["ratio_manual_autodiff"],
            "{:.3f} (" + (worst["entry"] if worst else "") + ")",
            "<=",
            "max_ratio",
        )
    )
    mem = [r for r in rows if r["sources"]["manual"]["temp_bytes"] is not None]
    over = [r["entry"] for r in mem if r["sources"]["manual"]["temp_bytes"] > r["sources"]["autodiff"]["temp_bytes"]]
    out.append(
        {
            "target": "temp memory manual <= autodiff on every entry",
            "measured": f"{len(mem) - len(over)}/{len(mem)} entries" + (f"; over: {', '.join(over)}" if over else ""),
            "met": (not over) if mem else None,
            "exceptions": over,
        }
    )
    large = next((r for r in rows if r["entry"] == LARGE_MLP), None)
    frac = large and large["sources"]["manual"]["peak_fraction"]
    out.append(
        _t(
            f"large MLP (784-1024-1024-10, B=256) >= {TARGETS['large_mlp_peak_fraction']:.0%} of matmul peak",
            frac,
            "{:.1%}",
            ">=",
            "large_mlp_peak_fraction",
        )
    )
    by_name = {r["entry"]: r for r in rows}
    block = by_name.get(GPT_BLOCK)
    out.append(
        _t(
            f"GPT block (B8 T256 d256 h4) manual/autodiff <= {TARGETS['gpt_block_ratio']:.2f}",
            block and block["ratio_manual_autodiff"],
            "{:.3f}",
            "<=",
            "gpt_block_ratio",
        )
    )
    for name in ATTENTION:
        r = by_name.get(name)
        out.append(
            _t(
                f"attention {name.split('_')[1]} manual/autodiff <= {TARGETS['attention_ratio']:.2f}",
                r and r["ratio_manual_autodiff"],
                "{:.3f}",
                "<=",
                "attention_ratio",
            )
        )
        t = name.split("_")[1]
        out.append(
            _t(
                f"attention {t} grad temp memory manual/autodiff <= {TARGETS['attention_memory_' + t]:.3f}",
                r and r.get("grad_temp_ratio_manual_autodiff"),
                "{:.3f}",
                "<=",
                "attention_memory_" + t,
            )
        )
    sw = result.get("sweep", {})
    out.append(
        _t(
            "vmapped sweep >= 20x PyTorch eager loop",
            sw.get("speedup_vs_torch_eager"),
            "{:.1f}x",
            ">=",
            "sweep_vs_torch",
        )
    )
    out.append(
        _t(
            "vmapped sweep >= 5x loop of jitted runs",
            sw.get("speedup_vs_jit_loop"),
            "{:.1f}x",
            ">=",
            "sweep_vs_jit_loop",
        )
    )
    best = max((sw.get(k) for k in ("speedup_vs_jit_loop", "speedup_one_key_vs_jit_loop") if sw.get(k)), default=None)
    out.append(_t("vmapped sweep >= 2x loop of jitted runs (either batch order)", best, "{:.2f}x", ">=", "sweep_2x"))
    return out


def _t(text: str, value: float | None, fmt: str, op: str, key: str) -> dict:
    if value is None:
        return {"target": text, "measured": "-", "met": None, "value": None}
    met = value <= TARGETS[key] if op == "<=" else value >= TARGETS[key]
    return {"target": text, "measured": fmt.format(value), "met": bool(met), "value": value}


# ----------------------------------------------------------------------------------------------
# files


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# fnnet bench — {m['name']}",
        "",
        f"{m['cpu']}, {m['cores']} cores ({m['backend']}, {m['device']}); jax {m['jax']}, jaxlib {m['jaxlib']}, "
        f"Python {m['python']}; XLA_FLAGS={m['xla_flags'] or '(unset)'}; {m['date_utc']} UTC.",
        f"Load average (1/5/15 min) before: {m['load_before']}, after: {m.get('load_after')}. "
        f"Measured fp32 matmul peak: **{result['matmul_peak']['gflops']:.1f} GFLOP/s** "
        f"({result['matmul_peak']['n']}² jitted matmul). {'Quick set. ' if result['quick'] else ''}"
        f"Step times are medians of {result['settings']['repeats']} interleaved samples; "
        "man/auto is the median of the per-round ratios.",
        "",
    ]
    if result.get("entries"):
        heads = [h for h, _, _ in COLUMNS] + ["loss (all three)"]
        lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for r in result["entries"]:
            losses = {round(r["sources"][s]["loss"], 6) for s in SOURCES}
            cells = [f(r) for _, _, f in COLUMNS] + [", ".join(f"{v:.6f}" for v in sorted(losses))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += peers.table_lines(result["entries"])
    sw = result.get("sweep")
    if sw:
        lines += [
            f"Sweep: {sw['models']} × {sw['model']}, B = {sw['batch']}, {sw['steps_per_model']} steps each.",
            "",
            "| mode | seconds | vmapped is | mean final-epoch loss |",
            "|---|---|---|---|",
            f"| vmapped `fn.sweep` (one program) | {sw['vmapped_s']:.2f} | 1× | {sw['vmapped_final_loss']:.4f} |",
            f"| vmapped `fn.sweep`, one key (one batch order) | {sw['vmapped_one_key_s']:.2f} | "
            f"{sw['vmapped_s'] / sw['vmapped_one_key_s']:.2f}× faster | {sw['vmapped_one_key_final_loss']:.4f} |",
            f"| Python loop of jitted `fn.train` runs | {sw['jit_loop_s']:.2f} | {sw['speedup_vs_jit_loop']:.1f}× "
            f"faster (one key: {sw['speedup_one_key_vs_jit_loop']:.1f}×) | {sw['jit_loop_final_loss']:.4f} |",
        ]
        for t in sw.get("torch_runs", []):
            threads = f"{t['threads']} thread" + ("s" if t["threads"] > 1 else "")
            lines.append(
                f"| PyTorch {sw['torch_version']} eager loop ({threads}) | "
                f"{t['seconds']:.2f} | {t['seconds'] / sw['vmapped_s']:.1f}× faster | {t['final_loss']:.4f} |"
            )
        if "torch_runs" not in sw:
            lines.append(f"| PyTorch eager loop | skipped: {sw['torch_skipped']} | | |")
        lines.append("")
        if "torch_runs" in sw:
            lines.append(f"The faster PyTorch run ({sw['torch_threads']} threads) is the baseline of the target. ")
        lines += [
            f"The vmapped sweep ran at {sw['vmapped_gflops']:.1f} GFLOP/s. {_bound_text(sw).capitalize()}.",
            "",
        ]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {({True: 'yes', False: 'no', None: '-'})[t['met']]} |")
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path, stem: str) -> list[Path]:
    """Write ``stem.json`` and ``stem.md`` under ``out`` (atomically: a temp file, then a rename)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".json", dumps(result, indent=1) + "\n"), (".md", markdown(result))):
        path = out / (stem + suffix)
        atomic_write(path, text.encode())
        paths.append(path)
    return paths
