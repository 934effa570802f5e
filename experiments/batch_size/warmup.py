"""Gradual warm-up with the linear scaling rule (Goyal et al. 2017): a large batch matches a small one.

The small batch B_SB is trained at its tuned rate η (the best of a few powers of 2 by final training
loss); the large batch B_LB = k·B_SB at k·η (the linear scaling rule, their Sec. 2.1), for the same
number of epochs, from the same initialisations and seeds:

* without warm-up: k·η from the first step;
* with gradual warm-up (their Sec. 2.2): the rate rises linearly from η to k·η over the first
  ``warmup_epochs`` epochs, η_t = η + (k − 1)·η·t/T_w for t < T_w, then stays at k·η.

All runs by the engine (``fnnet.sweep``: seeds vmapped; hand-written rules; plain SGD, whose rate
may be a schedule ``count -> η_t``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, point_cache, pyplot, save_figure
from experiments.batch_size import _batch_util as bu
from fnnet import optim
from fnnet.sweeps import sweep

NAME = "warmup"
TITLE = "Linear scaling with and without gradual warm-up: does a large batch match a small one? (Goyal et al. 2017)"

GOYAL = src.GOYAL_2017.cite


@dataclasses.dataclass(frozen=True)
class Config:
    small_batch: int = 4
    large_batch: int = 64  # k = 16; meant to lie below steps_to_target's critical batch size, as in Goyal's regime
    sb_lr_exps: tuple[int, ...] = (-6, -5, -4)  # the small batch's rate is tuned over these (log2)
    epochs: int = 6
    warmup_epochs: int = 2
    n_seeds: int = 5
    hidden: tuple[int, ...] = (128, 128)
    seed: int = 0


PRESETS = {
    "tiny": Config(small_batch=64, large_batch=512, sb_lr_exps=(-2,), epochs=2, warmup_epochs=1, hidden=(16,)),
    "quick": Config(),
    "full": Config(
        small_batch=8, large_batch=1024, sb_lr_exps=(-6, -5, -4, -3, -2), epochs=40, warmup_epochs=5, n_seeds=8
    ),
}


def warmup_sgd(warmup_steps: int, k: float):
    """Factory ``lr -> sgd`` with η_t = lr/k + (lr − lr/k)·t/T_w for t < T_w = ``warmup_steps``, then lr."""

    def make(lr):
        if warmup_steps <= 0:
            return optim.sgd(lr)
        base = lr / k
        return optim.sgd(lambda t: jnp.where(t < warmup_steps, base + (lr - base) * t / warmup_steps, lr))

    return make


def train_runs(config: Config, b: int, lrs: list[float], warmup_steps: int, k: float) -> dict:
    """5 seeds × the rates at batch size b; final training loss, test accuracy, per-epoch training loss."""
    train, test = bu.load_data()
    net = bu.mlp(config.hidden)
    seeds = tuple(config.seed + i for i in range(config.n_seeds))
    params = bu.init_models(net, seeds)
    params = jax.tree_util.tree_map(lambda a: np.repeat(np.asarray(a), len(lrs), axis=0), params)
    res = sweep(
        net,
        fn.softmax_cross_entropy,
        params,
        train,
        keys=bu.data_keys(seeds)[np.repeat(np.arange(len(seeds)), len(lrs))],
        optimizer=warmup_sgd(warmup_steps, k),
        learning_rates=np.tile(lrs, len(seeds)),
        batch_size=b,
        epochs=config.epochs,
        accuracy=None,
        progress=False,
    )
    shape = (len(seeds), len(lrs))
    tr_loss, _ = bu.evaluate_models(net, res.params, train)
    _, te_acc = bu.evaluate_models(net, res.params, test)
    div = np.reshape(np.asarray(res.diverged), shape)
    nan = lambda v: np.where(div, np.nan, np.reshape(v, shape))  # noqa: E731
    return {
        "batch_size": b,
        "lrs": list(lrs),
        "warmup_steps": warmup_steps,
        "train_loss": nan(tr_loss).T.tolist(),  # (L, S)
        "test_accuracy": nan(te_acc).T.tolist(),
        "diverged": div.T.tolist(),
        "epoch_train_loss": np.reshape(res.history["train_loss"], shape + (-1,)).transpose(1, 0, 2).tolist(),
    }


def run(config: Config, out_dir: Path) -> Result:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    if config.large_batch % config.small_batch:
        raise ValueError(
            f"large_batch must be a multiple of small_batch, got {config.large_batch} and {config.small_batch}"
        )
    k = config.large_batch / config.small_batch
    cache = point_cache(out_dir, config)
    sb = cache.point("small", lambda: train_runs(config, config.small_batch, [2.0**e for e in config.sb_lr_exps], 0, k))
    score = [np.inf if np.isnan(v).any() else float(np.mean(v)) for v in np.array(sb["train_loss"], float)]
    j = int(np.argmin(score))
    eta = sb["lrs"][j]
    steps_per_epoch = 4000 // config.large_batch
    w = config.warmup_epochs * steps_per_epoch
    cold = cache.point("large_no_warmup", lambda: train_runs(config, config.large_batch, [k * eta], 0, k))
    warm = cache.point("large_warmup", lambda: train_runs(config, config.large_batch, [k * eta], w, k))
    pick = lambda r, i=0: {key: r[key][i] for key in ("train_loss", "test_accuracy", "diverged", "epoch_train_loss")}  # noqa: E731
    runs = {"small": pick(sb, j), "large_no_warmup": pick(cold), "large_warmup": pick(warm)}
    metrics = {
        "k": k,
        "small_batch": config.small_batch,
        "large_batch": config.large_batch,
        "small_lr": eta,
        "small_lr_on_grid_edge": len(sb["lrs"]) > 1 and j in (0, len(sb["lrs"]) - 1),
        "large_lr": k * eta,
        "warmup_steps": w,
        "small_lr_grid": {"lrs": sb["lrs"], "mean_train_loss": score},
        "runs": runs,
    }
    return Result(
        metrics, _claims(metrics, config), [_plot(metrics, out_dir, config)], {"total_s": time.perf_counter() - t0}
    )


def _stat(v) -> tuple[float, float]:
    v = np.asarray(v, float)
    if np.isnan(v).any():
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def _claims(m: dict, config: Config) -> list[Claim]:
    n, r = config.n_seeds, m["runs"]
    (s_m, s_se), (w_m, w_se), (c_m, c_se) = (
        _stat(r[x]["train_loss"]) for x in ("small", "large_warmup", "large_no_warmup")
    )
    (sa, sa_se), (wa, wa_se) = (_stat(r[x]["test_accuracy"]) for x in ("small", "large_warmup"))
    se_sw = math.hypot(s_se, w_se)
    se_wc = math.hypot(w_se, c_se)
    cold_div = int(np.sum(r["large_no_warmup"]["diverged"]))
    setting = (
        f"B {m['small_batch']} at lr {m['small_lr']:g} vs B {m['large_batch']} at lr {m['large_lr']:g} "
        f"(k = {m['k']:g}), "
        f"{config.epochs} epochs each; warm-up over {config.warmup_epochs} epochs ({m['warmup_steps']} steps)"
        + ("; the small batch's rate is on its grid's edge" if m["small_lr_on_grid_edge"] else "")
    )
    spread = f"seed spread: {n} seeds per arm, 2 standard errors of the difference of means"
    return [
        Claim(
            "With the linear scaling rule and gradual warm-up, the large batch matches the small batch's training "
            "loss and test accuracy after the same epochs",
            GOYAL("Sec. 2.2 and Fig. 2 (gradual warm-up: large-minibatch curves match the small-minibatch baseline)"),
            "|final train loss (LB, warm-up) - (SB)| <= 2 SE and |test acc difference| <= 2 SE",
            f"train loss {s_m:.4f} (SB) vs {w_m:.4f} (LB, warm-up), SE of difference {se_sw:.4f}; test acc "
            f"{sa:.4f} vs {wa:.4f}, SE {math.hypot(sa_se, wa_se):.4f}",
            "<= 2 SE",
            bool(np.isfinite(w_m) and abs(w_m - s_m) <= 2 * se_sw and abs(wa - sa) <= 2 * math.hypot(sa_se, wa_se)),
            setting + ". Goyal et al. note the rule breaks down beyond a critical size (8k on ImageNet); compare "
            "B_LB with the critical batch size that steps_to_target fits (at equal epochs a batch near B_crit lags "
            "by McCandlish's E = E_min(1 + B/B_crit))",
            kind="source",
            seeds=n,
            tolerance_basis=spread,
        ),
        Claim(
            "Without warm-up the large batch at the scaled rate does worse than with it (or diverges)",
            GOYAL("Sec. 2.2 and Table 1 ('no warmup' vs 'gradual warmup' at the large minibatch)"),
            "final train loss (no warm-up) > (warm-up) by more than 2 SE, or no-warm-up runs diverge",
            f"train loss {c_m:.4f} (no warm-up) vs {w_m:.4f} (warm-up), SE of difference {se_wc:.4f}; "
            f"{cold_div}/{n} no-warm-up runs diverged",
            "> 2 SE",
            bool(cold_div > 0 or (np.isfinite(c_m) and c_m - w_m > 2 * se_wc)),
            setting,
            kind="source",
            seeds=n,
            tolerance_basis=spread,
        ),
    ]


def _plot(m: dict, out_dir: Path, config: Config):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    labels = {
        "small": (f"B={m['small_batch']}, lr {m['small_lr']:g}", "tab:blue"),
        "large_warmup": (f"B={m['large_batch']}, lr {m['large_lr']:g}, warm-up", "tab:green"),
        "large_no_warmup": (f"B={m['large_batch']}, lr {m['large_lr']:g}, no warm-up", "tab:red"),
    }
    for key, (lab, c) in labels.items():
        v = np.array(m["runs"][key]["epoch_train_loss"], float)  # (S, epochs)
        ep = np.arange(1, v.shape[1] + 1)
        for row in v:
            axes[0].plot(ep, row, color=c, alpha=0.3, lw=0.8)
        axes[0].plot(ep, np.nanmean(v, axis=0), "o-", color=c, label=lab)
        te = np.array(m["runs"][key]["test_accuracy"], float)
        axes[1].scatter(np.full(te.shape, list(labels).index(key)), te, color=c, alpha=0.7)
        axes[1].errorbar(
            list(labels).index(key) + 0.15, np.nanmean(te), yerr=np.nanstd(te), fmt="s", color=c, capsize=3
        )
    axes[0].axvline(config.warmup_epochs, color="grey", ls=":", label="end of warm-up")
    axes[0].set(yscale="log", xlabel="epoch", ylabel="training loss (whole set)")
    axes[0].set_title("training loss per epoch (thin: seeds)")
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(range(3), [v[0].replace(", lr", "\nlr") for v in labels.values()], fontsize=7)
    axes[1].set(ylabel="test accuracy", title="test accuracy after the same epochs (dots: seeds)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    cap = "Small batch at its tuned rate vs the large batch at k times the rate, with and without gradual warm-up."
    return save_figure(fig, out_dir, "warmup", cap)
