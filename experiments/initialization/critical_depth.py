"""Trainable depth near the order-to-chaos transition: 6ξ_c against the best depth-only rule.

After Schoenholz et al. 2017, "Deep Information Propagation", sec. "Experimental results", Fig. 5-6:
random tanh nets with W ~ N(0, σ_w²/n), b ~ N(0, σ_b²), σ_b² = 0.05, train when their depth is below
about 6ξ_c(σ_w²), and ξ_c diverges at the critical σ_w² ≈ 1.76, so arbitrarily deep nets train only
there. ξ_c comes from the Gauss–Hermite mean-field theory of :mod:`experiments.initialization._init_util`.

Design. A grid of σ_w² dense around the critical point, depths spanning beyond 16, and ``seeds``
independent nets per cell (each its own init draw and batch order). All σ_w² and seeds of one depth are
the models of one ``fnnet.sweep`` (SGD with momentum, manual gradients through
:func:`experiments.initialization._init_nets.mlp`). A model *trains* when its training accuracy after
the budget reaches ``trained_acc``; a cell trains when most of its seeds do.

The theory has no free parameter. Its trivial rival, "trains iff depth ≤ D₀", ignores σ_w² and gets its
one parameter D₀ fitted to the very cells it is scored on; a grid on which the rival does as well as the
theory cannot tell the theory from no theory. The claim compares the two on every cell and on the cells
where they disagree (the cells that carry the theory).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, PointCache, Result, point_cache, pyplot, save_figure
from experiments.initialization import _init_nets as N
from experiments.initialization import _init_util as U
from fnnet.optim import sgd
from fnnet.sweeps import stack, sweep

NAME = "critical_depth"
TITLE = (
    f"Trainable depth near criticality: 6ξ_c against the best depth-only rule (after {src.SCHOENHOLZ_2017.short}, "
    "Fig. 5-6)"
)

SRC = src.SCHOENHOLZ_2017.cite('sec. "Experimental results" and Fig. 5-6 (trainable depth ≈ 6ξ_c)')
SRC_DIV = src.SCHOENHOLZ_2017.cite("abstract and Fig. 6 (ξ_c, and so the trainable depth, diverges at criticality)")
DIVERGENCE_DEPTH = 200  # the grid must reach this depth to see the divergence: many times 6ξ_c off criticality


@dataclasses.dataclass(frozen=True)
class Config:
    sb2: float = 0.05
    sw2: tuple[float, ...] = (0.3, 0.5, 0.8, 1.2, 1.5, 1.65, 1.76, 1.9, 2.2, 3.0, 8.0)
    depths: tuple[int, ...] = (4, 8, 16, 32)
    seeds: int = 5
    width: int = 24
    batch: int = 32
    n_train: int = 512
    epochs: int = 20
    lr: float = 0.005
    momentum: float = 0.9
    trained_acc: float = 0.2  # "trains": training accuracy at least twice chance
    seed: int = 0


PRESETS = {
    "tiny": Config(sw2=(0.3, 1.76, 8.0), depths=(2, 4), seeds=5, width=8, n_train=128, epochs=2),
    "quick": Config(),
    "full": Config(
        sw2=(0.3, 0.5, 0.8, 1.0, 1.2, 1.4, 1.5, 1.6, 1.7, 1.76, 1.82, 1.9, 2.0, 2.2, 2.5, 3.0, 4.0, 8.0),
        depths=(8, 16, 32, 64, 128, 256),
        width=128,
        batch=128,
        n_train=4000,
        epochs=60,
        lr=0.001,
    ),
}


def _scale(params, sw2: float, sb2: float):
    """W ← W·√(σ_w²/fan_in), b ← b·σ_b for params drawn as N(0, 1) (every Dense of an :func:`N.mlp`)."""
    if isinstance(params, dict) and "W" in params:
        return {"W": params["W"] * math.sqrt(sw2 / params["W"].shape[-2]), "b": params["b"] * math.sqrt(sb2)}
    if isinstance(params, tuple):
        return tuple(_scale(p, sw2, sb2) for p in params)
    return params


def _train_depth(cfg: Config, depth: int, train) -> list[list[float]]:
    """Final training accuracy, (σ_w², seed), of one sweep over every σ_w² and seed at ``depth``."""
    net = N.mlp(cfg.width, depth, "tanh", fn.initializers.normal(1.0), fn.initializers.normal(1.0), out_dim=10)
    key = jax.random.fold_in(jax.random.key(cfg.seed), depth)
    k_init, k_train = jax.random.split(key)
    raw = N.init_eager(net, (train.x.shape[1],), jax.random.split(k_init, cfg.seeds))
    seeds = [jax.tree_util.tree_map(lambda a, s=s: a[s], raw) for s in range(cfg.seeds)]
    params = stack([_scale(seeds[s], w, cfg.sb2) for w in cfg.sw2 for s in range(cfg.seeds)])
    data_keys = jax.random.split(k_train, cfg.seeds)
    res = sweep(
        net,
        fn.softmax_cross_entropy,
        params,
        train,
        keys=jax.numpy.stack([data_keys[s] for _ in cfg.sw2 for s in range(cfg.seeds)]),
        optimizer=lambda lr: sgd(lr, momentum=cfg.momentum),
        learning_rates=[cfg.lr] * (len(cfg.sw2) * cfg.seeds),
        batch_size=cfg.batch,
        epochs=cfg.epochs,
        progress=False,
    )
    acc = np.nan_to_num(np.asarray(res.history["train_accuracy"], np.float64)[:, -1], nan=0.0)
    return acc.reshape(len(cfg.sw2), cfg.seeds).tolist()


def measure(cfg: Config, cache: PointCache) -> dict[str, list[list[float]]]:
    """depth -> final training accuracy (σ_w², seed)."""
    train, _ = U.mnist1d_standardized(cfg.n_train)
    return {str(d): cache.point(f"sweep_depth{d}", lambda d=d: _train_depth(cfg, d, train)) for d in cfg.depths}


def verdicts(cfg: Config, acc: dict, xi: dict) -> dict:
    """Cells (σ_w², depth): measured verdict (most seeds train), the theory's and the best depth-only rule's."""
    sw2, depths = list(cfg.sw2), list(cfg.depths)
    got = np.asarray(
        [[np.mean(np.asarray(acc[str(d)][i]) >= cfg.trained_acc) > 0.5 for d in depths] for i in range(len(sw2))]
    )
    theory = np.asarray([[d <= 6 * xi[str(s)] for d in depths] for s in sw2])
    # the rival's one parameter, fitted to the measurements: D0 in {0} ∪ depths (ties: the smallest D0)
    best = max(([0] + depths), key=lambda d0: (int(np.sum((np.asarray(depths)[None, :] <= d0) == got)), -d0))
    rival = np.broadcast_to(np.asarray(depths)[None, :] <= best, got.shape)
    split = theory != rival
    return {
        "trains": got.tolist(),
        "theory": theory.tolist(),
        "rival": rival.tolist(),
        "rival_D0": int(best),
        "theory_right": int(np.sum(theory == got)),
        "rival_right": int(np.sum(rival == got)),
        "cells": int(got.size),
        "disputed": int(np.sum(split)),
        "theory_right_disputed": int(np.sum(split & (theory == got))),
        "max_trained_depth": [int(max([0] + [d for j, d in enumerate(depths) if got[i, j]])) for i in range(len(sw2))],
    }


def run(config: Config, out_dir: Path) -> Result:
    cfg = config
    xi = {str(s): U.mean_field("tanh", float(s), cfg.sb2)["xi_c"] for s in cfg.sw2}
    sw_c = U.critical_sw2("tanh", cfg.sb2)
    fine = np.unique(np.concatenate([np.linspace(min(cfg.sw2), max(cfg.sw2), 80), [sw_c]]))
    xi_fine = [U.mean_field("tanh", float(s), cfg.sb2)["xi_c"] for s in fine]
    acc = measure(cfg, point_cache(out_dir, config))
    v = verdicts(cfg, acc, xi)
    metrics = {"sw2_critical": sw_c, "xi_c": xi, "train_accuracy": acc, "verdicts": v}
    return Result(
        metrics=metrics,
        claims=_claims(cfg, v, xi, sw_c),
        figures=[_figure(cfg, acc, v, fine, xi_fine, out_dir)],
    )


def _claims(cfg: Config, v: dict, xi: dict, sw_c: float) -> list[Claim]:
    setting = (
        f"width {cfg.width}, {cfg.epochs} epochs of {cfg.n_train // cfg.batch} SGD steps (momentum {cfg.momentum}, "
        f"lr {cfg.lr}, batch {cfg.batch}) on {cfg.n_train} MNIST-1D examples, σ_b² = {cfg.sb2}; a cell trains when "
        f"most of its {cfg.seeds} seeds reach training accuracy {cfg.trained_acc}"
    )
    wins = v["theory_right_disputed"] > v["disputed"] - v["theory_right_disputed"]
    ok = v["theory_right"] > v["rival_right"] and wins
    out = [
        Claim(
            "nets train where depth ≲ 6ξ_c and fail beyond it, and 6ξ_c predicts trainability better than the best "
            "depth-only rule 'trains iff depth ≤ D₀'",
            SRC,
            "theory right in more cells than the rival, and in most of the cells where the two disagree",
            {
                "theory_right": f"{v['theory_right']}/{v['cells']}",
                "rival_right": f"{v['rival_right']}/{v['cells']} (D₀ = {v['rival_D0']}, fitted)",
                "theory_right_where_they_disagree": f"{v['theory_right_disputed']}/{v['disputed']}",
            },
            "counts of cells, compared",
            bool(ok),
            f"{setting}; the rival's D₀ is fitted to these cells, the theory has no free parameter. Schoenholz et "
            "al. trained width-300 nets far longer; at a small budget deep nets near criticality may not have "
            "finished training, which the theory does not model",
            "source",
            cfg.seeds,
            f"seed spread: each cell's verdict is the majority of {cfg.seeds} seeds; the theory must beat the rival "
            "outright",
        )
    ]
    near = int(np.argmin([abs(s - sw_c) for s in cfg.sw2]))
    mt = v["max_trained_depth"]
    top = max(cfg.depths)
    grows = mt[near] == top and mt[0] < top and mt[-1] < top
    reach = top >= DIVERGENCE_DEPTH
    out.append(
        Claim(
            f"the trainable depth diverges at criticality (σ_w² ≈ {sw_c:.2f}): the deepest net of the grid trains "
            "there, and the trainable depth falls off on both sides",
            SRC_DIV,
            f"deepest trained depth {top} at σ_w² = {cfg.sw2[near]}, less than {top} at σ_w² = {cfg.sw2[0]} and "
            f"{cfg.sw2[-1]}",
            {str(s): d for s, d in zip(cfg.sw2, mt)},
            "as stated",
            bool(grows),
            f"{setting}; 6ξ_c = {', '.join(f'{s}: {6 * xi[str(s)]:.0f}' for s in cfg.sw2)}"
            + (
                ""
                if reach
                else f"; inconclusive at this scale: the grid stops at depth {top}, below 6ξ_c of most σ_w² on it, so "
                "a divergence cannot be told from a wide plateau; the full preset (depths up to "
                f"{max(PRESETS['full'].depths)}, width {PRESETS['full'].width}, {PRESETS['full'].epochs} epochs, "
                f"σ_w² {PRESETS['full'].sw2}) answers it"
            ),
            "source" if reach else "inconclusive",
            cfg.seeds,
            f"seed spread: a depth counts as trained when most of {cfg.seeds} seeds train",
        )
    )
    return out


def _figure(cfg: Config, acc: dict, v: dict, fine, xi_fine, out_dir: Path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    frac = np.asarray(
        [[np.mean(np.asarray(acc[str(d)][i]) >= cfg.trained_acc) for i in range(len(cfg.sw2))] for d in cfg.depths]
    )
    im = ax.pcolormesh(
        np.arange(len(cfg.sw2) + 1), np.arange(len(cfg.depths) + 1), frac, vmin=0, vmax=1, cmap="viridis"
    )
    fig.colorbar(im, ax=ax, label=f"fraction of {cfg.seeds} seeds reaching train acc. {cfg.trained_acc}")
    ax.set_xticks(np.arange(len(cfg.sw2)) + 0.5, [str(s) for s in cfg.sw2])
    ax.set_yticks(np.arange(len(cfg.depths)) + 0.5, [str(d) for d in cfg.depths])
    xs = np.interp(fine, cfg.sw2, np.arange(len(cfg.sw2)) + 0.5)
    ys = np.interp(
        np.log(6 * np.asarray(xi_fine)), np.log(cfg.depths), np.arange(len(cfg.depths)) + 0.5, left=-1, right=99
    )
    ax.plot(xs, ys, "w--", lw=2, label="6ξ_c (theory, no free parameter)")
    d0 = v["rival_D0"]
    y0 = list(cfg.depths).index(d0) + 1 if d0 in cfg.depths else 0  # the rival's boundary, between rows
    everything = " = every cell trains" if d0 == max(cfg.depths) else (" = no cell trains" if not d0 else "")
    ax.axhline(y0, color="C1", ls=":", lw=3, clip_on=False, zorder=5, label=f"rival: depth ≤ {d0} (fitted{everything})")
    th, got = np.asarray(v["theory"]), np.asarray(v["trains"])
    for i in range(len(cfg.sw2)):
        for j in range(len(cfg.depths)):
            if th[i, j] != got[i, j]:
                ax.plot(i + 0.5, j + 0.5, "x", color="r", ms=12, mew=2.5)
    ax.plot([], [], "x", color="r", ms=9, mew=2.5, label="theory ≠ measurement")
    ax.set_ylim(0, len(cfg.depths))
    ax.set_xlabel("σ_w² (grid dense around the critical point)")
    ax.set_ylabel("depth L")
    ax.legend(loc="upper left", bbox_to_anchor=(1.25, 1.0), fontsize=8, facecolor="0.6", framealpha=1.0)
    fig.tight_layout()
    caption = (
        "Fraction of seeds that train, tanh MLPs on MNIST-1D over σ_w² × depth; white dashed L = 6ξ_c, orange "
        "dotted the fitted depth-only rival, red crosses the cells the theory gets wrong."
    )
    return save_figure(fig, out_dir, "critical_depth", caption)
