"""Glorot & Bengio's training comparison: tanh and softsign, standard and normalized init.

After Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural networks":
Table 1 (test errors of 5-hidden-layer nets for each activation, with the standard init
U[−1/√n, 1/√n] and the normalized init U[±√6/√(n_in + n_out)], "N" in the table) and sec. 3 with
Fig. 3-4 (in training, tanh units saturate, layer 1 first; softsign units settle in the knees between
the linear part and saturation instead). Their nets had 1000 units per layer and were trained on
Shapeset-3×2, MNIST, CIFAR-10 and Small-ImageNet; here MNIST-1D stands in.

Every (activation, init, learning rate, seed) is one model of a single ``fnnet.sweep`` (SGD, manual
gradients through fnnet's Dense, Tanh and Softsign rules). The learning rate is chosen per
(activation, init) by the final *training* loss (median over seeds), never by test error. After
training, the hidden activations of the chosen models on held-out inputs give the saturation per layer:
the fraction of units with |h| > ``saturated``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, point_cache, pyplot, save_figure
from experiments.initialization import _init_nets as N
from experiments.initialization import _init_util as U
from fnnet.optim import sgd
from fnnet.sweeps import stack, sweep

NAME = "glorot_training"
TITLE = (
    "Tanh and softsign under standard and normalized init: test error and saturation "
    f"(after {src.GLOROT_BENGIO_2010.short})"
)

SRC_T1 = src.GLOROT_BENGIO_2010.cite(
    "Table 1 (normalized init lowers tanh's test error; softsign is far less sensitive)"
)
SRC_SAT = src.GLOROT_BENGIO_2010.cite("sec. 3.2-3.3 and Fig. 3-4 (tanh saturates in training, softsign much less)")
ACTS = {"tanh": fn.Tanh, "softsign": fn.Softsign}
INITS = {"standard": fn.initializers.standard_uniform, "normalized": fn.initializers.glorot_uniform}


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: int = 5
    width: int = 64
    lrs: tuple[float, ...] = (0.03, 0.1)
    seeds: int = 5
    batch: int = 10  # Glorot & Bengio's minibatch size
    epochs: int = 8
    n_train: int = 4000
    saturated: float = 0.95  # |h| above this counts as saturated
    probe: int = 500
    seed: int = 0


PRESETS = {
    "tiny": Config(width=8, hidden=3, lrs=(0.1,), seeds=5, epochs=1, n_train=200, probe=50),
    "quick": Config(),
    "full": Config(width=1000, lrs=(0.01, 0.03, 0.1, 0.3), seeds=8, epochs=60),
}


def _net(cfg: Config, act: str, init: str) -> fn.Layer:
    layers = []
    for _ in range(cfg.hidden):
        layers += [fn.Dense(cfg.width, INITS[init]()), ACTS[act]()]
    return fn.serial(*layers, fn.Dense(10, INITS[init]()))


def _hidden(cfg: Config, act: str, params, x) -> list:
    """The hidden activations h_1..h_hidden of one model (Dense and activation forwards, layer by layer)."""
    dense, phi, hs, h = fn.Dense(cfg.width), ACTS[act](), [], x
    for l in range(cfg.hidden):
        h, _ = phi.forward((), dense.forward(params[2 * l], h)[0])
        hs.append(h)
    return hs


def _train(cfg: Config, train, test) -> dict:
    k_init, k_train = jax.random.split(jax.random.key(cfg.seed))
    init_keys, data_keys = jax.random.split(k_init, cfg.seeds), jax.random.split(k_train, cfg.seeds)
    models = [(a, i, lr, s) for a in ACTS for i in INITS for lr in cfg.lrs for s in range(cfg.seeds)]
    per = {(a, i): N.init_eager(_net(cfg, a, i), (train.x.shape[1],), init_keys) for a in ACTS for i in INITS}
    params = stack([jax.tree_util.tree_map(lambda p, s=s: p[s], per[(a, i)]) for a, i, _, s in models])
    out = {}
    for act in ACTS:  # one sweep per activation: the forward differs, the init only in the params
        idx = [k for k, m in enumerate(models) if m[0] == act]
        res = sweep(
            _net(cfg, act, "standard"),
            fn.softmax_cross_entropy,
            jax.tree_util.tree_map(lambda p, idx=idx: p[jnp.asarray(idx)], params),
            train,
            keys=jnp.stack([data_keys[models[k][3]] for k in idx]),
            optimizer=lambda lr: sgd(lr),
            learning_rates=[models[k][2] for k in idx],
            batch_size=cfg.batch,
            epochs=cfg.epochs,
            test_data=test,
            progress=False,
        )
        h = {k: np.asarray(v, np.float64) for k, v in res.history.items()}
        probe = test.x[: cfg.probe]
        sat = jax.vmap(
            lambda p, act=act, probe=probe: jnp.stack(
                [jnp.mean(jnp.abs(v) > cfg.saturated) for v in _hidden(cfg, act, p, probe)]
            )
        )
        out[act] = {
            "models": [list(models[k]) for k in idx],
            "final_train_loss": h["train_loss"][:, -1].tolist(),
            "test_error": (1 - h["test_accuracy"][:, -1]).tolist(),
            "saturation": np.asarray(sat(res.params), np.float64).tolist(),
            "hist": np.asarray(_hidden(cfg, act, jax.tree_util.tree_map(lambda p: p[0], res.params), probe)[0])
            .ravel()[:20000]
            .tolist(),
        }
    return out


def _summarize(raw: dict, cfg: Config) -> dict:
    rows = {}
    for act, r in raw.items():
        for init in INITS:
            best, best_loss = None, np.inf
            for lr in cfg.lrs:
                ks = [k for k, m in enumerate(r["models"]) if m[1] == init and m[2] == lr]
                loss = float(
                    np.nanmedian(
                        np.where(
                            np.isfinite(np.asarray(r["final_train_loss"])[ks]),
                            np.asarray(r["final_train_loss"])[ks],
                            np.inf,
                        )
                    )
                )
                if loss < best_loss:
                    best, best_loss = lr, loss
            best = cfg.lrs[0] if best is None else best
            ks = [k for k, m in enumerate(r["models"]) if m[1] == init and m[2] == best]
            rows[f"{act}|{init}"] = {
                "best_lr": best,
                "test_error": [r["test_error"][k] for k in ks],
                "saturation": [r["saturation"][k] for k in ks],  # (S, hidden)
            }
    return rows


def run(config: Config, out_dir: Path) -> Result:
    cfg = config
    train, test = U.mnist1d_standardized(cfg.n_train)
    raw = point_cache(out_dir, config).point("sweep", lambda: _train(cfg, train, test))
    rows = _summarize(raw, cfg)
    return Result(
        metrics={"rows": rows, "saturated": cfg.saturated},
        claims=_claims(rows, cfg),
        figures=[_figure(rows, raw, cfg, out_dir)],
    )


def _claims(rows: dict, cfg: Config) -> list[Claim]:
    setting = (
        f"{cfg.hidden} hidden layers of {cfg.width}, SGD batch {cfg.batch}, {cfg.epochs} epochs of {cfg.n_train} "
        f"MNIST-1D examples, lr per (activation, init) chosen from {list(cfg.lrs)} by the training loss, "
        f"{cfg.seeds} seeds; chosen lrs: " + ", ".join(f"{k} {v['best_lr']}" for k, v in rows.items())
    )
    err = {k: np.asarray(v["test_error"]) for k, v in rows.items()}
    out = [
        U.seed_greater(
            "tanh: normalized init gives a lower test error than the standard init",
            SRC_T1,
            err["tanh|standard"],
            err["tanh|normalized"],
            names=("standard", "normalized"),
            note=setting,
        ),
        U.seed_greater(
            "softsign is less sensitive to the init than tanh: standard − normalized test error is larger for tanh",
            SRC_T1,
            err["tanh|standard"] - err["tanh|normalized"],
            err["softsign|standard"] - err["softsign|normalized"],
            names=("tanh gap", "softsign gap"),
            note=setting + "; gaps paired by seed (same batch order)",
        ),
    ]
    sat = {k: np.asarray(v["saturation"]) for k, v in rows.items()}
    out.append(
        U.seed_greater(
            f"after training with the standard init, more tanh units are saturated (|h| > {cfg.saturated}) than "
            "softsign units",
            SRC_SAT,
            sat["tanh|standard"].mean(1),
            sat["softsign|standard"].mean(1),
            names=("tanh", "softsign"),
            note=setting + f"; fraction over all hidden layers, {cfg.probe} test inputs; the level "
            f"{cfg.saturated} is fnnet's",
        )
    )
    out.append(
        U.seed_greater(
            "tanh + standard init saturates from the bottom: layer 1 has more saturated units than the top hidden "
            "layer",
            SRC_SAT,
            sat["tanh|standard"][:, 0],
            sat["tanh|standard"][:, -1],
            names=("layer 1", f"layer {cfg.hidden}"),
            note=setting + f"; |h| > {cfg.saturated} on {cfg.probe} test inputs after training",
        )
    )
    return out


def _figure(rows: dict, raw: dict, cfg: Config, out_dir: Path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.9))
    names = list(rows)
    for i, k in enumerate(names):
        e = 100 * np.asarray(rows[k]["test_error"])
        axes[0].plot(np.full(e.shape, i), e, "o", color=f"C{i}", alpha=0.6)
        axes[0].plot([i - 0.2, i + 0.2], [np.mean(e)] * 2, "k-")
        s = np.asarray(rows[k]["saturation"])
        # a small x offset and a marker per series: series that coincide (both softsign nets at 0) stay visible
        style = ("o" if "tanh" in k else "s") + ("-" if "tanh" in k else "--")
        x = np.arange(1, cfg.hidden + 1) + 0.06 * (i - (len(names) - 1) / 2)
        axes[1].errorbar(x, s.mean(0), yerr=s.std(0), fmt=style, color=f"C{i}", capsize=2, label=k, ms=5)
    axes[0].set_xticks(range(len(names)), [n.replace("|", "\n") for n in names], fontsize=8)
    axes[0].set_ylabel("test error (%) per seed; bar: mean")
    axes[1].set_xticks(np.arange(1, cfg.hidden + 1))
    axes[1].set_xlabel("hidden layer")
    axes[1].set_ylabel(f"fraction of units with |h| > {cfg.saturated}")
    axes[1].legend(fontsize=8)
    for act, c in (("tanh", "C0"), ("softsign", "C2")):
        axes[2].hist(
            np.asarray(raw[act]["hist"]),
            bins=np.linspace(-1, 1, 81),
            histtype="step",
            lw=1.4,
            density=True,
            color=c,
            label=f"{act}, standard init, lr {cfg.lrs[0]}, seed 0",
        )
    axes[2].set_xlabel("activation value after training")
    axes[2].set_ylabel("density")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    caption = (
        "Left: test error per seed of 5-hidden-layer nets on MNIST-1D; middle: saturation per layer after training "
        f"(mean ± SD over {cfg.seeds} seeds); right: layer-1 activation histograms, after Glorot & Bengio's Fig. 4."
    )
    return save_figure(fig, out_dir, "glorot_training", caption)
