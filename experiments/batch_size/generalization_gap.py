"""Large-batch training and the sharpness of the minimum it reaches (Keskar et al. 2017).

For each B the MLP of the study is trained by the engine (``fnnet.sweep``, hand-written rules) for a
fixed number of epochs at a few learning rates and seeds (vmapped); the rate with the lowest final
training loss (mean over seeds) is kept. For those runs: training and test accuracy, the
generalisation gap (train − test accuracy) and the sharpness λ_max, the top eigenvalue of the
training-loss Hessian, by power iteration on Hessian–vector products — forward mode through the
manual gradient (``jax.jvp`` of ``fnnet.value_and_grad``); an autodiff HVP confirms one value.

Departures from Keskar et al.: their sharpness is the largest loss rise in a small box around the
minimum (their Sec. 2.2.2, eq. 4), not λ_max; their LB runs were trained to convergence, whereas here
every B gets the same epoch budget, so large batches also take far fewer steps.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, close, point_cache, pyplot, save_figure, spearman
from experiments.batch_size import _batch_stats as bs
from experiments.batch_size import _batch_util as bu
from fnnet.sweeps import sweep

NAME = "generalization_gap"
TITLE = "Large batches, sharp minima and the generalisation gap (Keskar et al. 2017)"

KESKAR = src.KESKAR_2017.cite()


@dataclasses.dataclass(frozen=True)
class Config:
    batch_sizes: tuple[int, ...] = (16, 64, 256, 1024, 4000)
    epochs: int = 10
    lr_offsets: tuple[int, ...] = (-2, -1, 0, 1)  # rates 2^(guess + offset), guess = 2^-6·B capped at 1
    n_seeds: int = 2
    hidden: tuple[int, ...] = (128, 128)
    hvp_examples: int = 512  # training examples in the loss whose Hessian is probed
    power_iters: int = 25
    seed: int = 0


PRESETS = {
    "tiny": Config(batch_sizes=(1024, 4000), epochs=1, lr_offsets=(0,), n_seeds=1, hidden=(16,), power_iters=5),
    "quick": Config(),
    "full": Config(
        batch_sizes=(16, 32, 64, 128, 256, 512, 1024, 2000, 4000),
        epochs=100,
        lr_offsets=(-2, -1, 0, 1, 2),
        n_seeds=4,
        hvp_examples=4000,
        power_iters=100,
    ),
}


def run_batch(config: Config, b: int) -> dict:
    """Sweep rates × seeds at batch size b; measure accuracy and sharpness at the best rate."""
    train, test = bu.load_data()
    net, loss = bu.mlp(config.hidden), fn.softmax_cross_entropy
    seeds = tuple(config.seed + i for i in range(config.n_seeds))
    exps = [min(-6 + int(np.log2(b)), 0) + o for o in config.lr_offsets]
    params = jax.tree_util.tree_map(lambda a: np.repeat(np.asarray(a), len(exps), axis=0), bu.init_models(net, seeds))
    res = sweep(
        net,
        loss,
        params,
        train,
        keys=bu.data_keys(seeds)[np.repeat(np.arange(len(seeds)), len(exps))],
        learning_rates=np.tile([2.0**e for e in exps], len(seeds)),
        batch_size=b,
        epochs=config.epochs,
        eval_train=False,
        accuracy=None,
        progress=False,
    )
    shape = (len(seeds), len(exps))
    div = np.reshape(np.asarray(res.diverged), shape)
    tr_loss, tr_acc = (np.reshape(v, shape) for v in bu.evaluate_models(net, res.params, train))
    _, te_acc = (np.reshape(v, shape) for v in bu.evaluate_models(net, res.params, test))
    score = np.where(div.any(axis=0), np.inf, tr_loss.mean(axis=0))
    k = int(np.argmin(score))
    picked = np.arange(len(seeds)) * len(exps) + k
    best = jax.tree_util.tree_map(lambda a: a[picked], res.params)
    xh, yh = train.x[: config.hvp_examples], train.y[: config.hvp_examples]
    key = jax.random.fold_in(jax.random.key(config.seed), b)
    sharp = bs.top_hessian_eigenvalues(net, loss, best, xh, yh, key, iters=config.power_iters)
    return {
        "batch_size": b,
        "lr_exponents": exps,
        "train_loss_per_rate": tr_loss.mean(axis=0).tolist(),
        "diverged": div.tolist(),
        "best_exponent": exps[k],
        "at_edge": len(exps) > 1 and k in (0, len(exps) - 1),
        "train_loss": tr_loss[:, k].tolist(),
        "train_accuracy": tr_acc[:, k].tolist(),
        "test_accuracy": te_acc[:, k].tolist(),
        "gap": (tr_acc[:, k] - te_acc[:, k]).tolist(),
        "lambda_max": sharp["lambda_max"],
        "power_rel_change": sharp["rel_change_last5"],
        "steps": config.epochs * (int(train.x.shape[0]) // b),
    }


def autodiff_check(config: Config) -> tuple[float, float]:
    """λ_max of the first seed's freshly initialised model by the manual-rule HVP and by the autodiff HVP."""
    train, _ = bu.load_data()
    net = bu.mlp(config.hidden)
    params = bu.init_models(net, tuple(config.seed + i for i in range(config.n_seeds)))  # same shapes: no recompile
    xh, yh = train.x[: config.hvp_examples], train.y[: config.hvp_examples]
    key = jax.random.key(config.seed)
    kw = dict(iters=config.power_iters)
    man = bs.top_hessian_eigenvalues(net, fn.softmax_cross_entropy, params, xh, yh, key, grad="manual", **kw)
    auto = bs.top_hessian_eigenvalues(net, fn.softmax_cross_entropy, params, xh, yh, key, grad="autodiff", **kw)
    return man["lambda_max"][0], auto["lambda_max"][0]


def run(config: Config, out_dir: Path) -> Result:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    cache = point_cache(out_dir, config)
    pts = [cache.point(f"point_B{b}", lambda b=b: run_batch(config, b)) for b in sorted(config.batch_sizes)]
    man, auto = autodiff_check(config)
    b = np.array([p["batch_size"] for p in pts], float)
    mean = lambda k: np.array([np.mean(p[k]) for p in pts])  # noqa: E731
    lam, te, gap, trl = mean("lambda_max"), mean("test_accuracy"), mean("gap"), mean("train_loss")
    lr = 2.0 ** np.array([p["best_exponent"] for p in pts], float)
    metrics = {
        "points": pts,
        "lambda_max_mean": lam.tolist(),
        "test_accuracy_mean": te.tolist(),
        "gap_mean": gap.tolist(),
        "train_loss_mean": trl.tolist(),
        "lambda_times_lr_over_2": (lam * lr / 2).tolist(),
        "hvp_manual_vs_autodiff": [man, auto],
    }
    claims = _claims(pts, b, lam, te, gap, trl, lr, man, auto, config)
    return Result(metrics, claims, [_plot(pts, b, lam, lr, out_dir, config)], {"total_s": time.perf_counter() - t0})


def _claims(pts, b, lam, te, gap, trl, lr, man, auto, config: Config) -> list[Claim]:
    rho = spearman(b, lam)
    n = f"{config.n_seeds} seeds per B, {config.epochs} epochs, best of {len(config.lr_offsets)} rates by training loss"
    edges = [p["batch_size"] for p in pts if p["at_edge"]]
    spread = max(max(p["power_rel_change"]) for p in pts)
    return [
        Claim(
            "Large-batch training converges to sharper minima: lambda_max of the Hessian grows with B",
            f"{KESKAR}, Sec. 2.2 and Fig. 3 (sharpness of SB vs LB minima)",
            "Spearman(B, lambda_max) >= 0.8 and lambda_max(largest B) > lambda_max(smallest B)",
            f"rho = {rho:.2f}; lambda_max " + ", ".join(f"B={x:g}: {v:.2f}" for x, v in zip(b, lam)),
            ">= 0.8",
            bool(rho >= 0.8 and lam[-1] > lam[0]),
            f"{n}; lambda_max*lr/2 = {np.round(lam * lr / 2, 2).tolist()} (1 = the edge of stability of GD, "
            f"{src.COHEN_2021.cite()}); power iteration: {config.power_iters} iters, max rel. change over the last 5 "
            f"= {spread:.1e}; best rate on the grid's edge at B = {edges or 'none'}",
        ),
        Claim(
            "Large batches generalise worse: lower test accuracy than small batches",
            f"{KESKAR}, Table 2",
            "test acc(largest B) < test acc(smallest B) by more than 1 point",
            f"test acc {te[0]:.3f} (B={b[0]:g}) vs {te[-1]:.3f} (B={b[-1]:g}); training loss "
            f"{trl[0]:.3f} vs {trl[-1]:.3f}",
            "> 0.01",
            bool(te[0] - te[-1] > 0.01),
            "at an equal epoch budget the large-batch runs are also under-trained (fewer steps, higher training "
            f"loss), so a drop here mixes optimisation with generalisation ({src.HOFFER_2017.cite()})",
        ),
        Claim(
            "The generalisation gap (train - test accuracy) is larger for large batches",
            f"{KESKAR}, Sec. 2 and Table 2",
            "gap(largest B) > gap(smallest B)",
            f"gap {gap[0]:.3f} (B={b[0]:g}) vs {gap[-1]:.3f} (B={b[-1]:g}); all: {np.round(gap, 3).tolist()}",
            "strict",
            bool(gap[-1] > gap[0]),
            n,
        ),
        close(
            "The manual-rule Hessian-vector product gives the same lambda_max as the autodiff one",
            "fnnet's own contract (forward mode through the hand-written backward rules)",
            auto,
            man,
            rtol=1e-3,
            note=f"one model at init, {config.hvp_examples} examples, {config.power_iters} iterations, same start",
        ),
    ]


def _plot(pts, b, lam, lr, out_dir: Path, config: Config):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, key, m in (("train", "train_accuracy", "o-"), ("test", "test_accuracy", "s-")):
        v = np.array([p[key] for p in pts])
        axes[0].errorbar(
            b, v.mean(axis=1), yerr=[v.mean(1) - v.min(1), v.max(1) - v.mean(1)], fmt=m, capsize=3, label=name
        )
    axes[0].set(xscale="log", xlabel="batch size B", ylabel="accuracy")
    axes[0].set_title(f"accuracy after {config.epochs} epochs (best lr per B)")
    for p in pts:
        axes[1].scatter([p["batch_size"]] * len(p["lambda_max"]), p["lambda_max"], color="tab:blue", s=15)
    axes[1].plot(b, lam, "o-", label="lambda_max (mean of seeds)")
    axes[1].plot(b, 2 / lr, "k--", label="2 / lr (edge of stability)")
    axes[1].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="top Hessian eigenvalue")
    axes[1].set_title("sharpness of the reached point")
    gap = np.array([p["gap"] for p in pts])
    sc = axes[2].scatter(
        np.concatenate([p["lambda_max"] for p in pts]), gap.ravel(), c=np.repeat(np.log2(b), gap.shape[1])
    )
    fig.colorbar(sc, ax=axes[2], label="log2 B")
    axes[2].set(xscale="log", xlabel="lambda_max", ylabel="train acc - test acc")
    axes[2].set_title("generalisation gap against sharpness (one dot per seed)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    cap = "Accuracy, sharpness (top Hessian eigenvalue by power iteration on HVPs) and the gap, against B."
    return save_figure(fig, out_dir, "generalization_gap", cap)
