"""Glorot & Bengio 2010 on MNIST-1D: Fig. 6-7 and eq. 14 at init (part B), Fig. 2 in training (part C).

Part B: tanh nets of 5 hidden layers, "standard" U[−1/√n, 1/√n] against normalized (Xavier uniform)
init; a batch of MNIST-1D through fnnet's Dense/Tanh forward rules, softmax cross-entropy, then the
hand-written backward layer by layer, keeping h_l and ∂L/∂s_l (s_l the pre-activation) and ∂L/∂W_l.
The weight gradients are asserted equal to ``fn.autodiff_value_and_grad`` of the same serial net.

Part C: a 4-hidden-layer sigmoid net with standard init, trained with plain minibatch SGD on MNIST-1D
(one ``lax.scan`` per logging interval, vmapped over seeds); the mean activation of each hidden layer
on a fixed probe set is logged through training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import fnnet as fn
from experiments._common import Claim, close, pyplot, save_figure
from experiments.initialization import _init_nets as N
from experiments.initialization import _init_util as U
from fnnet.optim import sgd

SRC_67 = "Glorot & Bengio 2010, Fig. 6-7 (activation / back-propagated gradient histograms) and eq. 13-16"
SRC_14 = "Glorot & Bengio 2010, eq. 14 (Var[∂Cost/∂w] independent of the layer)"
SRC_2 = "Glorot & Bengio 2010, Fig. 2 and sec. 3.1 (sigmoid top hidden layer saturates at 0)"


@dataclasses.dataclass(frozen=True)
class GlorotConfig:
    width: int = 256
    hidden: int = 5  # part B depth
    batch: int = 512
    seeds: int = 5
    fig2_hidden: int = 4
    steps: int = 3000
    minibatch: int = 10
    lr: float = 0.1
    probe: int = 300
    every: int = 50

    @staticmethod
    def full() -> GlorotConfig:
        return GlorotConfig(width=1000, batch=1000, seeds=8, steps=40000, every=200)


def _net(cfg: GlorotConfig, act: str, init: str, hidden: int) -> fn.Layer:
    w = U.initializer(init, act)
    layers = []
    for _ in range(hidden):
        layers += [fn.Dense(cfg.width, w), U.act_layer(act)]
    return fn.serial(*layers, fn.Dense(10, w))


def _layerwise(net_params, x, y, hidden: int, width: int):
    """Forward and hand-written backward, layer by layer: h_l, ∂L/∂s_l, ∂L/∂W_l for l = 1..hidden."""
    dense, tanh, out = fn.Dense(width), fn.Tanh(), fn.Dense(10)
    h, hs, caches = x, [], []
    for l in range(hidden):
        z, cd = dense.forward(net_params[2 * l], h)
        h, ca = tanh.forward((), z)
        hs.append(h)
        caches.append((cd, ca))
    logits, co = out.forward(net_params[2 * hidden], h)
    loss, lc = fn.softmax_cross_entropy.forward(logits, y)
    _, dh = out.backward(net_params[2 * hidden], co, fn.softmax_cross_entropy.backward(lc))
    dzs, dws = [None] * hidden, [None] * hidden
    for l in reversed(range(hidden)):
        _, dz = tanh.backward((), caches[l][1], dh)
        dp, dh = dense.backward(net_params[2 * l], caches[l][0], dz)
        dzs[l], dws[l] = dz, dp["W"]
    return loss, hs, dzs, dws


def _part_b(cfg: GlorotConfig, key, data) -> dict:
    x, y = data.x[: cfg.batch], data.y[: cfg.batch]
    net = _net(cfg, "tanh", "standard", cfg.hidden)  # the forward does not depend on the init

    @jax.jit
    @jax.vmap
    def stats(params):
        loss, hs, dzs, dws = _layerwise(params, x, y, cfg.hidden, cfg.width)
        _, g_ad = fn.autodiff_value_and_grad(net, fn.softmax_cross_entropy)(params, x, y)
        rel = jnp.stack(
            [jnp.linalg.norm(dw - g_ad[2 * l]["W"]) / jnp.linalg.norm(g_ad[2 * l]["W"]) for l, dw in enumerate(dws)]
        )
        var = lambda vs: jnp.stack([jnp.var(v) for v in vs])  # noqa: E731
        return {"var_h": var(hs), "var_ds": var(dzs), "var_dw": var(dws), "rel_vs_autodiff": rel}, (hs, dzs)

    out = {}
    for init in ("standard", "xavier_uniform"):
        params = N.init_eager(_net(cfg, "tanh", init, cfg.hidden), (x.shape[1],), jax.random.split(key, cfg.seeds))
        s, (hs, dzs) = stats(params)
        s = jax.device_get(s)
        out[init] = {k: np.asarray(v, np.float64).tolist() for k, v in s.items()}  # (S, hidden)
        out[init]["hist_h"] = [np.asarray(h[0]).ravel()[:20000].tolist() for h in hs]  # seed 0
        out[init]["hist_ds"] = [np.asarray(d[0]).ravel()[:20000].tolist() for d in dzs]
        out[init]["theory"] = _theory_b(cfg, init, float(jnp.mean(x * x)), x.shape[1])
    return out


def _theory_b(cfg: GlorotConfig, init: str, q_in: float, d_in: int) -> dict:
    """Var[s_l] forward and Var[∂L/∂s_l]/Var[∂L/∂s_top] backward by the Gauss–Hermite recursions."""
    n = cfg.width
    sw2_first = d_in * U.weight_variance(init, "tanh", d_in, n)
    sw2 = n * U.weight_variance(init, "tanh", n, n)  # fan_in Var and fan_out Var are equal for square layers
    qz, qh = U.forward_theory("tanh", sw2_first, q_in, sw2, cfg.hidden)
    dtanh2 = U.gauss_mean(lambda u: U.np_dphi("tanh", u) ** 2, qz)
    rel = np.ones(cfg.hidden)
    for l in reversed(range(cfg.hidden - 1)):
        rel[l] = rel[l + 1] * sw2 * dtanh2[l]
    return {"var_s": qz.tolist(), "var_h": (qh - 0.0).tolist(), "var_ds_rel": rel.tolist()}


def _part_c(cfg: GlorotConfig, key, train, test) -> dict:
    net = _net(cfg, "sigmoid", "standard", cfg.fig2_hidden)
    vg = fn.value_and_grad(net, fn.softmax_cross_entropy)
    opt = sgd(cfg.lr)
    probe = test.x[: cfg.probe]
    n = train.x.shape[0]

    def probe_means(params):
        _, caches = net.forward(params, probe, train=False)
        return jnp.stack([jnp.mean(caches[2 * l + 1]) for l in range(cfg.fig2_hidden)])  # Sigmoid caches its output

    k_init, k_data = jax.random.split(key)
    params0 = N.init_eager(net, (train.x.shape[1],), jax.random.split(k_init, cfg.seeds))

    def one_seed(params, k_data):

        def step(carry, kk):
            params, state = carry
            idx = jax.random.randint(kk, (cfg.minibatch,), 0, n)
            loss, g = vg(params, train.x[idx], train.y[idx])
            upd, state = opt.update(g, state, params)
            return (jax.tree_util.tree_map(jnp.add, params, upd), state), loss

        def block(carry, kb):
            carry, losses = lax.scan(step, carry, jax.random.split(kb, cfg.every))
            return carry, (probe_means(carry[0]), jnp.mean(losses))

        carry = (params, opt.init(params))
        blocks = cfg.steps // cfg.every
        carry, (means, losses) = lax.scan(block, carry, jax.random.split(k_data, blocks))
        acc = jnp.mean(jnp.argmax(net.forward(carry[0], test.x, train=False)[0], -1) == test.y)
        return jnp.concatenate([probe_means(params)[None], means]), losses, acc

    means, losses, acc = jax.device_get(jax.jit(jax.vmap(one_seed))(params0, jax.random.split(k_data, cfg.seeds)))
    return {
        "steps": [i * cfg.every for i in range(cfg.steps // cfg.every + 1)],
        "mean_act": np.asarray(means, np.float64).tolist(),  # (S, T, layers)
        "loss": np.asarray(losses, np.float64).tolist(),
        "test_accuracy": np.asarray(acc, np.float64).tolist(),
    }


def run_glorot(cfg: GlorotConfig, key) -> dict:
    train, test = U.mnist1d_standardized()
    k_b, k_c = jax.random.split(key)
    return {"fig67": _part_b(cfg, k_b, train), "fig2": _part_c(cfg, k_c, train, test)}


def claims(res: dict, cfg: GlorotConfig) -> list[Claim]:
    out = []
    b = res["fig67"]
    seeds = f"{cfg.seeds} seeds, width {cfg.width}, {cfg.batch} MNIST-1D examples"
    worst = max(max(max(r) for r in b[i]["rel_vs_autodiff"]) for i in b)
    out.append(
        Claim(
            "the hand-written backward gives the same weight gradients as jax.grad (tanh nets, both inits)",
            "fnnet's own contract (manual rules are checked against autodiff)",
            "<= 1e-5",
            worst,
            "relative error <= 1e-5",
            bool(worst <= 1e-5),
        )
    )
    ratio = {}
    for init in ("standard", "xavier_uniform"):
        v = np.asarray(b[init]["var_ds"])
        r = v[:, 0] / v[:, -1]
        ratio[init] = r
        t = b[init]["theory"]["var_ds_rel"][0]
        sp = U.spread(r)
        out.append(
            close(
                f"tanh + {init}: Var[∂L/∂s_1] / Var[∂L/∂s_{cfg.hidden}] (back-propagated gradient, input vs top layer)",
                SRC_67 + "; theory: Gauss–Hermite backward recursion",
                t,
                sp["median"],
                rtol=0.3,
                note=f"median over {seeds}; seeds span [{sp['min']:.3g}, {sp['max']:.3g}]",
            )
        )
    s_med, x_med = float(np.median(ratio["standard"])), float(np.median(ratio["xavier_uniform"]))
    out.append(
        Claim(
            "standard init: the back-propagated gradient shrinks toward the input; normalized (Xavier) init keeps it "
            "roughly constant (ratio ≥ 10× closer to 1)",
            SRC_67,
            "standard < 0.1 and Xavier / standard >= 10",
            {"standard": s_med, "xavier_uniform": x_med},
            "as stated",
            bool(s_med < 0.1 and x_med / s_med >= 10),
            f"Var[∂L/∂s_1]/Var[∂L/∂s_{cfg.hidden}], medians over {seeds}; Xavier's ratio is below 1 because tanh′² < 1",
        )
    )
    v_dw = np.median(np.asarray(b["standard"]["var_dw"]), axis=0)
    v_ds = np.median(np.asarray(b["standard"]["var_ds"]), axis=0)
    spread_dw, spread_ds = float(v_dw.max() / v_dw.min()), float(v_ds.max() / v_ds.min())
    out.append(
        Claim(
            "eq. 14: with standard init Var[∂L/∂W_l] stays about equal across layers while Var[∂L/∂s_l] vanishes",
            SRC_14,
            "max/min over layers: weights <= 2, pre-activations >= 10",
            {"weights": spread_dw, "pre_activations": spread_ds},
            "as stated",
            bool(spread_dw <= 2 and spread_ds >= 10),
            f"medians over {seeds}, layers 1..{cfg.hidden}; first layer has fan-in 40 (MNIST-1D), the others "
            f"{cfg.width}",
        )
    )
    c = res["fig2"]
    m = np.median(np.asarray(c["mean_act"]), axis=0)  # (T, layers)
    top, low = m[:, -1], m[:, :-1]
    steps = np.asarray(c["steps"])
    below = np.nonzero(top < 0.1)[0]
    cross = int(steps[below[0]]) if below.size else None
    stays = bool(below.size and np.all(top[below[0] :] < 0.1))
    out.append(
        Claim(
            f"sigmoid + standard init, {cfg.fig2_hidden} hidden layers: SGD drives the top hidden layer's mean "
            "activation "
            "from 0.5 toward 0, where it stays, while the lower layers stay near 0.5",
            SRC_2,
            "top-layer mean falls below 0.1 and stays below it to the end; layers below stay within [0.3, 0.7]",
            {
                "top_init": float(top[0]),
                "top_end": float(top[-1]),
                "step_below_0.1": cross,
                "lower_range": [float(low.min()), float(low.max())],
            },
            "as stated",
            bool(stays and low.min() >= 0.3 and low.max() <= 0.7),
            f"SGD lr {cfg.lr}, minibatch {cfg.minibatch}, {cfg.steps} steps ({cfg.steps * cfg.minibatch / 4000:.1f} "
            "epochs of "
            "MNIST-1D; Glorot & Bengio trained far longer on Shapeset and saw the top layer leave 0 again much "
            "later, not "
            f"reached here); median over {cfg.seeds} seeds of the mean on {cfg.probe} test inputs; test accuracy at "
            "the end "
            f"{np.median(c['test_accuracy']):.3f} (chance 0.1): still on the plateau",
        )
    )
    return out


def figures(res: dict, cfg: GlorotConfig, out_dir: Path) -> list:
    plt = pyplot()
    b = res["fig67"]
    figs = []
    for kind, label, fname in (
        ("hist_h", "activation value h_l", "glorot_fig6_activations"),
        ("hist_ds", "∂L/∂s_l", "glorot_fig7_gradients"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
        for ax, init in zip(axes, ("standard", "xavier_uniform")):
            vals = [np.asarray(v) for v in b[init][kind]]
            hi = max(np.percentile(np.abs(v), 99.5) for v in vals)
            bins = np.linspace(-hi, hi, 81)
            for l, v in enumerate(vals):
                ax.hist(v, bins=bins, histtype="step", lw=1.3, label=f"layer {l + 1}", density=True)
            ax.set_title(f"tanh, {init} init")
            ax.set_xlabel(label)
            ax.set_yscale("log")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
        axes[0].set_ylabel("density (log)")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        what = "activations" if kind == "hist_h" else "back-propagated gradients ∂L/∂s"
        figs.append(
            save_figure(
                fig,
                out_dir,
                fname,
                f"Histograms of the {what} per layer at init (tanh, {cfg.hidden} layers of {cfg.width}, MNIST-1D, "
                f"seed 0), after Glorot & Bengio Fig. {6 if kind == 'hist_h' else 7}.",
            )
        )
    fig, ax = plt.subplots(figsize=(6, 4))
    layers = np.arange(1, cfg.hidden + 1)
    for init, c in (("standard", "C0"), ("xavier_uniform", "C1")):
        for key, ls, name in (("var_ds", "-", "Var[∂L/∂s_l]"), ("var_dw", ":", "Var[∂L/∂W_l]")):
            v = np.asarray(b[init][key])
            med = np.median(v, axis=0)
            ax.errorbar(
                layers,
                med,
                yerr=[med - v.min(0), v.max(0) - med],
                fmt="o" + ls,
                color=c,
                label=f"{init}: {name}",
                capsize=2,
            )
        t = np.asarray(b[init]["theory"]["var_ds_rel"]) * np.median(np.asarray(b[init]["var_ds"])[:, -1])
        ax.plot(layers, t, "k--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(layers)
    ax.set_xlabel("layer l")
    ax.set_ylabel("variance")
    ax.legend(fontsize=7)
    figs.append(
        save_figure(
            fig,
            out_dir,
            "glorot_eq14",
            "Var of ∂L/∂s_l (solid) and ∂L/∂W_l (dotted) per layer, median and seed range; dashed: backward "
            "recursion. Eq. 14: weight-gradient variance flat even when ∂L/∂s shrinks.",
        )
    )
    c = res["fig2"]
    m = np.asarray(c["mean_act"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for l in range(m.shape[2]):
        med = np.median(m[:, :, l], axis=0)
        ax.plot(c["steps"], med, label=f"layer {l + 1}")
        ax.fill_between(c["steps"], m[:, :, l].min(0), m[:, :, l].max(0), alpha=0.2)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("mean sigmoid activation (probe set)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    figs.append(
        save_figure(
            fig,
            out_dir,
            "glorot_fig2",
            "Mean activation of each hidden layer during SGD training (sigmoid, standard init, median and range "
            f"over {cfg.seeds} seeds), after Glorot & Bengio Fig. 2.",
        )
    )
    return figs
