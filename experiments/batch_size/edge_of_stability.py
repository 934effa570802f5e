"""Full-batch GD at the edge of stability (Cohen et al. 2021): the sharpness rises to 2/η and hovers there.

Cohen, Kaur, Li, Kolter & Talwalkar train networks by full-batch gradient descent at several step
sizes η and track the sharpness λ_max, the largest eigenvalue of the training-loss Hessian. So long
as λ_max < 2/η it tends to rise ("progressive sharpening"); once it reaches 2/η it stops rising and
hovers at, or just above, 2/η (the "edge of stability"), where the loss keeps falling over the long
run but no longer monotonically. On a quadratic, GD with λ_max > 2/η diverges: 2/η is the classical
stability threshold.

The setting here is their cleanest one, scaled down: a tanh MLP (PyTorch's default weight scale,
U[±1/√fan_in], zero biases) trained by full-batch GD on the MSE against one-hot targets, on the
first ``n_train`` examples of MNIST-1D. Every η starts from the same initialisation; the η are vmapped
through one jitted ``lax.scan`` whose steps are fnnet's own library step (:func:`fnnet.make_step`:
the hand-written rules, :func:`fnnet.optim.sgd`, a non-finite step frozen and flagged as diverged).

Sharpness tracker: every ``every`` steps, ``lanczos_steps`` steps of Lanczos with full
reorthogonalization on :func:`fnnet.hvp` (the hand-written R-operator of an MLP), jitted inside the
scan and warm-started from the previous top Ritz vector; the top (algebraic) Ritz value is λ_max, as
:func:`fnnet.sharpness` defines it. :func:`fnnet.sharpness` itself compiles its product afresh on each
call (about a second here), too slow to call every ``every`` steps, so it is the independent check:
at the last step of some η it is run from a fresh random start (explicit key) with ``check_iters``
steps and compared with the tracker.

Statistics (``frac`` = λ_max·η/2, so 1 is the threshold 2/η):

* crossing: the first measured step with frac ≥ 1 (None: not within the run);
* at the edge: an η that crosses within the first half of the run; its hover ratio is the median of
  frac over the measurements of the second half;
* the loss rises at an update when L(θ_{t+1}) > L(θ_t)(1 + 1e-5) (1e-5: far above float32 rounding of
  a mean over ``n_train`` examples, far below the rises of the edge of stability).

Control (linking :mod:`experiments.batch_size.gd_regimes`): that experiment's full-batch GD — ReLU
MLP 40-128-128-10, He-normal, softmax cross-entropy, all 4000 examples, seed 0's initialisation, its
powers-of-2 grid of rates around 1 and its GD updates (32 at quick, 64 at full) — is rerun here with
λ_max measured before every update, to see whether its loss rises come where λ_max·η ≥ 2. The control
takes ``control_lanczos_steps`` warm-started Lanczos steps per update: a lower bound on λ_max, so a
rise counted as "at λ_max·η ≥ 2" is one.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, point_cache, pyplot, save_figure, spearman
from experiments.batch_size import _batch_util as bu
from fnnet import initializers, optim
from fnnet.training import init_state

NAME = "edge_of_stability"
TITLE = "Full-batch GD at the edge of stability: the sharpness rises to 2/eta and hovers there (Cohen et al. 2021)"

COHEN = src.COHEN_2021.cite
RISE_REL = 1e-5  # a rise of the loss counts when it exceeds this fraction of the loss (float32 rounding is ~1e-7)
HOVER_BAND = (0.8, 1.25)  # median of lambda_max * eta / 2 at the edge; see the claim's tolerance basis
TRACKER_TOL = 1e-2  # relative: the tracker against fn.sharpness; see that claim's tolerance basis


@dataclasses.dataclass(frozen=True)
class Config:
    n_train: int = 1000  # the first n_train examples of MNIST-1D's training set
    hidden: tuple[int, ...] = (64, 64)  # tanh MLP 40-64-64-10
    step_sizes: tuple[float, ...] = (0.4, 0.2, 0.1, 0.05)  # 2/eta = 5, 10, 20, 40
    steps: int = 2000  # full-batch GD updates per step size
    every: int = 20  # lambda_max measured every this many updates (and at the init)
    lanczos_steps: int = 12  # Lanczos steps per measurement (warm-started from the last top Ritz vector)
    check_iters: int = 60  # fn.sharpness's iters in the cross-check
    n_checks: int = 2  # step sizes (largest first) whose last lambda_max fn.sharpness re-measures
    control_rates: tuple[float, ...] = (0.5, 1.0, 2.0)  # gd_regimes's full-batch grid (quick preset)
    control_steps: int = 32  # gd_regimes's gd_epochs at the quick preset; 0 skips the control
    control_lanczos_steps: int = 4  # per update of the control: a lower bound on lambda_max, warm-started
    seed: int = 0


PRESETS = {
    "tiny": Config(
        n_train=256,
        hidden=(32, 32),
        step_sizes=(0.4, 0.1),
        steps=300,
        every=10,
        lanczos_steps=10,
        check_iters=40,
        n_checks=1,
        control_steps=0,
    ),
    "quick": Config(),
    "full": Config(
        n_train=4000,
        hidden=(200, 200),
        step_sizes=(0.4, 0.2, 0.1, 2 / 30, 0.05),
        steps=10000,
        every=25,
        lanczos_steps=16,
        check_iters=100,
        n_checks=5,
        control_rates=(0.25, 0.5, 1.0, 2.0, 4.0),  # gd_regimes's full-batch grid at its full preset
        control_steps=64,  # and its gd_epochs there
    ),
}


# ----------------------------------------------------------------------------------------------
# the network and the jitted run


def tanh_mlp(hidden: tuple[int, ...], classes: int = 10) -> fn.Layer:
    """Dense-tanh stack and a linear read-out, W ~ U[±1/√fan_in] (PyTorch's default scale), b = 0."""
    w = initializers.variance_scaling(1 / 3, "fan_in", "uniform")
    layers: list[fn.Layer] = []
    for width in hidden:
        layers += [fn.Dense(width, w_init=w), fn.Tanh()]
    layers.append(fn.Dense(classes, w_init=w))
    return fn.serial(*layers)


def lanczos_top(matvec, v0: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
    """(θ_max, y): the top Ritz value and unit Ritz vector of m Lanczos steps on ``matvec`` from ``v0``.

    Jittable: q_0 = v0/‖v0‖, α_j = q_jᵀ H q_j, w = H q_j minus its projection on q_0..q_j (classical
    Gram–Schmidt, twice: full reorthogonalization), β_j = ‖w‖, q_{j+1} = w/β_j; T = tridiag(α, β);
    θ_max = λ_max(T) ≤ λ_max(H), y = Q_mᵀ s for T's top eigenvector s. A breakdown (β_j = 0) leaves
    q_{j+1} = 0, which adds nothing. m must not exceed the dimension.
    """
    n, dtype = v0.shape[0], v0.dtype
    Q = jnp.zeros((m + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def body(j, carry):
        Q, a, b = carry
        q = Q[j]
        w = matvec(q)
        a = a.at[j].set(jnp.vdot(q, w))
        w = w - Q.T @ (Q @ w)
        w = w - Q.T @ (Q @ w)
        bj = jnp.linalg.norm(w)
        Q = Q.at[j + 1].set(jnp.where(bj > 0, w / jnp.where(bj > 0, bj, 1), 0))
        return Q, a, b.at[j].set(bj)

    Q, a, b = jax.lax.fori_loop(0, m, body, (Q, jnp.zeros(m, dtype), jnp.zeros(m, dtype)))
    T = jnp.diag(a) + jnp.diag(b[:-1], 1) + jnp.diag(b[:-1], -1)
    evals, evecs = jnp.linalg.eigh(T)
    y = Q[:m].T @ evecs[:, -1]
    return evals[-1], y / jnp.linalg.norm(y)


def gd_with_sharpness(net: fn.Layer, loss: fn.Loss, x, target, *, every: int, n_meas: int, m: int):
    """Jitted ``f(params, step_sizes, v0) -> (λ (L, n_meas+1), loss (L, every·n_meas), diverged (L,), params)``.

    Full-batch GD from ``params`` at each of the L step sizes (vmapped), by :func:`fnnet.make_step`;
    λ_max at the init and after every ``every`` updates, by :func:`lanczos_top` on :func:`fnnet.hvp`.
    ``loss[t]`` is L(θ_t), the loss before update t+1 (NaN once diverged).
    """
    product = fn.hvp(net, loss)
    opt = lambda lr: optim.sgd(lr)  # noqa: E731
    step = fn.make_step(net, loss, opt)

    def one(params, lr, v0):
        _, unravel = ravel_pytree(params)

        def sharp(p, v):
            return lanczos_top(lambda u: ravel_pytree(product(p, x, target, unravel(u)))[0], v, m)

        s0, v = sharp(params, v0)

        def chunk(carry, _):
            st, v = carry
            st, met = jax.lax.scan(lambda s, _: step(s, (x, target), None, lr), st, None, length=every)
            s, v = sharp(st.params, v)
            return (st, v), (met["loss"], s)

        st = init_state(params, opt(lr), jax.random.key(0))  # the key is never drawn from
        (st, _), (losses, lams) = jax.lax.scan(chunk, (st, v), None, length=n_meas)
        return jnp.concatenate([s0[None], lams]), losses.reshape(-1), st.diverged, st.params

    return jax.jit(jax.vmap(one, (None, 0, None)))


def _data(n: int):
    (x, y), _ = bu.load_data()
    return x[:n], y[:n]


def run_main(config: Config) -> dict:
    """The tanh-MLP runs at every step size, with the tracker and its cross-check against fn.sharpness."""
    x, y = _data(config.n_train)
    target = jax.nn.one_hot(y, 10, dtype=x.dtype)
    net, loss = tanh_mlp(config.hidden), fn.mse
    key = jax.random.key(config.seed)
    _, params = net.init(jax.random.fold_in(key, 0), (x.shape[1],))
    n_params = int(ravel_pytree(params)[0].shape[0])
    v0 = jax.random.normal(jax.random.fold_in(key, 1), (n_params,), x.dtype)
    n_meas = config.steps // config.every
    f = gd_with_sharpness(net, loss, x, target, every=config.every, n_meas=n_meas, m=config.lanczos_steps)
    lams, losses, diverged, final = f(params, jnp.asarray(config.step_sizes, x.dtype), v0)
    lams, losses = np.asarray(lams, np.float64), np.asarray(losses, np.float64)
    final_loss = [
        float(loss.forward(net.forward(jax.tree_util.tree_map(lambda a, i=i: a[i], final), x)[0], target)[0])
        for i in range(len(config.step_sizes))
    ]
    checks = []
    for i in range(min(config.n_checks, len(config.step_sizes))):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], final)
        ref = fn.sharpness(net, loss, p, x, target, key=jax.random.fold_in(key, 2 + i), iters=config.check_iters)
        checks.append({"step_size": config.step_sizes[i], "tracker": float(lams[i, -1]), "fn_sharpness": ref})
    return {
        "n_params": n_params,
        "measured_at": (np.arange(n_meas + 1) * config.every).tolist(),
        "sharpness": lams.tolist(),  # (L, n_meas + 1)
        "loss": np.concatenate([losses, np.asarray(final_loss)[:, None]], axis=1).tolist(),  # (L, steps + 1)
        "diverged": np.asarray(diverged).tolist(),
        "checks": checks,
    }


def run_control(config: Config) -> dict:
    """gd_regimes's full-batch GD (ReLU MLP, cross-entropy, 4000 examples), λ_max before every update."""
    (x, y), _ = bu.load_data()
    net, loss = bu.mlp((128, 128)), fn.softmax_cross_entropy
    params = jax.tree_util.tree_map(lambda a: a[0], bu.init_models(net, (config.seed,)))
    n_params = int(ravel_pytree(params)[0].shape[0])
    v0 = jax.random.normal(jax.random.fold_in(jax.random.key(config.seed), 3), (n_params,), x.dtype)
    f = gd_with_sharpness(net, loss, x, y, every=1, n_meas=config.control_steps, m=config.control_lanczos_steps)
    lams, losses, diverged, _ = f(params, jnp.asarray(config.control_rates, x.dtype), v0)
    return {
        "rates": list(config.control_rates),
        "sharpness": np.asarray(lams, np.float64).tolist(),  # (R, steps + 1): λ at θ_0 .. θ_steps
        "loss": np.asarray(losses, np.float64).tolist(),  # (R, steps): L(θ_0) .. L(θ_{steps-1})
        "diverged": np.asarray(diverged).tolist(),
    }


# ----------------------------------------------------------------------------------------------
# statistics


def crossing(measured_at, sharpness, step_size: float) -> int | None:
    """The first measured step at which λ_max·η/2 ≥ 1 (λ_max reached 2/η), or None if it never does."""
    frac = np.asarray(sharpness, float) * step_size / 2
    hit = np.flatnonzero(frac >= 1)
    return int(np.asarray(measured_at)[hit[0]]) if hit.size else None


def hover_ratio(measured_at, sharpness, step_size: float, start: int) -> float:
    """The median of λ_max·η/2 over the measurements at steps ≥ ``start``."""
    at = np.asarray(measured_at)
    return float(np.median(np.asarray(sharpness, float)[at >= start] * step_size / 2))


def rises(loss) -> np.ndarray:
    """Per update t: whether L(θ_{t+1}) > L(θ_t)·(1 + RISE_REL) (a rise well above float32 rounding)."""
    v = np.asarray(loss, float)
    return v[1:] > v[:-1] * (1 + RISE_REL)


def summarize(res: dict, config: Config) -> list[dict]:
    """Per step size: crossing, whether it is at the edge, hover ratio, rises, the pre-crossing trend."""
    at, half = np.asarray(res["measured_at"]), config.steps // 2
    out = []
    for i, eta in enumerate(config.step_sizes):
        lam, loss = np.asarray(res["sharpness"][i]), np.asarray(res["loss"][i])
        c = crossing(at, lam, eta)
        pre = lam[at < c] if c is not None else lam
        dip = int(np.argmin(pre))
        up = rises(loss)
        edge = c is not None and c <= half and not res["diverged"][i]
        out.append(
            {
                "step_size": eta,
                "threshold": 2 / eta,
                "sharpness_init": float(lam[0]),
                "sharpness_final": float(lam[-1]),
                "sharpness_max": float(lam.max()),
                "crossing": c,
                "at_edge": bool(edge),
                "hover_ratio": hover_ratio(at, lam, eta, half) if edge else None,
                "hover_ratio_p10_p90": (np.percentile(lam[at >= half] * eta / 2, [10, 90]).tolist() if edge else None),
                "pre_crossing_points": int(pre.size),
                "pre_crossing_rho": spearman(np.arange(pre.size), pre) if pre.size >= 5 else None,
                "pre_crossing_min": float(pre[dip]),  # the early dip below the init's value, if any
                "pre_crossing_min_at": int(at[dip]),
                "loss_init": float(loss[0]),
                "loss_half": float(loss[half]),
                "loss_final": float(loss[-1]),
                "up_fraction": float(np.mean(up)),
                "up_fraction_second_half": float(np.mean(up[half:])),
                "diverged": bool(res["diverged"][i]),
            }
        )
    return out


def control_summary(ctl: dict) -> list[dict]:
    """Per rate of gd_regimes's grid: the updates that raise the loss and λ_max·η/2 where they start."""
    out = []
    for r, lam, loss, div in zip(ctl["rates"], ctl["sharpness"], ctl["loss"], ctl["diverged"]):
        frac = np.asarray(lam[: len(loss) - 1]) * r / 2  # λ_max·η/2 at θ_t, the start of update t
        up = rises(loss)
        out.append(
            {
                "rate": r,
                "diverged": bool(div),
                "rises": int(up.sum()),
                "updates_checked": int(up.size),
                "frac_at_rises": frac[up].tolist(),
                "rises_above_edge": int(np.sum(frac[up] >= 1)),
                "max_frac": float(np.max(frac)),
                "loss_first_last": [float(loss[0]), float(loss[-1])],
            }
        )
    return out


# ----------------------------------------------------------------------------------------------
# run, claims, figure


def run(config: Config, out_dir: Path) -> Result:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    cache = point_cache(out_dir, config)
    res = cache.point("main", lambda: run_main(config))
    t_main = time.perf_counter() - t0
    ctl = cache.point("control", lambda: run_control(config)) if config.control_steps > 0 else None
    per_eta = summarize(res, config)
    ctl_sum = control_summary(ctl) if ctl is not None else None
    metrics = {
        "n_params": res["n_params"],
        "measured_at": res["measured_at"],
        "per_step_size": per_eta,
        "sharpness": res["sharpness"],
        "loss_at_measurements": [list(np.asarray(v)[res["measured_at"]]) for v in res["loss"]],
        "checks": res["checks"],
        "control": None if ctl is None else {**ctl, "summary": ctl_sum},
    }
    claims = _claims(per_eta, res["checks"], ctl_sum, config)
    figs = [_plot(res, per_eta, out_dir, config)]
    if ctl is not None:
        figs.append(_plot_control(ctl, ctl_sum, out_dir))
    timings = {"main_s": t_main, "total_s": time.perf_counter() - t0}
    return Result(metrics, claims, figs, timings)


def _fmt(c: int | None) -> str:
    return "never" if c is None else str(c)


def _claims(per: list[dict], checks: list[dict], ctl: list[dict] | None, config: Config) -> list[Claim]:
    out: list[Claim] = []
    edge = [p for p in per if p["at_edge"]]
    live = [p for p in per if not p["diverged"]]
    setting = (
        f"tanh MLP 40-{'-'.join(map(str, config.hidden))}-10, MSE on one-hot targets, full-batch GD on "
        f"{config.n_train} MNIST-1D examples, {config.steps} updates, lambda_max every {config.every}"
    )
    to_full = "; the quick and full presets (2000 and 10000 updates) answer it"
    # progressive sharpening
    trends = [p for p in live if p["pre_crossing_rho"] is not None]
    smallest = min(live, key=lambda p: p["step_size"]) if live else None
    grow = smallest["sharpness_final"] / smallest["sharpness_init"] if smallest else float("nan")
    ok = bool(trends) and all(p["pre_crossing_rho"] >= 0.8 for p in trends) and grow >= 1.5
    out.append(
        Claim(
            "Progressive sharpening: while lambda_max < 2/eta it keeps rising during training",
            COHEN('sec. 1 and sec. "Progressive sharpening"; Fig. 1'),
            "Spearman(step, lambda_max) >= 0.8 before 2/eta is reached (for every eta with >= 5 such "
            "measurements), and at the smallest eta lambda_max at the end >= 1.5 x its value at init",
            "rho before 2/eta: "
            + ", ".join(
                f"eta={p['step_size']:g}: {p['pre_crossing_rho']:.2f} (init {p['sharpness_init']:.2f}, dips to "
                f"{p['pre_crossing_min']:.2f} at step {p['pre_crossing_min_at']})"
                for p in trends
            )
            + (
                f"; smallest eta={smallest['step_size']:g}: lambda_max {smallest['sharpness_init']:.2f} -> "
                f"{smallest['sharpness_final']:.2f} (x{grow:.2f}, 2/eta = {smallest['threshold']:.0f})"
                if smallest
                else ""
            ),
            "rho >= 0.8; x1.5",
            ok,
            f"{setting}. The paper: 'so long as the sharpness is less than 2/eta, it tends to continually rise'; "
            "the rank correlation >= 0.8 and the 1.5-fold rise are fnnet's reading of 'continually rise'",
            kind="source",
            seeds=1,
            tolerance_basis="source: 'continually rise' (Fig. 1: a several-fold rise from init to 2/eta), read as a "
            "rank correlation >= 0.8 and a rise >= 1.5x",
        )
    )
    # edge of stability: hovering
    ok = bool(edge) and all(HOVER_BAND[0] <= p["hover_ratio"] <= HOVER_BAND[1] for p in edge)
    out.append(
        Claim(
            "Edge of stability: once lambda_max reaches 2/eta it stops rising and hovers at, or just above, 2/eta",
            COHEN("abstract; Fig. 1 and its caption"),
            f"for every eta that reaches 2/eta within the first half of the run: median of lambda_max*eta/2 over "
            f"the second half in [{HOVER_BAND[0]}, {HOVER_BAND[1]}]",
            "; ".join(
                f"eta={p['step_size']:g} (2/eta={p['threshold']:.0f}): reached at step {_fmt(p['crossing'])}"
                + (
                    f", median {p['hover_ratio']:.3f} (10-90%: {p['hover_ratio_p10_p90'][0]:.2f}-"
                    f"{p['hover_ratio_p10_p90'][1]:.2f})"
                    if p["at_edge"]
                    else ""
                )
                for p in per
            ),
            list(HOVER_BAND),
            ok,
            f"{setting}; gd_regimes's full-batch GD is held against the same threshold 2/eta in the last claim"
            + ("" if edge else ". No eta reached 2/eta within the first half: inconclusive here" + to_full),
            kind="source" if edge else "inconclusive",
            seeds=1,
            tolerance_basis="source: Fig. 1's caption 'hovers right at, or just above, this value' and the abstract's "
            "'hovers just above 2/eta'; the band [0.8, 1.25] (a factor 1.25 either way) is fnnet's reading of 'at or "
            "just above'",
        )
    )
    # the loss at the edge: non-monotone, yet falling
    ok = bool(edge) and all(
        p["up_fraction_second_half"] >= 0.01 and p["loss_final"] < p["loss_half"] < p["loss_init"] for p in edge
    )
    out.append(
        Claim(
            "At the edge of stability the training loss is non-monotone over short times yet falls over long times",
            COHEN("abstract; Fig. 1"),
            f"for every eta at the edge: >= 1% of the second half's updates raise the loss (by > {RISE_REL:g} of "
            "it), and loss(end) < loss(half-way) < loss(init)",
            "; ".join(
                f"eta={p['step_size']:g}: {100 * p['up_fraction_second_half']:.1f}% rising, loss "
                f"{p['loss_init']:.4f} -> {p['loss_half']:.4f} -> {p['loss_final']:.4f}"
                for p in edge
            )
            or "no eta at the edge",
            ">= 1% rising; decreasing at init, half-way, end",
            ok,
            setting + ("" if edge else ". No eta at the edge: inconclusive here" + to_full),
            kind="source" if edge else "inconclusive",
            seeds=1,
            tolerance_basis=f"source: 'non-monotonically over short timescales, yet consistently decreases over long "
            f"timescales'; any rise qualifies, 1% of updates and {RISE_REL:g} relative keep float32 rounding out",
        )
    )
    # below the edge: monotone (the descent lemma)
    stable = [p for p in live if p["crossing"] is None]
    out.append(
        Claim(
            "Below the edge (lambda_max < 2/eta throughout), full-batch GD decreases the loss at every update",
            COHEN(
                'sec. 1: "gradient descent on quadratic objectives is unstable if the sharpness exceeds this threshold"'
            ),
            "no update raises the loss (by more than the float32 rounding bar) for an eta that never reaches 2/eta",
            "; ".join(f"eta={p['step_size']:g}: {100 * p['up_fraction']:.2f}% rising" for p in stable)
            or "every eta reached 2/eta",
            f"0 rises (bar {RISE_REL:g} relative)",
            bool(stable) and all(p["up_fraction"] == 0 for p in stable),
            "the quadratic model of GD that the paper starts from (and the descent lemma): with lambda_max < 2/eta "
            "along the path, every update decreases the loss; the contrast to the non-monotone loss at the edge"
            + (
                ""
                if stable
                else ". Every eta reached 2/eta: inconclusive here; the full preset's smaller eta answers it"
            ),
            kind="fnnet" if stable else "inconclusive",
            seeds=1,
            tolerance_basis=f"rounding: a rise counts above {RISE_REL:g} of the loss, 100x float32's relative rounding",
        )
    )
    # ordering across eta
    by_eta = sorted(live, key=lambda p: -p["step_size"])
    cs = [p["crossing"] for p in by_eta]
    reached = [c for c in cs if c is not None]
    ordered = bool(reached) and all((b is None) or (a is not None and a < b) for a, b in zip(cs, cs[1:]))
    out.append(
        Claim(
            "A smaller step size reaches 2/eta later (or not within the budget)",
            COHEN("Fig. 1"),
            "first step with lambda_max >= 2/eta strictly increasing as eta decreases; 'never' only after all reached",
            ", ".join(f"eta={p['step_size']:g}: {_fmt(c)}" for p, c in zip(by_eta, cs)),
            f"strict order, at the measurement resolution ({config.every} updates)",
            ordered,
            setting
            + ". Fig. 1 shows each larger step size's sharpness reaching its (lower) 2/eta first"
            + (
                ""
                if len(reached) >= 2
                else ". Fewer than two eta reached 2/eta: the order is barely tested; inconclusive here" + to_full
            ),
            kind="source" if len(reached) >= 2 else "inconclusive",
            seeds=1,
            tolerance_basis=f"rounding: the crossing is known to the measurement interval, {config.every} updates",
        )
    )
    # the tracker against fn.sharpness
    errs = [abs(c["tracker"] - c["fn_sharpness"]) / abs(c["fn_sharpness"]) for c in checks]
    out.append(
        Claim(
            "The jitted warm-started Lanczos tracker gives the lambda_max of fn.sharpness, to the 1% the claims need",
            "fnnet's own contract: fnnet.sharpness, the largest algebraic eigenvalue of the Hessian by Lanczos",
            f"relative difference <= {TRACKER_TOL:g} at the last step of each checked eta",
            ", ".join(
                f"eta={c['step_size']:g}: {c['tracker']:.5f} vs {c['fn_sharpness']:.5f} ({e:.1e})"
                for c, e in zip(checks, errs)
            ),
            f"{TRACKER_TOL:g}",
            bool(errs) and max(errs) <= TRACKER_TOL,
            f"tracker: {config.lanczos_steps} Lanczos steps warm-started from the last top Ritz vector; fn.sharpness: "
            f"{config.check_iters} steps from a fresh random start (explicit key). Both are lower bounds on "
            "lambda_max; a short run converges slowly where the gap below the top eigenvalue is small",
            kind="fnnet",
            seeds=1,
            tolerance_basis=f"rounding: the precision the claims need of a truncated Lanczos estimate: the hovering "
            f"band's ends are 20-25% from 1, so {TRACKER_TOL:g} moves no verdict except a crossing exactly at the "
            "threshold",
        )
    )
    # the control: gd_regimes's full-batch rates
    if ctl is not None:
        n_up = sum(c["rises"] for c in ctl)
        above = sum(c["rises_above_edge"] for c in ctl)
        ok = n_up > 0 and above == n_up
        out.append(
            Claim(
                "gd_regimes's full-batch GD raises its loss only at updates that start with lambda_max >= 2/eta",
                COHEN('sec. 1 ("if the sharpness ever crosses 2/eta, gradient descent quickly becomes destabilized")'),
                "every update that raises the loss starts from lambda_max*eta/2 >= 1 (and some update does raise it)",
                "; ".join(
                    f"eta={c['rate']:g}: {c['rises']}/{c['updates_checked']} rising"
                    + (
                        f", lambda*eta/2 at them {min(c['frac_at_rises']):.2f}-{max(c['frac_at_rises']):.2f}"
                        if c["rises"]
                        else ""
                    )
                    + f", max lambda*eta/2 {c['max_frac']:.2f}"
                    + (" (diverged)" if c["diverged"] else "")
                    for c in ctl
                ),
                ">= 1 at every rise",
                ok,
                f"gd_regimes's setting (ReLU MLP 40-128-128-10, cross-entropy, 4000 examples, seed {config.seed}'s "
                f"init, {config.control_steps} updates) at each rate of its full-batch grid; the quadratic model says "
                "a rise needs lambda_max > 2/eta somewhere along the update, which the value at its start can miss",
                kind="source",
                seeds=1,
                tolerance_basis="source: the stability threshold 2/eta of GD on a quadratic; no tolerance",
            )
        )
    return out


def _plot(res: dict, per: list[dict], out_dir: Path, config: Config):
    plt = pyplot()
    fig, (ax_s, ax_l) = plt.subplots(2, 1, figsize=(9, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    cmap = plt.get_cmap("viridis")
    at = np.asarray(res["measured_at"])
    steps = np.arange(len(res["loss"][0]))
    for i, p in enumerate(per):
        c = cmap(0.9 * i / max(len(per) - 1, 1))
        label = rf"$\eta$ = {p['step_size']:g}" + (" (diverged)" if p["diverged"] else "")
        ax_s.plot(at, res["sharpness"][i], color=c, lw=1.5, label=label)
        ax_s.axhline(2 / p["step_size"], color=c, ls="--", lw=1)
        ax_s.text(
            1.01,
            2 / p["step_size"],
            rf"2/$\eta$ = {2 / p['step_size']:.0f}",
            color=c,
            va="center",
            fontsize=8,
            transform=ax_s.get_yaxis_transform(),
        )
        if p["crossing"] is not None:
            ax_s.plot([p["crossing"]], [2 / p["step_size"]], "o", color=c, ms=6, mfc="none")
        ax_l.plot(steps, res["loss"][i], color=c, lw=1, label=label)
    top = max(max(2 / p["step_size"] for p in per), max(p["sharpness_max"] for p in per))
    ax_s.set(ylabel=r"sharpness $\lambda_{max}$ (top Hessian eigenvalue)", ylim=(0, 1.1 * top))
    ax_s.set_title(
        rf"full-batch GD, tanh MLP, MSE, {config.n_train} MNIST-1D examples (dashed: 2/$\eta$; o: first reached)"
    )
    ax_l.set(xlabel="GD update", ylabel="training loss (MSE)", yscale="log")
    for ax in (ax_s, ax_l):
        ax.grid(True, which="both", alpha=0.3)
    ax_s.legend(fontsize=8, loc="upper left")
    ax_l.legend(fontsize=8, loc="upper right")
    cap = (
        "Sharpness lambda_max of the training-loss Hessian (top) and the training loss (bottom), full-batch GD per eta."
    )
    return save_figure(fig, out_dir, "sharpness_and_loss", cap)


def _plot_control(ctl: dict, summ: list[dict], out_dir: Path):
    plt = pyplot()
    fig, (ax_s, ax_l) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    cmap = plt.get_cmap("plasma")
    for i, (r, lam, loss) in enumerate(zip(ctl["rates"], ctl["sharpness"], ctl["loss"])):
        c = cmap(i / max(len(ctl["rates"]), 1))
        ax_s.plot(np.arange(len(lam)), np.asarray(lam) * r / 2, "o-", ms=3, color=c, label=rf"$\eta$ = {r:g}")
        t = np.arange(len(loss))
        up = np.concatenate([[False], rises(loss)])  # mark L(theta_t) that is above L(theta_{t-1})
        ax_l.plot(t, loss, "o-", ms=3, color=c, label=rf"$\eta$ = {r:g}")
        ax_l.plot(t[up], np.asarray(loss)[up], "x", color="red", ms=7)
    ax_s.axhline(1, color="k", ls="--", lw=1)
    ax_s.set(ylabel=r"$\lambda_{max}\,\eta/2$ (1: the edge)", yscale="log")
    ax_s.set_title("gd_regimes's full-batch GD (ReLU MLP, cross-entropy, 4000 examples)")
    ax_l.set(xlabel="GD update", ylabel="training loss (x: a rise)", yscale="log")
    for ax in (ax_s, ax_l):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    cap = "gd_regimes's full-batch GD: lambda_max*eta/2 before each update (top) and the loss, rises marked x (bottom)."
    return save_figure(fig, out_dir, "gd_regimes_control", cap)
