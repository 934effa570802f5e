"""The texts' backpropagation, element by element, against fnnet's matrix-form rules and jax.grad.

1. One hidden layer, sigmoid units, E = ½ Σ_o (y_o − t_o)² (Gulli, Kapoor & Pal 2019, "Deep Learning
   with TensorFlow 2 and Keras", ch. "The Math Behind Deep Learning", sec. "Backpropagation"):
   * case 1, hidden → output: ∂E/∂w_jo = (y_o − t_o) σ'(z_o) y_j, with v_o = (y_o − t_o) σ'(z_o);
   * case 2, input/hidden → hidden: ∂E/∂w_ij = y_i σ'(z_j) Σ_o v_o w_jo (the back-propagated signal).
   These loops are written with Python scalars; the matrix form is ``fn.value_and_grad`` of
   ``serial(Dense, Sigmoid, Dense, Sigmoid)`` with ``fn.mse``; the reference is ``jax.grad``.
2. The five-step algorithm of the same section, iterated: each iteration's parameters are compared
   with fnnet's manual rules + ``fnnet.optim.sgd``. That E falls at every step is fnnet's expectation,
   not the text's: the second-order expansion of a step, E(θ − ηg) ≈ E(θ) − η‖g‖² + ½η² gᵀHg, predicts
   a decrease while η·λ_max(H) < 2, and λ_max is measured at every iterate (jax.jacfwd of the manual
   gradient).
3. Softmax + cross-entropy: ∂L/∂z_k = Σ_i (∂L/∂p_i)(∂p_i/∂z_k) summed element by element equals p − y
   (Gulli, Kapoor & Pal 2019, sec. "Cross entropy and its derivative"; "ML Math Derivations (19): Neural
   Networks and Backpropagation" (author not given, n.d.), eq. 4).
4. The matrix recursion of "ML Math Derivations (19)" (sec. "Deriving the Error Signal", eq. 5-7 and its
   listing): δ^(l) = (W^(l+1)ᵀ δ^(l+1)) ⊙ σ'(z^(l)), ∂L/∂W^(l) = δ^(l) h^(l−1)ᵀ, run on a 3-layer net with
   different activations per layer.
All in float64.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, close, pyplot, save_figure
from fnnet import optim
from fnnet.checking import relative_error

NAME = "backprop_cases"
TITLE = "Backpropagation's two cases, element by element, against matrix rules and autodiff"

SRC_CASES = src.GULLI_2019.cite('sec. "Backpropagation", case 1 / case 2')
SRC_ALG = src.GULLI_2019.cite('sec. "Backpropagation": the five-step forward-backward algorithm')
SRC_CE = src.GULLI_2019.cite('sec. "Cross entropy and its derivative"') + "; " + src.ML_MATH_19.cite("eq. 4")
SRC_LISTING = src.ML_MATH_19.cite('sec. "Deriving the Error Signal", eq. 5-7 and the listing after them')


@dataclasses.dataclass(frozen=True)
class Config:
    d_in: int = 3
    d_hidden: int = 4
    d_out: int = 2
    batch: int = 8  # examples in the batch checks and the five-step iterations
    classes: int = 5  # softmax + cross-entropy check
    five_step_iters: int = 100
    lr: float = 0.5
    seed: int = 0


PRESETS = {
    "tiny": Config(batch=3, five_step_iters=5),
    "quick": Config(),
    "full": Config(d_in=8, d_hidden=16, d_out=4, batch=32, five_step_iters=500),
}


def elementwise_grads(params: tuple, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The texts' per-weight formulas, one scalar at a time, averaged over the examples of the batch."""
    W1, b1 = np.asarray(params[0]["W"]), np.asarray(params[0]["b"])
    W2, b2 = np.asarray(params[2]["W"]), np.asarray(params[2]["b"])
    d_in, d_h = W1.shape
    d_out = W2.shape[1]
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))
    g = {k: np.zeros_like(v) for k, v in (("W1", W1), ("b1", b1), ("W2", W2), ("b2", b2))}
    n = x.shape[0]
    for b in range(n):
        z_j = [sum(x[b, i] * W1[i, j] for i in range(d_in)) + b1[j] for j in range(d_h)]
        y_j = [sig(z) for z in z_j]
        z_o = [sum(y_j[j] * W2[j, o] for j in range(d_h)) + b2[o] for o in range(d_out)]
        y_o = [sig(z) for z in z_o]
        # case 1: v_o = (y_o − t_o) σ'(z_o);  ∂E/∂w_jo = v_o y_j;  ∂E/∂b_o = v_o
        v_o = [(y_o[o] - t[b, o]) * y_o[o] * (1 - y_o[o]) for o in range(d_out)]
        for o in range(d_out):
            for j in range(d_h):
                g["W2"][j, o] += v_o[o] * y_j[j] / n
            g["b2"][o] += v_o[o] / n
        # case 2: v_j = σ'(z_j) Σ_o v_o w_jo;  ∂E/∂w_ij = v_j y_i (y_i = x_i);  ∂E/∂b_j = v_j
        for j in range(d_h):
            v_j = y_j[j] * (1 - y_j[j]) * sum(v_o[o] * W2[j, o] for o in range(d_out))
            for i in range(d_in):
                g["W1"][i, j] += v_j * x[b, i] / n
            g["b1"][j] += v_j / n
    return g


def _flat(g: tuple) -> dict[str, np.ndarray]:
    return {"W1": g[0]["W"], "b1": g[0]["b"], "W2": g[2]["W"], "b2": g[2]["b"]}


def _net(c: Config) -> fn.Layer:
    return fn.serial(fn.Dense(c.d_hidden), fn.Sigmoid(), fn.Dense(c.d_out), fn.Sigmoid())


@functools.partial(jax.jit, static_argnums=1)
def _fnnet_side(key: jax.Array, c: Config):
    """Params, data and the gradients of fnnet's rules and of jax.grad, as one compiled program."""
    net = _net(c)
    keys = jax.random.split(key, 5)
    _, params = net.init(keys[0], (c.d_in,), jnp.float64)
    x = jax.random.normal(keys[1], (c.batch, c.d_in), jnp.float64)
    t = jax.random.uniform(keys[2], (c.batch, c.d_out), jnp.float64)
    grads = {}
    for label, sl in (("one", slice(0, 1)), ("batch", slice(None))):
        gm = fn.value_and_grad(net, fn.mse)(params, x[sl], t[sl])[1]
        ga = fn.autodiff_value_and_grad(net, fn.mse)(params, x[sl], t[sl])[1]
        grads[label] = (gm, ga)
    listing_side = _listing_fnnet_side(keys[4], c.batch, (c.d_in, c.d_hidden, c.d_hidden, 1))
    return params, x, t, 2.0 * jax.random.normal(keys[3], (c.classes,), jnp.float64), grads, listing_side


# ----------------------------------------------------------------------------------------------
# The five-step algorithm, softmax + CE by the chain rule, the text's listing.
#
# Everything in this section is written in NumPy from the texts' formulas, independently of fnnet's
# rules, so it can be compared with them.


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def five_step(params: tuple, x: np.ndarray, t: np.ndarray, lr: float, iters: int, manual: Callable) -> dict:
    """Iterate the five steps of the text's algorithm in NumPy; compare every iterate with fnnet's rules + sgd.

    The algorithm is that of Gulli, Kapoor & Pal 2019, sec. "Backpropagation":
    1. forward signals; 2. the error E; 3. back-propagate the error signals (times the weights and
    the activation derivatives); 4. gradients from error signals and forward signals; 5. update.
    """
    W1, b1 = np.array(params[0]["W"]), np.array(params[0]["b"])
    W2, b2 = np.array(params[2]["W"]), np.array(params[2]["b"])
    B = x.shape[0]
    opt = optim.sgd(lr)

    def body(carry, _):
        p, s = carry
        _, g = manual(p, x, t)
        updates, s = opt.update(g, s, p)
        p = optax.apply_updates(p, updates)
        return (p, s), p

    traj = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), None, length=iters)[1])(params)
    traj = jax.device_get(traj)
    E_hist, worst = [], 0.0
    for it in range(iters + 1):
        z1 = x @ W1 + b1[None, :]  # 1. forward
        y1 = _sigmoid(z1)
        z2 = y1 @ W2 + b2[None, :]
        y2 = _sigmoid(z2)
        E_hist.append(float(0.5 * np.sum((y2 - t) ** 2) / B))  # 2. error (mean over the batch)
        v2 = (y2 - t) * y2 * (1 - y2) / B  # 3. error signals
        v1 = (v2 @ W2.T) * y1 * (1 - y1)
        g = {"W2": y1.T @ v2, "b2": v2.sum(0), "W1": x.T @ v1, "b1": v1.sum(0)}  # 4. gradients
        if len(E_hist) > iters:
            break
        W1, b1, W2, b2 = W1 - lr * g["W1"], b1 - lr * g["b1"], W2 - lr * g["W2"], b2 - lr * g["b2"]  # 5. update
        fp = jax.tree.map(lambda a, it=it: a[it], traj)
        ours = np.concatenate([a.ravel() for a in (W1, b1, W2, b2)])
        theirs = np.concatenate([np.asarray(a).ravel() for a in (fp[0]["W"], fp[0]["b"], fp[2]["W"], fp[2]["b"])])
        worst = max(worst, relative_error(ours, theirs))
    n_dec = int(sum(b < a for a, b in zip(E_hist[:-1], E_hist[1:])))
    # η·λ_max(H) at the start and after every step but the last: a step from θ lowers E to second order
    # when η·λ_max < 2 (f(θ − ηg) ≈ f(θ) − η‖g‖² + ½η² gᵀHg)
    starts = jax.tree.map(lambda a0, a: jnp.concatenate([a0[None], a[:-1]]), params, traj)
    lam = np.asarray(_sharpness(starts, jnp.asarray(x), jnp.asarray(t)))
    return {"E": E_hist, "max_rel_err": worst, "n_decreases": n_dec, "eta_lambda_max": (lr * lam).tolist()}


def _sharpness(stacked: tuple, x: jax.Array, t: jax.Array, eps: float = 1e-5) -> np.ndarray:
    """λ_max of the Hessian of E at each of the stacked params, from central differences of fnnet's manual gradient.

    H[:, i] ≈ (∇E(θ + ε e_i) − ∇E(θ − ε e_i)) / 2ε in float64 (error O(ε²) ≈ 1e-10 relative): one vmapped
    program of the manual gradient, cheaper to compile than forward-mode autodiff through it.
    """
    th, unravel = (
        jax.vmap(lambda p: ravel_pytree(p)[0])(stacked),
        ravel_pytree(jax.tree.map(lambda a: a[0], stacked))[1],
    )
    net = fn.serial(
        fn.Dense(stacked[0]["W"].shape[-1]), fn.Sigmoid(), fn.Dense(stacked[2]["W"].shape[-1]), fn.Sigmoid()
    )
    vg = fn.value_and_grad(net, fn.mse)
    P = th.shape[1]
    probes = jnp.concatenate([jnp.eye(P), -jnp.eye(P)]) * eps  # (2P, P)
    grad = jax.jit(jax.vmap(jax.vmap(lambda v: ravel_pytree(vg(unravel(v), x, t)[1])[0])))
    g = np.asarray(grad(th[:, None, :] + probes[None]))  # (iters, 2P, P)
    H = (g[:, :P] - g[:, P:]) / (2 * eps)
    return np.linalg.eigvalsh(0.5 * (H + np.swapaxes(H, 1, 2)))[:, -1]


def softmax_ce_elementwise(z: jax.Array, label: int) -> dict:
    """∂L/∂z_k = Σ_i (∂L/∂p_i)(∂p_i/∂z_k) with ∂L/∂p_i = −y_i/p_i and ∂p_i/∂z_k = p_i(δ_ik − p_k)."""
    zn = np.asarray(z, np.float64)
    C = zn.shape[0]
    e = np.exp(zn - zn.max())
    p = e / e.sum()
    y = np.zeros(C)
    y[label] = 1.0
    elem = np.zeros(C)
    for k in range(C):
        for i in range(C):
            dL_dp = -y[i] / p[i] if y[i] != 0 else 0.0
            elem[k] += dL_dp * p[i] * ((1.0 if i == k else 0.0) - p[k])
    rule, auto = jax.device_get(_ce_rules(jnp.asarray(zn), label))
    return {
        "p": p.tolist(),
        "elementwise": elem.tolist(),
        "p_minus_y": (p - y).tolist(),
        "err_elementwise_vs_p_minus_y": float(np.max(np.abs(elem - (p - y)))),
        "err_fnnet_vs_p_minus_y": float(np.max(np.abs(rule - (p - y)))),
        "err_autodiff_vs_p_minus_y": float(np.max(np.abs(auto - (p - y)))),
    }


@functools.partial(jax.jit, static_argnums=1)
def _ce_rules(z: jax.Array, label: int) -> tuple[jax.Array, jax.Array]:
    """fnnet's fused rule (batch of one: (p − y)/1) and jax.grad of the same forward."""
    labels = jnp.array([label])
    _, cache = fn.softmax_cross_entropy.forward(z[None, :], labels)
    rule = fn.softmax_cross_entropy.backward(cache)[0]
    auto = jax.grad(lambda v: fn.softmax_cross_entropy.forward(v[None, :], labels)[0])(z)
    return rule, auto


class _Act:
    def __init__(self, f: Callable, deriv: Callable):
        self.f, self.deriv = f, deriv

    def __call__(self, z):
        return self.f(z)


_TANH = _Act(np.tanh, lambda z: 1 - np.tanh(z) ** 2)
_RELU = _Act(lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype))
_SIGM = _Act(_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z)))


def _listing(X, y, weights, biases, activations, printed_index: bool):
    """The listing of "ML Math Derivations (19)", sec. "Deriving the Error Signal", transcribed.

    Column vectors, W^(l) of shape (d_l, d_{l−1}); output δ = h_L − y.
    """
    L = len(weights)
    h, z = [X], []
    for l in range(L):
        z_l = weights[l] @ h[-1] + biases[l]
        z.append(z_l)
        h.append(activations[l](z_l))
    delta = h[-1] - y
    grad_W, grad_b = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        grad_W[l] = delta @ h[l].T
        grad_b[l] = delta.sum(axis=1, keepdims=True)
        if l > 0:
            act = activations[l] if printed_index else activations[l - 1]
            delta = (weights[l].T @ delta) * act.deriv(z[l - 1])
    return grad_W, grad_b


@functools.partial(jax.jit, static_argnums=(1, 2))
def _listing_fnnet_side(key: jax.Array, batch: int, dims: tuple[int, int, int, int]):
    """fnnet's side of the listing check (params, x, t, grads); inlined by the outer jit of :func:`_fnnet_side`."""
    d_in, h1, h2, d_out = dims
    net = fn.serial(fn.Dense(h1), fn.Tanh(), fn.Dense(h2), fn.Relu(), fn.Dense(d_out))
    k_init, k_x, k_y = jax.random.split(key, 3)
    _, params = net.init(k_init, (d_in,), jnp.float64)
    x = jax.random.normal(k_x, (batch, d_in), jnp.float64)
    t = jax.random.bernoulli(k_y, 0.5, (batch, d_out)).astype(jnp.float64)
    _, g = fn.value_and_grad(net, fn.binary_cross_entropy)(params, x, t)
    return params, x, t, g


def listing_backprop(fnnet_side: tuple, batch: int) -> dict:
    """The listing (as printed and with the index corrected) against fnnet on tanh → relu → sigmoid + BCE."""
    params, x, t, g = jax.device_get(fnnet_side)
    dense = [params[0], params[2], params[4]]
    grads = [g[0], g[2], g[4]]
    Ws = [np.asarray(p["W"]).T for p in dense]
    bs = [np.asarray(p["b"])[:, None] for p in dense]
    ref = np.concatenate(
        [np.asarray(gl["W"]).T.ravel() for gl in grads] + [np.asarray(gl["b"]).ravel() for gl in grads]
    )
    out = {}
    for tag, printed in (("as_printed", True), ("corrected", False)):
        gW, gb = _listing(np.asarray(x).T, np.asarray(t).T, Ws, bs, [_TANH, _RELU, _SIGM], printed)
        mine = np.concatenate([w.ravel() / batch for w in gW] + [b.ravel() / batch for b in gb])
        out[f"rel_err_{tag}"] = relative_error(mine, ref)
    return out


def run(config: Config, out_dir: Path) -> Result:
    c = config
    with jax.enable_x64(True):
        params, x, t, z_ce, grads, listing_side = jax.device_get(_fnnet_side(jax.random.key(c.seed), c))
        cases = {}
        for label, sl in (("one example", slice(0, 1)), (f"batch of {c.batch}", slice(None))):
            gm, ga = grads[label.split(" ")[0]]
            cases[label] = dict(elem=elementwise_grads(params, x[sl], t[sl]), manual=_flat(gm), autodiff=_flat(ga))
        manual = fn.value_and_grad(_net(c), fn.mse)
        five = five_step(params, x, t, c.lr, c.five_step_iters, manual)
        ce = softmax_ce_elementwise(z_ce, 1)
        listing = listing_backprop(listing_side, c.batch)

    claims, errs = [], {}
    for label, r in cases.items():
        for layer, (kw, kb) in (("hidden→output (case 1)", ("W2", "b2")), ("input→hidden (case 2)", ("W1", "b1"))):
            e_m = max(relative_error(r["elem"][k], r["manual"][k]) for k in (kw, kb))
            e_a = max(relative_error(r["elem"][k], r["autodiff"][k]) for k in (kw, kb))
            errs[f"{label} / {layer}"] = {"vs_matrix_rules": e_m, "vs_autodiff": e_a}
            source = SRC_CASES + (" (the 1/B of the batch mean is fnnet's convention)" if "batch" in label else "")
            claims.append(
                close(
                    f"{layer}: element-by-element formula = fnnet's matrix-form rule, {label} "
                    f"(max relative error of W, b; vs jax.grad {e_a:.1e})",
                    source,
                    0.0,
                    e_m,
                    atol=1e-12,
                    kind="source",
                    seeds=1,
                    tolerance_basis="rounding: float64 sums of a few dozen terms; 1e-12 relative is ~5000 ulp",
                )
            )
    claims.append(
        close(
            f"five-step algorithm, {c.five_step_iters} iterations at η = {c.lr}: parameters equal "
            "fnnet's manual rules + optim.sgd (max relative error)",
            SRC_ALG,
            0.0,
            five["max_rel_err"],
            atol=1e-10,
            kind="source",
            seeds=1,
            tolerance_basis="rounding: float64, errors compound over the iterations; 1e-10 relative",
        )
    )
    eta_lam = max(five["eta_lambda_max"])
    claims.append(
        Claim(
            f"five-step algorithm: E falls at every one of {c.five_step_iters} iterations (η = {c.lr}), as the "
            "second-order expansion of a gradient step predicts when η·λ_max(H) < 2 at every iterate",
            "fnnet's expectation (the text states no rate of descent), from "
            + src.GOODFELLOW_2016.cite("Sec. 4.3.1, eq. 4.9 (second-order expansion of a gradient step)"),
            "all decreases",
            f"{five['n_decreases']}/{c.five_step_iters} decreases; max η·λ_max = {eta_lam:.3g}",
            "strict, every iteration",
            five["n_decreases"] == c.five_step_iters and eta_lam < 2.0,
            note=f"E from {five['E'][0]:.4g} to {five['E'][-1]:.4g}; λ_max from jax.jacfwd of the manual gradient",
            kind="fnnet",
            seeds=1,
            tolerance_basis="rounding: strict inequalities between float64 losses; the premise η·λ_max < 2 is checked",
        )
    )
    claims.append(
        close(
            "softmax + cross-entropy: Σ_i (∂L/∂p_i)(∂p_i/∂z_k), summed element by element, = p − y "
            f"(max |diff| over {c.classes} logits)",
            SRC_CE,
            0.0,
            ce["err_elementwise_vs_p_minus_y"],
            atol=1e-14,
            kind="source",
            seeds=1,
            tolerance_basis="rounding: float64 probabilities of order 1; 1e-14 is ~50 ulp",
        )
    )
    claims.append(
        close(
            "softmax + cross-entropy: fnnet's fused rule and jax.grad give p − y (max |diff|)",
            SRC_CE,
            0.0,
            max(ce["err_fnnet_vs_p_minus_y"], ce["err_autodiff_vs_p_minus_y"]),
            atol=1e-14,
            kind="source",
            seeds=1,
            tolerance_basis="rounding: float64 probabilities of order 1; 1e-14 is ~50 ulp",
        )
    )
    claims.append(
        close(
            "the matrix recursion δ^(l) = (W^(l+1)ᵀ δ^(l+1)) ⊙ σ'(z^(l)), dW = δ hᵀ, with each layer's "
            "own activation derivative, equals fnnet's rules (tanh → relu → sigmoid + BCE; rel. error)",
            SRC_LISTING,
            0.0,
            listing["rel_err_corrected"],
            atol=1e-12,
            note="the listing sums over the batch; compared after dividing by B",
            kind="source",
            seeds=1,
            tolerance_basis="rounding: float64 sums of a few dozen terms; 1e-12 relative is ~5000 ulp",
        )
    )
    claims.append(
        close(
            "the text's listing, index as printed (activations[l].deriv(z[l-1])), gives the same "
            "gradients for layers with different activations (rel. error)",
            SRC_LISTING,
            0.0,
            listing["rel_err_as_printed"],
            atol=1e-12,
            note="As printed it gates δ with the derivative of the layer above's activation; "
            "right only when all activations are the same. activations[l-1] fixes it. One error of the text.",
            kind="source",
            seeds=1,
            tolerance_basis="rounding: float64 sums of a few dozen terms; 1e-12 relative is ~5000 ulp",
        )
    )

    figures = [_plot(cases, five, ce, out_dir)]
    metrics = {
        "relative_errors": errs,
        "five_step": {
            "E": five["E"],
            "max_rel_err": five["max_rel_err"],
            "n_decreases": five["n_decreases"],
            "eta_lambda_max": five["eta_lambda_max"],
        },
        "softmax_ce": {k: v for k, v in ce.items() if k.startswith("err")},
        "listing": listing,
    }
    return Result(metrics=metrics, claims=claims, figures=figures)


def _plot(cases: dict, five: dict, ce: dict, out_dir: Path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    ax = axes[0]
    r = cases[[k for k in cases if "batch" in k][0]]
    for k, col in (("W1", "C0"), ("b1", "C1"), ("W2", "C2"), ("b2", "C3")):
        ax.plot(r["elem"][k].ravel(), r["manual"][k].ravel(), "o", color=col, mfc="none", ms=7, label=f"{k}: rule")
        ax.plot(r["elem"][k].ravel(), r["autodiff"][k].ravel(), "+", color=col, ms=7, label=f"{k}: jax.grad")
    lim = max(float(np.max(np.abs(v))) for v in r["elem"].values()) * 1.1
    ax.plot([-lim, lim], [-lim, lim], "k:", lw=0.8)
    ax.set_xlabel("∂E/∂w element by element (texts' formulas)")
    ax.set_ylabel("∂E/∂w: matrix-form rule (o) / jax.grad (+)")
    ax.set_title("cases 1 and 2, batch mean", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    ax.semilogy(np.arange(len(five["E"])), five["E"], color="C0")
    ax.set_xlabel("iteration of the five-step algorithm")
    ax.set_ylabel("E (mean over the batch)")
    ax.set_title("E over the five-step algorithm (full batch)", fontsize=10)
    ax = axes[2]
    k = np.arange(len(ce["p"]))
    ax.bar(k - 0.2, ce["elementwise"], 0.4, label="Σ_i ∂L/∂p_i · ∂p_i/∂z_k")
    ax.bar(k + 0.2, ce["p_minus_y"], 0.4, label="p − y")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("logit k")
    ax.set_ylabel("∂L/∂z_k")
    ax.set_title("softmax + cross-entropy (label 1)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(
        fig,
        out_dir,
        "backprop_cases",
        "Left: every gradient entry from the texts' per-weight formulas against fnnet's matrix rule and jax.grad "
        "(on the diagonal). Middle: E over the five-step algorithm (log). Right: chain-rule sum vs p − y.",
    )
