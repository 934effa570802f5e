"""The evidence behind ``fnnet.layers.conv``'s choice of formulation: XLA's convolution against matrix products.

For each shape (stride 1, dilation 1; the CNN of ``fnnet bench`` first) it times, jitted, in float32, the
forward, dW and dx of a convolution two or three ways:

* ``lax``: ``lax.conv_general_dilated`` (the forward, and the dW and dx that ``jax.vjp`` of it compiles to);
* ``im2col``: one GEMM of the patches (forward), of the transposed patches (dW);
* ``taps``: the kh·kw per-tap GEMMs, summed (forward), or added into the padded input (dx);

the matrix-product candidates are ``fnnet.layers.conv``'s own functions, so the table measures the code
the layer runs.

Each time is the best of 7 samples of back-to-back calls (at least 0.2 s each), the candidates interleaved;
GFLOP/s count 2·B·H'·W'·kh·kw·C_in·C_out per product, and the matmul peak is a 1024² product measured in
the same run. Every candidate is checked against ``lax`` first (relative error printed). Writes
``benchmarks/results/conv_formulations-<machine>.{md,json}``::

    python benchmarks/conv_formulations.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

from fnnet.bench.report import machine_info
from fnnet.layers import conv

ROOT = Path(__file__).resolve().parents[1]
DN = ("NHWC", "HWIO", "NHWC")
#: (label, batch, height = width, C_in, C_out, kernel): the bench CNN's two layers, then wider and larger ones.
SHAPES = [
    ("CNN conv1", 64, 28, 1, 32, 3),
    ("CNN conv2", 64, 14, 32, 64, 3),
    ("C_in 4", 64, 28, 4, 32, 3),
    ("C_in 8", 64, 28, 8, 32, 3),
    ("C_in 16", 64, 14, 16, 64, 3),
    ("64 -> 128 at 7x7", 64, 7, 64, 128, 3),
    ("128 -> 128 at 16x16", 16, 16, 128, 128, 3),
    ("5x5, 32 -> 64", 32, 14, 32, 64, 5),
]


def _best(f, *args) -> float:
    f = jax.jit(f)
    jax.block_until_ready(f(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    inner = max(1, int(0.2 / max(time.perf_counter() - t0, 1e-6)))

    def sample() -> float:
        t = time.perf_counter()
        for _ in range(inner):
            out = f(*args)
        jax.block_until_ready(out)
        return (time.perf_counter() - t) / inner

    return sample


def _rel(a, b) -> float:
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def measure(label: str, b: int, hw: int, c: int, o: int, k: int, repeats: int = 7) -> dict:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (b, hw, hw, c))
    W = jax.random.normal(keys[1], (k, k, c, o))
    pads = ((k // 2, k // 2), (k // 2, k // 2))
    out_hw = (hw, hw)
    dy = jax.random.normal(keys[2], (b, hw, hw, o))
    lax_fwd = lambda x, W: lax.conv_general_dilated(x, W, (1, 1), pads, dimension_numbers=DN)  # noqa: E731
    lax_dw = lambda x, dy: jax.vjp(lambda w: lax_fwd(x, w), W)[1](dy)[0]  # noqa: E731
    lax_dx = lambda dy, W: jax.vjp(lambda z: lax_fwd(z, W), x)[1](dy)[0]  # noqa: E731
    im2col = lambda x, W: conv.matmul_forward(x, W, pads, out_hw, taps=False)  # noqa: E731
    taps = lambda x, W: conv.matmul_forward(x, W, pads, out_hw, taps=True)  # noqa: E731
    candidates = {
        "forward": {"lax": (lax_fwd, (x, W)), "im2col": (im2col, (x, W)), "taps": (taps, (x, W))},
        "dW": {
            "lax": (lax_dw, (x, dy)),
            "im2col": (lambda x, dy: conv.matmul_weight_gradient(x, dy, (k, k), pads), (x, dy)),
        },
        "dx": {
            "lax": (lax_dx, (dy, W)),
            "taps": (lambda dy, W: conv.matmul_input_gradient(dy, W, pads, out_hw), (dy, W)),
        },
    }
    flops = 2 * b * hw * hw * k * k * c * o
    row = {"label": label, "batch": b, "hw": hw, "c_in": c, "c_out": o, "kernel": k, "flops": flops}
    row["fnnet"] = conv.plan(c, o, out_hw, (k, k), (1, 1), (1, 1), pads)._asdict()
    for piece, cands in candidates.items():
        ref = jax.jit(cands["lax"][0])(*cands["lax"][1])
        samplers, errors = {}, {}
        for name, (f, args) in cands.items():
            errors[name] = _rel(jax.jit(f)(*args).reshape(ref.shape), ref)
            samplers[name] = _best(f, *args)
        times = {name: [] for name in cands}
        for _ in range(repeats):
            for name in cands:
                times[name].append(samplers[name]())
        row[piece] = {
            name: {"ms": 1e3 * min(t), "gflops": flops / min(t) / 1e9, "rel_err_vs_lax": errors[name]}
            for name, t in times.items()
        }
    return row


def _peak() -> float:
    a = jax.random.normal(jax.random.key(1), (1024, 1024))
    sample = _best(jnp.matmul, a, a)
    return 2 * 1024**3 / min(sample() for _ in range(7)) / 1e9


def markdown(rows: list[dict], peak: float, info: dict) -> str:
    lines = [
        f"# Convolution formulations on {info['name']}",
        "",
        f"{info['cpu']}, {info['cores']} cores, jax {info['jax']}, {info['date_utc']} UTC; float32, stride 1, "
        f"SAME padding; matmul peak {peak:.0f} GFLOP/s (1024² product, same run). Each cell: ms (% of the peak); "
        "**bold** the fastest. `fnnet` marks what `fnnet.layers.conv` runs.",
        "",
        "| shape | B | piece | lax | im2col | taps | fnnet |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        shape = f"{r['label']}: {r['hw']}x{r['hw']}x{r['c_in']} -> {r['c_out']}, {r['kernel']}x{r['kernel']}"
        for piece in ("forward", "dW", "dx"):
            used = r["fnnet"][piece]
            cells = r[piece]
            fastest = min(cells, key=lambda n: cells[n]["ms"])
            out = []
            for name in ("lax", "im2col", "taps"):
                if name not in cells:
                    out.append("")
                    continue
                text = f"{cells[name]['ms']:.3f} ({100 * cells[name]['gflops'] / peak:.0f} %)"
                out.append(f"**{text}**" if name == fastest else text)
            lines.append(f"| {shape} | {r['batch']} | {piece} | {' | '.join(out)} | {used} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    info = machine_info()
    peak = _peak()
    rows = []
    for shape in SHAPES:
        rows.append(measure(*shape))
        print(json.dumps({k: rows[-1][k] for k in ("label", "forward", "dW", "dx")}, default=str)[:400])
    out = ROOT / "benchmarks" / "results"
    stem = f"conv_formulations-{info['name']}"
    (out / f"{stem}.json").write_text(json.dumps({"machine": info, "peak_gflops": peak, "rows": rows}, indent=1) + "\n")
    table = markdown(rows, peak, info)
    (out / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
