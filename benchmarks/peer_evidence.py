"""The evidence behind each entry where fnnet's train step is slower than PyTorch eager: the compiled HLO,
the kernel each side runs, the time per layer, and the bound.

For each entry (``cnn_28x28_b64``, ``lstm_t50_b64``, ``gpt_block_t256_d256_h4_b8``,
``attention_t1024_d64_h4_b1``):

* fnnet's compiled program (the jitted manual SGD step, params donated as in ``fnnet bench``): the optimized
  HLO's instructions by opcode in the entry computation and in each while body, every dot and convolution
  with its shapes, its FLOPs (2·MACs from the shapes and dimension numbers), the fusion that runs it and the
  trip count of the while loop around it; and ``cost_analysis()``'s flops and bytes accessed;
* PyTorch eager's kernels: the top ops by self CPU time under ``torch.profiler`` (per step);
* fnnet per layer: each leaf layer's jitted forward and jitted hand-written backward, timed apart at the
  activation shapes the model sees, with the FLOPs of their own compiled HLO;
* the bound: FLOPs / measured matmul peak and bytes accessed / measured memory bandwidth (a jitted
  ``x + 1`` over 256 MiB), as fractions of each side's measured step time.

Writes ``benchmarks/results/peer_evidence-<machine>.{md,json}``::

    python benchmarks/peer_evidence.py [--only cnn,lstm] [--out PATH.md]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._io import atomic_write, dumps
from fnnet.bench import models, peers, timing
from fnnet.bench.report import load_average, machine_info
from fnnet.layers.combinators import parts

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = ("cnn_28x28_b64", "lstm_t50_b64", "gpt_block_t256_d256_h4_b8", "attention_t1024_d64_h4_b1")
BOOKKEEPING = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}

# ----------------------------------------------------------------------------------------------
# the HLO summary


def _balanced(text: str, start: int) -> int:
    """The index just past the parenthesis that closes the one at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


def _dims(shape: str) -> tuple[int, ...]:
    found = re.match(r"\w+\[([\d,]*)\]", shape)
    return tuple(int(d) for d in found.group(1).split(",") if d) if found else ()


def parse_hlo(text: str) -> tuple[dict[str, list[dict]], str]:
    """The computations of an HLO module's text, name -> instructions, and the entry computation's name."""
    comps: dict[str, list[dict]] = {}
    entry, current = "", None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY\s+)?%(\S+)\s+\(.*\{\s*$", line)
        if head:
            current = comps.setdefault(head.group(2), [])
            entry = head.group(2) if head.group(1) else entry
            continue
        if line.strip() == "}":
            current = None
            continue
        ins = re.match(r"^\s*(?:ROOT\s+)?%(\S+)\s*=\s*(.*)$", line)
        if current is None or not ins:
            continue
        rest = ins.group(2)
        end = _balanced(rest, 0) if rest.startswith("(") else rest.index(" ")
        shape, rest = rest[:end], rest[end:].lstrip()
        op = re.match(r"([\w\-]+)\(", rest)
        if not op:
            continue
        close = _balanced(rest, op.end() - 1)
        operands = re.findall(r"%([\w.\-]+)", rest[op.end() : close - 1])
        current.append(
            {"name": ins.group(1), "shape": shape, "op": op.group(1), "operands": operands, "attrs": rest[close:]}
        )
    return comps, entry


def _fusion_label(ins: dict) -> str:
    custom = re.search(r'"fusion_config":\{"kind":"([^"]+)"', ins["attrs"])
    kind = re.search(r"kind=(\w+)", ins["attrs"])
    return custom.group(1) if custom else (kind.group(1) if kind else "?")


def _matmul_flops(ins: dict, shapes: dict[str, tuple[int, ...]]) -> dict:
    """2·MACs of a dot or convolution from its shapes and dimension numbers."""
    out = _dims(ins["shape"])
    lhs, rhs = (shapes.get(o, ()) for o in ins["operands"][:2])
    if ins["op"] == "dot":
        contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins["attrs"])
        k = math.prod(lhs[int(c)] for c in contract.group(1).split(",") if c) if contract else 1
    else:
        labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", ins["attrs"])
        k = math.prod(rhs) // rhs[labels.group(2).index("o")] if labels else 0
    return {"lhs": list(lhs), "rhs": list(rhs), "out": list(out), "flops": 2 * math.prod(out) * k}


def hlo_summary(text: str) -> dict:
    """Instructions by opcode per scope (the entry computation, each while body) and every dot/convolution:
    shapes, FLOPs per execution, the fusion that runs it ("" = XLA's own dot), the scope and its trip count."""
    comps, entry = parse_hlo(text)
    scopes: dict[str, dict] = {}
    matmuls: list[dict] = []

    def visit(comp: str, scope: str, trips: int, fusion: str) -> None:
        shapes = {i["name"]: _dims(i["shape"]) for i in comps.get(comp, [])}
        for ins in comps.get(comp, []):
            op = ins["op"]
            if not fusion:
                key = f"fusion[{_fusion_label(ins)}]" if op == "fusion" else op
                scopes[scope]["ops"][key] += 1
            if op in ("dot", "convolution"):
                row = _matmul_flops(ins, shapes)
                meta = re.search(r'op_name="([^"]+)"', ins["attrs"])
                matmuls.append(
                    {
                        "op": op,
                        "name": ins["name"],
                        "scope": scope,
                        "trips": trips,
                        "fusion": fusion,
                        **row,
                        "total_flops": row["flops"] * trips,
                        "op_name": meta.group(1) if meta else "",
                    }
                )
            if op == "while":
                body = re.search(r"body=%([\w.\-]+)", ins["attrs"]).group(1)
                n = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins["attrs"])
                inner = f"while {ins['name']}"
                scopes[inner] = {"trips": int(n.group(1)) if n else None, "ops": Counter(), "inside": scope}
                visit(body, inner, trips * (int(n.group(1)) if n else 1), fusion)
            elif op == "fusion":
                for c in re.findall(r"calls=%([\w.\-]+)", ins["attrs"]):
                    visit(c, scope, trips, fusion or _fusion_label(ins))
            elif op in ("call", "conditional", "custom-call", "async-start"):
                for c in re.findall(r"(?:to_apply|calls|branch_computations=\{[^}]*)=?%([\w.\-]+)", ins["attrs"]):
                    visit(c, scope, trips, fusion)

    scopes["entry"] = {"trips": 1, "ops": Counter(), "inside": None}
    visit(entry, "entry", 1, "")
    return {
        "scopes": {k: {**v, "ops": dict(v["ops"].most_common())} for k, v in scopes.items()},
        "matmuls": matmuls,
        "matmul_flops": sum(m["total_flops"] for m in matmuls),
    }


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


# ----------------------------------------------------------------------------------------------
# measurements


def _seconds(call: Callable[[], Any], repeats: int = 3, min_time: float = 0.1) -> float:
    jax.block_until_ready(call())
    inner = max(1, int(np.ceil(min_time / max(timing.seconds_per_call(call, 1), 1e-7))))
    return statistics.median(timing.seconds_per_call(call, inner) for _ in range(repeats))


def memory_bandwidth(mib: int = 256) -> float:
    """GB/s of a jitted, donated ``x + 1`` over ``mib`` MiB of float32 (read + write counted)."""
    state = {"x": jax.random.normal(jax.random.key(1), (mib * 2**20 // 4,), jnp.float32)}
    f = jax.jit(lambda a: a + 1, donate_argnums=0)  # in place: no fresh 256 MiB (page faults) per call

    def call():
        state["x"] = f(state["x"])
        return state["x"]

    return 2 * state["x"].nbytes / _seconds(call) / 1e9


def _leaves(layer, params, x, prefix=""):
    """(label, layer, params, input) of each leaf layer of serial/residual trees, at the model's activations."""
    p = parts(layer)
    if p is None:
        yield prefix + layer.label, layer, params, x
        return
    kind, children = p
    if kind == "residual":
        yield from _leaves(children[0], params, x, prefix)
        return
    for i, (child, cp) in enumerate(zip(children, params)):
        yield from _leaves(child, cp, x, f"{prefix}{i}.")
        x = jax.jit(lambda q, v, c=child: c.forward(q, v)[0])(cp, x)


def per_layer(layer, params, x, peak: float) -> list[dict]:
    rows = []
    for label, leaf, p, xin in _leaves(layer, params, x):
        fwd = jax.jit(lambda q, v, lf=leaf: lf.forward(q, v))
        bwd = jax.jit(lambda q, c, dy, lf=leaf: lf.backward(q, c, dy))
        y, cache = fwd(p, xin)
        dy = jax.random.normal(jax.random.key(2), y.shape, y.dtype)
        row = {"layer": label, "in": list(xin.shape), "out": list(y.shape)}
        for side, f, args in (("fwd", fwd, (p, xin)), ("bwd", bwd, (p, cache, dy))):
            flops = hlo_summary(f.lower(*args).compile().as_text())["matmul_flops"]
            t = _seconds(lambda f=f, args=args: f(*args))
            row[side] = {"ms": t * 1e3, "flops": flops, "gflops": flops / t / 1e9, "peak": flops / t / 1e9 / peak}
        rows.append(row)
    return rows


def torch_profile(entry, steps: int = 5) -> dict:
    import time

    from torch.profiler import ProfilerActivity, profile

    params, x, y = timing.inputs(entry)
    model = peers.torch_model(entry.build(), params, entry.in_shape)
    step = peers.make_step(model, peers.torch_loss(entry.loss))
    xt, yt = peers.torch_batch(x, y)
    for _ in range(3):
        step(xt, yt)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step(xt, yt)
        wall = (time.perf_counter() - t0) / steps

    def rows(events):
        out = []
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
            ms = e.self_cpu_time_total / 1e3 / steps
            out.append(
                {
                    "name": e.key,
                    "calls": e.count / steps,
                    "self_ms": ms,
                    "pct": ms / (wall * 1e3),
                    "shapes": str(e.input_shapes) if getattr(e, "input_shapes", None) else "",
                    "gflops": (e.flops / steps) / (ms / 1e3) / 1e9 if e.flops and ms > 0 else None,
                }
            )
        return out

    return {
        "profiled_step_ms": wall * 1e3,
        "kernels": rows(prof.key_averages()),
        "by_shape": rows(prof.key_averages(group_by_input_shape=True)),
    }


def step_times(entry, compiled, params, x, y, rounds: int = 5) -> dict:
    """fnnet manual and PyTorch eager step times: :func:`fnnet.bench.peers.bench_torch`'s interleaved
    protocol (same thread count on both sides; the ratio is the median per-round ratio), or fnnet alone
    without torch."""
    if peers.torch_version():
        t = peers.bench_torch(entry, repeats=rounds, min_time=0.2, compile=False)
        if "skipped" not in t:
            return {
                "fnnet_ms": t["fnnet_step_s"]["manual"] * 1e3,
                "torch_ms": t["step_s"] * 1e3,
                "ratio": t["ratio_manual_torch"],
                "threads": t["threads"],
            }
    state = {"p": jax.tree_util.tree_map(jnp.copy, params)}

    def fnnet_call():
        state["p"], v = compiled(state["p"], x, y)
        return v

    return {"fnnet_ms": _seconds(fnnet_call, rounds, 0.2) * 1e3}


def evidence(entry, peak: float, bandwidth: float) -> dict:
    layer = entry.build()
    params, x, y = timing.inputs(entry)
    step = timing.make_step(layer, entry.loss, "manual")
    compiled = jax.jit(step, donate_argnums=0).lower(params, x, y).compile()
    hlo = hlo_summary(compiled.as_text())
    cost = _cost(compiled)
    out: dict[str, Any] = {
        "entry": entry.name,
        "about": entry.about,
        "analytic_flops": entry.flops,
        "hlo": hlo,
        "cost": cost,
    }
    out["steps"] = step_times(entry, compiled, params, x, y)
    flops = hlo["matmul_flops"]
    out["bound"] = {"compute_ms": flops / (peak * 1e9) * 1e3, "memory_ms": cost["bytes"] / (bandwidth * 1e9) * 1e3}
    out["per_layer"] = per_layer(layer, params, x, peak)
    if peers.torch_version():
        torch = __import__("torch")
        before = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            out["torch"] = torch_profile(entry)
        finally:
            torch.set_num_threads(before)
    else:
        out["torch"] = {"skipped": peers.SKIPPED}
    return out


# ----------------------------------------------------------------------------------------------
# the report


def _g(v: float) -> str:
    return f"{v / 1e9:.3f}G" if v >= 1e8 else f"{v / 1e6:.2f}M"


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def paragraph(r: dict) -> str:
    mm = r["hlo"]["matmuls"]
    loops = [m for m in mm if m["scope"] != "entry"]
    big = max(mm, key=lambda m: m["total_flops"]) if mm else None
    s = r["steps"]
    text = [f"fnnet's step is {s['fnnet_ms']:.2f} ms"]
    if "torch_ms" in s:
        text[0] += f", PyTorch eager's {s['torch_ms']:.2f} ms (median per-round ratio {s['ratio']:.2f})"
    text.append(
        f"the compiled program has {len(mm)} dots/convolutions totalling {_g(r['hlo']['matmul_flops'])} FLOPs "
        f"(analytic count {_g(r['analytic_flops'])}); {len(loops)} of them sit inside while loops"
        + (" (" + ", ".join(sorted({f"{m['scope']}: {m['trips']} trips" for m in loops})) + ")" if loops else "")
    )
    by_kernel = Counter()
    for m in mm:
        by_kernel[m["fusion"] or "XLA dot"] += m["total_flops"]
    text.append(
        "FLOPs by kernel: " + ", ".join(f"{k} {v / max(r['hlo']['matmul_flops'], 1):.0%}" for k, v in by_kernel.items())
    )
    if big:
        text.append(
            f"the largest is {big['op']} {big['lhs']}x{big['rhs']} -> {big['out']} "
            f"({_g(big['total_flops'])} FLOPs over {big['trips']} execution(s))"
        )
    b = r["bound"]
    text.append(
        f"compute floor {b['compute_ms']:.2f} ms ({b['compute_ms'] / s['fnnet_ms']:.0%} of fnnet's step"
        + (f", {b['compute_ms'] / s['torch_ms']:.0%} of PyTorch's" if "torch_ms" in s else "")
        + f"), memory floor {b['memory_ms']:.2f} ms ({b['memory_ms'] / s['fnnet_ms']:.0%} of fnnet's step)"
    )
    t = r["torch"]
    if "kernels" in t and t["kernels"]:
        k = t["kernels"][0]
        text.append(f"PyTorch's top op by self CPU time is {k['name']} at {k['pct']:.0%} of its profiled step")
    return "; ".join(text) + "."


def markdown(info: dict, rows: list[dict]) -> str:
    L = [
        f"# peer evidence — {info['name']}",
        "",
        f"{info['cpu']}, {info['cores']} cores; jax {info['jax']}, "
        f"PyTorch {info.get('torch') or 'not installed'}; {info['date_utc']} UTC; load before {info['load_before']}, "
        f"after {info.get('load_after')}. Measured fp32 matmul peak **{info['peak_gflops']:.1f} GFLOP/s**, memory "
        f"bandwidth (jitted x + 1 over 256 MiB, read + write) **{info['bandwidth_gbs']:.1f} GB/s**. The machine "
        "is shared, so times are noisy. FLOPs are 2·MACs of dots/convolutions in the optimized HLO, times the "
        "trip count of any while loop around them.",
        "",
    ]
    for r in rows:
        s, b, c = r["steps"], r["bound"], r["cost"]
        L += [f"## {r['entry']}", "", r["about"], "", paragraph(r), ""]
        L += [
            "| fnnet ms | torch ms | fnnet/torch | HLO dot FLOPs | cost_analysis flops | bytes accessed | "
            "compute floor ms | memory floor ms | floors / fnnet step | floors / torch step |",
            "|" + "---|" * 10,
        ]
        tm = s.get("torch_ms")
        L.append(
            f"| {s['fnnet_ms']:.2f} | {_num(tm)} | {_num(s.get('ratio'))}"
            f" | {_g(r['hlo']['matmul_flops'])} | {_g(c['flops'])} | {c['bytes'] / 2**20:.1f} MiB | "
            f"{b['compute_ms']:.2f} | {b['memory_ms']:.2f} | {b['compute_ms'] / s['fnnet_ms']:.0%} / "
            f"{b['memory_ms'] / s['fnnet_ms']:.0%} | "
            + (f"{b['compute_ms'] / tm:.0%} / {b['memory_ms'] / tm:.0%} |" if tm else "- |")
        )
        L += [
            "",
            "**fnnet's compiled program** (instructions by opcode; bookkeeping ops — parameter, constant, "
            "tuple, get-tuple-element, bitcast — left out):",
            "",
            "| scope | trips | ops |",
            "|---|---|---|",
        ]
        for name, sc in r["hlo"]["scopes"].items():
            ops = ", ".join(f"{k} {v}" for k, v in sc["ops"].items() if k not in BOOKKEEPING)
            L.append(f"| {name} | {sc['trips'] if sc['trips'] is not None else '?'} | {ops} |")
        L += [
            "",
            "Dots and convolutions, top 15 by FLOPs (kernel: the fusion that runs it; `XLA dot`: none):",
            "",
            "| op | scope | trips | kernel | lhs | rhs | out | FLOPs each | FLOPs total | source |",
            "|" + "---|" * 10,
        ]
        for m in sorted(r["hlo"]["matmuls"], key=lambda m: -m["total_flops"])[:15]:
            L.append(
                f"| {m['op']} | {m['scope']} | {m['trips']} | {m['fusion'] or 'XLA dot'} | {m['lhs']} | {m['rhs']} "
                f"| {m['out']} | {_g(m['flops'])} | {_g(m['total_flops'])} | {m['op_name'].replace('jit(step)/', '')} |"
            )
        L += [
            "",
            "**fnnet per layer** (each leaf's jitted forward and hand-written backward, timed apart):",
            "",
            "| layer | in | fwd ms | fwd FLOPs | fwd GFLOP/s | fwd % peak | bwd ms | bwd FLOPs | bwd GFLOP/s | "
            "bwd % peak |",
            "|" + "---|" * 10,
        ]
        for p in r["per_layer"]:
            f, g = p["fwd"], p["bwd"]
            L.append(
                f"| {p['layer']} | {p['in']} | {f['ms']:.3f} | {_g(f['flops'])} | {f['gflops']:.1f} | {f['peak']:.0%} "
                f"| {g['ms']:.3f} | {_g(g['flops'])} | {g['gflops']:.1f} | {g['peak']:.0%} |"
            )
        tot = sum(p["fwd"]["ms"] + p["bwd"]["ms"] for p in r["per_layer"])
        L += ["", f"Sum over layers: {tot:.2f} ms (the whole step: {s['fnnet_ms']:.2f} ms).", ""]
        t = r["torch"]
        if "skipped" in t:
            L += [t["skipped"], ""]
            continue
        L += [
            f"**PyTorch eager's kernels** (torch.profiler, per step; profiled step {t['profiled_step_ms']:.2f} ms):",
            "",
            "| op | calls/step | self ms/step | % of step | GFLOP/s |",
            "|---|---|---|---|---|",
        ]
        for k in t["kernels"]:
            L.append(
                f"| {k['name']} | {k['calls']:.0f} | {k['self_ms']:.3f} | {k['pct']:.0%} | {_num(k['gflops'], 1)} |"
            )
        L += [
            "",
            "PyTorch per op and input shapes (its per-layer view):",
            "",
            "| op | input shapes | calls/step | self ms/step | % of step | GFLOP/s |",
            "|---|---|---|---|---|---|",
        ]
        for k in t["by_shape"]:
            L.append(
                f"| {k['name']} | {k['shapes'][:80]} | {k['calls']:.0f} | {k['self_ms']:.3f} | {k['pct']:.0%} | "
                f"{_num(k['gflops'], 1)} |"
            )
        L.append("")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated substrings of entry names")
    ap.add_argument("--out", type=Path, default=None, help="the .md to write (the .json goes beside it)")
    args = ap.parse_args(argv)
    wanted = [w for w in args.only.split(",") if w]
    chosen = [
        e for e in models.entries(False) if e.name in ENTRIES and (not wanted or any(w in e.name for w in wanted))
    ]
    info = machine_info()
    info["torch"] = peers.torch_version()
    if info["torch"] is None:
        print(peers.SKIPPED)
    info["peak_gflops"] = timing.matmul_peak((512, 1024), repeats=3)["gflops"]
    info["bandwidth_gbs"] = memory_bandwidth()
    rows = []
    for e in chosen:
        print(f"{e.name} ...", flush=True)
        rows.append(evidence(e, info["peak_gflops"], info["bandwidth_gbs"]))
    info["load_after"] = load_average()
    out = args.out or ROOT / "benchmarks" / "results" / f"peer_evidence-{info['name']}.md"
    atomic_write(out, markdown(info, rows).encode())
    atomic_write(out.with_suffix(".json"), dumps({"machine": info, "entries": rows}).encode())
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
