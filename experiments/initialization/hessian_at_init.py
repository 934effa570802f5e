"""The Hessian at initialization: λ_max, the top eigenvalues and the spectral density, Xavier vs He across depth.

ReLU MLPs 40 → width → … → 10 (``depth`` hidden layers, zero biases) are drawn with Xavier/Glorot normal
(Var[w] = 2/(fan_in + fan_out)) and He normal (Var[w] = 2/fan_in) and evaluated, untrained, on a subset of
MNIST-1D with softmax cross-entropy (C = 10 classes), all in float64. At each point three things are
measured on the exact Hessian H = ∇²_θ L(θ), always through products H v (:func:`fnnet.hvp`, the
hand-written R-operator of an MLP):

* λ_max by :func:`fnnet.sharpness` (Lanczos, Cohen et al. 2021's sharpness);
* the top ``block·steps`` Ritz values by :func:`block_lanczos`, written here because
  :mod:`fnnet.curvature` exposes λ_max and the density but not the top-k Ritz values. It is *block*
  Lanczos: a single start vector cannot resolve a cluster of (nearly) equal eigenvalues — in exact
  arithmetic it sees a repeated eigenvalue once, in floating point the copies surface only late, through
  rounding — and the outliers the literature describes come as
  such a cluster (below). A block of b ≥ 3C vectors resolves clusters of up to b eigenvalues;
* the spectral density by :func:`fnnet.hessian_spectrum` (stochastic Lanczos quadrature, Ghorbani,
  Krishnan & Xiao 2019).

**What the literature says, rebuilt from memory** (none of these papers is among the texts fnnet was
built from; the statements below are what fnnet takes them to say, not quotations). Sagun, Bottou &
LeCun 2017 describe the Hessian's eigenvalues as a *bulk* concentrated around zero plus *outliers*
(edges) away from it, the bulk depending on the architecture and the outliers on the data; Sagun et al.
2017 report that the number of outliers matches the number of classes (clusters) in the data. Papyan
2019 splits H into the Gauss–Newton term G = (1/N) Σ_i J_iᵀ H_L,i J_i and the rest, attributes the outliers
to G, and traces them to the class means of the logit gradients J_i (a C-fold, then C(C−1)-fold,
then within-class "three-level" structure). These observations are made mostly on *trained*
networks; whether they hold at initialization is exactly what this experiment asks.

**The outlier test** (defined without fixing the answer). With λ_1 ≥ λ_2 ≥ … the top 3C Ritz values,
the outlier count is k* = argmax_{1≤k<3C} log(λ_k/λ_{k+1}): the place of the largest gap on a log scale
among the top 3C (:func:`outlier_count`). "About C outliers" is k* ∈ {C−1, C, C+1}: C − 1 because each
sample's softmax Hessian H_L = diag(p) − ppᵀ annihilates the all-ones direction of the logits, so a
class-mean (or global-mean) structure in J gives at most C − 1 directions per mean — fnnet's own
derivation — and C + 1 to allow one more. The gap is also reported as the ratio λ_{k*}/λ_{k*+1} against
the largest ratio elsewhere among the top 3C.

**The bulk test**: the SLQ estimate of the fraction of the spectral mass in |λ| ≤ ``bulk_fraction``·λ_max
(from the quadrature nodes and weights, before smoothing) is more than 1/2.

**Xavier vs He across depth** (fnnet's expectation). A ReLU net with zero biases is positively
homogeneous in each layer's weights, so a Xavier net is the He net of the same standard-normal draw with
layer l's weights scaled by s_l = √(Var_X/Var_He): s = 1/√2 for every square hidden layer,
√(40/(40+w)) for the first and √(w/(w+10)) for the last. The logits scale by S = Π_l s_l, and the
Gauss–Newton block of layer l's weights by (S/s_l)², so adding a hidden layer scales every weight block
of Xavier's G by about 1/2 relative to He's: λ_max(He)/λ_max(Xavier) should grow with depth, by about a
factor 2 per layer, until the blocks that do not shrink (the output bias, whose Jacobian is the identity)
dominate Xavier's spectrum. Only the direction is tested (the ratio at the deepest depth exceeds the
ratio at the shallowest by more than 3 standard errors over seeds); the factor per layer is reported.

Cross-checks (sanity): λ_max of :func:`fnnet.sharpness` equals the top block-Lanczos Ritz value; on a
tiny net both equal the largest eigenvalue of ``jnp.linalg.eigvalsh(jax.hessian(L))`` in float64.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, close, point_cache, pyplot, save_figure
from experiments.initialization import _init_util as U
from fnnet.core import PRNGKey

NAME = "hessian_at_init"
TITLE = "The Hessian at initialization: top eigenvalues, bulk and λ_max of ReLU MLPs, Xavier vs He across depth"

C = 10  # MNIST-1D classes
D_IN = 40  # MNIST-1D input length
INITS: dict[str, Callable] = {"xavier_normal": fn.initializers.glorot_normal, "he_normal": fn.initializers.he_normal}
ACTS: dict[str, Callable] = {"relu": fn.Relu, "tanh": fn.Tanh}

SRC_OUTLIERS = "; ".join(
    [
        src.SAGUN_EVCI_2017.cite("sec. 3 (the number of outliers of the Hessian follows the number of classes)"),
        src.PAPYAN_2019.cite("sec. 1-3 (the C outliers come from the class means of the Gauss–Newton term)"),
    ]
)
SRC_BULK = "; ".join(
    [
        src.SAGUN_2017.cite("sec. 2-3 (a bulk of eigenvalues concentrated around zero, and edges away from it)"),
        src.GHORBANI_2019.cite("sec. 2-3 (the density by stochastic Lanczos quadrature)"),
    ]
)
SRC_DEPTH = "fnnet's own contract: " + "; ".join(
    [
        src.HE_2015.cite("sec. 2.2 (He init keeps the ReLU forward variance; Xavier halves it per layer)"),
        src.GLOROT_BENGIO_2010.cite("eq. 12 (Var[w] = 2/(fan_in + fan_out))"),
    ]
)
SRC_SHARPNESS = "fnnet's own contract: " + src.COHEN_2021.cite(
    "sec. 2 (sharpness = λ_max of the training-loss Hessian)"
)


@dataclasses.dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (1, 2, 4)  # hidden layers
    width: int = 64
    acts: tuple[str, ...] = ("relu",)  # the claims are on relu; others are tabled and drawn
    n_train: int = 512  # MNIST-1D training examples at which H is taken
    seeds: int = 5  # init draws per (act, init, depth)
    block: int = 40  # block-Lanczos block size for the top 3C (≥ 3C: resolves a cluster of that many)
    steps: int = 5  # its steps: a Krylov space of block·steps dimensions
    topk_seeds: int = 1  # seeds whose top 3C are computed (the outlier count); λ_max is taken at every seed
    lmax_block: int = 4  # the small block Lanczos of λ_max per seed
    lmax_steps: int = 8
    sharpness_iters: int = 150
    slq_order: int = 40
    slq_probes: int = 3
    bulk_fraction: float = 0.05  # "near zero": |λ| ≤ this · λ_max
    exact_width: int = 4  # the tiny net of the eigvalsh cross-check (40·w + w + 10·w + 10 params)
    exact_n: int = 64
    seed: int = 0


PRESETS = {
    "tiny": Config(
        depths=(1, 2), width=8, n_train=64, block=32, steps=4, sharpness_iters=60, slq_order=20, slq_probes=2, seeds=5
    ),
    "quick": Config(),
    "full": Config(
        depths=(1, 2, 4, 8),
        width=128,
        acts=("relu", "tanh"),
        n_train=2000,
        seeds=8,
        steps=8,
        topk_seeds=8,
        slq_order=90,
        slq_probes=10,
    ),
}


# ----------------------------------------------------------------------------------------------
# the numerics: block Lanczos and the outlier count


@jax.jit
def _project_out(W: jax.Array, B: jax.Array) -> jax.Array:
    """W minus its projection on the rows of B (orthonormal, or zero rows of padding), twice (CGS2)."""
    W = W - (W @ B.T) @ B
    return W - (W @ B.T) @ B


@jax.jit
def _leftover(W: jax.Array, B: jax.Array) -> jax.Array:
    """‖w − proj_B w‖ per row of W."""
    return jnp.linalg.norm(_project_out(W, B), axis=1)


@jax.jit
def _put(B: jax.Array, Q: jax.Array, start: jax.Array) -> jax.Array:
    """B with rows start … start + len(Q) − 1 replaced by Q (one compile per shape, not per start)."""
    return jax.lax.dynamic_update_slice(B, Q, (start, jnp.zeros_like(start)))


@jax.jit
def _gram(W: jax.Array) -> jax.Array:
    return W @ W.T


@jax.jit
def _rotate(M: jax.Array, W: jax.Array) -> jax.Array:
    return M @ W


def _orthonormal_rows(W: jax.Array) -> jax.Array:
    """An orthonormal basis of the row space of W, as rows: symmetric orthogonalization, twice.

    W ← diag(s)^(−1/2) Uᵀ W from the eigendecomposition W Wᵀ = U diag(s) Uᵀ, dropping directions with
    s ≤ 1e-20·max(s) (numerically dependent rows); the second pass restores orthonormality to rounding, as
    in CholeskyQR2. The tall products run in XLA; only the small b × b eigenproblem in NumPy.
    """
    for _ in range(2):
        s, U = np.linalg.eigh(np.asarray(_gram(W)))
        keep = s > 1e-20 * max(float(s.max()), np.finfo(np.float64).tiny)
        W = _rotate(jnp.asarray(U[:, keep].T / np.sqrt(s[keep])[:, None]), W)
    return W


def block_lanczos(
    matmat: Callable[[jax.Array], jax.Array], n: int, *, key: PRNGKey, block: int, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top Ritz values of a symmetric n × n operator by block Lanczos with full reorthogonalization.

    ``matmat(V)`` multiplies the rows of V (b, n) by the operator. From a Gaussian block Q_0 (drawn from
    ``key``, orthonormalized) each step multiplies the newest block, W = H Q_j, orthogonalizes W against every
    block so far (classical Gram–Schmidt, twice) and orthonormalizes it into Q_{j+1}; directions that vanish
    (the Krylov space is invariant) are replaced by fresh random ones. With B = [Q_0; …; Q_{s−1}] (m = b·s
    orthonormal rows, at most n) and the stored products HB, the Rayleigh–Ritz matrix T = B (HB)ᵀ
    (symmetrized) gives the Ritz values θ_i and vectors y_i = Bᵀ s_i; the residual ‖H y_i − θ_i y_i‖
    bounds the distance from θ_i to the nearest eigenvalue of H. A block of b vectors resolves a cluster
    of up to b equal eigenvalues, which single-vector Lanczos cannot. m = n returns every eigenvalue.
    Everything runs in float64 (inside ``jax.enable_x64``); B is kept zero-padded to its final size, so
    each tall product compiles once per (block, steps, n).

    Returns:
        (θ, residuals): the m Ritz values in descending order and their residual norms, float64 NumPy.
    """
    with jax.enable_x64(True):
        k_start, k_fresh = jax.random.split(key)
        m = min(block * steps, n)
        B = jnp.zeros((m, n), jnp.float64)
        HB = jnp.zeros((m, n), jnp.float64)
        Q = _orthonormal_rows(jax.random.normal(k_start, (min(block, n), n), jnp.float64))
        filled, j = 0, 0
        while True:
            HQ = jnp.asarray(matmat(Q), jnp.float64)
            B = _put(B, Q, jnp.asarray(filled))
            HB = _put(HB, HQ, jnp.asarray(filled))
            filled += Q.shape[0]
            j += 1
            if filled >= m:
                break
            W = _orthonormal_rows(_project_out(HQ, B))
            want = min(block, m - filled)
            for attempt in range(4):
                inside = np.asarray(_leftover(W, B)) <= 0.5  # what rounding left in span(B)
                if inside.any():
                    W = W[~inside]
                if W.shape[0] >= want:
                    break
                k = jax.random.fold_in(k_fresh, 4 * j + attempt)
                R = jax.random.normal(k, (want - W.shape[0], n), jnp.float64)
                W = _orthonormal_rows(_project_out(jnp.concatenate([W, R]), B))
            Q = W[:want]
        T = np.asarray(_rotate(B, HB.T))
        theta, S = np.linalg.eigh(0.5 * (T + T.T))
        theta, S = theta[::-1], S[:, ::-1].copy()
        St = jnp.asarray(S.T)
        residual = jnp.linalg.norm(_rotate(St, HB) - jnp.asarray(theta)[:, None] * _rotate(St, B), axis=1)
        return theta.astype(np.float64), np.asarray(residual, np.float64)


def outlier_count(eigs: Any, top: int) -> dict[str, float]:
    """Where the largest log-gap among the top ``top`` eigenvalues falls: the number of outliers k*.

    ``eigs`` in descending order; only the leading positive ones enter (a log needs λ > 0). With
    r_k = λ_k/λ_{k+1} (k = 1 … top−1): k* = argmax_k r_k (1-based, the number of eigenvalues above the gap),
    ``gap_ratio`` = r_{k*} and ``next_ratio`` = the largest r_k for k ≠ k*. k* = 0 when fewer than two
    eigenvalues are positive.
    """
    lam = np.asarray(eigs, np.float64)[:top]
    pos = int(np.argmin(lam > 0)) if np.any(lam <= 0) else lam.size
    lam = lam[:pos]
    if lam.size < 2:
        return {"k": 0, "gap_ratio": float("nan"), "next_ratio": float("nan")}
    r = lam[:-1] / lam[1:]
    k = int(np.argmax(r))
    rest = np.delete(r, k)
    return {"k": k + 1, "gap_ratio": float(r[k]), "next_ratio": float(rest.max()) if rest.size else float("nan")}


def bulk_mass(spectrum: fn.curvature.HessianSpectrum, lam_max: float, fraction: float) -> float:
    """The SLQ estimate of the share of H's eigenvalues with |λ| ≤ fraction·λ_max (nodes and weights, unsmoothed)."""
    inside = np.abs(spectrum.nodes) <= fraction * abs(lam_max)
    return float(np.mean(np.sum(spectrum.weights * inside, axis=1)))


# ----------------------------------------------------------------------------------------------
# the nets and their curvature


def mlp(act: str, init: str, depth: int, width: int) -> fn.Layer:
    """40 → width (×depth, activation ``act``) → 10, every Dense drawn by initializer ``init``, biases 0."""
    layers = []
    for _ in range(depth):
        layers += [fn.Dense(width, INITS[init]()), ACTS[act]()]
    return fn.serial(*layers, fn.Dense(C, INITS[init]()))


def _hessian_matmat(net: fn.Layer) -> Callable:
    """``f(params, x, y, V) -> rows of H V`` for flat vectors V (b, n): fn.hvp vmapped over rows, jit-compiled."""
    product = fn.hvp(net, fn.softmax_cross_entropy)

    @jax.jit
    def f(params, x, y, V):
        unravel = ravel_pytree(params)[1]
        return jax.vmap(lambda v: ravel_pytree(product(params, x, y, unravel(v)))[0])(V)

    return f


def _measure_depth(cfg: Config, act: str, depth: int, x: jax.Array, y: jax.Array) -> dict:
    """Every init and seed at one (act, depth).

    λ_max of every seed by a small block Lanczos (``lmax_block`` × ``lmax_steps``); the top 3C Ritz values
    (``block`` × ``steps``) for the first ``topk_seeds`` seeds; fn.sharpness and fn.hessian_spectrum at seed 0.
    """
    out = {}
    key = jax.random.fold_in(jax.random.key(cfg.seed), depth)
    matmat = None
    for i, init in enumerate(INITS):
        net = mlp(act, init, depth, cfg.width)
        matmat = matmat or _hessian_matmat(net)  # one compiled product per depth: the init changes no shape
        rows = {"lmax": [], "lmax_residual": [], "k": [], "gap_ratio": [], "next_ratio": []}
        for s in range(cfg.seeds):
            k_init, k_lanczos, k_slq = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, i), s), 3)
            params = net.init(k_init, (D_IN,), jnp.float64)[1]
            n = ravel_pytree(params)[0].size

            def product(V, params=params, matmat=matmat):
                return matmat(params, x, y, V)

            theta, res = block_lanczos(product, n, key=k_lanczos, block=cfg.lmax_block, steps=cfg.lmax_steps)
            rows["lmax"].append(float(theta[0]))
            rows["lmax_residual"].append(float(res[0]))
            if s < cfg.topk_seeds:
                theta, res = block_lanczos(product, n, key=k_lanczos, block=cfg.block, steps=cfg.steps)
                oc = outlier_count(theta, 3 * C)
                for name in ("k", "gap_ratio", "next_ratio"):
                    rows[name].append(oc[name])
            if s == 0:
                rows["top"] = theta[: 3 * C].tolist()
                rows["residual"] = res[: 3 * C].tolist()
                rows["n_params"] = int(n)
                rows["sharpness"] = fn.sharpness(
                    net, fn.softmax_cross_entropy, params, x, y, key=k_lanczos, iters=cfg.sharpness_iters, tol=1e-10
                )
                sp = fn.hessian_spectrum(
                    net,
                    fn.softmax_cross_entropy,
                    params,
                    x,
                    y,
                    key=k_slq,
                    order=cfg.slq_order,
                    probes=cfg.slq_probes,
                )
                rows["bulk_mass"] = bulk_mass(sp, rows["sharpness"], cfg.bulk_fraction)
                grid = np.linspace(-0.3, 1.05, 271) * rows["sharpness"]
                rows["density_t_over_lmax"] = (grid / rows["sharpness"]).tolist()
                rows["density"] = (sp.density(grid) * rows["sharpness"]).tolist()  # the density of λ/λ_max
                rows["slq_min_node"] = float(sp.nodes.min())
        out[init] = rows
    return out


def _exact_check(cfg: Config, x: jax.Array, y: jax.Array) -> dict:
    """A tiny He ReLU net: eigvalsh(jax.hessian) vs fn.sharpness (iters = n) vs block Lanczos (m ≥ n), float64."""
    net = mlp("relu", "he_normal", 1, cfg.exact_width)
    k_init, k_lanczos = jax.random.split(jax.random.key(cfg.seed + 1))
    params = net.init(k_init, (D_IN,), jnp.float64)[1]
    flat, unravel = ravel_pytree(params)
    xs, ys = x[: cfg.exact_n], y[: cfg.exact_n]

    def loss(theta):
        return fn.softmax_cross_entropy.forward(net.forward(unravel(theta), xs)[0], ys)[0]

    exact = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(loss))(flat)))[::-1]
    n = flat.size
    lam = fn.sharpness(net, fn.softmax_cross_entropy, params, xs, ys, key=k_lanczos, iters=n, tol=0.0)
    matmat = _hessian_matmat(net)
    theta, _ = block_lanczos(
        lambda V: matmat(params, xs, ys, V), n, key=k_lanczos, block=cfg.block, steps=-(-n // cfg.block)
    )
    return {
        "n_params": int(n),
        "eigvalsh_max": float(exact[0]),
        "sharpness": lam,
        "block_top": theta[: 3 * C].tolist(),
        "eigvalsh_top": exact[: 3 * C].tolist(),
        "norm": float(np.abs(exact).max()),
    }


def run(config: Config, out_dir: Path) -> Result:
    cfg = config
    cache = point_cache(out_dir, config)
    train, _ = U.mnist1d_standardized(cfg.n_train)
    rows: dict[str, dict] = {}
    with jax.enable_x64(True):
        x, y = jnp.asarray(np.asarray(train.x), jnp.float64), jnp.asarray(train.y)
        for act in cfg.acts:
            for depth in cfg.depths:
                point = cache.point(
                    f"{act}_L{depth}", lambda act=act, depth=depth: _measure_depth(cfg, act, depth, x, y)
                )
                for init, r in point.items():
                    rows[f"{act}|{init}|L{depth}"] = r
        exact = cache.point("exact", lambda: _exact_check(cfg, x, y))
    metrics = {"rows": rows, "exact": exact, "classes": C, "per_layer_expected": 2.0}
    claims = _claims(cfg, rows, exact, metrics)
    return Result(metrics=metrics, claims=claims, figures=[_figure(cfg, rows, out_dir)])


# ----------------------------------------------------------------------------------------------
# claims


def _setting(cfg: Config) -> str:
    return (
        f"ReLU MLPs 40 → {cfg.width} × L → 10, L ∈ {list(cfg.depths)}, Xavier and He normal (truncated), biases 0, "
        f"untrained, on {cfg.n_train} MNIST-1D examples, softmax cross-entropy, float64"
    )


def _claims(cfg: Config, rows: dict, exact: dict, metrics: dict) -> list[Claim]:
    relu = {k: r for k, r in rows.items() if k.startswith("relu|")}
    claims = []
    # 1. about C outliers
    ks = {k: r["k"] for k, r in relu.items()}
    all_k = [k for v in ks.values() for k in v]
    window = (C - 1, C + 1)
    claims.append(
        Claim(
            f"the Hessian has about C = {C} outliers: the largest log-gap among its top {3 * C} eigenvalues falls "
            f"after the {C - 1}th to {C + 1}th eigenvalue, in every net",
            SRC_OUTLIERS,
            f"k* ∈ [{window[0]}, {window[1]}] for all {len(all_k)} nets (init × depth × seed)",
            {
                "k_star": ks,
                "share_in_window": float(np.mean([window[0] <= k <= window[1] for k in all_k])),
                "gap_ratio_seed0": {k: r["gap_ratio"][0] for k, r in relu.items()},
                "next_ratio_seed0": {k: r["next_ratio"][0] for k, r in relu.items()},
                f"residual of λ_{C + 1} / λ_1, seed 0": {k: r["residual"][C] / r["top"][0] for k, r in relu.items()},
            },
            "k* ∈ [C − 1, C + 1]",
            bool(all_k and all(window[0] <= k <= window[1] for k in all_k)),
            f"{_setting(cfg)}; top Ritz values by block Lanczos (block {cfg.block}, {cfg.steps} steps). "
            "Ritz values beyond the first few are converged only to the residuals recorded (a Ritz value never exceeds "
            "its eigenvalue, θ_i ≤ λ_i, so an unconverged tail is low, not high). The papers' measurements are mostly "
            "of trained nets; whether they state the count at initialization is rebuilt from "
            "memory, not checked against their text — this tests whether the structure is there at init",
            "source",
            cfg.topk_seeds,
            "source: 'about C' outliers (Sagun et al. 2017: as many as classes; Papyan 2019: from the C class means); "
            "the window [C − 1, C + 1] is fnnet's reading of 'about' (C − 1: fnnet's derivation from the softmax "
            "Hessian's rank C − 1)",
        )
    )
    # 2. the bulk near zero
    mass = {k: r["bulk_mass"] for k, r in relu.items()}
    claims.append(
        Claim(
            f"the bulk of the Hessian's spectrum is concentrated near zero: most of the spectral mass lies within "
            f"{cfg.bulk_fraction:g}·λ_max of 0, in every net",
            SRC_BULK,
            f"SLQ mass in |λ| ≤ {cfg.bulk_fraction:g}·λ_max > 0.5 for every net (seed 0)",
            mass,
            "> 0.5 (a majority)",
            bool(mass and min(mass.values()) > 0.5),
            f"{_setting(cfg)}; SLQ with {cfg.slq_probes} probes × {cfg.slq_order} Lanczos steps, the mass read from "
            "the quadrature nodes and weights (no smoothing); λ_max from fn.sharpness",
            "source",
            1,
            f"source: 'a bulk concentrated around zero' (Sagun, Bottou & LeCun 2017); 'most' read as more than half "
            f"and 'near zero' as within {cfg.bulk_fraction:g}·λ_max (fnnet's reading)",
        )
    )
    # 3. He vs Xavier across depth
    lo, hi = min(cfg.depths), max(cfg.depths)
    ratio = {
        d: np.asarray(relu[f"relu|he_normal|L{d}"]["lmax"]) / np.asarray(relu[f"relu|xavier_normal|L{d}"]["lmax"])
        for d in cfg.depths
    }
    per_layer = float((np.exp(np.mean(np.log(ratio[hi]))) / np.exp(np.mean(np.log(ratio[lo])))) ** (1 / (hi - lo)))
    metrics["ratio_he_over_xavier"] = {str(d): ratio[d].tolist() for d in cfg.depths}
    metrics["ratio_factor_per_layer"] = per_layer
    claims.append(
        U.seed_greater(
            f"λ_max(He)/λ_max(Xavier) of ReLU nets grows with depth: it is larger at L = {hi} than at L = {lo}",
            SRC_DEPTH,
            ratio[hi],
            ratio[lo],
            names=(f"L={hi}", f"L={lo}"),
            log=True,
            note=f"{_setting(cfg)}; λ_max = top block-Lanczos Ritz value per seed (seed s draws both inits). "
            f"Derived factor about 2 per hidden layer (positive homogeneity: Xavier scales each square layer by "
            f"1/√2 against He), less once Xavier's output-bias block dominates; measured geometric factor per layer "
            f"{per_layer:.3g}",
            kind="fnnet",
        )
    )
    # 4. sharpness vs block Lanczos
    pairs = {
        k: (r["sharpness"], r["top"][0], r["residual"][0], r["lmax"][0], r["lmax_residual"][0]) for k, r in rows.items()
    }
    slack = [abs(a - b) - (res + 1e-8 * abs(a)) for a, *rest in pairs.values() for b, res in (rest[:2], rest[2:])]
    claims.append(
        Claim(
            "λ_max from fn.sharpness equals the top Ritz value of both block-Lanczos runs (top-3C and per-seed λ_max) "
            "within that Ritz pair's residual, in every net",
            SRC_SHARPNESS,
            "|λ_sharpness − θ_1| ≤ ‖H y_1 − θ_1 y_1‖ + 1e-8·λ_max",
            {
                "worst_relative_difference": max(
                    abs(a - b) / abs(a) for a, b, _, c, _ in pairs.values() for b in (b, c)
                ),
                "rows (sharpness, top-3C θ_1, its residual, λ_max-run θ_1, its residual)": {
                    k: list(v) for k, v in pairs.items()
                },
            },
            "the block run's top residual + rtol 1e-8",
            bool(all(v <= 0 for v in slack)),
            f"{_setting(cfg)}; seed 0; fn.sharpness with ≤ {cfg.sharpness_iters} Lanczos steps (stop at relative "
            f"residual 1e-10); block Lanczos {cfg.block} × {cfg.steps} and {cfg.lmax_block} × {cfg.lmax_steps}; "
            "Krylov methods on the same operator",
            "sanity",
            1,
            "rounding: for a symmetric H some eigenvalue lies within ‖H y − θ y‖ of any Ritz pair (θ, y), and "
            "Ritz values never exceed λ_max; 1e-8 covers sharpness' own residual",
        )
    )
    # 5. the exact tiny check
    e = exact
    claims.append(
        close(
            f"on a tiny net ({e['n_params']} params) fn.sharpness with n Lanczos steps gives the largest eigenvalue "
            "of jnp.linalg.eigvalsh(jax.hessian(L))",
            SRC_SHARPNESS,
            e["eigvalsh_max"],
            e["sharpness"],
            atol=1e-9 * e["norm"],
            note=f"He ReLU net 40 → {cfg.exact_width} → 10 on {cfg.exact_n} examples, float64; block Lanczos with "
            f"a full Krylov space gives top eigenvalue {e['block_top'][0]:.12g} and top-{3 * C} max abs error "
            f"{np.max(np.abs(np.asarray(e['block_top']) - np.asarray(e['eigvalsh_top']))):.2g}",
            kind="sanity",
            seeds=1,
            tolerance_basis="rounding: float64, full Lanczos (k = n) and dense eigvalsh agree to ~n·eps·‖H‖; "
            "1e-9·‖H‖ is far above that",
        )
    )
    return claims


# ----------------------------------------------------------------------------------------------
# figure


def _figure(cfg: Config, rows: dict, out_dir: Path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    cmaps = {"xavier_normal": plt.get_cmap("Blues"), "he_normal": plt.get_cmap("Reds")}
    styles = {"relu": "-", "tanh": "--"}
    nd = len(cfg.depths)
    for key, r in rows.items():
        act, init, dl = key.split("|")
        d = int(dl[1:])
        color = cmaps[init](0.45 + 0.5 * cfg.depths.index(d) / max(nd - 1, 1))
        label = f"{init.split('_')[0]}, L={d}" + ("" if len(cfg.acts) == 1 else f", {act}")
        top = np.asarray(r["top"])
        idx = np.arange(1, top.size + 1)
        pos = top > 0
        axes[0].semilogy(idx[pos], top[pos], styles[act], marker="o", ms=2.5, lw=1, color=color, label=label)
        k = r["k"][0]
        if 0 < k < top.size:
            axes[0].plot([k + 0.5], [np.sqrt(top[k - 1] * top[k])], "x", color=color, ms=7, mew=1.5)
        t = np.asarray(r["density_t_over_lmax"])
        axes[1].semilogy(t, np.maximum(np.asarray(r["density"]), 1e-6), styles[act], lw=1, color=color, label=label)
    axes[0].axvspan(C - 1 + 0.4, C + 1 + 0.6, color="0.88", zorder=0)
    axes[0].set_xlabel("index k (descending)")
    axes[0].set_ylabel("λ_k (block Lanczos, seed 0)")
    axes[0].set_title(
        f"top {3 * C} eigenvalues; × marks the largest log-gap\n(grey: the gaps that count as C ± 1 outliers)"
    )
    axes[1].axvspan(-cfg.bulk_fraction, cfg.bulk_fraction, color="0.85", zorder=0)
    axes[1].set_xlabel("λ / λ_max")
    axes[1].set_ylabel("spectral density of λ/λ_max (SLQ, floor 1e-6)")
    axes[1].set_title(f"spectral density; grey: |λ| ≤ {cfg.bulk_fraction:g}·λ_max")
    for act in cfg.acts:
        for init, cmap in cmaps.items():
            lm = np.asarray([rows[f"{act}|{init}|L{d}"]["lmax"] for d in cfg.depths])
            med = np.median(lm, 1)
            axes[2].errorbar(
                cfg.depths,
                med,
                yerr=[med - lm.min(1), lm.max(1) - med],
                fmt=styles[act] + "o",
                color=cmap(0.8),
                capsize=3,
                label=f"{init.split('_')[0]}" + ("" if len(cfg.acts) == 1 else f", {act}"),
            )
    axes[2].set_yscale("log")
    axes[2].set_xscale("log", base=2)
    axes[2].set_xticks(cfg.depths, [str(d) for d in cfg.depths])
    axes[2].set_xlabel("hidden layers L")
    axes[2].set_ylabel("λ_max (median, min–max over seeds)")
    axes[2].set_title(f"sharpness at init, {cfg.seeds} seeds")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    caption = (
        f"Hessian at init of ReLU MLPs (width {cfg.width}) on MNIST-1D: top {3 * C} eigenvalues, SLQ density, "
        "and λ_max vs depth, Xavier (blue) and He (red).\n"
        "The × marks the largest log-gap among the top 3C (the outlier count k*); darker lines are deeper nets."
    )
    return save_figure(fig, out_dir, NAME, caption)
