"""Dead ReLU units: how many die during training on MNIST-1D, whether they come back, and "born dead" nets.

A hidden unit is *dead* when its pre-activation is ≤ 0 on every training example: its ReLU then
outputs 0 everywhere and the hand-written rule relu'(z) = 1[z > 0] passes it no gradient. We train a
40-100-100-10 MLP (He init, zero biases) on MNIST-1D at several learning rates with fnnet's manual
gradients (``fn.sweep``: all runs of one optimizer in one vmapped program) and after every epoch
record which units are alive on the whole training set. The same runs with leaky ReLU (α = 0.01)
give the contrast: there a unit that is negative everywhere still gets the gradient α·dy.

Born dead (Lu et al. 2019): a bias-free ReLU net of width N and L hidden layers with i.i.d. weights
from a symmetric continuous law. At a fixed input x ≠ 0, each hidden layer, given a non-zero input,
switches all its N units off with probability 2^−N independently of the layers before (each unit's
pre-activation is symmetric about 0); once a layer is all zero every later one is. Hence
P(output ≡ 0 at x) = 1 − (1 − 2^−N)^L. We check that against Monte Carlo, and also measure the
rarer event "zero on every point of a sample of inputs" that Lu et al.'s "born dead" (dead on the
whole domain) refers to.

References: "ML Math Derivations (19): Neural Networks and Backpropagation" (author not given, n.d.),
sec. "Common misinterpretations" (the 5–15% claim) and sec. "Activation Functions" (leaky ReLU fixes
dead ReLU); Lu et al. 2019, "Dying ReLU and Initialization: Theory and Numerical Examples", Sec. 3
(probability that a deep ReLU net is born dead); Maas et al. 2013, "Rectifier Nonlinearities Improve
Neural Network Acoustic Models" (leaky ReLU); Greydanus 2020, "Scaling down Deep Learning" (MNIST-1D).
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
from experiments._common import Claim, Result, point_cache, pyplot, save_figure
from fnnet import activations, data, initializers
from fnnet.sweeps import init_params, sweep

NAME = "dead_relu"
TITLE = "Dead ReLU units during training, and nets born dead"

SRC_TEXT = src.ML_MATH_19.cite('sec. "Common misinterpretations" (ReLU avoids saturation)')
SRC_LEAKY = src.ML_MATH_19.cite('sec. "Activation Functions", table (leaky ReLU fixes dead ReLU)')
SRC_LU = src.LU_2019.cite("Sec. 3 (born-dead probability of bias-free ReLU nets)")


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (100, 100)
    runs: tuple[tuple[str, float], ...] = (("adam", 1e-3), ("adam", 3e-3), ("adam", 1e-2), ("adam", 3e-2))
    seeds: int = 5
    epochs: int = 12
    batch_size: int = 100
    few_epochs: int = 3  # "the first few epochs"
    leaky_alpha: float = 0.01
    num_train: int | None = None  # None: all 4000 MNIST-1D training examples
    born_widths: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    born_max_depth: int = 50
    born_samples: int = 10000
    born_domain_points: int = 8
    born_checks: tuple[tuple[int, int], ...] = ((2, 5), (3, 20), (4, 30), (8, 50))
    seed: int = 0


PRESETS = {
    "tiny": Config(
        hidden=(16, 16),
        runs=(("adam", 1e-2), ("adam", 3e-2)),
        seeds=1,
        epochs=3,
        few_epochs=1,
        num_train=400,
        born_widths=(2, 3),
        born_max_depth=8,
        born_samples=2000,
        born_domain_points=4,
        born_checks=((2, 4), (3, 8)),
    ),
    "quick": Config(),
    "full": Config(
        runs=(
            ("adam", 1e-3), ("adam", 3e-3), ("adam", 1e-2), ("adam", 3e-2), ("adam", 1e-1),
            ("sgd", 0.1), ("sgd", 0.5), ("sgd", 1.0), ("sgd", 2.0), ("sgd", 3.0),
        ),
        seeds=5,
        epochs=50,
        born_samples=100000,
        born_domain_points=32,
    ),
}  # fmt: skip

OPTIMIZERS = {"adam": optax.adam, "sgd": fn.optim.sgd}


def Rectifier() -> fn.Layer:
    """Leaky ReLU whose slope α is a frozen entry of params: ReLU (α = 0) and leaky ReLU in one program.

    forward/backward are fnnet's hand-written ``leaky_relu_forward``/``leaky_relu_backward`` with the
    slope read from params; the rule returns dα = 0, so neither SGD nor Adam ever moves α. With α = 0
    this is ReLU except for the derivative at exactly z = 0 (1 here, 0 in ``fn.Relu``), an event of
    probability zero for float pre-activations. One vmapped sweep then trains both activations at
    once (half the compilation of two sweeps).
    """

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), {"alpha": jnp.zeros((), dtype)}

    def forward(params, x, *, key=None, train=True):
        return activations.leaky_relu_forward(x, params["alpha"])

    def backward(params, mask, dy):
        return {"alpha": jnp.zeros_like(params["alpha"])}, activations.leaky_relu_backward(mask, dy, params["alpha"])

    return fn.Layer(init, forward, backward)


def mlp(hidden: tuple[int, ...]) -> fn.Layer:
    layers = []
    for h in hidden:
        layers += [fn.Dense(h, w_init=initializers.he_normal()), Rectifier()]
    return fn.serial(*layers, fn.Dense(10))


def alive_fn(layer: fn.Layer, n_hidden: int, x: jax.Array):
    """K stacked params -> per hidden layer (K, width) bool: the unit's pre-activation is > 0 somewhere on x.

    Read from the forward caches: the Dense after activation i caches its input, the activation's
    output, which is > 0 exactly where the pre-activation is (ReLU and leaky ReLU alike).
    """

    def one(params):
        _, caches = layer.forward(params, x, train=False)
        return tuple(jnp.any(caches[2 * i + 2] > 0, axis=0) for i in range(n_hidden))

    return jax.jit(jax.vmap(one))


def train_sweep(config: Config, opt: str, lrs: list[float], train, test) -> dict:
    """One vmapped sweep of 2 activations × len(lrs) × seeds models; alive masks per epoch (0 = init).

    Model k: activation k // (len(lrs)·seeds) (ReLU, then leaky), lr (k // seeds) % len(lrs), seed k % seeds.
    The ReLU and leaky runs of one (lr, seed) share the init and the batch order.
    """
    layer = mlp(config.hidden)
    n = len(lrs) * config.seeds
    keys = jax.random.split(jax.random.key(config.seed), config.seeds)
    params = init_params(layer, (40,), jnp.tile(keys, 2 * len(lrs)))
    alpha = jnp.repeat(jnp.asarray([0.0, config.leaky_alpha], jnp.float32), n)
    params = tuple({"alpha": alpha} if i % 2 else p for i, p in enumerate(params[:-1])) + (params[-1],)
    lr = np.tile(np.repeat(np.asarray(lrs, np.float32), config.seeds), 2)
    alive = alive_fn(layer, len(config.hidden), jnp.asarray(train.x))
    masks = [alive(params)]
    res = sweep(
        layer, fn.softmax_cross_entropy, params, train, keys=jax.random.key(config.seed + 1),
        optimizer=OPTIMIZERS[opt], learning_rates=lr, batch_size=config.batch_size, epochs=config.epochs,
        test_data=test, eval_train=False, progress=False, callback=lambda e, r: masks.append(alive(r.params)),
    )  # fmt: skip
    # alive: (E + 1, K, units) with the hidden layers side by side
    alive_arr = np.stack([np.concatenate([np.asarray(m) for m in ms], axis=-1) for ms in masks]).astype(np.int8)
    acc = res.history["test_accuracy"][:, -1]
    return {
        act: {"alive": alive_arr[:, i * n : (i + 1) * n], "test_accuracy": acc[i * n : (i + 1) * n]}
        for i, act in enumerate(("relu", "leaky_relu"))
    }


def unit_stats(alive: np.ndarray, few: int, seeds: int, widths: tuple[int, ...]) -> list[dict]:
    """Per learning rate: dead fraction per epoch, dead at `few`, revivals, dead per layer at the end."""
    dead = alive == 0  # (E + 1, K, U)
    out = []
    for i in range(dead.shape[1] // seeds):
        d = dead[:, i * seeds : (i + 1) * seeds]  # (E + 1, S, U)
        died_by_few = d[few]
        revived_few = died_by_few & ~d[-1]
        ever = d[1:].any(axis=0)
        back = (d[:-1] & ~d[1:]).any(axis=0)  # dead at one epoch end, alive at the next
        bounds = np.cumsum((0,) + tuple(widths))
        out.append(
            {
                "dead_fraction": d.mean(axis=(1, 2)),  # (E + 1,) over seeds and units
                "dead_at_few": float(died_by_few.mean()),
                "dead_at_few_per_seed": died_by_few.mean(axis=1),
                "dead_at_end": float(d[-1].mean()),
                "dead_at_few_count": int(died_by_few.sum()),
                "revived_of_dead_at_few": float(revived_few.sum() / max(died_by_few.sum(), 1)),
                "ever_dead": int(ever.sum()),
                "ever_revived": int(back.sum()),
                "dead_at_end_per_layer": [float(d[-1][:, a:b].mean()) for a, b in zip(bounds[:-1], bounds[1:])],
            }
        )
    return out


def born_dead(config: Config) -> dict:
    """Monte Carlo over ``born_samples`` random nets: is the output all zero after hidden layer l = 1..L_max?

    h ← max(h W, 0), the forward of ``fn.Dense`` with zero bias and ``fn.Relu``, written out so one
    draw serves every width: the width-N net uses the first N columns of an (N_max, N_max) weight
    matrix (common random numbers across widths; each width's law is exact). Weights N(0, 1) or
    U[−1, 1], both symmetric (the scale does not change which units are on). Input x ∈ R^{N_max}:
    ``born_domain_points`` N(0, I) points; the first is "the input", all of them "the domain".
    Returns, per weight law, dead[w, l]: the share of nets identically 0 after l + 1 layers.
    """
    S, P, L = config.born_samples, config.born_domain_points, config.born_max_depth
    widths = jnp.asarray(config.born_widths)
    n_max = max(config.born_widths)
    cols = (jnp.arange(n_max)[None, :] < widths[:, None]).astype(jnp.float32)  # (widths, n_max)

    def simulate(key, uniform):
        k_x, k_layers = jax.random.split(key)
        x = jax.random.normal(k_x, (P, n_max))
        h0 = jnp.broadcast_to(x[None, :, None, :], (S, P, widths.shape[0], n_max))

        def layer(h, k):
            shape = (S, n_max, n_max)
            W = jax.lax.cond(
                uniform,
                lambda: jax.random.uniform(k, shape, minval=-1.0, maxval=1.0),
                lambda: jax.random.normal(k, shape),
            )
            h = jnp.maximum(jnp.einsum("spwi,sij->spwj", h, W) * cols[None, None], 0.0)
            at_x = jnp.sum(jnp.all(h[:, 0] == 0, axis=-1), axis=0, dtype=jnp.int32)
            return h, (at_x, jnp.sum(jnp.all(h == 0, axis=(1, 3)), axis=0, dtype=jnp.int32))

        _, (at_x, on_domain) = jax.lax.scan(layer, h0, jax.random.split(k_layers, L))
        return at_x.T, on_domain.T  # (widths, L)

    key = jax.random.key(config.seed + 7)
    counts = jax.jit(lambda k: jax.lax.map(lambda u: simulate(jax.random.fold_in(k, u), u == 1), jnp.arange(2)))(key)
    at_x, on_domain = (np.asarray(c, np.float64) / S for c in counts)
    return {
        dist: {str(n): {"p_at_x": at_x[i, j], "p_on_domain": on_domain[i, j]} for j, n in enumerate(config.born_widths)}
        for i, dist in enumerate(("normal", "uniform"))
    }


def born_theory(width: int, depth: np.ndarray) -> np.ndarray:
    return 1.0 - (1.0 - 2.0**-width) ** depth


def run(config: Config, out_dir: Path) -> Result:
    out_dir = Path(out_dir)
    train, test = data.mnist1d()
    if config.num_train:
        train = data.Dataset(train.x[: config.num_train], train.y[: config.num_train])
    groups: dict[str, list[float]] = {}
    for opt, lr in config.runs:
        groups.setdefault(opt, []).append(float(lr))
    cache = point_cache(out_dir, config)
    stats: dict[str, dict[str, list[dict]]] = {}
    alive: dict[str, dict[str, list]] = {}
    metrics: dict = {"runs": {}}
    for opt, lrs in groups.items():
        compute = lambda o=opt, lr=lrs: train_sweep(config, o, lr, train, test)  # noqa: E731
        both = cache.point(f"sweep_{opt}", compute)
        for act, raw in both.items():
            st = unit_stats(np.asarray(raw["alive"]), config.few_epochs, config.seeds, config.hidden)
            acc = np.asarray(raw["test_accuracy"], np.float64).reshape(len(lrs), config.seeds)
            for s, a in zip(st, acc):
                s["final_test_accuracy"] = a.tolist()
            stats.setdefault(opt, {})[act] = st
            alive.setdefault(opt, {})[act] = raw["alive"]
            metrics["runs"][f"{opt}/{act}"] = {f"lr={lr:g}": s for lr, s in zip(lrs, st)}

    widths = config.born_widths
    depth = np.arange(1, config.born_max_depth + 1)
    raw = cache.point("born_dead", lambda: born_dead(config))
    born = {dist: {n: raw[dist][str(n)] for n in widths} for dist in raw}
    metrics["born_dead"] = {
        dist: {f"N={n}": {**v, "theory": born_theory(n, depth)} for n, v in d.items()} for dist, d in born.items()
    }
    claims = _claims(config, groups, stats, born)
    figures = [
        _plot_dead_fraction(config, groups, stats, alive, out_dir),
        _plot_born_dead(config, born, born_theory, out_dir),
    ]
    return Result(metrics=metrics, claims=claims, figures=figures)


def _z(measured: np.ndarray, p: np.ndarray, n: int) -> np.ndarray:
    """Continuity-corrected binomial z-score of an observed share against probability p (n trials)."""
    se = np.sqrt(np.maximum(p * (1 - p), 1e-300) / n)
    return np.maximum(np.abs(measured - p) - 0.5 / n, 0.0) / se


def _claims(config: Config, groups, stats, born) -> list[Claim]:
    claims = []
    few = config.few_epochs
    seeds_note = (
        f"{config.seeds} seeds; MLP 40-{'-'.join(map(str, config.hidden))}-10, He init, batch {config.batch_size}"
    )
    for opt, lrs in groups.items():
        for lr, s in zip(lrs, stats[opt]["relu"]):
            m = s["dead_at_few"]
            claims.append(
                Claim(
                    f"5-15% of ReLU units die in the first few epochs (MNIST-1D, {opt} lr={lr:g}, after epoch {few})",
                    SRC_TEXT,
                    "0.05-0.15 of hidden units",
                    m,
                    "range [0.05, 0.15]",
                    bool(0.05 <= m <= 0.15),
                    f"{seeds_note}; per seed {np.round(s['dead_at_few_per_seed'], 4).tolist()}; "
                    f"dead at epoch {config.epochs}: {s['dead_at_end']:.4f}",
                    kind="source",
                    seeds=config.seeds,
                    tolerance_basis="source: the text's range, 5-15% of ReLU units (mean over the seeds)",
                )
            )
    relu = [s for opt in groups for s in stats[opt]["relu"]]
    n_dead = sum(s["dead_at_few_count"] for s in relu)
    n_back = sum(round(s["revived_of_dead_at_few"] * s["dead_at_few_count"]) for s in relu)
    ever, revived = sum(s["ever_dead"] for s in relu), sum(s["ever_revived"] for s in relu)
    claims.append(
        Claim(
            "dead ReLU units never recover (share of units dead after the first few epochs alive again at the end)",
            SRC_TEXT,
            0.0,
            n_back / n_dead if n_dead else float("nan"),
            "exact 0",
            bool(n_dead > 0 and n_back == 0),
            f"{n_back} of {n_dead} units dead at epoch {few} were alive at epoch {config.epochs} (all runs pooled); "
            f"{revived} of {ever} units that were ever dead came back at some epoch. A first-layer unit dead on "
            "every input gets exactly zero gradient, but a deeper one can revive when the layers below it move."
            + ("" if n_dead else " No unit died, so the claim could not be tested."),
            kind="source",
            seeds=config.seeds,
            tolerance_basis="source: the text says dead units never recover; no recovery allowed",
        )
    )
    worse = []
    for opt, lrs in groups.items():
        for lr, r, lk in zip(lrs, stats[opt]["relu"], stats[opt]["leaky_relu"]):
            if r["dead_at_end"] > 0:
                worse.append((f"{opt} lr={lr:g}", r["dead_at_end"], lk["dead_at_end"]))
    claims.append(
        Claim(
            f"leaky ReLU (α={config.leaky_alpha}) has fewer units inactive on the whole training set at the end than "
            "ReLU, at every learning rate where ReLU units died",
            SRC_LEAKY,
            "leaky < ReLU at each such lr",
            {name: {"relu": a, "leaky": b} for name, a, b in worse},
            "strict inequality per lr",
            bool(worse) and all(b < a for _, a, b in worse),
            "same seeds, data order and init as the ReLU runs; a leaky unit negative everywhere still gets α·dy"
            + ("" if worse else "; no ReLU unit was dead at the end, so nothing to compare"),
            kind="source",
            seeds=config.seeds,
            tolerance_basis="source: the text says leaky ReLU fixes dead ReLU; a strict inequality of the pooled "
            "shares at each learning rate",
        )
    )
    S = config.born_samples
    for n, L in config.born_checks:
        if n not in born["normal"] or L > config.born_max_depth:
            continue
        p = float(born_theory(n, np.array(L)))
        m = float(born["normal"][n]["p_at_x"][L - 1])
        se = np.sqrt(p * (1 - p) / S)
        dom = float(born["normal"][n]["p_on_domain"][L - 1])
        claims.append(
            Claim(
                f"born dead: P(output ≡ 0 at an input) = 1 − (1 − 2^−N)^L for a bias-free ReLU net, N={n}, L={L}",
                SRC_LU,
                p,
                m,
                f"4 standard errors + 0.5/S = {4 * se + 0.5 / S:.2g} ({S} nets)",
                bool(abs(m - p) <= 4 * se + 0.5 / S),
                f"N(0, 1) weights, zero biases, L hidden layers of width N; P(zero on all "
                f"{config.born_domain_points} sampled inputs) = {dom:.4f}, lower: the formula is for one input",
                kind="source",
                seeds=S,
                tolerance_basis=f"seed spread: binomial standard error of {S} independent nets, 4 SE + 0.5/S",
            )
        )
    for dist in ("normal", "uniform"):
        z = []
        for n, v in born[dist].items():
            p = born_theory(n, np.arange(1, config.born_max_depth + 1))
            z.append(_z(np.asarray(v["p_at_x"]), p, S))
        zmax = float(np.max(np.concatenate(z)))
        claims.append(
            Claim(
                f"born-dead formula matches Monte Carlo at every N in {list(config.born_widths)} and every "
                f"L = 1..{config.born_max_depth} ({dist} weights)",
                SRC_LU,
                "max |z| ≤ 4.5",
                zmax,
                "4.5 standard errors (many correlated comparisons)",
                bool(zmax <= 4.5),
                f"{S} nets per width; z = (|MC − formula| − 0.5/S) / binomial standard error (continuity-corrected)",
                kind="source",
                seeds=S,
                tolerance_basis=f"seed spread: binomial standard error of {S} independent nets per width, 4.5 SE",
            )
        )
    return claims


# ----------------------------------------------------------------------------------------------
# figures


def _plot_dead_fraction(config, groups, stats, alive, out_dir: Path):
    """Figure ``dead_fraction``: share of dead units per epoch, and which units die and revive."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(5.6 * (len(groups) + 1), 4.4), squeeze=False)
    epochs = np.arange(config.epochs + 1)
    for ax, (opt, lrs) in zip(axes[0], groups.items()):
        for i, lr in enumerate(lrs):
            c = f"C{i}"
            ax.plot(epochs, 100 * np.asarray(stats[opt]["relu"][i]["dead_fraction"]), "-o", ms=3, color=c,
                    label=f"ReLU lr={lr:g}")  # fmt: skip
            ax.plot(epochs, 100 * np.asarray(stats[opt]["leaky_relu"][i]["dead_fraction"]), "--", color=c,
                    label=f"leaky lr={lr:g}")  # fmt: skip
        ax.axhspan(5, 15, color="0.85", zorder=0, label="text: 5-15%")
        ax.axvline(config.few_epochs, color="0.5", ls=":", lw=1)
        ax.set_xlabel("epoch (0 = initialization)")
        ax.set_ylabel("hidden units inactive on every training example (%)")
        ax.set_title(f"MNIST-1D MLP, {opt}, mean of {config.seeds} seeds", fontsize=10)
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    # the ReLU run (seed 0) with the most revivals: which units are dead after each epoch
    best, best_n = None, -1
    for opt, lrs in groups.items():
        a = np.asarray(alive[opt]["relu"]) == 0  # (E + 1, K, U)
        for i, lr in enumerate(lrs):
            d = a[:, i * config.seeds]
            n = int((d[:-1] & ~d[1:]).sum())
            if n > best_n:
                best, best_n = (opt, lr, d), n
    ax = axes[0][-1]
    opt, lr, d = best
    units = np.flatnonzero(d.any(axis=0))
    if units.size:
        ax.imshow(d[:, units].T, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1,
                  extent=(-0.5, config.epochs + 0.5, units.size - 0.5, -0.5))  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("hidden units that were ever dead (unit order)")
    ax.set_title(f"ReLU, {opt} lr={lr:g}, seed 0: black = dead; {best_n} revivals", fontsize=10)
    return save_figure(
        fig, out_dir, "dead_fraction",
        "Left: share of hidden units with pre-activation ≤ 0 on all training inputs, per epoch (solid ReLU, dashed "
        "leaky); grey band the text's 5-15%. Right: which units are dead when; white gaps after black are revivals.",
    )  # fmt: skip


def _plot_born_dead(config, born, born_theory, out_dir: Path):
    """Figure ``born_dead``: P(output ≡ 0) against depth, the formula and Monte Carlo."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    depth = np.arange(1, config.born_max_depth + 1)
    for i, n in enumerate(config.born_widths):
        c = f"C{i}"
        ax.plot(depth, born_theory(n, depth), "-", color=c, lw=1.2, label=f"N={n}")
        ax.plot(depth, born["normal"][n]["p_at_x"], "o", color=c, ms=3, mfc="none")
        ax.plot(depth, born["uniform"][n]["p_at_x"], "x", color=c, ms=3)
        ax.plot(depth, born["normal"][n]["p_on_domain"], ":", color=c, lw=1)
    ax.plot([], [], "k-", lw=1.2, label="1 − (1 − 2^−N)^L")
    ax.plot([], [], "ko", mfc="none", ms=3, label="MC, N(0,1) weights")
    ax.plot([], [], "kx", ms=3, label="MC, U[-1,1] weights")
    ax.plot([], [], "k:", label=f"MC, zero on all {config.born_domain_points} inputs")
    ax.set_xlabel("hidden layers L")
    ax.set_ylabel("P(network output ≡ 0)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Born dead at initialization (zero biases, {config.born_samples} nets per width)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: inside it hid N=6 and N=8
    return save_figure(
        fig, out_dir, "born_dead",
        "Probability that a bias-free ReLU net of width N is identically 0 at an input, vs depth: lines the formula, "
        "markers Monte Carlo. Dotted: zero on every sampled input, rarer than at one input.",
    )  # fmt: skip
