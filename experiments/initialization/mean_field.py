"""Mean-field theory of deep tanh nets (Poole et al. 2016; Schoenholz et al. 2017), computed and measured.

Weights W_ij ~ N(0, σ_w²/n), biases ~ N(0, σ_b²), σ_b² = 0.05 as in Schoenholz et al. Theory, by
Gauss–Hermite quadrature (:mod:`experiments.initialization._init_util`): the fixed point q*, χ₁ = σ_w² E[φ′(√q* z)²]
(order for χ₁ < 1, chaos for χ₁ > 1), the critical σ_w² where χ₁ = 1, the correlation map's fixed
point c* and its depth scale ξ_c = −1/ln χ_c.

Measured (:mod:`experiments.initialization._init_meanfield`) on random nets built from fnnet's Dense/Tanh forward
and backward rules (weights drawn layer by layer inside a ``lax.scan``, vmapped over σ_w² and seeds):
the decay of the correlation between two inputs (→ ξ_c), the per-layer decay of E(∂L/∂z_l)² (→ χ₁),
and trainability: training accuracy of MNIST-1D nets after a fixed SGD budget over σ_w² × depth
(``fnnet.sweep``), against the trainable-depth curve L ≈ 6ξ_c. Part 5, the Jacobian spectra of
Pennington et al. 2017, is in :mod:`experiments.initialization._init_jacobian`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from experiments._common import Claim, Result, close, point_cache, pyplot, save_figure
from experiments.initialization import _init_jacobian as J
from experiments.initialization import _init_meanfield as M
from experiments.initialization import _init_util as U

NAME = "mean_field"
TITLE = "Mean-field theory of deep tanh nets: q*, χ₁, order-to-chaos, depth scales, trainability, Jacobian spectra"

SRC_P = "Poole et al. 2016, eq. 3-5"
SRC_S = "Schoenholz et al. 2017, eq. 5-9 and Fig. 5-6 (trainable depth ≈ 6ξ_c)"


@dataclasses.dataclass(frozen=True)
class Config:
    sb2: float = 0.05
    sw2_measure: tuple[float, ...] = (1.0, 1.25, 1.5, 2.5, 3.0, 4.0)
    width: int = 256
    depth: int = 40
    pairs: int = 8
    seeds: int = 16  # width-n fluctuations of c are shared by all pairs of one net: seeds, not pairs, beat them down
    chaos_offset: float = 0.25  # chaotic σ_w²: pairs start at c* + this (near the linear regime)
    fit_floor: float = 0.015  # chaotic σ_w²: fit |c_l − c*| down to this, or 3 standard errors if larger
    sw2_train: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
    train_depths: tuple[int, ...] = (8, 16, 32, 64)
    train_width: int = 32
    train_batch: int = 32
    n_train: int = 1000
    epochs: int = 20
    lr: float = 0.005
    trained_acc: float = 0.2  # "trainable": training accuracy at least twice chance
    jacobian: J.JacobianConfig = J.JacobianConfig()
    theory_grid: int = 33  # σ_w² points in [0.5, 4.5] for the theory curves
    seed: int = 0


PRESETS = {
    "tiny": Config(
        sw2_measure=(1.0, 3.0),
        width=32,
        depth=8,
        pairs=4,
        seeds=2,
        sw2_train=(1.0, 3.0),
        train_depths=(4,),
        train_width=8,
        n_train=128,
        epochs=1,
        jacobian=J.JacobianConfig(width=8, depths=(2, 4), seeds=2),
        theory_grid=5,
    ),
    "quick": Config(),
    "full": Config(
        width=1000,
        depth=100,
        pairs=64,
        seeds=8,
        sw2_train=tuple(float(x) for x in np.round(np.arange(1.0, 4.01, 0.25), 2)),
        train_depths=(10, 20, 30, 40, 50, 60, 80, 100),
        train_width=256,
        train_batch=128,
        n_train=4000,
        epochs=60,
        jacobian=J.JacobianConfig.full(),
    ),
}


def run(config: Config, out_dir: Path) -> Result:
    cfg = config
    tick, timings = time.perf_counter(), {}

    def lap(name):
        nonlocal tick
        now = time.perf_counter()
        timings[name] = now - tick
        tick = now

    k_m, k_j = jax.random.split(jax.random.key(cfg.seed))
    grid = np.round(np.linspace(0.5, 4.5, cfg.theory_grid), 3)
    theory = {
        str(s): U.mean_field("tanh", float(s), cfg.sb2)
        for s in sorted(set(grid) | set(cfg.sw2_measure) | set(cfg.sw2_train))
    }
    sw_c = U.critical_sw2("tanh", cfg.sb2)
    lap("theory_s")
    meas = M.measure(cfg, k_m, theory)
    lap("depth_scales_s")
    scales = {}
    for i, s in enumerate(cfg.sw2_measure):
        t = theory[str(s)]
        c_mean = meas["c"][i].mean(0)
        # each net's c_l wanders around c* by O(1/√n); fit only above 3 standard errors of the seed mean
        floor = float(max(cfg.fit_floor, 3 * float(meas["c"][i][:, -1].std()) / np.sqrt(cfg.seeds)))
        xi, idx = M.xi_fit(c_mean, t["c_star"], t["c_star"] > 0.999, floor)
        c_th = [c_mean[0]]
        for _ in range(cfg.depth - 1):
            c_th.append(min(U.c_map("tanh", c_th[-1], t["q_star"], s, cfg.sb2), 1.0))
        xi_th, _ = M.xi_fit(np.asarray(c_th), t["c_star"], t["c_star"] > 0.999, floor)
        qdz = meas["qdz"][i]
        chi_seeds = (qdz[:, 0] / qdz[:, -1]) ** (1.0 / (cfg.depth - 1))
        scales[str(s)] = {
            "xi_measured": xi,
            "xi_c": t["xi_c"],
            "xi_fit_to_theory_curve": xi_th,
            "fit_layers": [j + 1 for j in idx],
            "fit_floor": floor if t["c_star"] <= 0.999 else 1e-4,
            "c_measured": c_mean.tolist(),
            "c_theory": c_th,
            "q_measured": meas["q"][i].mean(0).tolist(),
            "chi1_measured": U.spread(chi_seeds),
            "chi1": t["chi1"],
            "qdz": np.median(qdz, 0).tolist(),
        }
    heat = M.heatmap(cfg, point_cache(out_dir, config))
    lap("heatmap_s")
    jac = J.run_jacobian(cfg.jacobian, k_j)
    lap("jacobian_s")
    metrics = {
        "sw2_critical": sw_c,
        "theory": theory,
        "scales": scales,
        "heatmap_train_accuracy": heat,
        "jacobian": jac,
    }
    claims = _claims(cfg, sw_c, theory, scales, heat) + J.claims(jac, cfg.jacobian)
    figures = _figures(cfg, sw_c, grid, theory, scales, heat, out_dir) + J.figures(jac, cfg.jacobian, out_dir)
    lap("figures_s")
    return Result(metrics=metrics, claims=claims, figures=figures, timings=timings)


def _claims(cfg, sw_c, theory, scales, heat) -> list[Claim]:
    out = [
        close(
            f"the order-to-chaos transition of tanh nets with σ_b² = {cfg.sb2} sits at σ_w² where χ₁ = 1",
            "Schoenholz et al. 2017, Fig. 1 (critical line; ≈1.76 at σ_b² = 0.05)",
            1.76,
            sw_c,
            atol=0.01,
            note="computed by bisection on χ₁(σ_w²) with Gauss–Hermite quadrature; "
            "the expected value is read off the paper's phase diagram",
        )
    ]
    setting = f"width {cfg.width}, depth {cfg.depth}, {cfg.pairs} input pairs × {cfg.seeds} seeds (mean over all)"
    for phase, tol in (("ordered", 0.15), ("chaotic", 0.3)):
        sel = {s: v for s, v in scales.items() if (theory[s]["c_star"] > 0.999) == (phase == "ordered")}
        if not sel:
            continue
        errs = {s: abs(v["xi_measured"] - v["xi_c"]) / v["xi_c"] for s, v in sel.items()}
        out.append(
            Claim(
                f"{phase} phase: the measured correlation depth scale matches ξ_c = −1/ln χ_c",
                SRC_S + "; " + SRC_P,
                {s: round(v["xi_c"], 2) for s, v in sel.items()},
                {s: round(v["xi_measured"], 2) for s, v in sel.items()},
                f"rtol {tol} for every σ_w²",
                bool(all(e <= tol for e in errs.values())),
                "fit of log|c_l − c*| over the layers with |c_l − c*| above "
                f"{ ({s: round(v['fit_floor'], 4) for s, v in sel.items()}) } (chaotic: 3 standard errors of the "
                f"seed mean at the last layer); "
                "the same fit on the iterated c-map gives "
                f"{ ({s: round(v['xi_fit_to_theory_curve'], 2) for s in sel for v in [sel[s]]}) }"
                f" (the map's nonlinearity before the asymptotic rate); {setting}"
                + (
                    "; in the chaotic phase each net's own c_l wanders around c* by O(1/√n), so only the first "
                    "2-3 e-folds rise above the noise; near the transition (large ξ_c) that window is too short"
                    if phase == "chaotic"
                    else ""
                ),
            )
        )
    errs = {s: abs(v["chi1_measured"]["median"] - v["chi1"]) / v["chi1"] for s, v in scales.items()}
    out.append(
        Claim(
            "the per-layer factor of E(∂L/∂z_l)² going down the net equals χ₁",
            "Schoenholz et al. 2017, eq. 9 and Fig. 3 (gradient depth scale ξ_∇ = −1/ln χ₁)",
            {s: round(v["chi1"], 4) for s, v in scales.items()},
            {s: round(v["chi1_measured"]["median"], 4) for s, v in scales.items()},
            "rtol 0.03 for every σ_w²",
            bool(all(e <= 0.03 for e in errs.values())),
            f"(E dz_1² / E dz_L²)^(1/(L−1)), median over seeds; {setting}; inputs at q*",
        )
    )
    agree, total, rows = 0, 0, []
    for d, accs in heat.items():
        for s, a in zip(cfg.sw2_train, accs):
            pred = int(d) <= 6 * theory[str(s)]["xi_c"]
            got = a >= cfg.trained_acc
            agree += pred == got
            total += 1
            rows.append((s, int(d), round(a, 3), pred))
    out.append(
        Claim(
            "nets train where depth ≲ 6ξ_c and fail beyond it",
            SRC_S,
            "prediction right in >= 80% of (σ_w², depth) cells",
            f"{agree}/{total}",
            f"trained = training accuracy >= {cfg.trained_acc}",
            bool(agree >= 0.8 * total),
            f"width {cfg.train_width}, {cfg.epochs} epochs of {cfg.n_train // cfg.train_batch} SGD steps (momentum "
            f"0.9, lr {cfg.lr}), "
            "one seed per cell; Schoenholz et al. trained width-300 nets for far longer, so at this budget the "
            "trainable "
            f"region is expected to be smaller than 6ξ_c",
        )
    )
    return out


def _figures(cfg, sw_c, grid, theory, scales, heat, out_dir: Path) -> list:
    plt = pyplot()
    figs = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    tg = [theory[str(s)] for s in grid]
    axes[0].plot(grid, [t["q_star"] for t in tg])
    axes[0].set_ylabel("q* (fixed-point variance of z)")
    axes[1].plot(grid, [t["chi1"] for t in tg])
    axes[1].axhline(1, color="k", ls=":", lw=0.8)
    axes[1].set_ylabel("χ₁ = σ_w² E[φ′(z)²]")
    axes[2].semilogy(grid, [t["xi_c"] for t in tg], label="ξ_c theory")
    ms = list(scales)
    axes[2].semilogy([float(s) for s in ms], [scales[s]["xi_measured"] for s in ms], "o", label="ξ measured")
    axes[2].set_ylabel("correlation depth scale ξ_c (layers)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.axvline(sw_c, color="C3", ls="--", lw=0.8)
        ax.set_xlabel("σ_w²")
        ax.grid(alpha=0.3)
    axes[0].text(sw_c, axes[0].get_ylim()[1] * 0.9, f" σ_w²* = {sw_c:.3f}", color="C3", fontsize=8)
    fig.tight_layout()
    figs.append(
        save_figure(
            fig,
            out_dir,
            "theory",
            f"Mean-field quantities of tanh nets, σ_b² = {cfg.sb2}, by quadrature; dashed red: the critical σ_w² (χ₁ "
            "= 1); dots: measured ξ.",
        )
    )
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, s in enumerate(ms):
        v, cs = scales[s], theory[s]["c_star"]
        layers = np.arange(1, cfg.depth + 1)
        axes[0].semilogy(
            layers,
            np.maximum(np.abs(np.asarray(v["c_measured"]) - cs), 1e-8),
            "o",
            ms=3,
            color=f"C{i}",
            label=f"σ_w²={s}",
        )
        axes[0].semilogy(layers, np.maximum(np.abs(np.asarray(v["c_theory"]) - cs), 1e-8), "-", lw=0.8, color=f"C{i}")
        qdz = np.asarray(v["qdz"])
        axes[1].semilogy(layers, qdz / qdz[-1], "o", ms=3, color=f"C{i}", label=f"σ_w²={s}")
        axes[1].semilogy(layers, v["chi1"] ** (cfg.depth - layers), "-", lw=0.8, color=f"C{i}")
    axes[0].set_ylabel("|c_l − c*| (correlation of two inputs)")
    axes[1].set_ylabel("E(∂L/∂z_l)² / E(∂L/∂z_L)²")
    for ax in axes:
        ax.set_xlabel("layer l")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    figs.append(
        save_figure(
            fig,
            out_dir,
            "depth_scales",
            f"Dots: measured (width {cfg.width}); lines: iterated c-map (left) and χ₁^(L−l) (right). Ordered σ_w² "
            "converge to c* = 1, chaotic ones to c* < 1.",
        )
    )
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    a = np.asarray([heat[str(d)] for d in cfg.train_depths])  # (D, Σ)
    im = ax.pcolormesh(
        np.arange(len(cfg.sw2_train) + 1),
        np.arange(len(cfg.train_depths) + 1),
        a,
        vmin=0.1,
        vmax=max(0.5, a.max()),
        cmap="viridis",
    )
    fig.colorbar(im, ax=ax, label="training accuracy after the budget")
    ax.set_xticks(np.arange(len(cfg.sw2_train)) + 0.5, [str(s) for s in cfg.sw2_train])
    ax.set_yticks(np.arange(len(cfg.train_depths)) + 0.5, [str(d) for d in cfg.train_depths])
    fine = np.asarray([s for s in grid if min(cfg.sw2_train) <= s <= max(cfg.sw2_train)])
    six = [6 * theory[str(s)]["xi_c"] for s in fine]
    xs = np.interp(fine, cfg.sw2_train, np.arange(len(cfg.sw2_train)) + 0.5)
    ys = np.interp(
        six, cfg.train_depths, np.arange(len(cfg.train_depths)) + 0.5, left=-1, right=len(cfg.train_depths) + 1
    )
    ax.plot(xs, ys, "w--", lw=2, label="6ξ_c (theory)")
    ax.set_ylim(0, len(cfg.train_depths))
    ax.set_xlabel("σ_w²")
    ax.set_ylabel("depth L")
    ax.legend(loc="upper right", fontsize=8)
    figs.append(
        save_figure(
            fig,
            out_dir,
            "trainability",
            f"Training accuracy of tanh MLPs on MNIST-1D after {cfg.epochs} epochs over σ_w² × depth (cells); white "
            "dashed: L = 6ξ_c (depth axis interpolated between rows).",
        )
    )
    return figs
