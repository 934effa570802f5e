"""The SGD noise scale g ≈ εN/B (Smith & Le 2018): equal g, equal result — until ε gets too large.

For each noise scale g and batch size B the learning rate is ε = g·B/N, and the MLP of the study is
trained for the same number of epochs (so the same "SDE time" ε·steps = g·epochs) with plain SGD by
the engine (``fnnet.sweep``: every g and seed vmapped in one program per B; hand-written rules).
Smith & Le's exact scale is g = ε(N/B − 1); the simpler form εN/B used here differs from it by a factor
N/(N − B), at most 1.35 here (B = 1024, N = 4000). A control series keeps ε fixed at the value
of the smallest B for the first g, so its g falls as B grows.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, point_cache, pyplot, save_figure
from experiments.batch_size import _batch_util as bu
from fnnet.sweeps import sweep

NAME = "lr_noise_scale"
TITLE = "Noise scale g = eps*N/B: equal g gives equal results over a range of B (Smith & Le 2018)"

SMITH_LE = src.SMITH_LE_2018.cite("Sec. 5, eq. 6 and Fig. 5")


@dataclasses.dataclass(frozen=True)
class Config:
    batch_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    noise_scales: tuple[float, ...] = (16.0, 64.0)  # g; the first is the claim's main series
    epochs: int = 5
    n_seeds: int = 2
    hidden: tuple[int, ...] = (128, 128)
    loss_rtol: float = 0.15  # "similar": final training loss within 15% of the smallest B's ...
    acc_atol: float = 0.03  # ... and test accuracy within 3 points
    seed: int = 0


PRESETS = {
    "tiny": Config(batch_sizes=(256, 1024), noise_scales=(16.0,), epochs=1, n_seeds=1, hidden=(16,)),
    "quick": Config(),
    "full": Config(
        batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024, 2000),
        noise_scales=(4.0, 16.0, 64.0, 256.0),
        epochs=20,
        n_seeds=4,
    ),
}


def series_names(config: Config) -> list[str]:
    return [f"g={g:g}" for g in config.noise_scales] + ["fixed lr"]


def lrs_for(config: Config, b: int, n: int) -> list[float]:
    """ε = g·B/N for each g, then the fixed-ε control: the first g's ε at the smallest B."""
    return [g * b / n for g in config.noise_scales] + [config.noise_scales[0] * min(config.batch_sizes) / n]


def run_batch(config: Config, b: int) -> dict:
    """One vmapped sweep at batch size b over (series × seeds)."""
    train, test = bu.load_data()
    n = int(train.x.shape[0])
    net = bu.mlp(config.hidden)
    seeds = tuple(config.seed + i for i in range(config.n_seeds))
    lrs = lrs_for(config, b, n)
    params = bu.init_models(net, seeds)  # (S, ...) -> (S·G, ...), seed-major
    params = jax.tree_util.tree_map(lambda a: np.repeat(np.asarray(a), len(lrs), axis=0), params)
    keys = bu.data_keys(seeds)[np.repeat(np.arange(len(seeds)), len(lrs))]  # seed-major, like params
    res = sweep(
        net,
        fn.softmax_cross_entropy,
        params,
        train,
        keys=keys,
        learning_rates=np.tile(lrs, len(seeds)),
        batch_size=b,
        epochs=config.epochs,
        eval_train=False,  # the final evaluation below is one program shared by every B
        accuracy=None,
        progress=False,
    )
    shape = (len(seeds), len(lrs))
    train_loss, _ = bu.evaluate_models(net, res.params, train)
    _, test_acc = bu.evaluate_models(net, res.params, test)
    div = np.asarray(res.diverged)
    nan = lambda v: np.where(div, np.nan, v)  # noqa: E731  (a diverged run keeps its last finite params)
    return {
        "batch_size": b,
        "lrs": lrs,
        "train_loss": np.reshape(nan(train_loss), shape).T.tolist(),  # (series, seeds)
        "test_accuracy": np.reshape(nan(test_acc), shape).T.tolist(),
        "diverged": np.reshape(div, shape).T.tolist(),
        "epoch_minibatch_loss": np.reshape(res.history["loss"], shape + (-1,)).transpose(1, 0, 2).tolist(),
    }


def summarise(points: list[dict], config: Config) -> dict:
    """Per series: mean over seeds (NaN when any seed diverged), and the break B of each g series."""
    out = {}
    for i, name in enumerate(series_names(config)):
        loss = np.array([p["train_loss"][i] for p in points], float)  # (B, seeds)
        acc = np.array([p["test_accuracy"][i] for p in points], float)
        div = np.array([p["diverged"][i] for p in points], bool)
        lm = np.where(div.any(axis=1), np.nan, loss.mean(axis=1))
        am = np.where(div.any(axis=1), np.nan, acc.mean(axis=1))
        ok = (
            np.isfinite(lm) & (np.abs(lm - lm[0]) <= config.loss_rtol * lm[0]) & (np.abs(am - am[0]) <= config.acc_atol)
        )
        k = 0
        while k < len(ok) and ok[k]:
            k += 1
        out[name] = {
            "lr": [p["lrs"][i] for p in points],
            "train_loss": lm.tolist(),
            "train_loss_seed_min": loss.min(axis=1).tolist(),
            "train_loss_seed_max": loss.max(axis=1).tolist(),
            "test_accuracy": am.tolist(),
            "diverged_any_seed": div.any(axis=1).tolist(),
            "holds_up_to": points[k - 1]["batch_size"] if k >= 1 else None,
            "breaks_at": points[k]["batch_size"] if k < len(points) else None,
            "lr_at_break": points[k]["lrs"][i] if k < len(points) else None,
        }
    return out


def run(config: Config, out_dir: Path) -> Result:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    cache = point_cache(out_dir, config)
    points = [cache.point(f"sweep_B{b}", lambda b=b: run_batch(config, b)) for b in sorted(config.batch_sizes)]
    summary = summarise(points, config)
    metrics = {"batch_sizes": sorted(config.batch_sizes), "series": summary, "n_seeds": config.n_seeds}
    claims = _claims(summary, config)
    figs = [_plot(points, summary, out_dir, config)]
    return Result(metrics, claims, figs, {"total_s": time.perf_counter() - t0})


def _claims(summary: dict, config: Config) -> list[Claim]:
    names = series_names(config)
    main = summary[names[0]]
    bmin = min(config.batch_sizes)
    span = (main["holds_up_to"] or 0) / bmin
    tol = f"loss within {config.loss_rtol:.0%} and test acc within {config.acc_atol:.2f} of B={bmin}"
    claims = [
        Claim(
            f"At equal noise scale g = eps*N/B ({names[0]}), final training loss and test accuracy are similar "
            "over a range of B",
            SMITH_LE,
            f"{tol} for B from {bmin} over at least an 8x range",
            f"holds for B = {bmin}..{main['holds_up_to']} ({span:g}x); losses "
            + ", ".join(f"{v:.3f}" for v in main["train_loss"])
            + "; test acc "
            + ", ".join(f"{v:.3f}" for v in main["test_accuracy"]),
            tol,
            span >= 8,
            f"{config.n_seeds} seeds, {config.epochs} epochs per run; a diverged seed makes the point fail",
        )
    ]
    gs = [summary[n] for n in names[:-1]]
    breaks = [g["breaks_at"] if g["breaks_at"] is not None else np.inf for g in gs]
    eps = [g["lr_at_break"] for g in gs]
    if len(gs) > 1:
        claims.append(
            Claim(
                "The scaling breaks where eps = g*B/N grows too large: larger g breaks at smaller B",
                f"{SMITH_LE}; {src.GOYAL_2017.cite('Sec. 2.2 (linear scaling fails at large eps)')}",
                "break batch size decreasing in g",
                "; ".join(f"{n}: breaks at B={g['breaks_at']} (eps={e})" for n, g, e in zip(names, gs, eps)),
                "ordering",
                all(a > b for a, b in zip(breaks, breaks[1:])),
                "at the break the runs degrade or diverge: eps exceeds the stability limit ~2/lambda_max",
            )
        )
    ctrl, ref = summary[names[-1]], summary[names[0]]
    spread = lambda s: float(np.nanmax(s["train_loss"]) / np.nanmin(s["train_loss"]))  # noqa: E731
    upto = [i for i, b in enumerate(sorted(config.batch_sizes)) if ref["holds_up_to"] and b <= ref["holds_up_to"]]
    sub = lambda s: {"train_loss": [s["train_loss"][i] for i in upto]}  # noqa: E731
    if len(upto) >= 2:
        a, b = spread(sub(ref)), spread(sub(ctrl))
        claims.append(
            Claim(
                "Without rescaling eps (fixed learning rate), the final loss changes much more with B",
                SMITH_LE,
                "max/min final loss over the same B range: fixed lr > fixed g",
                f"fixed g: {a:.2f}x, fixed lr: {b:.2f}x over B = {bmin}..{ref['holds_up_to']}",
                "strict",
                b > a,
            )
        )
    return claims


def _plot(points: list[dict], summary: dict, out_dir: Path, config: Config):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    b = np.array([p["batch_size"] for p in points], float)
    for (name, s), c in zip(summary.items(), ["tab:blue", "tab:orange", "tab:green", "tab:purple", "grey"]):
        ls = "--" if name == "fixed lr" else "-"
        lm = np.array(s["train_loss"], float)
        err = [lm - np.array(s["train_loss_seed_min"]), np.array(s["train_loss_seed_max"]) - lm]
        axes[0].errorbar(b, lm, yerr=err, fmt="o" + ls, color=c, capsize=3, label=name)
        axes[1].plot(b, s["test_accuracy"], "o" + ls, color=c, label=name)
        div = np.array(s["diverged_any_seed"])
        if s["breaks_at"] is not None and name != "fixed lr":
            axes[0].axvline(s["breaks_at"], color=c, ls=":", lw=1)
        if name != "fixed lr":
            axes[2].plot(np.array(s["lr"]), lm, "o-", color=c, label=name)
            axes[2].scatter(np.array(s["lr"])[div], np.full(div.sum(), 2.3), marker="x", color=c, s=60)
    axes[2].scatter([], [], marker="x", color="k", label="diverged (drawn at loss 2.3)")
    axes[0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="final training loss (mean of seeds)")
    axes[0].set_title(f"after {config.epochs} epochs; dotted: break B (gaps: diverged)")
    axes[1].set(xscale="log", xlabel="batch size B", ylabel="test accuracy")
    axes[1].set_title("test accuracy")
    axes[2].set(xscale="log", yscale="log", xlabel="learning rate eps = g B / N", ylabel="final training loss")
    axes[2].set_title("the same runs against eps: the break sits at a similar eps")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    cap = "Final loss and test accuracy against B at fixed noise scale g (and at fixed lr), and against eps."
    return save_figure(fig, out_dir, "noise_scale", cap)
