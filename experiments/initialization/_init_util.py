"""Shared helpers of the initialization study: the grid and the mean-field theory.

* The grid: activations (:data:`ACTS`, fnnet Layers + float64 NumPy twins for the theory) and
  initializers (:data:`INITS`, each an fnnet initializer and its weight variance Var[w]).
* Theory by **Gauss–Hermite quadrature** (NumPy ``hermegauss``, :data:`GH_NODES` nodes, float64):
  E_{z~N(0,q)}[f(z)] = Σ_i w_i f(√q x_i) / √(2π). An even node count puts no node on the kinks of
  ReLU-like functions at 0, so E[relu′(z)²] = 1/2 exactly. The mean-field recursions of
  Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos",
  eq. 3, 5, and Schoenholz et al. 2017, "Deep Information Propagation", eq. 5-9, are built on it.
  For large q it switches to a fine trapezoid rule (see :func:`gauss_mean`).

The deep nets themselves (scanned stacks, traces, shared weight draws) are in
:mod:`experiments.initialization._init_nets`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr

import fnnet as fn
from fnnet import initializers as I
from fnnet.core import Layer

# ----------------------------------------------------------------------------------------------
# the grid

#: name -> (fnnet activation name, kwargs)
ACTS: dict[str, tuple[str, dict]] = {
    "sigmoid": ("sigmoid", {}),
    "tanh": ("tanh", {}),
    "relu": ("relu", {}),
    "leaky_relu(0.01)": ("leaky_relu", {"alpha": 0.01}),
    "leaky_relu(0.2)": ("leaky_relu", {"alpha": 0.2}),
    "gelu": ("gelu", {}),
}

INITS: tuple[str, ...] = (
    "zeros",
    "N(0,0.01²)",
    "N(0,1)",
    "standard",
    "xavier_uniform",
    "xavier_normal",
    "he_normal",
    "lecun_normal",
    "orthogonal",
    "leaky_he",
)


def act_layer(name: str) -> Layer:
    """The fnnet Layer of activation ``name`` of :data:`ACTS`."""
    base, kw = ACTS[name]
    return fn.activations.get(base, **kw)


def leaky_alpha(act: str) -> float:
    """The α leaky-He uses with activation ``act``: the activation's own slope, else 0.2."""
    return ACTS[act][1].get("alpha", 0.2)


def initializer(name: str, act: str = "relu") -> I.Initializer:
    """The fnnet initializer called ``name`` in :data:`INITS` (leaky-He takes α from ``act``)."""
    table = {
        "zeros": I.zeros,
        "N(0,0.01²)": lambda: I.normal(0.01),
        "N(0,1)": lambda: I.normal(1.0),
        "standard": I.standard_uniform,
        "xavier_uniform": I.glorot_uniform,
        "xavier_normal": I.glorot_normal,
        "he_normal": I.he_normal,
        "lecun_normal": I.lecun_normal,
        "orthogonal": I.orthogonal,
        "leaky_he": lambda: I.leaky_he_normal(leaky_alpha(act)),
    }
    return table[name]()


def weight_variance(name: str, act: str, fan_in: int, fan_out: int) -> float:
    """Var[w] of initializer ``name`` for a (fan_in, fan_out) kernel (the formulas, not a draw)."""
    a = leaky_alpha(act)
    return {
        "zeros": 0.0,
        "N(0,0.01²)": 1e-4,
        "N(0,1)": 1.0,
        "standard": 1.0 / (3 * fan_in),
        "xavier_uniform": 2.0 / (fan_in + fan_out),
        "xavier_normal": 2.0 / (fan_in + fan_out),
        "he_normal": 2.0 / fan_in,
        "lecun_normal": 1.0 / fan_in,
        "orthogonal": 1.0 / max(fan_in, fan_out),
        "leaky_he": 2.0 / ((1 + a * a) * fan_in),
    }[name]


def np_phi(act: str, u: np.ndarray) -> np.ndarray:
    """φ(u) in float64 NumPy (the theory's twin of fnnet's activation)."""
    base, kw = ACTS[act] if act in ACTS else (act, {})
    if base == "sigmoid":
        return 0.5 * (1 + np.tanh(u / 2))
    if base == "tanh":
        return np.tanh(u)
    if base in ("relu", "leaky_relu"):
        return np.where(u >= 0, u, kw.get("alpha", 0.0) * u)
    if base == "gelu":
        return u * ndtr(u)
    raise ValueError(act)


def np_dphi(act: str, u: np.ndarray) -> np.ndarray:
    """φ′(u) in float64 NumPy."""
    base, kw = ACTS[act] if act in ACTS else (act, {})
    if base == "sigmoid":
        s = 0.5 * (1 + np.tanh(u / 2))
        return s * (1 - s)
    if base == "tanh":
        return 1 - np.tanh(u) ** 2
    if base in ("relu", "leaky_relu"):
        return np.where(u > 0, 1.0, kw.get("alpha", 0.0))
    if base == "gelu":
        return ndtr(u) + u * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    raise ValueError(act)


# ----------------------------------------------------------------------------------------------
# Gauss–Hermite quadrature and the mean-field recursions

GH_NODES = 200
_X, _W = np.polynomial.hermite_e.hermegauss(GH_NODES)
_W = _W / math.sqrt(2 * math.pi)  # now Σ w = 1: E f(z), z ~ N(0, 1)


GH_MAX_Q = 2.0  # above this variance a fine trapezoid grid replaces Gauss–Hermite (see gauss_mean)
_TRAP_STEP, _TRAP_MAX = 0.02, 400_001


def gauss_mean(f: Callable, q: Any) -> np.ndarray:
    """E_{z~N(0,q)}[f(z)], elementwise over an array of variances q.

    q ≤ GH_MAX_Q: Gauss–Hermite quadrature (200 nodes). A larger q stretches the nodes (spacing
    ≈ 0.16√q) past the unit-width features of tanh′, σ′ and the like, and GH then fails (a factor 3
    off for E[tanh′(z)⁴] at q = 128); there the trapezoid rule on u ∈ [−10√q, 10√q] with step 0.02
    is used (spectrally accurate for Gaussian-weighted integrands). Past 4·10⁵ grid points (q ≳ 1.6·10⁵,
    reached only by exploding ReLU/GELU nets, whose f is homogeneous at that scale) GH is used again.
    """
    q = np.asarray(q, np.float64)
    out = np.empty(q.shape)
    flat, res = q.ravel(), out.ravel()
    for i, qi in enumerate(flat):
        qi = max(float(qi), 0.0)
        if not np.isfinite(qi):
            res[i] = np.nan
            continue
        n = int(np.ceil(20 * math.sqrt(qi) / _TRAP_STEP)) + 1
        if qi <= GH_MAX_Q or n > _TRAP_MAX:
            res[i] = np.sum(_W * f(math.sqrt(qi) * _X))
        else:
            u = np.linspace(-10 * math.sqrt(qi), 10 * math.sqrt(qi), n)
            dens = np.exp(-0.5 * u * u / qi) / math.sqrt(2 * math.pi * qi)
            res[i] = float(np.sum(f(u) * dens) * (u[1] - u[0]))
    return res.reshape(q.shape)


_X2, _W2 = np.polynomial.hermite_e.hermegauss(100)
_W2 = _W2 / math.sqrt(2 * math.pi)


def gauss_mean2(f: Callable, q: float, c: float) -> float:
    """E[f(u₁) f(u₂)] for (u₁, u₂) Gaussian, variances q, correlation c: 100 × 100 Gauss–Hermite nodes.

    Used at the fixed points q* ≤ 2.2 of the tanh nets studied here, where it agrees with a 200-node
    rule to < 1e-9.
    """
    z1, z2 = _X2[:, None], _X2[None, :]
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(1 - c * c, 0.0)) * z2)
    return float(np.sum(_W2[:, None] * _W2[None, :] * f(u1) * f(u2)))


def forward_theory(act: str, sw2_first: float, q_in: float, sw2: float, depth: int, sb2: float = 0.0):
    """q_z[l] = E z_l², q_h[l] = E φ(z_l)², l = 1..depth, of a net with Var[w] = σ_w²/n.

    q_z[1] = σ_w²(first) · E x² + σ_b², and q_z[l+1] = σ_w² E_{z~N(0,q_z[l])}[φ(z)²] + σ_b²: the
    recursion Var[z_l] = n Var[w] E[φ(z_{l−1})²] (Poole et al. 2016, "Exponential expressivity in deep
    neural networks through transient chaos", eq. 3; He et al. 2015, "Delving Deep into Rectifiers:
    Surpassing Human-Level Performance on ImageNet Classification", eq. 7).
    """
    qz, qh = np.zeros(depth), np.zeros(depth)
    q = sw2_first * q_in + sb2
    for i in range(depth):
        qz[i] = q
        qh[i] = gauss_mean(lambda u: np_phi(act, u) ** 2, q)
        q = sw2 * qh[i] + sb2
    return qz, qh


def chi(act: str, q: Any, sw2: float) -> np.ndarray:
    """σ_w² E_{z~N(0,q)}[φ′(z)²]: the per-layer factor of E‖δ‖² going down one layer (χ₁ at q*)."""
    return sw2 * gauss_mean(lambda u: np_dphi(act, u) ** 2, q)


def q_star(act: str, sw2: float, sb2: float, iters: int = 3000, tol: float = 1e-13) -> float:
    """The fixed point q* of q ← σ_w² E[φ(√q z)²] + σ_b², by iteration.

    Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos", eq. 4.
    """
    q = 1.0
    for _ in range(iters):
        new = float(sw2 * gauss_mean(lambda u: np_phi(act, u) ** 2, q) + sb2)
        if abs(new - q) <= tol * max(q, 1e-30):
            return new
        q = new
    return q


def c_map(act: str, c: float, q: float, sw2: float, sb2: float) -> float:
    """One layer of the correlation map c ← (σ_w² E[φ(u₁)φ(u₂)] + σ_b²) / q*.

    Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos", eq. 5.
    """
    return (sw2 * gauss_mean2(lambda u: np_phi(act, u), q, c) + sb2) / q


def mean_field(act: str, sw2: float, sb2: float) -> dict[str, float]:
    """q*, χ₁, c*, χ_c and the depth scales ξ_c = −1/ln χ_c, ξ_∇ = −1/ln χ₁.

    Schoenholz et al. 2017, "Deep Information Propagation", eq. 9.
    """
    q = q_star(act, sw2, sb2)
    chi1 = float(chi(act, q, sw2))
    c = 0.5
    for _ in range(3000):
        new = c_map(act, c, q, sw2, sb2)
        if abs(new - c) < 1e-12:
            break
        c = new
    c = min(c, 1.0)
    chi_c = chi1 if c > 1 - 1e-6 else sw2 * gauss_mean2(lambda u: np_dphi(act, u), q, c)
    xi = lambda x: float(-1 / math.log(x)) if x < 1 else float("inf")  # noqa: E731
    return {"q_star": q, "chi1": chi1, "c_star": c, "chi_c": chi_c, "xi_c": xi(chi_c), "xi_grad": xi(chi1)}


def critical_sw2(act: str, sb2: float, lo: float = 0.5, hi: float = 5.0) -> float:
    """σ_w² on the order-to-chaos line, χ₁(σ_w², σ_b²) = 1, by bisection."""
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chi(act, q_star(act, mid, sb2, 1500), mid) < 1 else (lo, mid)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------------------
# small numeric helpers


def per_layer_factor(q: np.ndarray, start: int, stop: int) -> float:
    """(q[stop]/q[start])^(1/(stop − start)), the geometric-mean factor per layer (NaN if not finite/positive)."""
    a, b = float(q[start]), float(q[stop])
    if not (np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0):
        return float("nan")
    return float((b / a) ** (1.0 / (stop - start)))


def spread(values: Any) -> dict[str, float]:
    """Median, quartiles, min and max over seeds (NaN-aware), as plain floats."""
    v = np.asarray(values, np.float64)
    if not np.any(np.isfinite(v)):
        return {k: float("nan") for k in ("median", "q25", "q75", "min", "max")}
    q25, med, q75 = np.nanpercentile(v, [25, 50, 75])
    return {
        "median": float(med),
        "q25": float(q25),
        "q75": float(q75),
        "min": float(np.nanmin(v)),
        "max": float(np.nanmax(v)),
    }


def mnist1d_standardized(n_train: int | None = None):
    """MNIST-1D (fnnet.data.mnist1d), inputs standardized with the training statistics."""
    from fnnet.data import Dataset, mnist1d, standardize

    train, test = mnist1d()
    xtr, m, s = standardize(train.x)
    xte, _, _ = standardize(test.x, m, s)
    xtr, ytr = xtr.astype(np.float32), train.y
    if n_train is not None:
        xtr, ytr = xtr[:n_train], ytr[:n_train]
    return Dataset(jnp.asarray(xtr), jnp.asarray(ytr)), Dataset(
        jnp.asarray(xte.astype(np.float32)), jnp.asarray(test.y)
    )


def finish_panel_grid(fig: Any, axes: Any, n: int, xlabel: str, theory_label: str) -> None:
    """Finish a grid of one panel per activation: x labels on the bottom row, unused panels hidden, one
    legend beside the grid with the dashed theory line added, tight layout."""
    import matplotlib.pyplot as plt

    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    h, lab = axes[0, 0].get_legend_handles_labels()
    h.append(plt.Line2D([], [], color="k", ls="--", lw=0.7))
    lab.append(theory_label)
    fig.legend(h, lab, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()


# ----------------------------------------------------------------------------------------------
# claims whose tolerance is the measured seed-to-seed spread

SE_FACTOR = 3.0  # a seed-spread bar is this many standard errors of the seed mean


def seed_stats(samples: Any, log: bool = False) -> tuple[float, float, int]:
    """(mean, standard error of the mean, n) over the finite samples (of their natural log with ``log``)."""
    v = np.asarray(samples, np.float64).ravel()
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log(v)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("inf")
    return float(v.mean()), se, int(v.size)


def seed_close(
    claim: str, source: str, expected: float, samples: Any, *, log: bool = False, note: str = "", kind: str = "source"
):
    """A claim that the seed mean of ``samples`` equals ``expected`` within 3 standard errors of that mean.

    With ``log`` the comparison is of log values (a geometric mean, for quantities spread over decades);
    ``measured`` is then the geometric mean and the tolerance a factor. The bar comes from the spread
    alone (``tolerance_basis`` "seed spread: ..."), never from the value measured.
    """
    from experiments._common import Claim

    m, se, n = seed_stats(samples, log)
    target = math.log(expected) if log and expected > 0 else (float("nan") if log else expected)
    tol = SE_FACTOR * se
    ok = bool(n >= 2 and np.isfinite(m) and np.isfinite(target) and abs(m - target) <= tol)
    if log:
        measured, tol_txt = (math.exp(m) if np.isfinite(m) else m), f"factor {math.exp(tol):.4g} either way"
        what = "geometric mean"
    else:
        measured, tol_txt, what = m, f"atol {tol:.3g}", "mean"
    basis = f"seed spread: {n} seeds, {SE_FACTOR:g} standard errors of the seed {what}" + (" (of logs)" if log else "")
    return Claim(claim, source, expected, measured, tol_txt, ok, note, kind, n, basis)


def seed_greater(
    claim: str,
    source: str,
    a: Any,
    b: Any,
    *,
    names: tuple[str, str],
    log: bool = False,
    note: str = "",
    kind: str = "source",
):
    """A claim that the seed mean of ``a`` exceeds that of ``b`` by more than 3 standard errors of the difference."""
    from experiments._common import Claim

    ma, sa, na = seed_stats(a, log)
    mb, sb, nb = seed_stats(b, log)
    se = math.sqrt(sa * sa + sb * sb)
    ok = bool(min(na, nb) >= 2 and np.isfinite(ma - mb) and ma - mb > SE_FACTOR * se)
    f = (lambda x: math.exp(x) if np.isfinite(x) else x) if log else (lambda x: x)
    what = "log " if log else ""
    return Claim(
        claim,
        source,
        f"{what}mean({names[0]}) − {what}mean({names[1]}) > {SE_FACTOR:g} SE",
        {names[0]: f(ma), names[1]: f(mb), "difference": ma - mb, "se": se},
        f"{SE_FACTOR:g} SE = {SE_FACTOR * se:.3g}",
        ok,
        note,
        kind,
        min(na, nb),
        f"seed spread: {na} and {nb} seeds, {SE_FACTOR:g} standard errors of the difference of the seed means"
        + (" (of logs)" if log else ""),
    )
