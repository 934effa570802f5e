"""Exponential expressivity: the length of a circle of inputs through random tanh nets.

After Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos",
sec. 4-5 and Fig. 3-4: a great circle of inputs x⁰(θ) = √(n q₀)(u₀ cos θ + u₁ sin θ) goes through a
random tanh net (W ~ N(0, σ_w²/n), b ~ N(0, σ_b²)), its radius set so that every layer sits at the fixed
point q*. In the mean-field limit the tangent vector ∂z^l/∂θ gains the factor χ₁ = σ_w² E[φ′(z)²] in
squared norm per layer, so the length ℒ^l = ∫ ‖∂z^l/∂θ‖ dθ of the curve of pre-activations changes by
√χ₁ per layer: it grows exponentially with depth in the chaotic phase (χ₁ > 1) and shrinks in the ordered
phase (χ₁ < 1).

Measured: the tangent ∂z^l/∂θ is carried forward exactly (no finite differences between points):
∂z^l = W^l ∂x^{l−1} through fnnet's Dense forward with zero bias, and ∂x^l = φ′(z^l) ⊙ ∂z^l through the
Tanh layer's hand-written rule (for an elementwise map the rule applied to a tangent is its
Jacobian-vector product). ℒ^l is the mean of ‖∂z^l/∂θ‖ over ``points`` angles times 2π.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, pyplot, save_figure
from experiments.initialization import _init_util as U

NAME = "expressivity"
TITLE = f"Exponential expressivity: trajectory length through random tanh nets (after {src.POOLE_2016.short})"

SRC = src.POOLE_2016.cite("sec. 4-5 and Fig. 3-4 (length of a circle grows as √χ₁ per layer in the chaotic phase)")


@dataclasses.dataclass(frozen=True)
class Config:
    sb2: float = 0.05
    sw2: tuple[float, ...] = (1.0, 2.5, 4.0)
    width: int = 256
    depth: int = 16
    points: int = 100
    seeds: int = 5
    bootstrap: int = 200
    seed: int = 0


PRESETS = {
    "tiny": Config(sw2=(1.0, 4.0), width=32, depth=4, points=16, seeds=5, bootstrap=20),
    "quick": Config(),
    "full": Config(sw2=(0.8, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0), width=1000, depth=30, points=400, seeds=8),
}


def measure(cfg: Config, key) -> np.ndarray:
    """(ℒ^l, Q^l) for l = 1..depth, shape (Σ, S, 2, depth)."""
    n, L = cfg.width, cfg.depth
    dense, tanh = fn.Dense(n), fn.Tanh()
    k_u, k_w = jax.random.split(key)
    u = jnp.linalg.qr(jax.random.normal(k_u, (n, 2)))[0].T  # two orthonormal directions (2, n)
    theta = jnp.linspace(0.0, 2 * math.pi, cfg.points, endpoint=False)[:, None]
    u0, u1 = u[0][None, :], u[1][None, :]
    circle = jnp.cos(theta) * u0 + jnp.sin(theta) * u1  # (P, n), unit radius
    tangent = -jnp.sin(theta) * u0 + jnp.cos(theta) * u1

    def one(sw2, radius, keys):
        sw = jnp.sqrt(sw2)

        def layer(carry, k):
            x, dx = carry
            kw, kb = jax.random.split(k)
            w = jax.random.normal(kw, (n, n)) * sw / math.sqrt(n)
            b = jax.random.normal(kb, (n,)) * math.sqrt(cfg.sb2)
            z, _ = dense.forward({"W": w, "b": b}, x)
            dz, _ = dense.forward({"W": w, "b": jnp.zeros(n)}, dx)
            y, cache = tanh.forward((), z)
            _, dy = tanh.backward((), cache, dz)
            sq = jnp.sum(dz * dz, axis=-1)
            return (y, dy), jnp.stack([2 * math.pi * jnp.mean(jnp.sqrt(sq)), jnp.mean(sq)])

        _, out = lax.scan(layer, (radius * circle, radius * tangent), keys)
        return out.T  # (2, L): length ℒ^l and mean squared speed Q^l = mean_θ ‖∂z^l/∂θ‖²

    sw2 = jnp.asarray(cfg.sw2)
    radius = jnp.asarray(
        [math.sqrt(n * max(U.q_star("tanh", s, cfg.sb2) - cfg.sb2, 0.0) / s) for s in cfg.sw2]
    )  # ‖x⁰‖² = n q₀ with σ_w² q₀ + σ_b² = q*
    keys = jax.vmap(lambda k: jax.random.split(k, L))(jax.random.split(k_w, cfg.seeds))  # (S, L)
    f = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(0, 0, None)))
    return np.asarray(jax.device_get(f(sw2, radius, keys)), np.float64)


def run(config: Config, out_dir: Path) -> Result:
    cfg = config
    m = measure(cfg, jax.random.key(cfg.seed))
    theory = {str(s): U.mean_field("tanh", float(s), cfg.sb2) for s in cfg.sw2}
    rows = {}
    rng = np.random.default_rng(cfg.seed)
    for i, s in enumerate(cfg.sw2):
        lg, q = m[i, :, 0], m[i, :, 1]  # (S, L)

        def factor(q):  # the recursion is for E Q^l: a ratio of seed means, not a mean of ratios
            return float((q[:, -1].mean() / q[:, 0].mean()) ** (0.5 / (cfg.depth - 1)))

        boot = [factor(q[rng.integers(0, cfg.seeds, cfg.seeds)]) for _ in range(cfg.bootstrap)]
        rows[str(s)] = {
            "chi1": theory[str(s)]["chi1"],
            "factor_theory": math.sqrt(theory[str(s)]["chi1"]),
            "factor": factor(q),
            "factor_bootstrap_std": float(np.std(boot)),
            "factor_seeds_geometric": ((lg[:, -1] / lg[:, 0]) ** (1.0 / (cfg.depth - 1))).tolist(),
            "length_seeds": lg.tolist(),
        }
    return Result(
        metrics={"rows": rows, "width": cfg.width, "points": cfg.points},
        claims=_claims(cfg, rows),
        figures=[_figure(cfg, rows, out_dir)],
    )


def _claims(cfg: Config, rows: dict) -> list:
    out = []
    for s, r in rows.items():
        chaotic = r["chi1"] > 1
        tol = U.SE_FACTOR * r["factor_bootstrap_std"]
        out.append(
            Claim(
                f"σ_w² = {s} ({'chaotic' if chaotic else 'ordered'}, χ₁ = {r['chi1']:.3f}): the length of a circle of "
                f"inputs {'grows' if chaotic else 'shrinks'} exponentially with depth, by √χ₁ per layer",
                SRC,
                r["factor_theory"],
                r["factor"],
                f"atol {tol:.3g}",
                bool(abs(r["factor"] - r["factor_theory"]) <= tol),
                f"(E Q^{cfg.depth} / E Q^1)^(1/(2·{cfg.depth - 1})), Q^l = mean over {cfg.points} angles of "
                f"‖∂z^l/∂θ‖², E the mean over seeds; width {cfg.width}, σ_b² = {cfg.sb2}, inputs at q*; per-seed "
                f"geometric factors of the length ℒ itself: {[round(x, 4) for x in r['factor_seeds_geometric']]} (a "
                "mean of logs, biased low by O(1/width))",
                "source",
                cfg.seeds,
                f"seed spread: {U.SE_FACTOR:g} × the standard deviation over {cfg.bootstrap} bootstrap resamples "
                f"of the {cfg.seeds} seeds",
            )
        )
    return out


def _figure(cfg: Config, rows: dict, out_dir: Path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    layers = np.arange(1, cfg.depth + 1)
    for i, (s, r) in enumerate(rows.items()):
        lg = np.asarray(r["length_seeds"])
        med = np.median(lg, 0)
        ax.semilogy(layers, med, "o", ms=4, color=f"C{i}", label=f"σ_w² = {s} (measured, median)")
        ax.fill_between(layers, lg.min(0), lg.max(0), color=f"C{i}", alpha=0.2)
        ax.semilogy(layers, med[0] * r["factor_theory"] ** (layers - 1), "-", lw=1, color=f"C{i}")
    ax.plot([], [], "k-", lw=1, label="theory: ℒ¹·(√χ₁)^(l−1)")
    ax.set_xlabel("layer l")
    ax.set_ylabel("length ℒ^l of the curve of pre-activations")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    caption = (
        f"Length of a great circle of inputs through random tanh nets (width {cfg.width}, {cfg.seeds} seeds, band: "
        "seed range); lines: growth by √χ₁ per layer."
    )
    return save_figure(fig, out_dir, "trajectory_length", caption)
