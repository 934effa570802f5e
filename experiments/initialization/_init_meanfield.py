"""Measurements of the mean-field study (:mod:`experiments.initialization.mean_field`): depth scales, trainability.

* :func:`measure`: random tanh nets, weights drawn layer by layer inside a ``lax.scan`` (fnnet's
  Dense/Tanh forward and backward rules), vmapped over σ_w² and seeds: the correlation c_l of input
  pairs, q_l, and E(∂L/∂z_l)² for a random top gradient (weights re-drawn from the same keys).
* :func:`xi_fit`: the depth scale from a least-squares line through log|c_l − c*|.
* :func:`heatmap`: training accuracy after a fixed SGD budget over σ_w² × depth (``fnnet.sweep``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import fnnet as fn
from experiments._common import PointCache
from experiments.initialization import _init_nets as N
from experiments.initialization import _init_util as U
from fnnet.optim import sgd
from fnnet.sweeps import stack, sweep


def _pairs(key, n: int, p: int, r: float, c_in: float):
    """2p inputs (a_1, b_1, a_2, ...) with ‖x‖² = n r and x_a·x_b = n r c_in."""
    ku, kv = jax.random.split(key)
    u = jax.random.normal(ku, (p, n))
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    v = jax.random.normal(kv, (p, n))
    v = v - jnp.sum(v * u, axis=1, keepdims=True) * u
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    b = c_in * u + math.sqrt(max(1 - c_in * c_in, 0.0)) * v
    return jnp.reshape(jnp.stack([u, b], axis=1), (2 * p, n)) * math.sqrt(n * r)


def measure(cfg, key, mf: dict) -> dict:
    """Per σ_w² (and seed): correlation c_l of pairs, q_l, and mean (∂L/∂z_l)² for a random top gradient."""
    n, L, sb = cfg.width, cfg.depth, math.sqrt(cfg.sb2)
    dense, tanh = fn.Dense(n), fn.Tanh()
    k_x, k_w, k_g = jax.random.split(key, 3)
    xs = []
    for s in cfg.sw2_measure:
        m = mf[str(s)]
        r = (m["q_star"] - cfg.sb2) / s
        c_start = 0.9 if m["c_star"] > 0.999 else min(m["c_star"] + cfg.chaos_offset, 0.95)
        xs.append(_pairs(k_x, n, cfg.pairs, r, (c_start * m["q_star"] - cfg.sb2) / (s * r)))
    xs = jnp.stack(xs)  # (Σ, 2P, n)
    sws = jnp.sqrt(jnp.asarray(cfg.sw2_measure))
    g_top = jax.random.normal(k_g, (2 * cfg.pairs, n))

    def draw(k, sw):
        kw, kb = jax.random.split(k)
        return {"W": jax.random.normal(kw, (n, n)) * (sw / math.sqrt(n)), "b": jax.random.normal(kb, (n,)) * sb}

    def one(sw, x, keys):
        def fwd(h, k):
            z, cd = dense.forward(draw(k, sw), h)
            y, ca = tanh.forward((), z)
            za, zb = z[0::2], z[1::2]
            c = jnp.mean(jnp.sum(za * zb, 1) / jnp.sqrt(jnp.sum(za * za, 1) * jnp.sum(zb * zb, 1)))
            return y, ((jnp.mean(z * z), c), (cd, ca))

        h, (stats, caches) = lax.scan(fwd, x, keys)

        def bwd(g, inp):
            k, (cd, ca) = inp
            _, dz = tanh.backward((), ca, g)
            _, g = dense.backward(draw(k, sw), cd, dz)
            return g, jnp.mean(dz * dz)

        _, qdz = lax.scan(bwd, g_top, (keys, caches), reverse=True)
        return stats[0], stats[1], qdz

    keys = jax.vmap(lambda k: jax.random.split(k, L))(jax.random.split(k_w, cfg.seeds))  # (S, L)
    f = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(0, 0, None)))
    q, c, qdz = jax.device_get(f(sws, xs, keys))  # (Σ, S, L)
    return {"q": np.asarray(q, np.float64), "c": np.asarray(c, np.float64), "qdz": np.asarray(qdz, np.float64)}


def xi_fit(c: np.ndarray, c_star: float, ordered: bool, floor: float) -> tuple[float, list[int]]:
    """ξ from a least-squares line through log|c_l − c*| over the layers still above the noise."""
    d = np.abs(c - c_star)
    thr = 1e-4 if ordered else floor
    idx = [i for i in range(len(d)) if d[i] >= thr and np.all(d[: i + 1] >= thr)]
    if len(idx) < 3:
        return float("nan"), idx
    slope = np.polyfit(np.asarray(idx, np.float64), np.log(d[idx]), 1)[0]
    return float(-1.0 / slope) if slope < 0 else float("inf"), idx


def heatmap(cfg, cache: PointCache) -> dict:
    train, _ = U.mnist1d_standardized(cfg.n_train)
    acc = {}
    for depth in cfg.train_depths:

        def compute(depth=depth):
            net = N.mlp(
                cfg.train_width, depth, "tanh", fn.initializers.normal(1.0), fn.initializers.normal(1.0), out_dim=10
            )
            _, p = net.init(jax.random.fold_in(jax.random.key(cfg.seed), depth), (train.x.shape[1],))
            params = stack([scale(p, s, cfg.sb2) for s in cfg.sw2_train])
            res = sweep(
                net,
                fn.softmax_cross_entropy,
                params,
                train,
                keys=jax.random.key(cfg.seed + 1),
                optimizer=lambda lr: sgd(lr, momentum=0.9),
                learning_rates=[cfg.lr] * len(cfg.sw2_train),
                batch_size=cfg.train_batch,
                epochs=cfg.epochs,
                progress=False,
            )
            return np.nan_to_num(np.asarray(res.history["train_accuracy"])[:, -1], nan=0.0).tolist()

        acc[str(depth)] = cache.point(f"sweep_depth{depth}", compute)
    return acc


def scale(params, sw2: float, sb2: float):
    """W ← W·√(σ_w²/fan_in), b ← b·σ_b for params drawn as N(0, 1) (every Dense of an :func:`N.mlp`)."""
    if isinstance(params, dict) and "W" in params:
        return {"W": params["W"] * math.sqrt(sw2 / params["W"].shape[-2]), "b": params["b"] * math.sqrt(sb2)}
    if isinstance(params, tuple):
        return tuple(scale(p, sw2, sb2) for p in params)
    return params
