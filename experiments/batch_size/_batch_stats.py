"""The batch-size study's measurements: scaling fits, regimes, gradient noise scale, sharpness, curve noise.

* :func:`fit_steps` / :func:`fit_examples` — McCandlish et al. 2018, eq. 2.11 read per axis:
  S(B) = S_min (1 + B_noise/B) and E(B) = B·S(B) = E_min (1 + B/B_noise), least squares on log S
  (resp. log E); R² is on the log scale.
* :func:`regimes` — Shallue et al. 2018, Fig. 1: local log–log slopes of steps-to-target against B,
  cut into perfect scaling (slope ≤ −0.75), diminishing returns, and maximal data parallelism
  (every later slope ≥ −0.15).
* :func:`per_example_noise` — B_simple = tr(Σ)/|G|² (McCandlish eq. 2.8) from per-example gradients
  of the hand-written rules under ``vmap``; :func:`two_batch_noise` — the unbiased estimator of
  their Appendix A from gradients at two batch sizes.
* :func:`top_hessian_eigenvalues` — power iteration on Hessian–vector products, the HVP being the
  forward-mode derivative (``jax.jvp``) of the manual gradient.
* :func:`window_noise` — the std of a loss curve about its local linear trend in sliding windows.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from fnnet.grad import GRAD_SOURCES

# ----------------------------------------------------------------------------------------------
# fits and regimes


def _fit_one_scale(logb: np.ndarray, logy: np.ndarray, sign: float) -> dict[str, float]:
    """Fit log y = log y_min + log(1 + exp(sign·(log B − log B_noise))) by a 1-D search in log B_noise."""

    def resid(lbn: float) -> tuple[float, float]:
        shape = np.log1p(np.exp(sign * (logb - lbn)))
        ly_min = float(np.mean(logy - shape))
        return float(np.sum((logy - ly_min - shape) ** 2)), ly_min

    lo, hi = float(logb.min()) - 3.0, float(logb.max()) + 3.0
    grid = np.linspace(lo, hi, 601)
    k = int(np.argmin([resid(g)[0] for g in grid]))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    for _ in range(60):  # golden-section refinement inside the bracketing grid cells
        c, d = b - 0.618034 * (b - a), a + 0.618034 * (b - a)
        if resid(c)[0] < resid(d)[0]:
            b = d
        else:
            a = c
    lbn = 0.5 * (a + b)
    sse, ly_min = resid(lbn)
    sst = float(np.sum((logy - logy.mean()) ** 2))
    return {"y_min": math.exp(ly_min), "b_noise": math.exp(lbn), "r2": 1.0 - sse / sst if sst > 0 else float("nan")}


def fit_steps(batch: Any, steps: Any) -> dict[str, float]:
    """S(B) = S_min (1 + B_noise/B): returns ``s_min``, ``b_noise``, ``r2`` (on log S)."""
    f = _fit_one_scale(np.log(np.asarray(batch, float)), np.log(np.asarray(steps, float)), -1.0)
    return {"s_min": f["y_min"], "b_noise": f["b_noise"], "r2": f["r2"]}


def fit_examples(batch: Any, examples: Any) -> dict[str, float]:
    """E(B) = E_min (1 + B/B_noise): returns ``e_min``, ``b_noise``, ``r2`` (on log E)."""
    f = _fit_one_scale(np.log(np.asarray(batch, float)), np.log(np.asarray(examples, float)), 1.0)
    return {"e_min": f["y_min"], "b_noise": f["b_noise"], "r2": f["r2"]}


def series(points: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The reached points of a sweep as arrays: B, steps S, examples E = B·S, best lr, seed min/max."""
    ok = [p for p in points if p["best_steps"] is not None]
    b = np.array([p["batch_size"] for p in ok], float)
    s = np.array([p["best_steps"] for p in ok], float)
    return {
        "B": b,
        "S": s,
        "E": b * s,
        "lr": np.array([p["best_lr"] for p in ok], float),
        "S_lo": np.array([min(p["best_steps_seeds"]) for p in ok], float),
        "S_hi": np.array([max(p["best_steps_seeds"]) for p in ok], float),
    }


PERFECT_SLOPE = -0.75  # a doubling of B still cuts the steps by ≥ 2^0.75 ≈ 1.68×
FLAT_SLOPE = -0.15  # a doubling of B cuts the steps by ≤ 2^0.15 ≈ 1.11×


def regimes(batch: Any, steps: Any) -> dict[str, Any]:
    """Cut a steps-to-target curve into Shallue et al.'s three regimes by its local log–log slopes.

    Perfect scaling runs from the smallest B while each segment's slope is ≤ −0.75; diminishing
    returns begin at the first B whose next segment is shallower; maximal data parallelism begins at
    the first B from which every later segment has slope ≥ −0.15 (None when the curve never flattens).
    """
    b, s = np.asarray(batch, float), np.asarray(steps, float)
    slopes = np.diff(np.log(s)) / np.diff(np.log(b))
    k = 0
    while k < len(slopes) and slopes[k] <= PERFECT_SLOPE:
        k += 1
    flat = None
    for j in range(len(slopes)):
        if np.all(slopes[j:] >= FLAT_SLOPE):
            flat = j
            break
    perfect_fit = np.polyfit(np.log(b[: k + 1]), np.log(s[: k + 1]), 1)[0] if k >= 1 else float("nan")
    flat_fit = (
        np.polyfit(np.log(b[flat:]), np.log(s[flat:]), 1)[0] if flat is not None and flat < len(b) - 1 else float("nan")
    )
    return {
        "slopes": slopes.tolist(),
        "perfect_from": float(b[0]) if k >= 1 else None,
        "diminishing_from": float(b[k]) if k < len(b) - 1 else None,
        "flat_from": None if flat is None else float(b[flat]),
        "perfect_slope": float(perfect_fit),
        "flat_slope": float(flat_fit),
        "n_perfect": int(k + 1) if k >= 1 else 0,
    }


# ----------------------------------------------------------------------------------------------
# gradient noise scale


def _sq(tree: Any) -> jax.Array:
    return sum(jnp.sum(jnp.square(a)) for a in jax.tree_util.tree_leaves(tree))


@functools.cache
def _per_example_fn(net: fn.Layer, loss: fn.Loss, grad: str, n: int, chunk: int):
    """The jitted statistics of :func:`per_example_noise`, built once per (net, loss, grad, n, chunk)."""
    vg = GRAD_SOURCES[grad](net, loss)
    per = jax.vmap(vg, (None, 0, 0))

    def stats(params, x, y):
        def body(carry, xy):
            _, g = per(params, xy[0][:, None], xy[1][:, None])
            total = jax.tree_util.tree_map(lambda c, a: c + jnp.sum(a, axis=0), carry[0], g)
            return (total, carry[1] + _sq(g)), None

        zero = jax.tree_util.tree_map(jnp.zeros_like, params)
        xs = (jnp.reshape(x, (n // chunk, chunk) + x.shape[1:]), jnp.reshape(y, (n // chunk, chunk) + y.shape[1:]))
        (total, sumsq), _ = jax.lax.scan(body, (zero, jnp.zeros((), x.dtype)), xs)
        mean = jax.tree_util.tree_map(lambda a: a / n, total)
        value, full = vg(params, x, y)
        diff = jax.tree_util.tree_map(lambda a, b: a - b, mean, full)
        return _sq(mean), (sumsq - n * _sq(mean)) / (n - 1), jnp.sqrt(_sq(diff) / _sq(full)), value

    return jax.jit(stats)


def per_example_noise(
    net: fn.Layer, loss: fn.Loss, params: Any, x: jax.Array, y: jax.Array, *, chunk: int = 500, grad: str = "manual"
) -> dict[str, float]:
    """B_simple = tr(Σ)/|G|² over the n examples given, from per-example gradients under ``vmap``.

    G = (1/n) Σ g_i (the full-batch gradient) and tr(Σ) = (Σ|g_i|² − n|G|²)/(n − 1). Also returns
    ``full_batch_rel_err``: ‖mean of per-example gradients − the batch gradient‖/‖G‖ (one rule, two ways)
    and ``loss``, the mean loss over the n examples.
    """
    n = int(x.shape[0])
    if n % chunk:
        raise ValueError(f"per_example_noise needs n divisible by chunk={chunk}, got n={n}")
    stats = _per_example_fn(net, loss, grad, n, chunk)
    g2, tr, err, value = (float(v) for v in stats(params, x, y))
    return {"loss": value, "g2": g2, "tr_sigma": tr, "b_simple": tr / g2, "full_batch_rel_err": err}


@functools.cache
def _two_batch_fn(net: fn.Layer, loss: fn.Loss, grad: str, b_small: int, b_big: int, draws: int):
    """The jitted squared gradient norms of :func:`two_batch_noise`: ``draws`` batches of each size."""
    vg = GRAD_SOURCES[grad](net, loss)

    def norms(params, x, y, key):
        def one(k, b):
            idx = jax.random.randint(k, (b,), 0, x.shape[0])  # with replacement: E|G_B|² = |G|² + tr(Σ)/B
            return _sq(vg(params, x[idx], y[idx])[1])

        ks, kb = jax.random.split(key)
        small = jax.lax.map(lambda k: one(k, b_small), jax.random.split(ks, draws))
        big = jax.lax.map(lambda k: one(k, b_big), jax.random.split(kb, draws))
        return small, big

    return jax.jit(norms)


def two_batch_noise(
    net: fn.Layer,
    loss: fn.Loss,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    b_small: int,
    b_big: int,
    draws: int,
    groups: int = 8,
    grad: str = "manual",
) -> dict[str, float]:
    """McCandlish et al. 2018, App. A: unbiased |G|² and tr(Σ) from gradient norms at two batch sizes.

    With batches drawn with replacement, E|G_B|² = |G|² + tr(Σ)/B, so
        |G|²  ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small),
        tr(Σ) ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big),
    each averaged over ``draws`` independent batches per size; B_simple is their ratio. The spread
    ``b_simple_se`` is the standard error over ``groups`` disjoint groups of draws.
    """
    norms = _two_batch_fn(net, loss, grad, b_small, b_big, draws)
    small, big = (np.asarray(v, np.float64) for v in norms(params, x, y, key))

    def est(s: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        g2 = (b_big * b.mean() - b_small * s.mean()) / (b_big - b_small)
        tr = (s.mean() - b.mean()) / (1.0 / b_small - 1.0 / b_big)
        return float(g2), float(tr)

    g2, tr = est(small, big)
    per_group = [est(s, b) for s, b in zip(np.array_split(small, groups), np.array_split(big, groups))]
    ratios = np.array([t / g for g, t in per_group])
    return {
        "g2": g2,
        "tr_sigma": tr,
        "b_simple": tr / g2,
        "b_simple_se": float(np.std(ratios, ddof=1) / math.sqrt(groups)),
        "b_small": b_small,
        "b_big": b_big,
        "draws": draws,
    }


# ----------------------------------------------------------------------------------------------
# sharpness


@functools.cache
def _power_fn(net: fn.Layer, loss: fn.Loss, grad: str, iters: int):
    """Jitted, model-vmapped power iteration of :func:`top_hessian_eigenvalues`."""
    vg = GRAD_SOURCES[grad](net, loss)

    def power(params, x, y, key):
        def hvp(v):
            return jax.jvp(lambda p: vg(p, x, y)[1], (params,), (v,))[1]

        leaves, tdef = jax.tree_util.tree_flatten(params)
        ks = jax.random.split(key, len(leaves))
        v = jax.tree_util.tree_unflatten(tdef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(ks, leaves)])

        def normalise(t):
            nrm = jnp.sqrt(_sq(t))
            return jax.tree_util.tree_map(lambda a: a / nrm, t)

        def body(i, c):
            v, lams = c
            hv = hvp(v)
            lam = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(hv)))
            return normalise(hv), lams.at[i].set(lam)

        _, lams = jax.lax.fori_loop(0, iters, body, (normalise(v), jnp.zeros((iters,), x.dtype)))
        return lams

    return jax.jit(jax.vmap(power, (0, None, None, None)))


def top_hessian_eigenvalues(
    net: fn.Layer,
    loss: fn.Loss,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    iters: int = 50,
    grad: str = "manual",
) -> dict[str, list[float]]:
    """λ_max of the training-loss Hessian of each of K stacked models by power iteration.

    v ← Hv/‖Hv‖ and λ = vᵀHv (the Rayleigh quotient), from one random start per call. The
    Hessian–vector product is Hv = d/dt ∇L(θ + t v) at t = 0: ``jax.jvp`` through the gradient
    function, so with ``grad="manual"`` forward mode runs through the hand-written backward rules.
    Power iteration finds the eigenvalue of largest magnitude; at a minimum that is the top one.
    Returns ``lambda_max`` (K,) after ``iters`` steps and ``rel_change_last5`` (K,), its relative
    change over the last 5 iterations (a convergence check).
    """
    lams = np.asarray(_power_fn(net, loss, grad, iters)(params, x, y, key), np.float64)  # (K, iters)
    last = lams[:, -1]
    change = np.max(np.abs(lams[:, -5:] - last[:, None]), axis=1) / np.maximum(np.abs(last), 1e-12)
    return {"lambda_max": last.tolist(), "rel_change_last5": change.tolist(), "iters": iters}


# ----------------------------------------------------------------------------------------------
# curve noise


def window_noise(curve: Any, window: int) -> float:
    """Median over sliding windows of the std of the curve about its least-squares line in the window.

    A smooth descent (however steep) scores ≈ 0; a jagged one scores its jitter. NaNs (a diverged
    run) give NaN. Curves shorter than the window use one window of their full length (≥ 3 points).
    """
    c = np.asarray(curve, np.float64)
    if c.size < 3 or not np.all(np.isfinite(c)):
        return float("nan")
    w = min(window, c.size)
    t = np.arange(w, dtype=np.float64)
    t = t - t.mean()
    stds = []
    for i in range(0, c.size - w + 1, max(1, w // 2)):
        seg = c[i : i + w]
        slope = np.dot(t, seg - seg.mean()) / np.dot(t, t)
        stds.append(np.std(seg - seg.mean() - slope * t, ddof=2 if w > 2 else 0))
    return float(np.median(stds))
