"""Backward signal: a unit gradient back-propagated through random nets of depth 1 to 50.

Part A (the texts' figure, shared/references/002 "Vanishing and Exploding Gradients"): for every
activation × initializer, nets of width n with random N(0, I) inputs; for each depth D in a list, a
unit vector u (‖u‖ = 1 per example) is set as ∂L/∂h_D and the layers' hand-written backward rules
carry it down to h_1. All depths run in one reverse ``lax.scan``: the gradient tensor has a depth
axis, and row D receives u when the scan reaches layer D, so row D is exactly the first D layers
of one deep random net. Theory: E‖∂L/∂h_{l−1}‖² = σ_w² E[φ′(z_l)²] · E‖∂L/∂h_l‖², with q_l from the
forward recursion (Gauss–Hermite quadrature).

Part B (Glorot & Bengio 2010, Fig. 6-7 and eq. 14) and part C (their Fig. 2) live in
:mod:`experiments.initialization._init_glorot`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import fnnet as fn
from experiments._common import Claim, Result, close, pyplot, save_figure
from experiments.initialization import _init_glorot as G
from experiments.initialization import _init_nets as N
from experiments.initialization import _init_util as U

NAME = "gradient_propagation"
TITLE = "Backward signal: unit gradients through random nets of depth 1-50; Glorot & Bengio's Fig. 2, 6-7, eq. 14"

TEXT = "shared/references/002, 'Vanishing and Exploding Gradients' (figure and 0.25^(L-1) bound)"


@dataclasses.dataclass(frozen=True)
class Config:
    width: int = 128
    depths: tuple[int, ...] = (1, 2, 3, 5, 10, 15, 20, 30, 40, 50)
    batch: int = 8
    seeds: int = 5
    acts: tuple[str, ...] = tuple(U.ACTS)
    inits: tuple[str, ...] = U.INITS
    glorot: G.GlorotConfig = G.GlorotConfig()
    seed: int = 0


PRESETS = {
    "tiny": Config(
        width=16,
        depths=(1, 2, 4, 6),
        batch=4,
        seeds=2,
        acts=("sigmoid", "relu"),
        inits=("xavier_normal", "he_normal", "N(0,1)"),
        glorot=G.GlorotConfig(width=16, batch=32, seeds=2, steps=40, probe=32, every=10),
    ),
    "quick": Config(),
    "full": Config(width=256, depths=tuple(range(1, 51)), batch=32, seeds=8, glorot=G.GlorotConfig.full()),
}


def _rms_norm(g: jax.Array) -> jax.Array:
    """sqrt(mean_b ‖g_b‖²) = ‖g‖_F / √B over the last two axes, safe from underflow (≈1e-31 at depth 50)."""
    return N.safe_norm(g, (-2, -1)) / np.sqrt(g.shape[-2])


def _depth_sweep(cfg: Config, key: jax.Array) -> dict:
    """{act: (I, S, K) RMS ‖∂L/∂h_1‖ of depth-D_k nets; (I, S, L) ‖∂L/∂W_l‖ of the deepest net}."""
    acts, inits, n, L = cfg.acts, cfg.inits, cfg.width, max(cfg.depths)
    depths = jnp.asarray(cfg.depths)
    vv = lambda f: jax.vmap(jax.vmap(f))  # noqa: E731  over (init, seed)
    dense = fn.Dense(n)
    k_x, k_u, k_w = jax.random.split(key, 3)
    x = jax.random.normal(k_x, (cfg.batch, n))
    u = jax.random.normal(k_u, (len(cfg.depths), cfg.batch, n))
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)  # unit gradient per example
    I, S, K = len(inits), cfg.seeds, len(cfg.depths)

    @jax.jit
    def run_all(layer_keys):  # (L, S) keys
        def fwd(h, keys):
            shared = N.draw_shared(inits, acts, keys, n, n)
            out, caches = {}, {}
            for a in acts:
                z, cd = vv(dense.forward)(N.assemble(shared, inits, a), h[a])
                out[a], ca = U.act_layer(a).forward((), z)
                caches[a] = (cd, ca)
            return out, (shared, caches)

        h0 = {a: jnp.broadcast_to(x, (I, S) + x.shape) for a in acts}
        _, (shared, caches) = lax.scan(fwd, h0, layer_keys)

        def bwd(g, inp):
            l, shared, caches = inp  # layer l = 1..L, its output is h_l
            out_g, out_norm, out_w = {}, {}, {}
            for a in acts:
                cd, ca = caches[a]
                inject = (depths == l).astype(x.dtype)[:, None, None] * u  # (K, B, n)
                ga = g[a] + inject[None, None]
                out_norm[a] = _rms_norm(ga)  # (I, S, K)
                p = N.assemble(shared, inits, a)
                ca_k = jax.tree_util.tree_map(lambda c: c[:, :, None], ca)
                _, dz = U.act_layer(a).backward((), ca_k, ga)
                dw, _ = vv(dense.backward)(p, cd, dz[:, :, -1] / cfg.batch)  # deepest net, batch-mean loss
                out_w[a] = N.safe_norm(dw["W"], (-2, -1))
                _, out_g[a] = vv(jax.vmap(dense.backward, in_axes=(None, None, 0)))(p, cd, dz)
            return out_g, (out_norm, out_w)

        g0 = {a: jnp.zeros((I, S, K, cfg.batch, n), x.dtype) for a in acts}
        _, (norms, wnorms) = lax.scan(bwd, g0, (jnp.arange(1, L + 1), shared, caches), reverse=True)
        # norms[a]: (L, I, S, K), the gradient arriving at h_l; row l = 1 is ∂L/∂h_1
        return {a: (norms[a][0], jnp.moveaxis(wnorms[a], 0, -1)) for a in acts}

    layer_keys = jax.vmap(lambda k: jax.random.split(k, L), out_axes=1)(jax.random.split(k_w, S))
    return jax.device_get(run_all(layer_keys))


def _theory(act: str, init: str, cfg: Config) -> np.ndarray:
    """sqrt(Π_{l=2}^{D} σ_w² E[φ′(z_l)²]) for every D in cfg.depths (random inputs, E x² = 1)."""
    n, L = cfg.width, max(cfg.depths)
    sw2 = n * U.weight_variance(init, act, n, n)
    qz, _ = U.forward_theory(act, sw2, 1.0, sw2, L)
    chi = U.chi(act, qz, sw2)  # chi[l-1] = factor of layer l
    with np.errstate(divide="ignore"):
        logc = np.concatenate([[0.0], np.cumsum(np.log(chi[1:]))])
    return np.exp(0.5 * logc[np.asarray(cfg.depths) - 1])


def run(config: Config, out_dir: Path) -> Result:
    cfg = config
    k_a, k_b = jax.random.split(jax.random.key(cfg.seed))
    res = _depth_sweep(cfg, k_a)
    rows = {}
    for a in cfg.acts:
        norms, wn = np.asarray(res[a][0], np.float64), np.asarray(res[a][1], np.float64)
        for i, init in enumerate(cfg.inits):
            rows[f"{a}|{init}"] = {
                "act": a,
                "init": init,
                "grad_h1_median": np.median(norms[i], axis=0).tolist(),
                "grad_h1_seeds": norms[i].tolist(),
                "grad_h1_theory": _theory(a, init, cfg).tolist(),
                "weight_grad_norm_median": np.median(wn[i], axis=0).tolist(),
            }
    glorot = G.run_glorot(cfg.glorot, k_b)
    claims = _claims(rows, cfg) + G.claims(glorot, cfg.glorot)
    figures = [_figure(rows, cfg, out_dir), _figure_weights(rows, cfg, out_dir)] + G.figures(
        glorot, cfg.glorot, out_dir
    )
    metrics = {"depths": list(cfg.depths), "rows": rows, "glorot": glorot}
    return Result(metrics=metrics, claims=claims, figures=figures)


def _at(row: dict, cfg: Config, depth: int, key: str = "grad_h1_median") -> float:
    return float(row[key][list(cfg.depths).index(depth)]) if depth in cfg.depths else float("nan")


def _claims(rows: dict, cfg: Config) -> list[Claim]:
    claims, L = [], max(cfg.depths)
    seeds = f"{cfg.seeds} seeds, width {cfg.width}, {cfg.batch} examples each"

    def seed_range(r, d):
        v = np.asarray(r["grad_h1_seeds"], np.float64)[:, list(cfg.depths).index(d)]
        return f"seeds span [{np.min(v):.3g}, {np.max(v):.3g}]"

    r = rows.get("sigmoid|xavier_normal")
    if r is not None:
        m, t = _at(r, cfg, L), _at(r, cfg, L, "grad_h1_theory")
        claims.append(
            Claim(
                f"sigmoid + Xavier: ‖∂L/∂h_1‖ decays by orders of magnitude with depth (D = {L})",
                TEXT,
                f"< 1e-3 (theory {t:.3g})",
                m,
                "< 1e-3",
                bool(m < 1e-3),
                f"median of {seeds}; {seed_range(r, L)}",
            )
        )
        claims.append(
            close(
                f"sigmoid + Xavier: ‖∂L/∂h_1‖ at D = {L} matches the mean-field product Π σ_w² E[σ′(z_l)²]",
                "Poole et al. 2016 / Schoenholz et al. 2017, eq. 9 (backward recursion)",
                t,
                m,
                rtol=0.5,
                note=f"±50% on a product of {L - 1} per-layer factors; {seeds}",
            )
        )
        if 20 in cfg.depths:
            m20 = _at(r, cfg, 20)
            bound = 0.25**19
            claims.append(
                close(
                    "the text's arithmetic: 0.25^(L−1) at L = 20 is about 3.6e−12",
                    TEXT,
                    3.6e-12,
                    bound,
                    rtol=0.02,
                )
            )
            wn = _spectral_norm_xavier(cfg)
            claims.append(
                Claim(
                    "sigmoid + Xavier, D = 20: measured ‖∂L/∂h_1‖ (unit gradient at h_20) is at most 0.25^(L−1) = "
                    "3.6e−12",
                    TEXT,
                    f"<= {bound:.3g}",
                    m20,
                    "measured <= bound",
                    bool(m20 <= bound),
                    f"{seed_range(r, 20)}; the text assumes ‖W‖₂ ≈ 1, but a {cfg.width}×{cfg.width} Xavier draw has "
                    f"‖W‖₂ = {wn:.2f}, so the strict bound Π‖W_l‖₂·0.25^19 = {wn**19 * bound:.2g}; a random "
                    "direction sees gain √(σ_w² E σ′²) ≈ 0.24 per layer, hence the typical value sits near the text's",
                )
            )
    r = rows.get("relu|he_normal")
    if r is not None:
        m = _at(r, cfg, L)
        claims.append(
            Claim(
                f"ReLU + He: ‖∂L/∂h_1‖ stays of order 1 at every depth up to {L}",
                TEXT + "; He et al. 2015, eq. 13",
                "in [0.1, 10] (theory 1)",
                m,
                "[0.1, 10]",
                bool(all(0.1 <= v <= 10 for v in r["grad_h1_median"])),
                f"median of {seeds}; {seed_range(r, L)}",
            )
        )
    r = rows.get("relu|N(0,1)")
    if r is not None and 5 in cfg.depths:
        m = (_at(r, cfg, 5) / _at(r, cfg, 1)) ** 0.25
        claims.append(
            close(
                "ReLU without rescaling (N(0,1) weights) explodes: ‖∂L/∂h_1‖ grows by √(n/2) per layer",
                TEXT + "; He et al. 2015, eq. 13 with n Var[w] = n",
                float(np.sqrt(cfg.width / 2)),
                m,
                rtol=0.1,
                note=f"per-layer factor from D = 1 to 5 (the forward pass overflows float32 near layer "
                f"{int(np.log(3e38) / np.log(cfg.width / 2))}); {seeds}",
            )
        )
    return claims


def _spectral_norm_xavier(cfg: Config) -> float:
    w = fn.initializers.glorot_normal()(jax.random.key(cfg.seed + 1), (cfg.width, cfg.width))
    return float(np.linalg.norm(np.asarray(w, np.float64), 2))


def _figure(rows: dict, cfg: Config, out_dir: Path):
    plt = pyplot()
    n = len(cfg.acts)
    cols = min(3, n)
    nr = (n + cols - 1) // cols
    fig, axes = plt.subplots(nr, cols, figsize=(5.2 * cols, 3.9 * nr), squeeze=False, sharex=True)
    d = np.asarray(cfg.depths)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax, act in zip(axes.flat, cfg.acts):
        for i, init in enumerate(cfg.inits):
            r = rows[f"{act}|{init}"]
            m, t = np.asarray(r["grad_h1_median"], np.float64), np.asarray(r["grad_h1_theory"], np.float64)
            ok = np.isfinite(m) & (m > 0)
            ax.plot(d[ok], m[ok], "o-", ms=3, color=colors[i % 10], lw=1.3, label=init)
            ok = np.isfinite(t) & (t > 0)
            ax.plot(d[ok], t[ok], "--", color="k", lw=0.7, alpha=0.6)
        if act == "sigmoid" and 20 in cfg.depths:
            ax.plot([20], [0.25**19], "k*", ms=10, label="0.25^19 (text)")
        ax.set_yscale("log")
        ax.set_ylim(1e-30, 1e30)
        ax.set_title(act)
        ax.set_ylabel("‖∂L/∂h_1‖ (unit gradient at h_D)")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("depth D (layers)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    h, lab = axes[0, 0].get_legend_handles_labels()
    h.append(plt.Line2D([], [], color="k", ls="--", lw=0.7))
    lab.append("theory Π σ_w² E[φ′²]")
    fig.legend(h, lab, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    caption = (
        f"Gradient norm at the first hidden layer after back-propagating a unit gradient through D random layers "
        f"(width {cfg.width}, median of {cfg.seeds} seeds); dashed: mean-field theory. Zero init gives exactly 0 "
        "beyond D = 1."
    )
    return save_figure(fig, out_dir, "grad_vs_depth", caption)


def _figure_weights(rows: dict, cfg: Config, out_dir: Path):
    plt = pyplot()
    pairs = [("sigmoid", "xavier_normal"), ("tanh", "xavier_normal"), ("relu", "he_normal"), ("relu", "xavier_normal")]
    pairs = [p for p in pairs if f"{p[0]}|{p[1]}" in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for a, i in pairs:
        w = np.asarray(rows[f"{a}|{i}"]["weight_grad_norm_median"], np.float64)
        ok = np.isfinite(w) & (w > 0)
        ax.plot(np.arange(1, len(w) + 1)[ok], w[ok], label=f"{a} + {i}")
    ax.set_yscale("log")
    ax.set_xlabel("layer l")
    ax.set_ylabel("‖∂L/∂W_l‖_F (median over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    caption = (
        f"Per-layer weight-gradient norms of the depth-{max(cfg.depths)} net under a unit output gradient "
        "(batch-mean loss)."
    )
    return save_figure(fig, out_dir, "weight_grads_by_layer", caption)
