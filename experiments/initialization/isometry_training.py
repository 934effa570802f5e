"""Dynamical isometry speeds up learning: orthogonal against Gaussian weights in critical tanh nets.

After Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning through
dynamical isometry: theory and practice", sec. 5 and Fig. 4-5: deep tanh nets at the same critical point
(χ₁ = 1) with a small fixed point q* learn faster with orthogonal weights, whose input-output Jacobian is
well conditioned at every depth, than with Gaussian weights, whose Jacobian spectrum widens with depth
(the spectra themselves are measured in :mod:`experiments.initialization.mean_field`).

Both inits use the same (σ_w², σ_b²) on the χ₁ = 1 line with fixed point q*
(:func:`experiments.initialization.mean_field.critical_point`): Gaussian W ~ N(0, σ_w²/n), orthogonal
W = σ_w·Q. Every (init, learning rate, seed) is one model of one ``fnnet.sweep`` (SGD with momentum,
manual gradients through the scanned hidden stack of :func:`experiments.initialization._init_nets.mlp`).
The learning rate is chosen per init by the final training loss (median over seeds). Speed is the
training loss after each epoch; the claim compares the area under the training-loss curve.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, point_cache, pyplot, save_figure
from experiments.initialization import _init_nets as N
from experiments.initialization import _init_util as U
from experiments.initialization.mean_field import critical_point
from fnnet.data import Dataset
from fnnet.optim import sgd
from fnnet.sweeps import stack, sweep

NAME = "isometry_training"
TITLE = f"Orthogonal against Gaussian critical tanh nets: learning speed (after {src.PENNINGTON_2017.short}, Fig. 4-5)"

SRC = src.PENNINGTON_2017.cite("sec. 5 and Fig. 4-5 (orthogonal critical tanh nets with small q* learn faster)")
INITS = ("gaussian", "orthogonal")


@dataclasses.dataclass(frozen=True)
class Config:
    depth: int = 24
    width: int = 48
    q_star: float = 1.0 / 64
    lrs: tuple[float, ...] = (0.003, 0.01)
    momentum: float = 0.9
    seeds: int = 5
    batch: int = 32
    epochs: int = 6
    n_train: int = 2000
    seed: int = 0


PRESETS = {
    "tiny": Config(depth=4, width=8, lrs=(0.01,), seeds=5, epochs=2, n_train=256),
    "quick": Config(),
    "full": Config(
        depth=200, width=400, lrs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2), seeds=5, batch=128, epochs=40, n_train=4000
    ),
}


def _inits(cfg: Config, init: str):
    sw2, sb2 = critical_point(cfg.q_star)
    w = (
        fn.initializers.orthogonal(math.sqrt(sw2))
        if init == "orthogonal"
        else fn.initializers.normal(math.sqrt(sw2 / cfg.width))
    )
    b = fn.initializers.normal(math.sqrt(sb2)) if sb2 > 0 else fn.initializers.zeros()
    return w, b


def _train(cfg: Config, train) -> dict:
    k_init, k_train = jax.random.split(jax.random.key(cfg.seed))
    init_keys, data_keys = jax.random.split(k_init, cfg.seeds), jax.random.split(k_train, cfg.seeds)
    nets = {
        i: N.mlp(cfg.width, cfg.depth, "tanh", *_inits(cfg, i), out_dim=10, out_init=fn.initializers.glorot_normal())
        for i in INITS
    }
    per = {i: N.init_eager(nets[i], (train.x.shape[1],), init_keys) for i in INITS}
    models = [(i, lr, s) for i in INITS for lr in cfg.lrs for s in range(cfg.seeds)]
    params = stack([jax.tree_util.tree_map(lambda p, s=s: p[s], per[i]) for i, _, s in models])
    res = sweep(
        nets[INITS[0]],
        fn.softmax_cross_entropy,
        params,
        train,
        keys=jnp.stack([data_keys[s] for _, _, s in models]),
        optimizer=lambda lr: sgd(lr, momentum=cfg.momentum),
        learning_rates=[lr for _, lr, _ in models],
        batch_size=cfg.batch,
        epochs=cfg.epochs,
        progress=False,
    )
    tl = np.asarray(res.history["train_loss"], np.float64)
    return {"models": [list(m) for m in models], "train_loss": tl.tolist()}


def run(config: Config, out_dir: Path) -> Result:
    cfg = config
    train, _ = U.mnist1d_standardized(cfg.n_train)
    sw2, sb2 = critical_point(cfg.q_star)
    d_in = train.x.shape[1]
    # standardized inputs have E x² = 1; scaled so that layer 1 already sits at q*: σ_w² (d_in/n) E x² + σ_b² = q*
    scale = math.sqrt(max(cfg.q_star - sb2, 0.0) * cfg.width / (sw2 * d_in))
    train = Dataset(train.x * scale, train.y)
    raw = point_cache(out_dir, config).point("sweep", lambda: _train(cfg, train))
    tl = np.asarray(raw["train_loss"], np.float64)
    rows = {}
    for init in INITS:
        best, best_loss = cfg.lrs[0], np.inf
        for lr in cfg.lrs:
            ks = [k for k, m in enumerate(raw["models"]) if m[0] == init and m[1] == lr]
            final = float(np.nanmedian(np.where(np.isfinite(tl[ks, -1]), tl[ks, -1], np.inf)))
            if final < best_loss:
                best, best_loss = lr, final
        ks = [k for k, m in enumerate(raw["models"]) if m[0] == init and m[1] == best]
        cur = np.where(np.isfinite(tl[ks]), tl[ks], np.log(10.0) * 10)
        rows[init] = {"best_lr": best, "curves": cur.tolist(), "mean_loss": cur.mean(1).tolist()}
    return Result(
        metrics={"sw2": sw2, "sb2": sb2, "rows": rows},
        claims=_claims(cfg, rows, sw2, sb2),
        figures=[_figure(cfg, rows, out_dir)],
    )


def _claims(cfg: Config, rows: dict, sw2: float, sb2: float) -> list[Claim]:
    g, o = rows["gaussian"], rows["orthogonal"]
    return [
        U.seed_greater(
            f"at the same critical point (q* = {cfg.q_star:.3g}), orthogonal tanh nets of depth {cfg.depth} learn "
            "faster than Gaussian ones: a lower training loss averaged over the run",
            SRC,
            g["mean_loss"],
            o["mean_loss"],
            names=("gaussian", "orthogonal"),
            note=f"width {cfg.width}, σ_w² = {sw2:.4f}, σ_b² = {sb2:.2e}, SGD momentum {cfg.momentum}, batch "
            f"{cfg.batch}, {cfg.epochs} epochs of {cfg.n_train} MNIST-1D examples; lr per init from "
            f"{list(cfg.lrs)} by the final training loss (Gaussian {g['best_lr']}, orthogonal {o['best_lr']}"
            + ("; both at the grid's lower edge" if g["best_lr"] == o["best_lr"] == min(cfg.lrs) else "")
            + "); "
            "Pennington et al. see the gap grow with depth (their nets reach depth 200: the full preset)",
        )
    ]


def _figure(cfg: Config, rows: dict, out_dir: Path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ep = np.arange(1, cfg.epochs + 1)
    for init, c in zip(INITS, ("C3", "C0")):
        cur = np.asarray(rows[init]["curves"])
        ax.plot(ep, np.median(cur, 0), "o-", color=c, label=f"{init} (lr {rows[init]['best_lr']}, median)")
        ax.fill_between(ep, cur.min(0), cur.max(0), color=c, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    caption = (
        f"Training loss of critical tanh nets (depth {cfg.depth}, width {cfg.width}, q* = {cfg.q_star:.3g}) with "
        f"orthogonal and Gaussian weights; band: range over {cfg.seeds} seeds."
    )
    return save_figure(fig, out_dir, "isometry_training", caption)
