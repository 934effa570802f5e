"""Each activation and its derivative: the hand-written rule overlaid on jax.grad of the same forward.

For every activation of fnnet the derivative f'(x) is taken from the hand-written backward rule
(``fnnet.activations.derivative``, dy = 1) and from ``jax.grad`` of the forward code, on a grid of x,
in float64. The texts' closed forms (σ' = σ(1 − σ), tanh' = 1 − tanh², ReLU' ∈ {0, 1}) are checked
against both, and the kink conventions are pinned: relu'(0) = 0, leaky_relu'(0) = 1 (fnnet's choices).
"ML Math Derivations (19)" calls GELU' bell-shaped near 0; it is not: GELU'(x) = Φ(x) + xφ(x) rises from
0 through 1/2 at x = 0 to its maximum Φ(√2) + √2φ(√2) ≈ 1.1289 at x = √2 (where GELU'' = φ(x)(2 − x²)
vanishes) and then falls back to 1. One claim flags that error; another checks the maximum.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _sources as src
from experiments._common import Claim, Result, close, pyplot, save_figure
from fnnet import activations as A

NAME = "activations"
TITLE = "Activations and their derivatives: hand-written rules against autodiff"

SRC_GULLI = src.GULLI_2019.cite('sec. "Derivatives of the activation functions"')
SRC_GULLI_RELU = src.GULLI_2019.cite('sec. "Derivatives of the activation functions", subsec. "Derivative of ReLU"')
SRC_TABLE = src.ML_MATH_19.cite('sec. "Activation Functions", table')

# name, label, keyword arguments of the rule
FUNCTIONS: tuple[tuple[str, str, dict], ...] = (
    ("sigmoid", "sigmoid", {}),
    ("tanh", "tanh", {}),
    ("relu", "ReLU", {}),
    ("leaky_relu", "leaky ReLU (α=0.1)", {"alpha": 0.1}),
    ("gelu", "GELU (exact)", {}),
    ("gelu", "GELU (tanh approx.)", {"approximate": True}),
    ("swish", "swish / SiLU", {}),
    ("softplus", "softplus", {}),
)


@dataclasses.dataclass(frozen=True)
class Config:
    x_min: float = -6.0
    x_max: float = 6.0
    n_points: int = 2001  # odd, so that x = 0 lies on the grid
    seed: int = 0  # unused: every input is a fixed grid


PRESETS = {
    "tiny": Config(n_points=201),
    "quick": Config(),
    "full": Config(x_min=-10.0, x_max=10.0, n_points=20001),
}


def _value(name: str, x: jax.Array, kw: dict) -> jax.Array:
    return getattr(A, name)(x, **kw)


def _autodiff(name: str, x: jax.Array, kw: dict) -> jax.Array:
    """f'(x) elementwise through jax.grad of the very same forward code."""
    return jax.vmap(jax.grad(lambda t: _value(name, t, kw)))(x)


@jax.jit
def _compute(x: jax.Array) -> dict:
    """Values, rule and autodiff derivatives on the grid and at 0, as one compiled program."""
    zero = jnp.zeros((1,), x.dtype)
    rows = []
    for name, _, kw in FUNCTIONS:
        rows.append(
            (
                _value(name, x, kw),
                A.derivative(name, x, **kw),
                _autodiff(name, x, kw),
                A.derivative(name, zero, **kw),
                _autodiff(name, zero, kw),
            )
        )
    s, t = A.sigmoid(x), A.tanh(x)
    return {
        "rows": rows,
        "sig_closed_err": jnp.max(jnp.abs(rows[0][2] - s * (1 - s))),
        "tanh_closed_err": jnp.max(jnp.abs(rows[1][2] - (1 - t * t))),
    }


def run(config: Config, out_dir: Path) -> Result:
    with jax.enable_x64(True):
        grid = np.linspace(config.x_min, config.x_max, config.n_points)
        grid[np.argmin(np.abs(grid))] = 0.0  # the kink itself, exactly (linspace may land on ±1e-16)
        x = jnp.asarray(grid, jnp.float64)
        computed = jax.device_get(_compute(x))
    rows = {}
    for (_, label, _), (value, manual, auto, z_manual, z_auto) in zip(FUNCTIONS, computed["rows"]):
        rows[label] = dict(
            value=value,
            manual=manual,
            autodiff=auto,
            max_abs_err=float(np.max(np.abs(manual - auto))),
            at_zero_manual=float(z_manual[0]),
            at_zero_autodiff=float(z_auto[0]),
        )
    sig_closed_err = float(computed["sig_closed_err"])
    tanh_closed_err = float(computed["tanh_closed_err"])
    xs = np.asarray(x)
    sig_d = rows["sigmoid"]["manual"]
    relu_d = rows["ReLU"]["manual"]
    leaky_d = rows["leaky ReLU (α=0.1)"]["manual"]
    relu_values = sorted({float(v) for v in relu_d})
    leaky_values = sorted({float(v) for v in leaky_d})
    tol = 1e-12
    R = dict(seeds=1, tolerance_basis="rounding: float64 evaluation of one function two ways; 1e-12 is ~5000 ulp")
    EXACT = dict(seeds=1, tolerance_basis="rounding: the derivative takes exact values (0, α, 1), compared exactly")
    h = float(xs[1] - xs[0])
    gelu_d = rows["GELU (exact)"]["manual"]
    i_max = int(np.argmax(gelu_d))
    gelu_max, gelu_at = float(gelu_d[i_max]), float(xs[i_max])
    gelu_edges = (float(gelu_d[0]), float(gelu_d[-1]))
    # GELU'(x) = Φ(x) + x φ(x); GELU''(x) = φ(x)(2 − x²) = 0 at x = √2, so max GELU' = Φ(√2) + √2 φ(√2)
    exact_max = 0.5 * (1 + math.erf(1.0)) + math.sqrt(2.0) * math.exp(-1.0) / math.sqrt(2 * math.pi)
    grid_tol = 0.25 * h * h + tol  # the grid max is within ½h²·max|GELU‴| (max|GELU‴| < 0.5) of the true max

    claims = [
        close(
            "σ'(x) = σ(x)(1 − σ(x)): jax.grad of σ against the closed form, max |error| on the grid",
            SRC_GULLI + "; " + SRC_TABLE,
            0.0,
            sig_closed_err,
            atol=tol,
            kind="source",
            **R,
        ),
        close(
            "max over x of σ'(x) is 1/4",
            SRC_TABLE + " (sigmoid's derivative never exceeds 0.25)",
            0.25,
            float(sig_d.max()),
            atol=tol,
            kind="source",
            **R,
        ),
        close(
            "σ' peaks at x = 0 (argmax of σ' on the grid)",
            SRC_TABLE,
            0.0,
            float(xs[int(np.argmax(sig_d))]),
            atol=tol,
            kind="source",
            seeds=1,
            tolerance_basis="rounding: x = 0 lies on the grid exactly, so the argmax is 0 or a grid step away",
        ),
        close(
            "tanh'(x) = 1 − tanh²(x): jax.grad of tanh against the closed form, max |error|",
            SRC_GULLI + "; " + SRC_TABLE,
            0.0,
            tanh_closed_err,
            atol=tol,
            kind="source",
            **R,
        ),
        Claim(
            "ReLU'(x) takes only the values {0, 1}",
            SRC_GULLI_RELU + "; " + SRC_TABLE,
            [0.0, 1.0],
            relu_values,
            "exact",
            relu_values == [0.0, 1.0],
            kind="source",
            **EXACT,
        ),
        Claim(
            "ReLU'(0) = 0 in fnnet's rule, the same convention as jax.grad (the text allows 0 or 1)",
            SRC_GULLI_RELU + " (the value at 0 may be chosen 0 or 1); the choice 0 is fnnet's convention",
            0.0,
            rows["ReLU"]["at_zero_manual"],
            "exact",
            rows["ReLU"]["at_zero_manual"] == 0.0 == rows["ReLU"]["at_zero_autodiff"],
            note=f"jax.grad at 0 gives {rows['ReLU']['at_zero_autodiff']}",
            kind="fnnet",
            **EXACT,
        ),
        Claim(
            "leaky ReLU'(x) takes only the values {α, 1} (α = 0.1)",
            SRC_TABLE,
            [0.1, 1.0],
            leaky_values,
            "exact",
            leaky_values == [0.1, 1.0],
            kind="source",
            **EXACT,
        ),
        Claim(
            "leaky ReLU'(0) = 1 in fnnet's rule (the text gives no value at the kink)",
            "fnnet's own contract: its convention at the kink (" + SRC_TABLE + " gives 1 or α, not the kink)",
            1.0,
            rows["leaky ReLU (α=0.1)"]["at_zero_manual"],
            "exact",
            rows["leaky ReLU (α=0.1)"]["at_zero_manual"] == 1.0,
            note=f"jax.grad at 0: {rows['leaky ReLU (α=0.1)']['at_zero_autodiff']}",
            kind="fnnet",
            **EXACT,
        ),
        Claim(
            "GELU' is bell-shaped near 0: a bump that peaks at x = 0 and falls towards 0 on both sides",
            SRC_TABLE + " (GELU row: its derivative called smooth and bell-shaped near 0)",
            "argmax at 0; GELU' → 0 at both ends of the grid",
            {"max": gelu_max, "argmax": gelu_at, "at x_min": gelu_edges[0], "at x_max": gelu_edges[1]},
            f"argmax within one grid step ({h:.3g}) of 0; |GELU'| < 0.01 at both ends",
            bool(abs(gelu_at) <= h and max(abs(gelu_edges[0]), abs(gelu_edges[1])) < 0.01),
            note="An error in the text: GELU'(x) = Φ(x) + xφ(x) is a smoothed step from 0 to 1 that overshoots, "
            f"rising to {gelu_max:.4f} at x = {gelu_at:.3f} (≈ √2) and dipping to {float(gelu_d.min()):.4f} at "
            f"x = {float(xs[int(np.argmin(gelu_d))]):.3f}; it is 1/2 at 0 and tends to 1, not 0, as x grows.",
            kind="source",
            seeds=1,
            tolerance_basis="rounding: a shape read on the float64 grid; the bars are one grid step and 0.01",
        ),
        close(
            "GELU' peaks above 1: max GELU' = Φ(√2) + √2·φ(√2) ≈ 1.1289 (where GELU'' = φ(x)(2 − x²) = 0)",
            "fnnet's derivation from GELU(x) = xΦ(x) (" + SRC_TABLE + ")",
            exact_max,
            gelu_max,
            atol=grid_tol,
            note=f"at x = {gelu_at:.4f} on the grid; √2 = {math.sqrt(2):.4f}",
            kind="fnnet",
            seeds=1,
            tolerance_basis=f"rounding: the grid max lies within ½h²·max|GELU‴| < h²/4 of the true max (h = {h:.3g})",
        ),
    ]
    for label in ("GELU (exact)", "GELU (tanh approx.)", "swish / SiLU", "sigmoid", "tanh", "softplus"):
        claims.append(
            close(
                f"{label}: hand-written derivative equals jax.grad, max |error| on the grid (float64)",
                "fnnet's own contract (every hand-written rule equals jax.grad of the same forward)",
                0.0,
                rows[label]["max_abs_err"],
                atol=tol,
                kind="fnnet",
                **R,
            )
        )

    figures = [_plot(xs, rows, out_dir)]
    metrics = {
        "grid": {"x_min": config.x_min, "x_max": config.x_max, "n_points": config.n_points, "dtype": "float64"},
        "max_abs_err_manual_vs_autodiff": {k: r["max_abs_err"] for k, r in rows.items()},
        "derivative_at_zero": {
            k: {"manual": r["at_zero_manual"], "autodiff": r["at_zero_autodiff"]} for k, r in rows.items()
        },
        "max_derivative": {k: float(r["manual"].max()) for k, r in rows.items()},
        "sigmoid_closed_form_err": sig_closed_err,
        "tanh_closed_form_err": tanh_closed_err,
    }
    return Result(metrics=metrics, claims=claims, figures=figures)


def _plot(xs: np.ndarray, rows: dict, out_dir: Path):
    plt = pyplot()
    n = len(rows)
    fig, axes = plt.subplots(3, n, figsize=(2.3 * n, 6.4), sharex=True, gridspec_kw={"height_ratios": [2, 2, 1.3]})
    step = max(1, len(xs) // 40)
    for j, (label, r) in enumerate(rows.items()):
        ax = axes[0, j]
        ax.plot(xs, r["value"], color="k")
        ax.set_title(label, fontsize=9)
        ax.axhline(0, color="0.8", lw=0.5)
        ax = axes[1, j]
        ax.plot(xs, r["manual"], color="C0", lw=2.2, label="hand-written rule")
        ax.plot(xs[::step], r["autodiff"][::step], "o", color="C1", ms=3, label="jax.grad")
        if label == "sigmoid":
            ax.axhline(0.25, color="C3", ls=":", lw=1)
            ax.text(xs[0], 0.255, "max 0.25", color="C3", fontsize=7)
            ax.set_ylim(0, 0.28)
        if label == "GELU (exact)":
            k = int(np.argmax(r["manual"]))
            ax.axhline(1.0, color="0.6", ls=":", lw=1)
            ax.plot(xs[k], r["manual"][k], "v", color="C3", ms=5)
            ax.text(xs[0], 1.0, f"max {r['manual'][k]:.3f} at x={xs[k]:.2f}\n(not bell-shaped)", color="C3",
                    fontsize=6.5, va="top")  # fmt: skip
        ax = axes[2, j]
        err = np.abs(r["manual"] - r["autodiff"])
        e_step = max(1, len(xs) // 400)
        ax.semilogy(xs[::e_step], np.maximum(err, 1e-19)[::e_step], ".", color="C2", ms=2)
        ax.set_ylim(2e-20, 1e-10)
        ax.set_xlabel("x")
    axes[0, 0].set_ylabel("f(x)")
    axes[1, 0].set_ylabel("f'(x)")
    axes[2, 0].set_ylabel("|rule − autodiff|\n(0 drawn at 1e-19)", fontsize=8)
    axes[1, 2].legend(fontsize=7, loc="center right")  # clear of the step at 0 and of both flat parts
    fig.tight_layout()
    return save_figure(
        fig,
        out_dir,
        "activations",
        "Top: each activation; middle: its derivative from fnnet's hand-written rule (line) and jax.grad (dots); "
        "bottom: their absolute difference in float64 (log scale). Dotted: σ' ≤ 1/4, and GELU' rising above 1.",
    )
