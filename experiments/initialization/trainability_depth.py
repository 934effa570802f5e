"""Trainability against depth: deep ReLU MLPs under He and Xavier init.

After He et al. 2015, "Delving Deep into Rectifiers: Surpassing Human-Level Performance on ImageNet
Classification", Fig. 2-3.

For each depth, every (init, learning rate, seed) is one model of a single ``fnnet.sweep`` (vmapped,
one compiled program per depth; manual gradients through :func:`experiments.initialization._init_nets.mlp`, whose
hidden layers are one ``lax.scan``). Optimizer: SGD with heavy-ball momentum, not Adam (Adam's
per-parameter normalization would hide the shrinking gradients). For each init the learning rate with
the lowest final training loss (median over seeds) is kept. Recorded: the number of SGD steps until
the full training loss first falls below a target, and the final train/test accuracies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, point_cache, pyplot, save_figure
from experiments.initialization import _init_nets as N
from experiments.initialization import _init_util as U
from fnnet.optim import sgd
from fnnet.sweeps import stack, sweep

NAME = "trainability_depth"
TITLE = f"Trainability vs depth: He against Xavier init in deep ReLU MLPs (after {src.HE_2015.short}, Fig. 2-3)"

SRC2 = src.HE_2015.cite("Fig. 2 (22-layer net: both inits converge, He starts reducing the error earlier)")
SRC3 = src.HE_2015.cite("Fig. 3 (30-layer net: Xavier init stalls, He init converges)")
INITS = ("he_normal", "xavier_normal")


@dataclasses.dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (10, 30)
    width: int = 64
    lrs: tuple[float, ...] = (0.01, 0.03)
    momentum: float = 0.9
    seeds: int = 5
    batch: int = 64
    epochs: int = 10
    n_train: int = 2000
    target_loss: float = 1.8
    seed: int = 0


PRESETS = {
    "tiny": Config(depths=(4,), width=16, lrs=(0.01,), seeds=5, epochs=2, n_train=256),
    "quick": Config(),
    "full": Config(
        depths=(10, 30, 50), width=128, lrs=(0.001, 0.003, 0.01, 0.03, 0.1), seeds=5, batch=128, epochs=60, n_train=4000
    ),
}


def _train_depth(cfg: Config, depth: int, train, test) -> dict:
    """One sweep: models ordered (init, lr, seed); returns per-epoch histories as lists."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), depth)
    k_init, k_train = jax.random.split(key)
    nets = {i: N.mlp(cfg.width, depth, "relu", U.initializer(i), out_dim=10) for i in INITS}
    init_keys = jax.random.split(k_init, cfg.seeds)
    per_init = {i: N.init_eager(nets[i], (train.x.shape[1],), init_keys) for i in INITS}
    models = [(i, lr, s) for i in INITS for lr in cfg.lrs for s in range(cfg.seeds)]
    params = stack([jax.tree_util.tree_map(lambda a, s=s: a[s], per_init[i]) for i, _, s in models])
    res = sweep(
        nets[INITS[0]],
        fn.softmax_cross_entropy,
        params,
        train,
        keys=jax.random.split(k_train, len(models)),
        optimizer=lambda lr: sgd(lr, momentum=cfg.momentum),
        learning_rates=[lr for _, lr, _ in models],
        batch_size=cfg.batch,
        epochs=cfg.epochs,
        test_data=test,
        progress=False,
    )
    h = {k: np.asarray(v, np.float64) for k, v in res.history.items()}
    return {
        "models": [[i, lr, s] for i, lr, s in models],
        "train_loss": h["train_loss"].tolist(),
        "train_accuracy": h["train_accuracy"].tolist(),
        "test_accuracy": h["test_accuracy"].tolist(),
        "diverged": np.asarray(res.diverged).tolist(),
        "steps_per_epoch": res.steps_per_epoch,
    }


def _summarize(raw: dict, cfg: Config) -> dict:
    """Per init: the best learning rate, steps to the target loss per seed, final accuracies."""
    models = raw["models"]
    tl = np.asarray(raw["train_loss"], np.float64)  # (K, E), NaN after divergence
    spe = raw["steps_per_epoch"]
    out = {}
    for init in INITS:
        best, best_loss = None, np.inf
        for lr in cfg.lrs:
            idx = [k for k, (i, l, _) in enumerate(models) if i == init and l == lr]
            final = np.nanmedian(np.where(np.isfinite(tl[idx, -1]), tl[idx, -1], np.inf))
            if final < best_loss:
                best, best_loss = lr, final
        best = best if best is not None else cfg.lrs[0]
        idx = [k for k, (i, l, _) in enumerate(models) if i == init and l == best]
        steps = []
        for k in idx:
            hit = np.nonzero(tl[k] <= cfg.target_loss)[0]
            steps.append(int((hit[0] + 1) * spe) if hit.size else None)
        out[init] = {
            "best_lr": best,
            "final_train_loss_median": float(best_loss),
            "steps_to_target": steps,
            "reached": sum(s is not None for s in steps),
            "train_loss_curves": tl[idx].tolist(),
            "final_train_accuracy": [float(raw["train_accuracy"][k][-1]) for k in idx],
            "final_test_accuracy": [float(raw["test_accuracy"][k][-1]) for k in idx],
            "diverged_any_lr": int(sum(raw["diverged"][k] for k, m in enumerate(models) if m[0] == init)),
        }
    return out


def run(config: Config, out_dir: Path) -> Result:
    cfg = config
    train, test = U.mnist1d_standardized(cfg.n_train)
    cache = point_cache(out_dir, config)
    results = {}
    for depth in cfg.depths:
        raw = cache.point(f"sweep_depth{depth}", lambda d=depth: _train_depth(cfg, d, train, test))
        results[str(depth)] = _summarize(raw, cfg)
    return Result(
        metrics={"target_loss": cfg.target_loss, "depths": results},
        claims=_claims(results, cfg),
        figures=[_figure(results, cfg, out_dir)],
    )


def _med_steps(s: list) -> float:
    v = [x if x is not None else np.inf for x in s]
    return float(np.median(v))


def _claims(results: dict, cfg: Config) -> list[Claim]:
    claims = []
    budget = cfg.epochs * (cfg.n_train // cfg.batch)
    setting = (
        f"width {cfg.width}, SGD momentum {cfg.momentum}, batch {cfg.batch}, {budget} steps, best lr of "
        f"{list(cfg.lrs)} per init, "
        f"{cfg.seeds} seeds, {cfg.n_train} MNIST-1D training examples, target train loss {cfg.target_loss} "
        f"(checked at epoch ends, every {cfg.n_train // cfg.batch} steps)"
    )

    def edge(lr):
        return " (the grid's edge)" if lr in (min(cfg.lrs), max(cfg.lrs)) and len(cfg.lrs) > 1 else ""

    shallow, deep = min(cfg.depths), [d for d in cfg.depths if d >= 30]
    r = results[str(shallow)]
    he, xa = _med_steps(r["he_normal"]["steps_to_target"]), _med_steps(r["xavier_normal"]["steps_to_target"])
    claims.append(
        Claim(
            f"depth {shallow}: both inits reach the target loss, He no later than Xavier",
            SRC2,
            "both reach it; steps(He) <= steps(Xavier)",
            {
                "steps_he": he,
                "steps_xavier": xa,
                "acc_he": r["he_normal"]["final_test_accuracy"],
                "acc_xavier": r["xavier_normal"]["final_test_accuracy"],
            },
            "medians over seeds",
            bool(np.isfinite(he) and np.isfinite(xa) and he <= xa),
            f"{setting}; best lr He {r['he_normal']['best_lr']}{edge(r['he_normal']['best_lr'])}, Xavier "
            f"{r['xavier_normal']['best_lr']}{edge(r['xavier_normal']['best_lr'])}; He et al.'s nets are 22-layer "
            f"conv nets on ImageNet: depth {shallow} MLPs stand in for the regime where both train",
            "source",
            cfg.seeds,
            f"seed spread: {cfg.seeds} seeds, median steps compared (steps resolved to one epoch); the target loss "
            f"{cfg.target_loss} is fnnet's choice",
        )
    )
    for d in deep:
        r = results[str(d)]
        he, xa = r["he_normal"], r["xavier_normal"]
        ok = he["reached"] == cfg.seeds and xa["reached"] == 0
        claims.append(
            Claim(
                f"depth {d}: Xavier init stalls while He init trains",
                SRC3,
                "every He seed reaches the target; no Xavier seed does",
                {
                    "he_reached": f"{he['reached']}/{cfg.seeds}",
                    "xavier_reached": f"{xa['reached']}/{cfg.seeds}",
                    "final_train_loss": {"he": he["final_train_loss_median"], "xavier": xa["final_train_loss_median"]},
                    "test_acc": {"he": he["final_test_accuracy"], "xavier": xa["final_test_accuracy"]},
                },
                "as stated",
                bool(ok),
                setting
                + f"; best lr He {he['best_lr']}{edge(he['best_lr'])}, Xavier {xa['best_lr']}{edge(xa['best_lr'])}",
                "source",
                cfg.seeds,
                f"source: He et al.'s Fig. 3 shows Xavier not learning at all and He converging; asked of every one "
                f"of {cfg.seeds} seeds",
            )
        )
    return claims


def _figure(results: dict, cfg: Config, out_dir: Path):
    plt = pyplot()
    n = len(cfg.depths)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.8), squeeze=False, sharey=True)
    spe = cfg.n_train // cfg.batch
    steps = np.arange(1, cfg.epochs + 1) * spe
    for ax, d in zip(axes[0], cfg.depths):
        for init, c in zip(INITS, ("C0", "C3")):
            r = results[str(d)][init]
            cur = np.asarray(r["train_loss_curves"], np.float64)
            ax.plot(steps, np.nanmedian(cur, 0), color=c, label=f"{init} (lr {r['best_lr']})")
            ax.fill_between(steps, np.nanmin(cur, 0), np.nanmax(cur, 0), color=c, alpha=0.2)
        ax.axhline(cfg.target_loss, color="k", ls=":", lw=0.8, label="target")
        ax.set_title(f"ReLU MLP, depth {d}, width {cfg.width}")
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("training loss (cross-entropy)")
    fig.tight_layout()
    caption = (
        "Training loss of deep ReLU MLPs on MNIST-1D under He and Xavier init (best lr per init, median and range "
        "over "
        f"{cfg.seeds} seeds); after {src.HE_2015.cite('Fig. 2-3')}."
    )
    return save_figure(fig, out_dir, "trainability", caption)
