"""The loss landscape of a small tanh net: a 2-D slice with an SGD path, and the index of critical points.

Task: teacher-student regression, x ∈ R² ~ N(0, I), y = a 2-4-1 tanh teacher + N(0, 0.1²) noise, MSE.
Students are 2-h-1 tanh MLPs (P = 4h + 1 parameters).

* Slice: a width-8 student trained by minibatch SGD (``fn.train``, manual gradients) from a poor (×3)
  init; the plane of the path's two principal directions through its end, with the path projected
  (Li et al. 2018, Sec. 7), and a plane of two filter-normalized random directions (Sec. 4). The top-2
  PCA share of 5 such paths is compared with random walks of the same step lengths (Antognini &
  Sohl-Dickstein 2018), which also put most of their variance in two components.
* Critical points, in float64: from half random initializations and half points of full-batch GD
  trajectories (stopped at a random step), minimize ½‖∇L‖² by gradient descent (Adam with a decaying
  step) and finish with Levenberg–Marquardt on the same objective, θ ← θ − (H² + μI)⁻¹ H ∇L (its
  large-μ limit is gradient descent on ½‖∇L‖²). A point with ‖∇L‖ ≤ ``gtol`` is a critical point;
  its index is the number of Hessian eigenvalues below −rtol·max|λ|. The census counts every search:
  certified saddles and minima, searches that stalled near a minimum (loss ≤ 1.1× the best certified
  minimum of that width or a narrower one) and searches that stalled elsewhere; none is dropped.
  ∇L is fnnet's hand-written backward rule; H∇L (the gradient of ½‖∇L‖²) is jax.jvp of it and the
  exact Hessian jax.jacfwd of it (forward-mode autodiff over the manual reverse rule), checked
  against jax.hessian of the forward code.
  All widths run in one compiled program: a width-h net is the width-h_max net with its extra
  units' weights held at zero (:func:`live_mask`), which is exactly the width-h net.

References: "ML Math Derivations (19): Neural Networks and Backpropagation" (author not given, n.d.),
sec. "The Loss Landscape"; Dauphin et al. 2014, "Identifying and attacking the saddle point problem in
high-dimensional non-convex optimization", Sec. 2 and Fig. 1 (index grows with the error of a critical
point); Bray & Dean 2007, "Statistics of critical points of Gaussian fields on large-dimensional
spaces"; Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", Sec. 4 and 7; Fukumizu &
Amari 2000, "Local minima and plateaus in hierarchical structures of multilayer perceptrons" (critical
points of narrower nets embed as saddles); Frye et al. 2021, "Critical Point-Finding Methods Reveal
Gradient-Flat Regions of Deep Network Losses" (gradient-norm minimization stalls in gradient-flat
regions).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, point_cache, pyplot, save_figure, spearman
from fnnet import data

NAME = "loss_landscape"
TITLE = "Loss landscape: a 2-D slice with the SGD path, and saddles among critical points"

SRC_TEXT = src.ML_MATH_19.cite('sec. "The Loss Landscape" (point 2: saddle points dominate in high dimensions)')
SRC_DAUPHIN = src.DAUPHIN_2014.cite("Sec. 2 and Fig. 1 (index of critical points grows with their error)")
NEAR_MINIMUM = (
    1.1  # a stalled search "near a minimum": loss ≤ 1.1 × the best certified minimum (this width or narrower)
)
MIN_POINTS = 5  # certified critical points a width needs before its index-loss correlation is read


@dataclasses.dataclass(frozen=True)
class Config:
    n: int = 64
    teacher_width: int = 4
    noise: float = 0.1
    widths: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    starts: int = 32  # per width: half random inits, half points of GD trajectories
    train_steps: int = 2000  # GD steps (lr 0.2) before a trajectory start, drawn uniformly below this
    adam_steps: int = 500
    lm_steps: int = 100
    gtol: float = 1e-8
    eig_rtol: float = 1e-6
    slice_width: int = 8
    slice_init_scale: float = 3.0
    slice_epochs: int = 60
    slice_batch: int = 16
    slice_lr: float = 0.1
    path_seeds: int = 5  # SGD paths compared with their random-walk rivals
    rival_walks: int = 200  # random walks per path
    grid: int = 41
    seed: int = 0


PRESETS = {
    "tiny": Config(widths=(1, 2), starts=6, train_steps=50, adam_steps=20, lm_steps=10, slice_epochs=3, grid=7),
    "quick": Config(),
    "full": Config(widths=(1, 2, 3, 4, 6, 8, 12, 16), starts=128, adam_steps=2000, lm_steps=300, slice_epochs=200),
}


def student(width: int) -> fn.Layer:
    return fn.serial(fn.Dense(width), fn.Tanh(), fn.Dense(1))


def dataset(config: Config) -> tuple[np.ndarray, np.ndarray]:
    teacher = student(config.teacher_width)
    ds, _ = data.teacher_student(jax.random.key(config.seed), config.n, teacher, 2, noise=config.noise)
    return np.asarray(ds.x), np.asarray(ds.y)


# ----------------------------------------------------------------------------------------------
# helpers: one PRNG key per leaf, rounding to significant digits


def key_tree(key, tree):
    """One fresh PRNG key per leaf of ``tree``, in a pytree of the same structure."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, max(len(leaves), 1)))[: len(leaves)])


def round_sig(x, digits: int) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits (float64), elementwise; NaN and ±inf pass through.

    Multi-threaded XLA CPU kernels may differ in the last bits between runs; rounding the reported
    values keeps metrics.json bit-identical and makes values equal up to rounding tie exactly.
    """
    a = np.asarray(x, np.float64)
    finite = np.isfinite(a) & (a != 0)
    scale = np.where(finite, 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(np.where(finite, a, 1.0))))), 1.0)
    return np.where(finite, np.round(a * scale) / scale, a)


# ----------------------------------------------------------------------------------------------
# critical points


def live_mask(h: jax.Array | int, h_max: int, d_in: int = 2) -> jax.Array:
    """Flat 0/1 mask over the params of ``student(h_max)``: 1 on the coordinates of the first h hidden units.

    With the other units' weights at 0 (and held there), the width-h_max net computes exactly the
    width-h net, and the masked gradient and masked Hessian are exactly the width-h net's (plus zero
    rows and columns for the padding).
    """
    live = (jnp.arange(h_max) < h).astype(jnp.float64)
    tree = ({"W": jnp.broadcast_to(live, (d_in, h_max)), "b": live}, (), {"W": live[:, None], "b": jnp.ones(1)})
    return ravel_pytree(tree)[0]


def critical_points(config: Config, x_np: np.ndarray, y_np: np.ndarray) -> dict:
    """Search, per width, from ``starts`` points; returns ‖∇L‖, L, index, zero modes, eigenvalues."""
    h_max = max(config.widths)
    net = student(h_max)
    with jax.enable_x64(True):
        x, y = jnp.asarray(x_np, jnp.float64), jnp.asarray(y_np, jnp.float64)
        _, p0 = net.init(jax.random.key(0), (2,), jnp.float64)
        _, unravel = ravel_pytree(p0)
        vg = fn.value_and_grad(net, fn.mse)

        def loss(th):
            return vg(unravel(th), x, y)[0]

        def grad(th, m):  # the hand-written backward rule, flattened; fixed (padding) coordinates masked
            return ravel_pytree(vg(unravel(th), x, y)[1])[0] * m

        def hess(th, m):  # forward-mode autodiff over the manual gradient
            return jax.jacfwd(lambda t: grad(t, m))(th) * m[None, :]

        def search(key, h, from_trajectory):
            m = live_mask(h, h_max)
            k_init, k_stop = jax.random.split(key)
            th = ravel_pytree(net.init(k_init, (2,), jnp.float64)[1])[0] * m
            stop = jnp.where(from_trajectory, jax.random.randint(k_stop, (), 0, config.train_steps), 0)
            th, _ = jax.lax.scan(
                lambda t, i: (jnp.where(i < stop, t - 0.2 * grad(t, m), t), None), th, jnp.arange(config.train_steps)
            )
            loss_start = loss(th)
            opt = optax.adam(optax.exponential_decay(1e-2, config.adam_steps, 0.01))

            def gd_step(c, _):  # descent on ½‖∇L‖²: its gradient is H∇L, a Hessian-vector product
                t, s = c
                g = grad(t, m)
                u, s = opt.update(jax.jvp(lambda z: grad(z, m), (t,), (g,))[1] * m, s)
                return (t + u, s), None

            (th, _), _ = jax.lax.scan(gd_step, (th, opt.init(th)), None, length=config.adam_steps)
            g_after_gd = jnp.linalg.norm(grad(th, m))

            def lm_step(c, _):
                t, mu = c
                g = grad(t, m)
                lam, V = jnp.linalg.eigh(hess(t, m))
                new = t - V @ ((lam / (lam * lam + mu)) * (V.T @ g))
                better = jnp.linalg.norm(grad(new, m)) < jnp.linalg.norm(g)
                return (jnp.where(better, new, t), jnp.where(better, mu / 3, mu * 4)), None

            (th, _), _ = jax.lax.scan(lm_step, (th, jnp.asarray(1e-3)), None, length=config.lm_steps)
            lam = jnp.linalg.eigvalsh(hess(th, m))
            tol = config.eig_rtol * jnp.max(jnp.abs(lam))
            padded = (1.0 - m).sum()
            return {
                "grad_norm": jnp.linalg.norm(grad(th, m)),
                "grad_norm_after_gd": g_after_gd,
                "loss": loss(th),
                "loss_start": loss_start,
                "index": jnp.sum(lam < -tol),
                "zero_modes": jnp.sum(jnp.abs(lam) <= tol) - padded,
                "min_eig": lam[0],
            }

        keys = jax.random.split(jax.random.key(config.seed + 1), config.starts)
        from_traj = jnp.arange(config.starts) >= config.starts // 2
        run = jax.jit(jax.vmap(jax.vmap(search, in_axes=(0, None, 0)), in_axes=(None, 0, None)))
        out = run(keys, jnp.asarray(config.widths), from_traj)
        digits = {"loss": 10, "loss_start": 10, "index": None, "zero_modes": None}  # the rest: 3 digits
        out = {k: np.asarray(v) if digits.get(k, 3) is None else round_sig(v, digits.get(k, 3)) for k, v in out.items()}
        out["from_trajectory"] = np.broadcast_to(np.asarray(from_traj), out["loss"].shape)
        return out


def hessian_check(config: Config, x_np: np.ndarray, y_np: np.ndarray) -> float:
    """Relative error of jacfwd(manual gradient) against jax.hessian of the forward code (float64)."""
    net = student(3)
    with jax.enable_x64(True):
        x, y = jnp.asarray(x_np, jnp.float64), jnp.asarray(y_np, jnp.float64)
        th, unravel = ravel_pytree(net.init(jax.random.key(config.seed + 5), (2,), jnp.float64)[1])
        vg = fn.value_and_grad(net, fn.mse)
        manual = jax.jit(jax.jacfwd(lambda t: ravel_pytree(vg(unravel(t), x, y)[1])[0]))
        auto = jax.jit(jax.hessian(lambda t: fn.mse.forward(net.forward(unravel(t), x)[0], y)[0]))
        H_manual, H_auto = manual(th), auto(th)
        return float(jnp.linalg.norm(H_manual - H_auto) / jnp.linalg.norm(H_auto))


def top2_share(path: np.ndarray) -> float:
    """Share of the variance of a path (steps × P) centred on its end point that its top two PCs carry."""
    s = np.linalg.svd(path - path[-1:], compute_uv=False)
    return float(np.sum(s[:2] ** 2) / np.sum(s**2))


def pca_rival(config: Config, x_np: np.ndarray, y_np: np.ndarray) -> dict:
    """The top-2 PCA share of ``path_seeds`` SGD paths and of random walks with the very same step lengths.

    The rival (Antognini & Sohl-Dickstein 2018): a walk in R^P whose t-th step has the SGD path's
    length ‖θ_{t+1} − θ_t‖ and an isotropic random direction, centred on its end point like the path.
    A random walk's top two PCs already carry most of its variance, so "> 50%" cannot tell an SGD path
    from no structure; the claim compares the two.
    """
    rng = np.random.default_rng(config.seed + 11)
    out = {"sgd": [], "rival_median": [], "rival_q95": []}
    for k in range(config.path_seeds):
        path = np.asarray(sgd_path(config, x_np, y_np, k)[0], np.float64)
        lengths = np.linalg.norm(np.diff(path, axis=0), axis=1)
        d = rng.normal(size=(config.rival_walks, len(lengths), path.shape[1]))
        d *= (lengths / np.linalg.norm(d, axis=2))[..., None]
        walks = np.concatenate([np.zeros((config.rival_walks, 1, path.shape[1])), np.cumsum(d, axis=1)], axis=1)
        shares = np.array([top2_share(w) for w in walks])
        out["sgd"].append(round_sig(top2_share(path), 6).item())
        out["rival_median"].append(round_sig(np.median(shares), 6).item())
        out["rival_q95"].append(round_sig(np.quantile(shares, 0.95), 6).item())
    return out


def sgd_path(config: Config, x_np: np.ndarray, y_np: np.ndarray, k: int = 0):
    """Minibatch SGD of the width-``slice_width`` student from a ×``slice_init_scale`` init (seed offset ``k``).

    Returns the flat params after every epoch (epochs + 1, P), the final params and their unravel.
    """
    net = student(config.slice_width)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    _, params = net.init(jax.random.key(config.seed + 2 + 10 * k), (2,))
    params = jax.tree_util.tree_map(lambda p: config.slice_init_scale * p, params)
    path = [ravel_pytree(params)[0]]
    res = fn.train(
        net, fn.mse, params, data.Dataset(x, y), optimizer=fn.optim.sgd(config.slice_lr),
        batch_size=config.slice_batch, epochs=config.slice_epochs, key=jax.random.key(config.seed + 3 + 10 * k),
        progress=False, callback=lambda e, r: path.append(ravel_pytree(r.params)[0]),
    )  # fmt: skip
    return jnp.stack(path), res.params


def landscape(config: Config, x_np: np.ndarray, y_np: np.ndarray) -> dict:
    """The 2-D slices: SGD from a ×3 init, its PCA plane with the path, and a filter-normalized random plane."""
    net = student(config.slice_width)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    path, final_params = sgd_path(config, x_np, y_np, 0)
    final, unravel = ravel_pytree(final_params)
    res_params = final_params
    loss = jax.jit(jax.vmap(lambda t: fn.mse.forward(net.forward(unravel(t), x)[0], y)[0]))
    # PCA plane of the trajectory, centred on the final point (Li et al. 2018, Sec. 7)
    centred = path - final[None, :]
    _, s, vt = jnp.linalg.svd(centred, full_matrices=False)
    u, v = vt[0], vt[1]
    coords = np.stack([np.asarray(centred @ u), np.asarray(centred @ v)], axis=1)
    pad = 0.25 * np.abs(coords).max(axis=0) + 1e-3
    a = np.linspace(coords[:, 0].min() - pad[0], coords[:, 0].max() + pad[0], config.grid)
    b = np.linspace(coords[:, 1].min() - pad[1], coords[:, 1].max() + pad[1], config.grid)
    A, B = np.meshgrid(a, b)
    pca_loss = _on_plane(loss, final, u, v, A, B)
    # filter-normalized random directions (Li et al. 2018, Sec. 4): per neuron, ‖d_j‖ = ‖W_j‖; biases 0
    d1, d2 = (_filter_normalized(k, res_params) for k in jax.random.split(jax.random.key(config.seed + 4), 2))
    r = np.linspace(-1, 1, config.grid)
    R1, R2 = np.meshgrid(r, r)
    rand_loss = _on_plane(loss, final, d1, d2, R1, R2)
    explained = np.asarray(s**2 / jnp.sum(s**2))[:2]
    return {  # float32 values rounded to 6 digits: bit-identical metrics between runs
        "pca": {"a": a, "b": b, "loss": round_sig(pca_loss, 6), "path": round_sig(coords, 6),
                "explained": round_sig(explained, 6)},
        "random": {"r": r, "loss": round_sig(rand_loss, 6)},
        "path_loss": round_sig(loss(path), 6),
        "num_params": int(final.size),
    }  # fmt: skip


def _on_plane(loss, center, u, v, A, B) -> np.ndarray:
    """loss(center + A·u + B·v) on the grid (A, B)."""
    a, b = jnp.asarray(A.ravel())[:, None], jnp.asarray(B.ravel())[:, None]
    return np.asarray(loss(center[None, :] + a * u[None, :] + b * v[None, :])).reshape(A.shape)


def _filter_normalized(key: jax.Array, params) -> jax.Array:
    """A flat random direction, per neuron rescaled to the norm of its incoming weights, biases 0 (Li et al.)."""
    d = jax.tree_util.tree_map(lambda p, k: jax.random.normal(k, p.shape), params, key_tree(key, params))
    norm = lambda w: jnp.linalg.norm(w, axis=0, keepdims=True)  # noqa: E731
    return ravel_pytree(
        tuple({"W": dl["W"] * norm(pl["W"]) / norm(dl["W"]), "b": jnp.zeros_like(pl["b"])} if pl else ()
              for dl, pl in zip(d, params))
    )[0]  # fmt: skip


def summarize(config: Config, cp: dict) -> list[dict]:
    rows = []
    for i, h in enumerate(config.widths):
        ok = np.asarray(cp["grad_norm"][i]) <= config.gtol
        idx = np.asarray(cp["index"][i])[ok]
        loss = np.asarray(cp["loss"][i])[ok]
        traj = np.asarray(cp["from_trajectory"][i], bool)
        rows.append(
            {
                "width": h,
                "params": 4 * h + 1,
                "converged": int(ok.sum()),
                "converged_by_gd_alone": int((np.asarray(cp["grad_norm_after_gd"][i]) <= config.gtol).sum()),
                "converged_from_init": int(ok[~traj].sum()),
                "converged_from_trajectory": int(ok[traj].sum()),
                "saddles": int((idx > 0).sum()),
                "minima": int((idx == 0).sum()),
                "saddle_fraction": float((idx > 0).mean()) if ok.any() else float("nan"),
                "index_counts": np.bincount(idx, minlength=1).tolist() if ok.any() else [],
                "critical_losses": sorted({round(float(v), 6) for v in loss}),
                "minima_losses": sorted({round(float(v), 6) for v in loss[idx == 0]}),
                "rho_index_loss": spearman(idx / (4 * h + 1), loss),
                "stalled_from_trajectory": int((~ok & traj).sum()),
                "stalled_from_init": int((~ok & ~traj).sum()),
                "stalled_median_loss": float(np.median(np.asarray(cp["loss"][i])[~ok])) if (~ok).any() else None,
                "stalled_median_grad_norm": float(np.median(np.asarray(cp["grad_norm"][i])[~ok]))
                if (~ok).any()
                else None,
            }
        )
    return rows


def run(config: Config, out_dir: Path) -> Result:
    out_dir = Path(out_dir)
    x, y = dataset(config)
    cache = point_cache(out_dir, config)
    cp = cache.point("critical_points", lambda: critical_points(config, x, y))
    rows = summarize(config, cp)
    census(config, rows, cp)
    sl = cache.point("slice", lambda: landscape(config, x, y))
    pca = cache.point("pca_rival", lambda: pca_rival(config, x, y))
    h_err = hessian_check(config, x, y)
    metrics = {
        "by_width": rows,
        "hessian_rel_error_manual_vs_autodiff": h_err,
        "slice": {
            "explained_variance_pc1_pc2": sl["pca"]["explained"],
            "loss_start": sl["path_loss"][0],
            "loss_end": sl["path_loss"][-1],
            "num_params": sl["num_params"],
            "top2_share_vs_random_walk": pca,
        },
        "searches": cp,
    }
    claims = _claims(config, rows, h_err, pca)
    figures = [_plot_landscape(config, sl, out_dir), _plot_critical_points(config, cp, rows, out_dir)]
    return Result(metrics=metrics, claims=claims, figures=figures)


def census(config: Config, rows: list[dict], cp: dict) -> None:
    """Add to each width's row where every one of its searches ended (in place).

    Certified saddle / certified minimum (‖∇L‖ ≤ gtol); stalled near a minimum (‖∇L‖ > gtol at a loss no
    higher than 1.1× the best certified minimum of this or any narrower width, which a wider net can
    realize); stalled elsewhere. Every search is counted: none is dropped.
    """
    best = float("inf")
    for i, r in enumerate(rows):
        if r["minima_losses"]:
            best = min(best, min(r["minima_losses"]))
        ok = np.asarray(cp["grad_norm"][i]) <= config.gtol
        loss = np.asarray(cp["loss"][i])
        near = ~ok & (loss <= NEAR_MINIMUM * best)
        r["stalled_near_minimum"] = int(near.sum())
        r["stalled_elsewhere"] = int((~ok & ~near).sum())
        r["near_minimum_level"] = NEAR_MINIMUM * best if np.isfinite(best) else None
        r["saddle_share_of_searches"] = r["saddles"] / config.starts


def _claims(config: Config, rows: list[dict], h_err: float, pca: dict) -> list[Claim]:
    S = config.starts
    tally = "; ".join(
        f"h={r['width']}: {r['saddles']} saddles, {r['minima']} minima, {r['stalled_near_minimum']} stalled near a "
        f"minimum, {r['stalled_elsewhere']} stalled elsewhere"
        for r in rows
    )
    basis = f"seed spread: {S} searches per width, every one counted"
    claims = [
        Claim(
            "the Hessian as forward-mode autodiff of the hand-written gradient equals jax.hessian of the forward",
            "fnnet's own contract (manual rules checked against autodiff); float64, 2-3-1 tanh net",
            "≤ 1e-10 relative (Frobenius)",
            h_err,
            1e-10,
            bool(h_err <= 1e-10),
            kind="fnnet",
            seeds=1,
            tolerance_basis="rounding: float64 second derivatives of a 13-parameter net; 1e-10 relative",
        )
    ]
    first = rows[0]
    claims.append(
        Claim(
            f"even a tiny network's loss surface is non-convex: saddles exist at width {first['width']} "
            f"({first['params']} parameters)",
            src.ML_MATH_19.cite('sec. "The Loss Landscape" (a tiny network\'s surface is sharply non-convex)'),
            "> 0 certified critical points with index > 0 (a convex loss has none)",
            first["saddles"],
            "count > 0",
            bool(first["saddles"] > 0),
            f"critical losses found: {first['critical_losses']}",
            kind="source",
            seeds=S,
            tolerance_basis=f"rounding: ‖∇L‖ ≤ {config.gtol} and an eigenvalue below −{config.eig_rtol}·max|λ| "
            "(float64) certify a saddle",
        )
    )
    rho = spearman([r["width"] for r in rows], [r["saddle_share_of_searches"] for r in rows])
    claims.append(
        Claim(
            f"the share of saddles grows with width: certified saddles among all {S} searches per width "
            "(stalled searches counted, not dropped)",
            SRC_TEXT + "; " + SRC_DAUPHIN,
            "Spearman ρ(width, saddles / searches) > 0",
            rho,
            "ρ > 0",
            bool(np.isfinite(rho) and rho > 0),
            tally,
            kind="source",
            seeds=S,
            tolerance_basis=basis,
        )
    )
    last = rows[-1]
    lo = last["saddles"] / S
    hi = (last["saddles"] + last["stalled_elsewhere"]) / S
    verdict = "source" if lo > 0.5 or hi <= 0.5 else "inconclusive"
    claims.append(
        Claim(
            f"saddles dominate the critical points in high dimensions: at the widest net (h={last['width']}, "
            f"{last['params']} parameters) more than half of all {S} searches end at a saddle",
            SRC_TEXT,
            "> 0.5 of the searches",
            {"certified saddles": lo, "if every search stalled away from minima were a saddle": hi},
            "lower bound > 0.5 holds; upper bound ≤ 0.5 fails",
            bool(lo > 0.5),
            f"{tally}. Stalled searches near a minimum (loss ≤ {NEAR_MINIMUM}× the best certified minimum) count "
            f"as minima, those stalled elsewhere as undecided ({src.FRYE_2021.short}: gradient-norm searches stall "
            "in gradient-flat regions)."
            + (
                ""
                if verdict == "source"
                else " Undecided at this scale: the full preset (128 starts, widths to 16, 2000 Adam and 300 LM "
                "steps) settles more searches."
            ),
            kind=verdict,
            seeds=S,
            tolerance_basis=basis,
        )
    )
    usable = [r for r in rows if r["converged"] >= MIN_POINTS and np.isfinite(r["rho_index_loss"])]
    rhos = [r["rho_index_loss"] for r in usable]
    mean_rho = float(np.mean(rhos)) if rhos else float("nan")
    claims.append(
        Claim(
            f"critical points with higher loss have a larger index (within each width with ≥ {MIN_POINTS} certified "
            "critical points)",
            SRC_DAUPHIN,
            "mean Spearman ρ(index/P, loss) > 0",
            mean_rho,
            "ρ > 0",
            bool(np.isfinite(mean_rho) and mean_rho > 0),
            "per width: "
            + ", ".join(f"h={r['width']}: {r['rho_index_loss']:.2f} ({r['converged']} points)" for r in usable)
            + "; widths with fewer points left out",  # fmt: skip
            kind="source",
            seeds=S,
            tolerance_basis=f"seed spread: {S} searches per width, rank correlation > 0",
        )
    )
    sgd, q95, med = pca["sgd"], pca["rival_q95"], pca["rival_median"]
    n = len(sgd)
    claims.append(
        Claim(
            "an SGD path is lower-dimensional than a random walk: its top two principal directions carry a larger "
            "share of its variance than a random walk with the same step lengths does (95th percentile of "
            f"{config.rival_walks} walks), in every one of {n} runs",
            src.LI_2018.cite("Sec. 7 (optimization trajectories lie in a very low-dimensional space)")
            + "; rival: "
            + src.ANTOGNINI_2018.cite("(the PCA of a random walk puts most variance in its first components)"),
            "SGD share > rival's 95th percentile, every run",
            {"sgd": sgd, "random walk 95th pct": q95},
            "every run",
            bool(all(a > b for a, b in zip(sgd, q95))),
            f"random-walk median {np.round(med, 3).tolist()}: '> 50%' alone holds for the walk too; width-"
            f"{config.slice_width} student, {config.slice_epochs} epochs of SGD from a "
            f"×{config.slice_init_scale:g} init",
            kind="source",
            seeds=n,
            tolerance_basis=f"seed spread: {n} SGD runs, each against {config.rival_walks} random walks (95th pct)",
        )
    )
    return claims


# ----------------------------------------------------------------------------------------------
# figures


def _plot_landscape(config, sl, out_dir: Path):
    """Figure ``landscape``: the loss on the path's PCA plane (with the path) and on a random plane."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.8), layout="constrained")
    pca, rnd = sl["pca"], sl["random"]
    z = np.asarray(pca["loss"])
    norm = LogNorm(vmin=max(z.min(), 1e-6), vmax=z.max())
    ax = axes[0]
    cs = ax.contourf(pca["a"], pca["b"], z, levels=np.geomspace(norm.vmin, norm.vmax, 25), norm=norm, cmap="viridis")
    path = np.asarray(pca["path"])
    ax.plot(path[:, 0], path[:, 1], "-o", color="w", ms=2.5, lw=1, label="SGD path (one dot per epoch)")
    ax.plot(path[0, 0], path[0, 1], "r^", ms=8, label="start (×3 init)")
    ax.plot(path[-1, 0], path[-1, 1], "r*", ms=11, label="end")
    ev = np.asarray(pca["explained"])
    ax.set_xlabel(f"1st principal direction of the path ({100 * ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"2nd principal direction ({100 * ev[1]:.1f}%)")
    ax.set_title(f"PCA plane of the path, width-{config.slice_width} tanh net", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.colorbar(cs, ax=ax, label="training loss (MSE, log scale)", format="%.0e")
    ax = axes[1]
    z = np.asarray(rnd["loss"])
    norm = LogNorm(vmin=max(z.min(), 1e-6), vmax=z.max())
    cs = ax.contourf(rnd["r"], rnd["r"], z, levels=np.geomspace(norm.vmin, norm.vmax, 25), norm=norm, cmap="viridis")
    ax.plot(0, 0, "r*", ms=11, label="end of SGD")
    ax.set_xlabel("filter-normalized random direction 1 (α)")
    ax.set_ylabel("filter-normalized random direction 2 (β)")
    ax.set_title(f"random plane around the end point ({src.LI_2018.short})", fontsize=10)
    ax.legend(fontsize=7)
    fig.colorbar(cs, ax=ax, label="training loss (MSE, log scale)", format="%.0e")
    return save_figure(
        fig, out_dir, "landscape",
        "Loss on two planes through the end of an SGD run: the plane of the path's two principal directions (left, "
        "with the path) and two filter-normalized random directions (right). Log colour scale.",
    )  # fmt: skip


def _plot_critical_points(config, cp, rows, out_dir: Path):
    """Figure ``critical_points``: index share against loss, and saddles vs minima per width."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    ax = axes[0]
    for i, h in enumerate(config.widths):
        ok = np.asarray(cp["grad_norm"][i]) <= config.gtol
        idx = np.asarray(cp["index"][i])[ok] / (4 * h + 1)
        loss = np.asarray(cp["loss"][i])[ok]
        ax.scatter(loss, idx, s=16 + 6 * i, color=f"C{i}", alpha=0.6, label=f"h={h} (P={4 * h + 1})")
    ax.set_xscale("log")
    ax.set_xlabel("training loss at the critical point (MSE, log scale)")
    ax.set_ylabel("index / P (share of negative Hessian eigenvalues)")
    ax.set_title("critical points found by descent on ½‖∇L‖²", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    w = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    parts = (
        ("saddles", "C3", "certified saddles (index > 0)"),
        ("minima", "C0", "certified minima"),
        ("stalled_near_minimum", "C9", "stalled near a minimum"),
        ("stalled_elsewhere", "0.7", "stalled elsewhere"),
    )
    for key, color, label in parts:
        v = np.array([r[key] for r in rows], float)
        ax.bar(w, v, bottom=bottom, color=color, label=label)
        bottom += v
    ax.axhline(config.starts / 2, color="k", ls=":", lw=1, label="half of the searches")
    ax.set_xticks(w, [f"h={r['width']}\nP={r['params']}" for r in rows], fontsize=8)
    ax.set_ylim(0, config.starts * 1.3)
    ax.set_ylabel(f"searches (of {config.starts} per width)")
    ax.set_title("where every search ended, by width", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    return save_figure(
        fig, out_dir, "critical_points",
        "Left: index share vs loss of every certified critical point (‖∇L‖ ≤ 1e-8, float64). Right: every search "
        "per width: certified saddles and minima, and searches that stalled near a minimum or elsewhere.",
    )  # fmt: skip
