"""Helpers of ``backprop_cases``: the five-step algorithm, softmax + CE by the chain rule, the text's listing.

Everything here is written in NumPy from the texts' formulas, independently of fnnet's rules, so it
can be compared with them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fnnet as fn
from fnnet import optim
from fnnet.checking import relative_error


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def five_step(params: tuple, x: np.ndarray, t: np.ndarray, lr: float, iters: int, manual: Callable) -> dict:
    """Iterate the five steps of 000's algorithm in NumPy; compare every iterate with fnnet's rules + sgd.

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
    return {"E": E_hist, "max_rel_err": worst, "n_decreases": n_dec}


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
    """002's listing, transcribed (column vectors, W^(l) of shape (d_l, d_{l−1})); output δ = h_L − y."""
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
    d_in, h1, h2, d_out = dims
    net = fn.serial(fn.Dense(h1), fn.Tanh(), fn.Dense(h2), fn.Relu(), fn.Dense(d_out))
    k_init, k_x, k_y = jax.random.split(key, 3)
    _, params = net.init(k_init, (d_in,), jnp.float64)
    x = jax.random.normal(k_x, (batch, d_in), jnp.float64)
    t = jax.random.bernoulli(k_y, 0.5, (batch, d_out)).astype(jnp.float64)
    _, g = fn.value_and_grad(net, fn.binary_cross_entropy)(params, x, t)
    return params, x, t, g


def listing_fnnet_side(key: jax.Array, batch: int, dims: tuple[int, int, int, int]):
    """fnnet's side of the listing check (params, x, t, grads); jit-able, and inlined by an outer jit."""
    return _listing_fnnet_side(key, batch, dims)


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
