"""The gradient noise scale B_simple and the critical batch size (McCandlish et al. 2018).

B_simple = tr(Σ)/|G|² (their eq. 2.8) is measured along a training run (fnnet.train, hand-written
rules) at every epoch: from per-example gradients of the manual rules under ``vmap`` over all 4000
training examples, and, as a cross-check, by the unbiased two-batch-size estimator of their
Appendix A. The steps-to-target sweep of ``steps_to_target`` (same workload; in one process the
runs are shared) is fitted with S = S_min(1 + B_noise/B) and E = E_min(1 + B/B_noise) (eq. 2.11),
giving B_crit = E_min/S_min, which is compared with B_simple at the target loss.
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
from experiments.batch_size._steps_sweep import STEPS_PRESETS, StepsConfig, seeds_of
from fnnet import optim
from fnnet.training import train

NAME = "gradient_noise_scale"
TITLE = "Gradient noise scale B_simple vs the critical batch size (McCandlish et al. 2018)"

MCC = src.MCCANDLISH_2018.cite()


@dataclasses.dataclass(frozen=True)
class Config:
    steps: StepsConfig = STEPS_PRESETS["quick"]  # the steps-to-target sweep that is fitted
    trajectory_batch: int = 32  # the run along which B_simple is measured (its lr: the sweep's best)
    trajectory_epochs: int = 10
    b_small: int = 8  # the two batch sizes of the Appendix A estimator
    b_big: int = 512
    draws: int = 128  # batches drawn per size and checkpoint
    crit_factor: float = 5.0  # the claim: B_crit within this factor of B_simple at the target
    seed: int = 0


PRESETS = {
    "tiny": Config(steps=STEPS_PRESETS["tiny"], trajectory_batch=256, trajectory_epochs=2, b_big=256, draws=16),
    "quick": Config(),
    "full": Config(steps=STEPS_PRESETS["full"], trajectory_epochs=30, draws=256),
}


def trajectory(config: Config, lr: float) -> list[dict]:
    """Train at ``trajectory_batch``; at every epoch end measure B_simple both ways."""
    (x, y), _ = bu.load_data()
    net, loss = bu.mlp(config.steps.workload.hidden), fn.softmax_cross_entropy
    params = jax.tree_util.tree_map(lambda a: a[0], bu.init_models(net, (config.seed,)))
    snaps = [params]
    train(
        net,
        loss,
        params,
        (x, y),
        optimizer=optim.sgd(lr),
        batch_size=config.trajectory_batch,
        epochs=config.trajectory_epochs,
        key=bu.data_keys((config.seed,))[0],
        eval_train=False,
        progress=False,
        callback=lambda e, r: snaps.append(r.params),
    )
    rows = []
    for e, p in enumerate(snaps):
        pe = bs.per_example_noise(net, loss, p, x, y)
        k = jax.random.fold_in(jax.random.key(config.seed), 1000 + e)
        tb = bs.two_batch_noise(net, loss, p, x, y, k, b_small=config.b_small, b_big=config.b_big, draws=config.draws)
        rows.append({"epoch": e, "per_example": pe, "two_batch": tb})
    rows[-1]["autodiff_b_simple"] = bs.per_example_noise(net, loss, snaps[-1], x, y, grad="autodiff")["b_simple"]
    return rows


def at_loss(loss: np.ndarray, values: np.ndarray, target: float) -> float:
    """log-linear interpolation of values at the first crossing of ``target`` by the falling loss."""
    for i in range(1, len(loss)):
        if loss[i] <= target < loss[i - 1]:
            w = (loss[i - 1] - target) / (loss[i - 1] - loss[i])
            return float(np.exp((1 - w) * np.log(values[i - 1]) + w * np.log(values[i])))
    return float("nan")


def run(config: Config, out_dir: Path) -> Result:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    sc = config.steps
    cache = point_cache(out_dir, config)
    points = bu.sweep_batches(sc.workload, sc.batch_sizes, seeds_of(sc), sc.momenta[0], sc.lr0_exp, cache)
    t_sweep = time.perf_counter() - t0
    s = bs.series(points)
    fs, fe = bs.fit_steps(s["B"], s["S"]), bs.fit_examples(s["B"], s["E"])
    b_crit = fe["e_min"] / fs["s_min"]
    best = {p["batch_size"]: p["best_exponent"] for p in points if p["best_exponent"] is not None}
    lr = 2.0 ** best.get(config.trajectory_batch, -1)
    rows = trajectory(config, lr)
    loss = np.array([r["per_example"]["loss"] for r in rows])
    b_pe = np.array([r["per_example"]["b_simple"] for r in rows])
    b_tb = np.array([r["two_batch"]["b_simple"] for r in rows])
    se_tb = np.array([r["two_batch"]["b_simple_se"] for r in rows])
    target = sc.workload.target
    b_at = at_loss(loss, b_pe, target)
    metrics = {
        "fit_steps": fs,
        "fit_examples": fe,
        "s_min": fs["s_min"],
        "e_min": fe["e_min"],
        "b_crit": b_crit,
        "b_simple_at_target": b_at,
        "crit_over_simple": b_crit / b_at if np.isfinite(b_at) else float("nan"),
        "trajectory_batch": config.trajectory_batch,
        "trajectory_lr": lr,
        "trajectory": rows,
        "sweep": {"B": s["B"].tolist(), "S": s["S"].tolist(), "E": s["E"].tolist()},
    }
    claims = _claims(metrics, loss, b_pe, b_tb, se_tb, rows, config)
    figures = [_plot_noise(loss, b_pe, b_tb, se_tb, b_crit, target, out_dir, config), _plot_fits(s, fs, fe, out_dir)]
    return Result(metrics, claims, figures, {"sweep_s": t_sweep, "total_s": time.perf_counter() - t0})


def _claims(m: dict, loss, b_pe, b_tb, se_tb, rows, config: Config) -> list[Claim]:
    rel = np.abs(b_tb - b_pe) / b_pe
    err = max(r["per_example"]["full_batch_rel_err"] for r in rows)
    factor = m["crit_over_simple"]
    fold = max(factor, 1 / factor) if np.isfinite(factor) else float("nan")
    rho = spearman(loss, b_pe)
    return [
        close(
            "The mean of the per-example gradients (manual rules under vmap) equals the batch gradient",
            "fnnet's own contract (value_and_grad under vmap gives per-example gradients)",
            0.0,
            err,
            atol=1e-5,
            note="max over checkpoints of relative L2 error, float32, 4000 examples",
        ),
        close(
            "B_simple from per-example gradients agrees with the two-batch-size unbiased estimator",
            f"{MCC}, Appendix A",
            0.0,
            float(np.median(rel)),
            atol=0.2,
            note=f"median |rel. diff| over {len(rows)} checkpoints (max {rel.max():.3f}); two-batch: B_small="
            f"{config.b_small}, B_big={config.b_big}, {config.draws} draws each; median SE "
            f"{float(np.median(se_tb / b_tb)):.2f} of the estimate",
        ),
        close(
            "Autodiff per-example gradients give the same B_simple (one checkpoint)",
            "fnnet's own contract (manual rules are checked against autodiff)",
            rows[-1]["per_example"]["b_simple"],
            rows[-1]["autodiff_b_simple"],
            rtol=1e-4,
        ),
        Claim(
            "S = S_min(1 + B_noise/B) and E = E_min(1 + B/B_noise) fit the measured steps/examples to target",
            f"{MCC}, eq. 2.11 and Fig. 3",
            "R^2 >= 0.95 for both (on log S, log E)",
            f"R^2(S) = {m['fit_steps']['r2']:.4f}, R^2(E) = {m['fit_examples']['r2']:.4f}; B_noise from S: "
            f"{m['fit_steps']['b_noise']:.1f}, from E: {m['fit_examples']['b_noise']:.1f}",
            ">= 0.95",
            m["fit_steps"]["r2"] >= 0.95 and m["fit_examples"]["r2"] >= 0.95,
        ),
        Claim(
            "The critical batch size B_crit = E_min/S_min is close to B_simple measured at the target loss",
            f"{MCC}, Sec. 3 (B_crit vs B_noise ~ B_simple)",
            f"ratio within {config.crit_factor:g}x either way",
            f"B_crit = {m['b_crit']:.1f}, B_simple(at loss {config.steps.workload.target}) = "
            f"{m['b_simple_at_target']:.1f}, B_crit/B_simple = {factor:.2f}",
            f"<= {config.crit_factor:g}x",
            bool(np.isfinite(fold) and fold <= config.crit_factor),
            "B_simple assumes a Hessian proportional to the identity (eq. 2.8); the paper finds B_crit and "
            "B_simple agree only roughly",
        ),
        Claim(
            "B_simple grows as the loss falls",
            f"{MCC}, Sec. 3 / abstract ('the noise scale increases as the loss decreases')",
            "Spearman rank correlation(loss, B_simple) <= -0.8",
            f"rho = {rho:.3f}; B_simple {b_pe[0]:.1f} at loss {loss[0]:.2f} -> {b_pe[-1]:.1f} at loss {loss[-1]:.2f}",
            "<= -0.8",
            rho <= -0.8,
            f"{len(rows)} checkpoints (one per epoch) of one run at B={config.trajectory_batch}",
        ),
    ]


def _plot_noise(loss, b_pe, b_tb, se_tb, b_crit, target, out_dir, config):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    ax.plot(loss, b_pe, "o-", label="B_simple, per-example gradients (manual, vmap)")
    ax.errorbar(loss, b_tb, yerr=se_tb, fmt="s", mfc="none", capsize=3, label="B_simple, two-batch estimator (App. A)")
    ax.axhline(b_crit, color="tab:red", ls="--", label=f"B_crit = E_min/S_min = {b_crit:.0f} (fit)")
    ax.axvline(target, color="k", ls=":", label=f"target loss {target}")
    for i in (0, len(loss) - 1):
        ax.annotate(f"epoch {i}", (loss[i], b_pe[i]), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set(yscale="log", xlabel="training cross-entropy (whole training set)", ylabel="noise scale (examples)")
    ax.invert_xaxis()
    ax.set_title(f"noise scale along training (B={config.trajectory_batch}); training runs left to right")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    cap = "B_simple at each epoch by two estimators against the loss (falling to the right), with the fitted B_crit."
    return save_figure(fig, out_dir, "noise_scale", cap)


def _plot_fits(s, fs, fe, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    grid = np.geomspace(s["B"].min(), s["B"].max(), 100)
    axes[0].plot(s["B"], s["S"], "o", label="measured (best lr per B)")
    axes[0].plot(grid, fs["s_min"] * (1 + fs["b_noise"] / grid), "k--", label=f"fit, R^2={fs['r2']:.3f}")
    axes[0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="steps to target S")
    axes[1].plot(s["B"], s["E"], "o", label="measured")
    axes[1].plot(grid, fe["e_min"] * (1 + grid / fe["b_noise"]), "k--", label=f"fit, R^2={fe['r2']:.3f}")
    axes[1].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="examples to target E")
    u = np.geomspace(1.02, 100, 200)
    axes[2].plot(u, 1 + 1 / (u - 1), "k--", label="(S/S_min - 1)(E/E_min - 1) = 1")
    axes[2].plot(s["E"] / fe["e_min"], s["S"] / fs["s_min"], "o", label="measured")
    for b, e, st in zip(s["B"], s["E"] / fe["e_min"], s["S"] / fs["s_min"]):
        axes[2].annotate(f"{b:g}", (e, st), textcoords="offset points", xytext=(3, 3), fontsize=7)
    axes[2].set(xscale="log", yscale="log", xlabel="E / E_min", ylabel="S / S_min", xlim=(0.8, 100), ylim=(0.8, 200))
    titles = ["S = S_min (1 + B_noise/B)", "E = E_min (1 + B/B_noise)", "time-compute trade-off (labels: B)"]
    for ax, t in zip(axes, titles):
        ax.set_title(t)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    cap = "McCandlish fits of steps and examples to target against B, and the S-E trade-off hyperbola (eq. 2.11)."
    return save_figure(fig, out_dir, "scaling_fits", cap)
