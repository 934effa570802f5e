"""The MNIST-1D baselines of Greydanus 2020: logistic regression, an MLP and a CNN, trained through fnnet.

Greydanus 2020 ("Scaling down Deep Learning", abstract and Table 1) introduces MNIST-1D (40-long 1-D
signals of 10 digit templates, 4000 training and 1000 test examples) and reports that it separates
linear, nonlinear and convolutional models, which reach about 32 %, 68 % and 94 % test accuracy. This
experiment checks that fnnet's copy of the data and fnnet's training pipeline (the hand-written rules,
``fn.sweep``) reproduce those numbers, so that the studies which train on MNIST-1D stand on a
pipeline that matches the paper's.

The models and the training follow the code published with the paper (as fnnet reads it; the paper's
text gives only the accuracies):

* logistic regression: one Dense(10) on the raw 40 features;
* MLP: Dense(100), ReLU, then a residual Dense(100)-ReLU block (h ← h + relu(W₂h + b₂)), then Dense(10)
  (100 is the width the code's MLP defaults to; a later training script of the same code uses 256 units
  and 8000 steps, so the paper's exact MLP setting is not certain);
* CNN: three 1-D convolutions of 25 channels (kernel 5, 3, 3; stride 2; zero padding 1; ReLU), flattened
  (5 positions × 25 channels = 125 features), then Dense(10). fnnet convolves in 2-D, so a signal is a
  1 × 40 image with one channel and every kernel is 1 × k;
* softmax cross-entropy, Adam (learning rate 10⁻², no weight decay), batch 100, 6000 steps (150 epochs),
  the test accuracy read after the last step.

Where fnnet departs from that code: weights are drawn U(±1/√fan_in) (PyTorch's default for its layers)
but biases start at 0 (PyTorch draws them from the same uniform); each epoch draws a fresh permutation
(the paper's loop walks the training set in order); the remainder is never an issue (100 divides 4000).

Tolerance: the paper prints whole percents from runs of its own, whose seed-to-seed spread is the same
kind of spread as fnnet's; a baseline holds when the mean over ``seeds`` seeds is within twice their
sample standard deviation, plus 0.5 points for the paper's rounding, of the paper's number. The model
ordering, the paper's point, holds when each gap exceeds three standard errors of the difference.

At the quick preset the CNN is not trained (its 6000 steps for 5 seeds do not fit the checks study's
budget on a 2-core CPU), and its claims are inconclusive; the ``full`` preset trains it.
A preset that trains fewer than the paper's 6000 steps (``tiny``) makes every accuracy claim inconclusive.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, pyplot, save_figure
from fnnet import data as fdata
from fnnet import initializers

NAME = "mnist1d_baselines"
TITLE = "MNIST-1D baselines (Greydanus 2020): logistic regression, MLP, CNN"

MODELS = ("logistic", "mlp", "cnn")
#: The paper's test accuracies in percent (Greydanus 2020, abstract and Table 1).
PAPER_ACCURACY = {"logistic": 32.0, "mlp": 68.0, "cnn": 94.0}
PAPER_STEPS = 6000  # batch 100: 150 epochs of the 4000 training examples
CHANCE = 10.0  # ten balanced classes
LABEL = {"logistic": "logistic regression", "mlp": "MLP", "cnn": "CNN"}


@dataclasses.dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = MODELS  # which baselines to train
    seeds: int = 5  # independent inits and batch orders per model
    steps: int = PAPER_STEPS  # Adam steps of batch_size examples
    batch_size: int = 100
    learning_rate: float = 1e-2
    hidden: int = 100  # the MLP's width
    channels: int = 25  # the CNN's channels
    seed: int = 0  # seed s of model m uses keys fold_in(key(seed), s)


PRESETS = {
    "tiny": Config(models=("logistic", "mlp"), steps=80, hidden=32),
    "quick": Config(models=("logistic", "mlp")),
    "full": Config(),
}


def _torch_default() -> initializers.Initializer:
    """U(±1/√fan_in): Var = 1/(3 fan_in), PyTorch's default for Linear and Conv weights."""
    return initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def model(name: str, hidden: int = 100, channels: int = 25) -> tuple[fn.Layer, tuple[int, ...]]:
    """The baseline ``name`` (see the module docstring) and the shape of one input example."""
    w = _torch_default
    if name == "logistic":
        return fn.Dense(10, w_init=w()), (40,)
    if name == "mlp":
        block = fn.residual(fn.serial(fn.Dense(hidden, w_init=w()), fn.Relu()))
        return fn.serial(fn.Dense(hidden, w_init=w()), fn.Relu(), block, fn.Dense(10, w_init=w())), (40,)
    if name == "cnn":
        convs = []
        for k in (5, 3, 3):
            convs += [fn.Conv2D(channels, (1, k), stride=(1, 2), padding=((0, 0), (1, 1)), w_init=w()), fn.Relu()]
        return fn.serial(*convs, fn.Flatten(), fn.Dense(10, w_init=w())), (1, 40, 1)
    raise ValueError(f"unknown MNIST-1D baseline {name!r}; choose from {', '.join(MODELS)}")


def train_baseline(name: str, cfg: Config, train: fdata.Dataset, test: fdata.Dataset) -> dict:
    """``cfg.seeds`` runs of baseline ``name`` in one vmapped program; per-epoch test accuracy in percent."""
    net, in_shape = model(name, cfg.hidden, cfg.channels)
    as_input = lambda d: fdata.Dataset(jnp.asarray(d.x).reshape((-1, *in_shape)), jnp.asarray(d.y))  # noqa: E731
    base = jax.random.fold_in(jax.random.key(cfg.seed), MODELS.index(name))
    keys = jnp.stack([jax.random.fold_in(base, s) for s in range(cfg.seeds)])
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    order_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    params = fn.init_params(net, in_shape, init_keys)
    epochs = cfg.steps // (len(train.y) // cfg.batch_size)
    result = fn.sweep(
        net,
        fn.softmax_cross_entropy,
        params,
        as_input(train),
        keys=order_keys,
        optimizer=optax.adam(cfg.learning_rate),
        batch_size=cfg.batch_size,
        epochs=epochs,
        test_data=as_input(test),
        eval_train=False,  # the claims read the test accuracy only; skipping the training set saves time
        progress=False,
    )
    return {
        "test_accuracy": (100 * np.asarray(result.history["test_accuracy"])).tolist(),  # (seeds, epochs)
        "steps": epochs * result.steps_per_epoch,
        "diverged": np.asarray(result.diverged).tolist(),
    }


def _spread(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _accuracy_claim(name: str, curves: list | None, steps: int, cfg: Config) -> Claim:
    """The claim on baseline ``name`` from its per-seed test-accuracy curves (None: not trained)."""
    trained = curves is not None
    final = np.asarray(curves)[:, -1] if trained else np.array([])
    paper = PAPER_ACCURACY[name]
    claim = f"{LABEL[name]} reaches about {paper:g} % test accuracy on MNIST-1D (mean of {cfg.seeds} seeds)"
    source = src.GREYDANUS_2020.cite("abstract and Table 1")
    basis = (
        f"seed spread: {cfg.seeds} seeds, twice the sample standard deviation of the final test accuracy, "
        "plus 0.5 points for the paper's whole-percent rounding"
    )
    if not trained or steps < PAPER_STEPS:
        why = "not trained at this preset" if not trained else f"trained {steps} of the paper's {PAPER_STEPS} steps"
        if name == "cnn":
            why += f" ({cfg.seeds} seeds of {PAPER_STEPS} steps take about 3 CPU-minutes, over the checks budget)"
        where = "the full preset trains" if name == "cnn" else "the quick and full presets train"
        note = f"{why}; {where} {cfg.seeds} seeds for {PAPER_STEPS} steps, which answers it"
        measured = "not trained at this preset" if not trained else round(float(np.mean(final)), 2)
        return Claim(claim, source, paper, measured, "n/a", False, note, "inconclusive", cfg.seeds, basis)
    mean, std = _spread(final)
    tol = 2 * std + 0.5
    ok = bool(np.isfinite(mean) and abs(mean - paper) <= tol)
    curve = np.asarray(curves).mean(0)  # the seeds' mean test accuracy after each epoch
    peak = f"the seeds' mean peaks at {curve.max():.1f} % after {int(np.argmax(curve)) + 1} of {len(curve)} epochs"
    note = f"mean {mean:.1f} % (seed std {std:.1f}) against the paper's {paper:g} %; {peak}"
    note = peak if ok else note
    return Claim(claim, source, paper, round(mean, 2), f"atol {tol:.2f}", ok, note, "source", cfg.seeds, basis)


def _order_claim(lo: str, hi: str, finals: dict, cfg: Config, answered: bool) -> Claim:
    claim = f"MNIST-1D separates {LABEL[lo]} from {LABEL[hi]}: the {LABEL[hi]} is more accurate on the test set"
    source = src.GREYDANUS_2020.cite("abstract and Table 1")
    basis = f"seed spread: {cfg.seeds} seeds per model, three standard errors of the difference of the means"
    if not answered:
        where = "the full preset trains" if "cnn" in (lo, hi) else "the quick and full presets train"
        note = f"{where} both for {PAPER_STEPS} steps, which answers it"
        measured = "not compared at this preset"
        return Claim(
            claim, source, "> 3 standard errors", measured, "n/a", False, note, "inconclusive", cfg.seeds, basis
        )
    a, b = np.asarray(finals[lo]), np.asarray(finals[hi])
    gap = float(b.mean() - a.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    ok = bool(gap > 3 * se)
    expected = f"gap > 3 SE ({3 * se:.2f} points)"
    note = "" if ok else f"gap {gap:.2f} points is within three standard errors ({3 * se:.2f})"
    return Claim(claim, source, expected, round(gap, 2), f"3 SE = {3 * se:.2f}", ok, note, "source", cfg.seeds, basis)


def run(config: Config, out_dir: Path) -> Result:
    unknown = [m for m in config.models if m not in MODELS]
    if unknown:
        raise ValueError(f"mnist1d_baselines: unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if config.seeds < 2:
        raise ValueError(f"mnist1d_baselines needs at least 2 seeds for a spread, got seeds={config.seeds}")
    train, test = fdata.mnist1d()
    runs = {m: train_baseline(m, config, train, test) for m in MODELS if m in config.models}
    finals = {m: np.asarray(r["test_accuracy"])[:, -1] for m, r in runs.items()}

    counts = np.bincount(np.asarray(train.y), minlength=10)
    shape_ok = train.x.shape == (4000, 40) and test.x.shape == (1000, 40) and len(counts) == 10
    claims = [
        Claim(
            "fnnet's MNIST-1D is the paper's default: 4000 training and 1000 test signals of 40 samples, 10 classes",
            src.GREYDANUS_2020.cite("abstract; Fig. 1"),
            [[4000, 40], [1000, 40], 10],
            [list(train.x.shape), list(test.x.shape), int(len(counts))],
            "exact",
            bool(shape_ok),
            "holds by construction (fnnet.data.mnist1d calls the paper's generator with its default arguments)",
            "sanity",
            1,
            "rounding: integer shapes, compared exactly",
        )
    ]
    steps = {m: r["steps"] for m, r in runs.items()}
    for m in MODELS:
        curves = runs[m]["test_accuracy"] if m in runs else None
        claims.append(_accuracy_claim(m, curves, steps.get(m, 0), config))
    for lo, hi in (("logistic", "mlp"), ("mlp", "cnn")):
        answered = lo in runs and hi in runs and min(steps[lo], steps[hi]) >= PAPER_STEPS
        claims.append(_order_claim(lo, hi, finals, config, answered))

    metrics = {
        "paper_accuracy": PAPER_ACCURACY,
        "runs": runs,
        "final_test_accuracy": {m: v.tolist() for m, v in finals.items()},
        "mean_std": {m: list(_spread(v)) for m, v in finals.items()},
        "train_class_counts": counts.tolist(),
    }
    return Result(metrics=metrics, claims=claims, figures=[_figure(runs, finals, config, out_dir)])


def _figure(runs: dict, finals: dict, cfg: Config, out_dir: Path):
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for i, (m, r) in enumerate(runs.items()):
        acc = np.asarray(r["test_accuracy"])
        steps = np.arange(1, acc.shape[1] + 1) * (r["steps"] / acc.shape[1])
        ax1.fill_between(steps, acc.min(0), acc.max(0), color=f"C{i}", alpha=0.25, lw=0)
        ax1.plot(steps, acc.mean(0), color=f"C{i}", label=f"{LABEL[m]} (mean, range of {acc.shape[0]} seeds)")
        ax1.axhline(PAPER_ACCURACY[m], color=f"C{i}", ls="--", lw=1)
    ax1.axhline(CHANCE, color="grey", ls=":", lw=1, label="chance (10 %)")
    ax1.set_xlabel("Adam steps (batch 100)")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_ylim(0, 100)
    ax1.legend(fontsize=7, loc="lower right")
    ax1.set_title("test accuracy while training; dashed: the paper's value", fontsize=9)
    for i, m in enumerate(MODELS):
        ax2.plot([i - 0.3, i + 0.3], [PAPER_ACCURACY[m]] * 2, color="k", lw=2, label="paper" if i == 0 else None)
        if m in finals:
            v = finals[m]
            ax2.scatter(np.full(len(v), i) + np.linspace(-0.12, 0.12, len(v)), v, color=f"C{i}", s=14, zorder=3)
            mean, std = _spread(v)
            ax2.errorbar(i + 0.2, mean, yerr=2 * std + 0.5, color=f"C{i}", capsize=3, fmt="o", ms=4)
        else:
            ax2.text(i, 50, "not trained\nat this preset", ha="center", fontsize=7)
    ax2.set_xticks(range(len(MODELS)), [LABEL[m] for m in MODELS], fontsize=8)
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("final test accuracy (%)")
    ax2.set_title("each seed; bar: mean ± (2 std + 0.5)", fontsize=9)
    ax2.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(
        fig,
        out_dir,
        "baselines",
        "MNIST-1D test accuracy of the baselines trained by fnnet, against Greydanus 2020's values (dashed, black). "
        "A baseline holds when its seeds' mean lies within the error bar of the paper's value.",
    )
