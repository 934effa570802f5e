"""Backpropagation through time: vanishing and exploding gradients, clipping, and the LSTM's long memory.

1. Gradient over time. An Elman RNN (H = 32, W Glorot, U = g·orthogonal, b = 0) reads T random
   N(0, 1) inputs; a linear readout of h_T gives the error E_T = ½(ŷ − y)². Its gradient with
   respect to each hidden state, δ_k = ∂E_T/∂h_k, is the carry of the RNN's hand-written BPTT:
   δ_T = the readout's backward, δ_{k−1} = (φ'(a_k) ⊙ δ_k) Uᵀ, with φ' from fnnet's activation rule
   and a_k from the layer's forward cache; the same carry gives dx_k = (φ'(a_k) ⊙ δ_k) Wᵀ, checked
   against the layer's own backward. Beside it, ‖∂h_T/∂h_k‖₂ from
   ``fnnet.layers.hidden_jacobian_norms`` (spectral norm, on 4 of the sequences). Float64 so that
   nothing underflows. With U = g·orthogonal each step scales the signal by exactly g‖φ'(a_k) ⊙ δ_k‖/‖δ_k‖,
   so the product of Jacobians predicts log ‖δ_k‖/‖δ_T‖ ≈ Σ log(g·rms φ'(a_j)) over the steps between
   (δ spread evenly over the units); the vanishing and exploding claims test that prediction against the
   measured signal, with the seed spread of 5 inits as the bar. Pascanu et al.'s ‖U‖ > 4 for a sigmoid
   RNN is necessary, not sufficient, for explosion: the claim at g = 16 says just that.
2. Clipping. At an exploding scale (tanh, g = 3) the manual gradients of a batch of the adding task
   are huge; ``fnnet.optim.clip_by_global_norm(c)`` rescales them to norm ≤ c, so an SGD update is
   at most η·c long (a sanity check: it holds by the definition of the clip). Training with and
   without clipping (``fn.sweep``; the swept scalar is c).
3. LSTM vs RNN on the adding task (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015): T steps of
   (value ~ U[0, 1], marker), one marker in the first half and one in the second, target the sum
   of the two marked values. Predicting the mean gives MSE ½·Var = 1/12. Both trained with manual
   BPTT (Adam + clipping, ``fn.sweep``); ‖∂E/∂x_k‖ from each layer's backward shows how far back
   the gradient reaches.

References: Gulli, Kapoor & Pal 2019, "Deep Learning with TensorFlow 2 and Keras", ch. "The Math Behind
Deep Learning", sec. "Thinking about backpropagation and RNNs" (BPTT; the product of Jacobians
vanishes; LSTMs and clipping as the remedies); "ML Math Derivations (19): Neural Networks and
Backpropagation" (author not given, n.d.), sec. "Vanishing and Exploding Gradients" (0.25 per sigmoid
layer; the same matrix multiplied T times; clipping g ← c·g/‖g‖); Pascanu, Mikolov & Bengio 2013, "On
the difficulty of training recurrent neural networks", eq. 5-7 and alg. 1; Hochreiter & Schmidhuber
1997, "Long Short-Term Memory"; Le, Jaitly & Hinton 2015, "A Simple Way to Initialize Recurrent
Networks of Rectified Linear Units".
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
from experiments._common import Claim, Result, close, point_cache, pyplot, save_figure
from fnnet import activations, initializers
from fnnet.layers import hidden_jacobian_norms

NAME = "rnn_bptt"
TITLE = "BPTT: vanishing and exploding gradients over time, clipping, LSTM vs RNN"

SRC_RNN = src.GULLI_2019.cite('sec. "Thinking about backpropagation and RNNs"')
SRC_VANISH = src.ML_MATH_19.cite('sec. "The Vanishing Gradient Problem" (σ\' ≤ 0.25 per step, ≈ 0.25^n)')
SRC_EXPLODE = src.ML_MATH_19.cite('sec. "The Exploding Gradient Problem" (same matrix multiplied T times)')
SRC_CLIP = src.ML_MATH_19.cite('sec. "Solutions", table (clip g ← c·g/‖g‖)') + "; " + src.PASCANU_2013.cite("alg. 1")
SRC_BOUND = src.PASCANU_2013.cite("eq. 7 (γ = 1/4 for the sigmoid)")
SRC_NECESSARY = src.PASCANU_2013.cite("Sec. 2.1 (λ₁ > 1/γ is necessary, not sufficient, for exploding gradients)")
SRC_PRODUCT = src.ML_MATH_19.cite('sec. "Common misinterpretations" (per-step Jacobian norm ρ: the product is ρ^L)')
SRC_LSTM = SRC_RNN + "; " + src.HOCHREITER_SCHMIDHUBER_1997.cite()
SRC_ADDING = SRC_RNN + "; " + src.HOCHREITER_SCHMIDHUBER_1997.cite("exp. 4")


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: int = 32
    T: int = 100  # sequence length for the gradient-over-time curves
    gains: tuple[tuple[str, float], ...] = (
        ("tanh", 0.5), ("tanh", 1.0), ("tanh", 2.0), ("tanh", 3.0), ("sigmoid", 1.0), ("sigmoid", 4.0),
        ("sigmoid", 16.0),
    )  # fmt: skip
    inits: int = 5
    batch: int = 16
    clip: float = 1.0
    clip_lr: float = 0.1
    clip_gain: float = 3.0
    clip_epochs: int = 4
    task_T: int = 50
    task_train: int = 1024
    task_test: int = 512
    task_batch: int = 32
    task_epochs: int = 25
    task_lr: float = 1e-2
    seeds: int = 5
    seed: int = 0


PRESETS = {
    "tiny": Config(
        hidden=8, T=12, gains=(("tanh", 1.0), ("tanh", 3.0), ("sigmoid", 1.0), ("sigmoid", 16.0)), inits=5, batch=4,
        clip_epochs=2, task_T=10, task_train=128, task_test=64, task_epochs=2, seeds=5,
    ),
    "quick": Config(),
    "full": Config(T=200, inits=16, batch=64, task_T=100, task_train=4096, task_test=1024, task_epochs=60, seeds=5),
}  # fmt: skip


def adding_task(key: jax.Array, n: int, T: int) -> fn.data.Dataset:
    """x (n, T, 2): values U[0, 1] and two markers (one per half); y (n, 1): the sum of the marked values."""
    kv, k1, k2 = jax.random.split(key, 3)
    v = jax.random.uniform(kv, (n, T))
    first = jax.nn.one_hot(jax.random.randint(k1, (n,), 0, T // 2), T)
    second = jax.nn.one_hot(jax.random.randint(k2, (n,), T // 2, T), T)
    m = first + second
    return fn.data.Dataset(jnp.stack([v, m], axis=-1), jnp.sum(v * m, axis=1, keepdims=True))


# ----------------------------------------------------------------------------------------------
# 1. ‖∂E_T/∂h_k‖ over time


def gradient_over_time(config: Config) -> dict:
    """Per (activation, gain): geometric means over inits × sequences of ‖δ_k‖/‖δ_T‖ and ‖∂h_T/∂h_k‖₂."""
    H, T, D = config.hidden, config.T, 4
    out = {}
    with jax.enable_x64(True):
        k_p, k_x, k_y = jax.random.split(jax.random.key(config.seed), 3)
        params = fn.init_params(fn.serial(fn.RNN(H), fn.Dense(1)), (T, D), jax.random.split(k_p, config.inits),
                                jnp.float64)  # fmt: skip
        x = jax.random.normal(k_x, (config.inits, config.batch, T, D), jnp.float64)
        y = jax.random.normal(k_y, (config.inits, config.batch, 1), jnp.float64)
        for act in dict.fromkeys(a for a, _ in config.gains):
            gains = [g for a, g in config.gains if a == act]
            rnn, readout = fn.RNN(H, act), fn.Dense(1)
            act_bwd = getattr(activations, f"{act}_backward")

            def one(p, x, y, gain, rnn=rnn, readout=readout, act=act, act_bwd=act_bwd):
                p_rnn, p_out = {**p[0], "U": gain * p[0]["U"]}, p[1]  # U = g·orthogonal
                h_T, c_rnn = rnn.forward(p_rnn, x)
                pred, c_out = readout.forward(p_out, h_T)
                _, lc = fn.mse.forward(pred, y)
                _, delta_T = readout.backward(p_out, c_out, fn.mse.backward(lc))  # ∂E_T/∂h_T

                def step(delta, act_t):  # δ_{k−1} = (φ'(a_k) ⊙ δ_k) Uᵀ
                    return jnp.matmul(act_bwd(act_t, delta), p_rnn["U"].T), jnp.linalg.norm(delta, axis=-1)

                d0, norms = jax.lax.scan(step, delta_T, c_rnn["act"], reverse=True)
                norms = jnp.concatenate([jnp.linalg.norm(d0, axis=-1)[None], norms], axis=0)  # k = 0..T
                jac = hidden_jacobian_norms(p_rnn, x[:4], activation=act, ord=2)  # (4, T + 1): SVDs are costly
                dphi = act_bwd(c_rnn["act"], jnp.ones_like(c_rnn["h"]))  # φ'(a_t) for every unit and step
                # the mean-field prediction of ‖δ_{k−1}‖/‖δ_k‖ = g‖φ'(a_k) ⊙ δ_k‖/‖δ_k‖ ≈ g·rms(φ'(a_k)):
                # log of it per step (time axis first), averaged over the sequences
                log_pred = jnp.log(gain) + 0.5 * jnp.log(jnp.mean(dphi * dphi, axis=tuple(range(1, dphi.ndim))))
                return jnp.log(norms / norms[-1:]), jnp.log(jac).T, jnp.mean(dphi), jnp.mean(dphi < 0.01), log_pred

            n = config.inits
            pp = jax.tree_util.tree_map(lambda a, k=len(gains): jnp.concatenate([a] * k), params)
            g = jnp.repeat(jnp.asarray(gains, jnp.float64), n)
            log_rel, log_jac, dphi, saturated, log_pred = jax.jit(jax.vmap(one))(pp, jnp.tile(x, (len(gains), 1, 1, 1)),
                                                                       jnp.tile(y, (len(gains), 1, 1)), g)  # fmt: skip
            for i, gain in enumerate(gains):
                sl = slice(i * n, (i + 1) * n)  # geometric mean over inits and sequences; index j = T − k
                out[f"{act}/{gain:g}"] = {
                    "act": act, "gain": float(gain),
                    "rel": np.exp(np.asarray(log_rel[sl]).mean(axis=(0, 2)))[::-1],
                    "jac": np.exp(np.asarray(log_jac[sl]).mean(axis=(0, 2)))[::-1],
                    "mean_dphi": float(np.mean(dphi[sl])), "saturated": float(np.mean(saturated[sl])),
                    # per init: measured log ratio at T − k = j (mean over sequences) and predicted Σ log g·rms φ'
                    "log_rel_per_init": np.asarray(log_rel[sl]).mean(axis=2)[:, ::-1],
                    "log_pred_per_init": np.concatenate(
                        [np.zeros((n, 1)), np.cumsum(np.asarray(log_pred[sl])[:, ::-1], axis=1)], axis=1
                    ),
                }  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------
# 2. clipping


def clipping(config: Config) -> dict:
    T, H, c = config.task_T, config.hidden, config.clip
    train = adding_task(jax.random.key(config.seed + 1), config.task_train, T)
    net = fn.serial(fn.RNN(H, "tanh", u_init=initializers.orthogonal(config.clip_gain)), fn.Dense(1))
    params = fn.init_params(net, (T, 2), jax.random.split(jax.random.key(config.seed + 2), config.seeds))
    clip = fn.optim.clip_by_global_norm(c)
    nb = config.task_train // config.task_batch
    xb = jnp.reshape(train.x[: nb * config.task_batch], (nb, config.task_batch, T, 2))
    yb = jnp.reshape(train.y[: nb * config.task_batch], (nb, config.task_batch, 1))

    @jax.jit
    def norms(p):  # manual-BPTT gradient of every batch; its global norm before and after clipping
        _, g = jax.vmap(fn.value_and_grad(net, fn.mse), in_axes=(None, 0, 0))(p, xb, yb)
        clipped = jax.vmap(lambda gg: clip.update(gg, clip.init(p))[0])(g)
        return jax.vmap(fn.optim.global_norm)(g), jax.vmap(fn.optim.global_norm)(clipped)

    raw, clipped = jax.vmap(norms)(params)
    # the swept scalar is the clipping threshold: inf (no clipping) for the first `seeds` runs, c for the rest
    thresholds = [float("inf")] * config.seeds + [c] * config.seeds
    res = fn.sweep(
        net, fn.mse, jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a]), params),
        train, keys=jax.random.key(config.seed + 3), learning_rates=thresholds,
        optimizer=lambda cc: optax.chain(fn.optim.clip_by_global_norm(cc), fn.optim.sgd(config.clip_lr)),
        batch_size=config.task_batch, epochs=config.clip_epochs, progress=False,
    )  # fmt: skip
    loss0 = jax.vmap(lambda p: fn.mse.forward(net.forward(p, train.x)[0], train.y)[0])(params)
    return {
        "raw_norms": raw,
        "clipped_norms": clipped,
        "train_loss": res.history["train_loss"],
        "diverged": res.diverged,
        "diverged_step": res.diverged_step,
        "initial_loss": loss0,
        "clipped_run": np.asarray(thresholds) < np.inf,
    }


# ----------------------------------------------------------------------------------------------
# 3. LSTM vs RNN on the adding task


def adding(config: Config) -> dict:
    T, H = config.task_T, config.hidden
    train = adding_task(jax.random.key(config.seed + 4), config.task_train, T)
    test = adding_task(jax.random.key(config.seed + 5), config.task_test, T)
    probe = fn.data.Dataset(test.x[:64], test.y[:64])
    out = {"baseline": float(0.5 * np.var(np.asarray(test.y)))}
    for name, layer in (("rnn", fn.RNN(H)), ("lstm", fn.LSTM(H))):
        net = fn.serial(layer, fn.Dense(1))
        params = fn.init_params(net, (T, 2), jax.random.split(jax.random.key(config.seed + 6), config.seeds))

        @jax.jit
        def reach(ps, net=net):  # ‖∂E/∂x_k‖ from the layers' hand-written backward; geometric mean
            def one(p):
                pred, cache = net.forward(p, probe.x)
                _, lc = fn.mse.forward(pred, probe.y)
                _, dx = net.backward(p, cache, fn.mse.backward(lc))
                return jnp.log(jnp.linalg.norm(dx, axis=-1) + 1e-30)  # (B, T)

            return jnp.exp(jnp.mean(jax.vmap(one)(ps), axis=1))  # (seeds, T)

        before = reach(params)
        res = fn.sweep(
            net, fn.mse, params, train, keys=jax.random.key(config.seed + 7),
            optimizer=optax.chain(fn.optim.clip_by_global_norm(1.0), optax.adam(config.task_lr)),
            batch_size=config.task_batch, epochs=config.task_epochs, test_data=test, eval_train=False, progress=False,
        )  # fmt: skip
        out[name] = {
            "test_loss": res.history["test_loss"],
            "final_test_loss": res.history["test_loss"][:, -1],
            "reach_init": before,
            "reach_trained": reach(res.params),
        }
    return out


# ----------------------------------------------------------------------------------------------


def run(config: Config, out_dir: Path) -> Result:
    out_dir = Path(out_dir)
    cache = point_cache(out_dir, config)
    curves = cache.point("gradient_over_time", lambda: gradient_over_time(config))
    clip = cache.point("clipping", lambda: clipping(config))
    task = cache.point("adding", lambda: adding(config))
    metrics = {"gradient_over_time": curves, "clipping": clip, "adding": task}
    summary = _summary(config, curves, clip, task)
    metrics["summary"] = summary
    claims = _claims(config, summary)
    figures = [
        _plot_gradient_over_time(config, curves, out_dir),
        _plot_clipping(config, clip, out_dir),
        _plot_lstm_vs_rnn(config, task, out_dir),
    ]
    return Result(metrics=metrics, claims=claims, figures=figures)


def _summary(config: Config, curves: dict, clip: dict, task: dict) -> dict:
    half = config.T // 2
    j = np.arange(config.T + 1)
    per_curve = {}
    for key, v in curves.items():
        rel, jac = np.asarray(v["rel"]), np.asarray(v["jac"])
        slope = np.polyfit(j[1:], np.log(rel[1:]), 1)[0]
        bound = (0.25 * v["gain"]) ** j if v["act"] == "sigmoid" else None
        per_curve[key] = {
            "ratio_at_half": float(rel[half]),
            "factor_per_step": float(np.exp(slope)),
            "jacobian_over_bound": None if bound is None else float(np.max(jac[1:] / bound[1:])),
            "mean_derivative": v["mean_dphi"],
            "log10_ratio_per_init": (np.asarray(v["log_rel_per_init"])[:, half] / np.log(10)).tolist(),
            "log10_pred_per_init": (np.asarray(v["log_pred_per_init"])[:, half] / np.log(10)).tolist(),
            "predicted_factor": float(np.exp(np.mean(np.asarray(v["log_pred_per_init"])[:, -1]) / config.T)),
            "share_derivative_below_0.01": v["saturated"],
        }
    raw, clipped = np.asarray(clip["raw_norms"]), np.asarray(clip["clipped_norms"])
    is_clip = np.asarray(clip["clipped_run"], bool)
    loss = np.asarray(clip["train_loss"], np.float64)
    reach = {m: np.asarray(task[m]["reach_init"]) for m in ("rnn", "lstm")}
    trained = {m: np.asarray(task[m]["reach_trained"]) for m in ("rnn", "lstm")}
    return {
        "curves": per_curve,
        "raw_norm_range": [float(raw.min()), float(raw.max())],
        "max_clipped_over_c": float(clipped.max() / config.clip),
        "unclipped_diverged": np.asarray(clip["diverged"])[~is_clip].tolist(),
        "clipped_diverged": np.asarray(clip["diverged"])[is_clip].tolist(),
        "clipped_final_loss": loss[is_clip, -1].tolist(),
        "initial_loss": np.asarray(clip["initial_loss"]).tolist(),
        "reach_ratio_init": {m: (r[:, 0] / r[:, -1]).tolist() for m, r in reach.items()},
        "reach_ratio_trained": {m: (r[:, 0] / r[:, -1]).tolist() for m, r in trained.items()},
        "final_test_loss": {m: np.asarray(task[m]["final_test_loss"]).tolist() for m in ("rnn", "lstm")},
        "baseline": task["baseline"],
    }


def _claims(config: Config, s: dict) -> list[Claim]:
    half, c = config.T // 2, s["curves"]
    gains = {a: [g for aa, g in config.gains if aa == a] for a in ("tanh", "sigmoid")}
    n_i, n_s = config.inits, config.seeds
    note = f"H={config.hidden}, U = g·orthogonal, {n_i} inits × {config.batch} sequences"
    spread = f"seed spread: {n_i} inits, |mean(measured − predicted)| ≤ 3 sd of the per-init measured log10 ratio"
    claims = []

    def rate_claim(key: str, what: str, source: str) -> None:
        v = c[key]
        m, p = np.asarray(v["log10_ratio_per_init"]), np.asarray(v["log10_pred_per_init"])
        gap, sd = float(np.mean(m - p)), float(np.std(m, ddof=1)) if len(m) > 1 else float("nan")
        claims.append(
            Claim(
                f"{what}: log10 ‖∂E_T/∂h_k‖/‖∂E_T/∂h_T‖ at T−k={half} matches the product of the per-step "
                "Jacobian norms, Σ log10(g·rms φ'(a_k)) (orthogonal U: each step scales δ by g‖φ'⊙δ‖/‖δ‖)",
                source,
                round(float(np.mean(p)), 3),
                round(float(np.mean(m)), 3),
                f"3 sd = {3 * sd:.2g}",
                bool(np.isfinite(sd) and abs(gap) <= 3 * sd),
                note=f"{note}; per init measured {np.round(m, 2).tolist()}, predicted {np.round(p, 2).tolist()}; "
                f"mean factor per step {v['factor_per_step']:.3g}",
                kind="source",
                seeds=n_i,
                tolerance_basis=spread,
            )
        )

    if 1.0 in gains["tanh"]:
        rate_claim("tanh/1", "tanh RNN (g=1), vanishing", SRC_RNN + "; " + SRC_PRODUCT)
    if 1.0 in gains["sigmoid"]:
        rate_claim("sigmoid/1", "sigmoid RNN (g=1), vanishing", SRC_VANISH + "; " + SRC_PRODUCT)
        m = c["sigmoid/1"]["factor_per_step"]
        claims.append(
            close(
                "sigmoid RNN (g=1): the gradient shrinks by roughly 0.25 per time step",
                SRC_VANISH,
                0.25,
                m,
                rtol=0.25,
                note=note + "; factor = exp(slope of log‖δ_k‖ over T−k). 0.25 is the text's bound σ' ≤ 1/4; the "
                "mean σ' along the path is lower, and the rate claim above predicts it",
                kind="source",
                seeds=n_i,
                tolerance_basis="source: the text's 'roughly 0.25^(L−1)' for spectral norm ≈ 1, read as a factor "
                "per step within 25% of 0.25 (between 3/16 and 5/16)",
            )
        )
    worst = max((v["jacobian_over_bound"] for v in c.values() if v["jacobian_over_bound"] is not None), default=None)
    if worst is not None:
        claims.append(Claim("sigmoid RNN: ‖∂h_T/∂h_k‖₂ ≤ (‖U‖₂/4)^(T−k) at every k and gain",
                            SRC_BOUND, "≤ 1", worst, "max ratio ≤ 1 (+1e-9)",
                            bool(worst <= 1 + 1e-9), "ratio of the measured Jacobian norm to the bound",
                            kind="source", seeds=n_i,
                            tolerance_basis="rounding: float64 SVDs; 1e-9 relative"))  # fmt: skip
    if gains["tanh"] and max(gains["tanh"]) > 1:
        g = max(gains["tanh"])
        v = c[f"tanh/{g:g}"]
        m = np.asarray(v["log10_ratio_per_init"])
        claims.append(
            Claim(
                f"tanh RNN, g={g:g}: with ‖U‖ > 1 and derivatives not strongly contracting (g·rms φ' = "
                f"{v['predicted_factor']:.3g} > 1) the product of Jacobians grows: ‖∂E_T/∂h_k‖ explodes "
                f"(log10 ratio at T−k={half} > 0 in every init)",
                SRC_EXPLODE,
                "> 0 in every init",
                np.round(m, 3).tolist(),
                "every init",
                bool(v["predicted_factor"] > 1 and np.all(m > 0)),
                note=note,
                kind="source",
                seeds=n_i,
                tolerance_basis=f"seed spread: {n_i} inits, every one (no margin)",
            )
        )
        rate_claim(f"tanh/{g:g}", f"tanh RNN (g={g:g}), exploding", SRC_EXPLODE + "; " + SRC_PRODUCT)
    if gains["sigmoid"] and max(gains["sigmoid"]) > 4:
        g = max(gains["sigmoid"])
        v = c[f"sigmoid/{g:g}"]
        m = np.asarray(v["log10_ratio_per_init"])
        grow = int(np.sum(m > 0))
        claims.append(
            Claim(
                f"sigmoid RNN, g={g:g} > 4: ‖U‖ > 1/γ = 4 is necessary but not sufficient for exploding gradients; "
                f"saturation can keep the signal from growing (inits whose ratio at T−k={half} grows)",
                SRC_NECESSARY,
                f"fewer than {n_i} of {n_i} grow",
                f"{grow} of {n_i} grow",
                "count",
                grow < n_i,
                note=f"{note}; log10 ratio per init {np.round(m, 2).tolist()}; mean φ' {v['mean_derivative']:.3g}, "
                f"{100 * v['share_derivative_below_0.01']:.0f}% of units with φ' < 0.01",
                kind="source",
                seeds=n_i,
                tolerance_basis=f"seed spread: {n_i} inits, counted (no margin)",
            )
        )
    claims.append(Claim(f"global-norm clipping bounds the gradient (so the update by η·c): ‖clip(g)‖ ≤ {config.clip}",
                        SRC_CLIP + "; holds by the definition of the clip", "≤ 1 (max ‖clip(g)‖ / c)",
                        s["max_clipped_over_c"], "rtol 1e-6",
                        bool(s["max_clipped_over_c"] <= 1 + 1e-6),
                        f"tanh g={config.clip_gain}, adding task T={config.task_T}; raw ‖g‖ ranged "
                        f"{s['raw_norm_range'][0]:.3g}-{s['raw_norm_range'][1]:.3g}",
                        kind="sanity", seeds=n_s,
                        tolerance_basis="rounding: float32 rescaling, 1e-6 relative"))  # fmt: skip
    ok = all(s["unclipped_diverged"]) and not any(s["clipped_diverged"]) and all(
        f < i for f, i in zip(s["clipped_final_loss"], s["initial_loss"]))  # fmt: skip
    claims.append(Claim(f"exploding regime: SGD (η={config.clip_lr}) diverges unclipped and trains when clipped",
                        SRC_CLIP, "unclipped: diverged; clipped: finite, loss below its start",
                        {"unclipped_diverged": s["unclipped_diverged"], "clipped_diverged": s["clipped_diverged"],
                         "clipped_final_loss": s["clipped_final_loss"], "initial_loss": s["initial_loss"]},
                        "every seed", bool(ok), f"{n_s} seeds, {config.clip_epochs} epochs",
                        kind="source", seeds=n_s, tolerance_basis=f"seed spread: {n_s} seeds, every one"))  # fmt: skip
    r, r0 = s["reach_ratio_trained"], s["reach_ratio_init"]
    claims.append(
        Claim(
            f"the LSTM keeps the gradient alive across the sequence (T={config.task_T}) where the tanh RNN loses it",
            SRC_LSTM,
            "after training, LSTM ‖∂E/∂x_1‖/‖∂E/∂x_T‖ > the RNN's in every seed",
            r,
            "every seed",
            bool(min(r["lstm"]) > max(r["rnn"])),
            f"at initialization (LSTM {np.round(r0['lstm'], 3).tolist()}, RNN {np.round(r0['rnn'], 3).tolist()}) "
            "with forget bias 1 the cell path shrinks by σ(1) ≈ 0.73 per step until training opens the forget "
            "gates; geometric mean over a probe batch of 64",
            kind="source",
            seeds=n_s,
            tolerance_basis=f"seed spread: {n_s} seeds, the ranges of the two models compared",
        )
    )
    base, fl = s["baseline"], s["final_test_loss"]
    ok = max(fl["lstm"]) < 0.1 * base and min(fl["rnn"]) > 0.5 * base
    claims.append(Claim(f"adding task (T={config.task_T}): the LSTM learns it, the tanh RNN stays at the baseline",
                        SRC_ADDING, "every seed: LSTM < 0.1·baseline, RNN > 0.5·baseline",
                        fl, f"baseline ½Var(y) = {base:.4f}", bool(ok),
                        f"H={config.hidden}, Adam {config.task_lr} + clipping 1.0, {config.task_epochs} epochs, "
                        f"{n_s} seeds, manual BPTT",
                        kind="source", seeds=n_s,
                        tolerance_basis=f"seed spread: {n_s} seeds, every one; the bars are fractions of the "
                        "trivial rival (predict the mean: ½Var y)"))  # fmt: skip
    return claims


# ----------------------------------------------------------------------------------------------
# figures


def _plot_gradient_over_time(config, curves, out_dir: Path):
    """Figure ``gradient_over_time``: ‖∂E_T/∂h_k‖/‖∂E_T/∂h_T‖ and ‖∂h_T/∂h_k‖₂ against T − k, per activation."""
    plt = pyplot()
    acts = list(dict.fromkeys(v["act"] for v in curves.values()))
    fig, axes = plt.subplots(1, len(acts), figsize=(6 * len(acts), 4.4), squeeze=False, layout="constrained")
    for ax, act in zip(axes[0], acts):
        items = [v for v in curves.values() if v["act"] == act]
        for i, v in enumerate(items):
            j = np.arange(len(v["rel"]))
            ax.plot(j, v["rel"], "-", color=f"C{i}", label=f"‖∂E_T/∂h_k‖/‖∂E_T/∂h_T‖, g={v['gain']:g}")
            ax.plot(j, v["jac"], ":", color=f"C{i}", lw=1.5, label=f"‖∂h_T/∂h_k‖₂, g={v['gain']:g}")
            pred = np.exp(np.mean(np.asarray(v["log_pred_per_init"], np.float64), axis=0))
            ax.plot(j, pred, "-.", color=f"C{i}", lw=0.9, alpha=0.8)
            if act == "sigmoid":
                ax.plot(j, (0.25 * v["gain"]) ** j, "--", color=f"C{i}", lw=0.8, alpha=0.6)
        ax.set_yscale("log")
        lo = min(min(np.min(np.asarray(v["rel"])), np.min(np.asarray(v["jac"]))) for v in items)
        hi = max(max(np.max(np.asarray(v["rel"])), np.max(np.asarray(v["jac"]))) for v in items)
        ax.set_ylim(max(lo / 10, 1e-300), hi * 1e3)
        ax.set_xlabel("steps back in time, T − k")
        ax.set_ylabel("gradient norm relative to step T (log scale)")
        title = f"{act} RNN, H={config.hidden}, U = g·orthogonal; dash-dot: Π g·rms φ'"
        ax.set_title(title + ("\n(dashed: bound (g/4)^(T−k))" if act == "sigmoid" else ""), fontsize=10)
        ax.legend(fontsize=6.5, ncol=2)
    return save_figure(
        fig, out_dir, "gradient_over_time",
        "BPTT signal ∂E_T/∂h_k (solid), Jacobian ∂h_T/∂h_k (dotted) and the predicted Π g·rms φ' (dash-dot) vs T−k, "
        "log scale: it vanishes at g ≤ 1 and explodes for tanh at large g.",
    )  # fmt: skip


def _plot_clipping(config, clip, out_dir: Path):
    """Figure ``clipping``: gradient norms raw and clipped, and SGD's training loss with and without clipping."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), layout="constrained")
    ax = axes[0]
    raw = np.asarray(clip["raw_norms"]).ravel()
    cl = np.asarray(clip["clipped_norms"]).ravel()
    bins = np.geomspace(min(raw.min(), cl.min()) / 2, raw.max() * 2, 40)
    ax.hist(raw, bins=bins, color="C3", alpha=0.7, label="manual BPTT gradient ‖g‖")
    ax.hist(cl, bins=bins, color="C0", alpha=0.7, label=f"after clip_by_global_norm({config.clip:g})")
    ax.axvline(config.clip, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("global gradient norm per minibatch (log scale)")
    ax.set_ylabel("minibatches")
    ax.set_title(f"tanh RNN, g={config.clip_gain:g}, adding task T={config.task_T}", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    loss = np.asarray(clip["train_loss"], np.float64)
    is_clip = np.asarray(clip["clipped_run"], bool)
    epochs = np.arange(1, loss.shape[1] + 1)
    for k in range(loss.shape[0]):
        lab = "clipped" if is_clip[k] else "not clipped"
        ax.plot(
            epochs,
            loss[k],
            "-o",
            ms=3,
            color="C0" if is_clip[k] else "C3",
            label=lab if k in (0, loss.shape[0] - 1) else None,
        )
        if not is_clip[k] and np.asarray(clip["diverged"])[k]:
            ax.plot(
                [],
                [],
                "x",
                color="C3",
                label=f"not clipped: diverged at step {int(np.asarray(clip['diverged_step'])[k])}",
            )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (MSE, log scale)")
    ax.set_xticks(epochs)
    ax.set_title(f"SGD η={config.clip_lr:g}; NaN after divergence is not drawn", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(
        fig, out_dir, "clipping",
        "Left: gradient norms of a tanh RNN at an exploding scale, raw and after global-norm clipping. Right: SGD with "
        "and without clipping; unclipped runs diverge (non-finite) and stop.",
    )  # fmt: skip


def _plot_lstm_vs_rnn(config, task, out_dir: Path):
    """Figure ``lstm_vs_rnn``: how far back ‖∂E/∂x_k‖ reaches, and the adding task's test loss."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), layout="constrained")
    ax = axes[0]
    for i, m in enumerate(("rnn", "lstm")):
        for stage, ls in (("reach_init", "-"), ("reach_trained", "--")):
            r = np.exp(np.mean(np.log(np.asarray(task[m][stage])), axis=0))  # geometric mean over seeds
            ax.plot(np.arange(len(r))[::-1], r, ls, color=f"C{i}", label=f"{m.upper()}, {stage.split('_')[1]}")
    ax.set_yscale("log")
    ax.set_xlabel("steps before the end, T − k")
    ax.set_ylabel("‖∂E/∂x_k‖ (geometric mean, log scale)")
    ax.set_title(f"how far back the gradient reaches (adding task, T={config.task_T})", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    for i, m in enumerate(("rnn", "lstm")):
        loss = np.asarray(task[m]["test_loss"], np.float64)
        for k in range(loss.shape[0]):
            ax.plot(np.arange(1, loss.shape[1] + 1), loss[k], color=f"C{i}", label=m.upper() if k == 0 else None)
    ax.axhline(task["baseline"], color="k", ls=":", label="predict the mean (½Var y)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test loss (MSE, log scale)")
    ax.set_title(f"H={config.hidden}, Adam + clipping, {config.seeds} seeds", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(
        fig, out_dir, "lstm_vs_rnn",
        "Left: gradient reaching input step k, before (solid) and after (dashed) training. Right: test loss on the "
        "adding task; the LSTM solves it, the tanh RNN stays at the mean-prediction baseline.",
    )  # fmt: skip
