"""The batch-size study's shared workload: MNIST-1D, the MLP, and a steps-to-target engine.

Why a loop of its own: steps-to-target (Shallue et al. 2018) needs the training loss checked far more
often than once per epoch — at B = 1 a target is met inside an epoch of 4000 updates, at B = 4000 in
a few updates — and needs each run to stop as soon as the answer is known. ``fnnet.train`` records
per epoch (or the minibatch loss per step), so this module writes one focused loop around the
library's own step, ``fnnet.make_step`` (the hand-written rules, ``fnnet.optim.sgd``, and a
non-finite step frozen and flagged as diverged), keeping the engine's other conventions (a fresh
permutation per epoch, the remainder dropped).

One call of :func:`run_to_target` is one jitted ``lax.while_loop`` over steps, with S seeds × L
learning rates vmapped inside it. The loss on a fixed training subset is evaluated after step
1, 2, ..., 16 and then on a geometric grid (ratio ``eval_ratio``), so the first step at which the
target is met is known to within that ratio. The loop ends once every seed has a run at the target
and ``stop_factor`` times that many steps have passed (the slower rates are then known to be worse),
or once every run reached the target or diverged, or at ``limit``.

:func:`tune_batch` re-tunes the learning rate for one batch size on a powers-of-2 grid: it starts
with a window around a guess (the previous batch size's best rate, one rate below it and two above,
so both linear scaling and saturation land inside) and extends the grid whenever the best rate sits
on its edge, so the chosen rate always has a tried, worse neighbour on each side (or the result
says it does not).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from experiments._common import PointCache
from fnnet import data as fdata
from fnnet import initializers, optim
from fnnet.training import init_state

NOT_REACHED = -1


@dataclasses.dataclass(frozen=True)
class Workload:
    """The steps-to-target workload: model, target and the loop's resolution."""

    hidden: tuple[int, ...] = (128, 128)  # MLP 40-128-128-10, ReLU, He-normal init
    target: float = 1.0  # training cross-entropy to reach
    n_eval: int = 1000  # size of the fixed training subset the target is checked on
    max_steps: int = 30000  # hard cap on steps per run
    max_epochs: int = 200  # and on epochs (the batch orders are drawn up front, one permutation per epoch)
    eval_ratio: float = 1.05  # geometric spacing of loss checks after step 16
    stop_factor: float = 1.5  # run on to this multiple of the best seed's steps
    diverge_loss: float = 100.0  # a checked loss above this (or non-finite) counts as diverged
    target_accuracy: float = 0.0  # > 0: the target is this accuracy on the checked subset instead of ``target``
    freeze_at_target: bool = False  # stop updating a model once it is at the target (its params are then kept)
    grad: str = "manual"  # gradient source: the hand-written rules by default
    dtype: str = "float32"  # "float64" needs jax_enable_x64 (data_parallel's rounding control)


@functools.cache
def load_data() -> tuple[fdata.Dataset, fdata.Dataset]:
    """MNIST-1D (Greydanus 2020): 4000 training, 1000 test examples of 40 features, as jax arrays."""
    train, test = fdata.mnist1d()
    as_jax = lambda d: fdata.Dataset(jnp.asarray(d.x), jnp.asarray(d.y))  # noqa: E731
    return as_jax(train), as_jax(test)


@functools.cache
def mlp(hidden: tuple[int, ...] = (128, 128), classes: int = 10) -> fn.Layer:
    """Dense-ReLU stack with He-normal weights, then a linear read-out; ``hidden=()`` is logistic regression.

    Cached: one Layer object per architecture, so every jitted helper keyed on it compiles once.
    """
    layers: list[fn.Layer] = []
    for width in hidden:
        layers += [fn.Dense(width, w_init=initializers.he_normal()), fn.Relu()]
    layers.append(fn.Dense(classes, w_init=initializers.he_normal() if hidden else initializers.zeros()))
    return fn.serial(*layers)


def init_models(net: fn.Layer, seeds: tuple[int, ...], in_dim: int = 40, dtype: Any = jnp.float32) -> Any:
    """Params stacked over seeds (S, ...): seed s initialises from ``fold_in(key(s), 0)``."""
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 0) for s in seeds])
    return jax.vmap(lambda k: net.init(k, (in_dim,), dtype)[1])(keys)


def data_keys(seeds: tuple[int, ...]) -> jax.Array:
    """The batch-order key of each seed, ``fold_in(key(s), 1)``, so init and data order are independent."""
    return jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in seeds])


@functools.cache
def batch_orders(seeds: tuple[int, ...], n: int, epochs: int) -> jax.Array:
    """(S, epochs, n) int32: epoch e of seed s is ``permutation(fold_in(data_key(s), e), n)``."""
    keys = data_keys(seeds)
    perm = lambda k, e: jax.random.permutation(jax.random.fold_in(k, e), n)  # noqa: E731
    f = jax.jit(jax.vmap(jax.vmap(perm, (None, 0)), (0, None)))
    return f(keys, jnp.arange(epochs)).astype(jnp.int32)


def eval_schedule(max_steps: int, ratio: float) -> np.ndarray:
    """Steps after which the loss is checked: 0..16, then a geometric grid of the given ratio."""
    pts = set(range(min(16, max_steps) + 1))
    s = 16.0
    while s < max_steps:
        s *= ratio
        pts.add(min(int(round(s)), max_steps))
    return np.array(sorted(pts), np.int32)


@functools.cache
def _compiled(wl: Workload, n: int, batch_size: int, n_seeds: int, n_lrs: int, momentum: float, mesh: Any):
    """The jitted while-loop for one (workload, N, B, S, L, momentum, mesh): cached so extensions reuse it."""
    net, loss = mlp(wl.hidden), fn.softmax_cross_entropy
    sched = eval_schedule(wl.max_steps, wl.eval_ratio)
    mask = np.zeros(wl.max_steps + 1, bool)
    mask[sched] = True
    slot = np.cumsum(mask).astype(np.int32) - 1
    spe = n // batch_size
    full = batch_size == n
    opt = lambda lr: optim.sgd(lr, momentum=momentum)  # noqa: E731  (momentum static: 0 keeps no buffer)
    step = fn.make_step(net, loss, opt, grad=wl.grad)  # (state, batch, key, lr): the nets draw no key
    sharding = None
    if mesh is not None:
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        sharding = NamedSharding(mesh, P(None, "data"))  # (models, batch, ...): the batch axis split

    seed_of = np.repeat(np.arange(n_seeds), n_lrs)  # model k = (seed k // L, rate k % L)

    step_shared = jax.vmap(step, (0, None, None, 0))  # full batch: one batch for all models
    step_own = jax.vmap(step, (0, 0, None, 0))  # mini-batch: each model its seed's batch

    def eval_one(p, xe, ye):
        pred = net.forward(p, xe, train=False)[0]
        return loss.forward(pred, ye)[0], jnp.mean(jnp.argmax(pred, axis=-1) == ye)

    eval_all = jax.vmap(eval_one, (0, None, None))

    def run(params, lrs, orders, x, y, xe, ye, limit):
        mask_, slot_ = jnp.asarray(mask), jnp.asarray(slot)
        # one TrainState per model; its key is never drawn from (the batch orders come from ``orders``)
        state = jax.vmap(lambda p, lr: init_state(p, opt(lr), jax.random.key(0)))(params, lrs)
        k = n_seeds * n_lrs
        curve = jnp.full((len(sched), k), jnp.nan, x.dtype).at[0].set(eval_all(params, xe, ye)[0])
        carry = (jnp.int32(0), state, jnp.full((k,), NOT_REACHED, jnp.int32), curve)

        def cond(c):
            t, state, done, _ = c
            per_seed = jnp.reshape(jnp.where(done > 0, done, wl.max_steps + 1), (n_seeds, n_lrs))
            best = jnp.min(per_seed, axis=1)
            known = jnp.all(best <= wl.max_steps) & (t >= jnp.ceil(wl.stop_factor * jnp.max(best)))
            settled = jnp.all((done > 0) | state.diverged)
            return (t < limit) & ~known & ~settled

        def body(c):
            t, state, done, curve = c
            old = state
            if full:
                state, _ = step_shared(state, (x, y), None, lrs)
            else:
                rows = jax.lax.dynamic_index_in_dim(orders, t // spe, axis=1, keepdims=False)  # (S, n)
                idx = jax.lax.dynamic_slice_in_dim(rows, (t % spe) * batch_size, batch_size, axis=1)[seed_of]
                xb, yb = x[idx], y[idx]
                if sharding is not None:
                    xb = jax.lax.with_sharding_constraint(xb, sharding)
                    yb = jax.lax.with_sharding_constraint(yb, sharding)
                state, _ = step_own(state, (xb, yb), None, lrs)
            if wl.freeze_at_target:  # a model at the target keeps its params (and optimizer state)
                keep = done > 0
                pick = lambda a, b: jnp.where(jnp.reshape(keep, keep.shape + (1,) * (a.ndim - 1)), b, a)  # noqa: E731
                frozen = jax.tree_util.tree_map(pick, (state.params, state.opt_state), (old.params, old.opt_state))
                state = state._replace(params=frozen[0], opt_state=frozen[1])
            t1 = t + 1

            def check(args):
                state, done, curve = args
                le, acc = eval_all(state.params, xe, ye)
                div = state.diverged | ~jnp.isfinite(le) | (le > wl.diverge_loss)  # a loss that blew up counts too
                state = state._replace(
                    diverged=div, diverged_step=jnp.where(div & ~state.diverged, state.step, state.diverged_step)
                )
                at = (acc >= wl.target_accuracy) if wl.target_accuracy > 0 else (le <= wl.target)
                done = jnp.where((done == NOT_REACHED) & ~div & at, t1, done)
                return state, done, curve.at[slot_[t1]].set(jnp.where(div, jnp.nan, le))

            state, done, curve = jax.lax.cond(mask_[t1], check, lambda a: a, (state, done, curve))
            return t1, state, done, curve

        t, state, done, curve = jax.lax.while_loop(cond, body, carry)
        shape = (n_seeds, n_lrs)
        curve = jnp.reshape(curve, (-1,) + shape)
        return t, jnp.reshape(done, shape), jnp.reshape(state.diverged, shape), curve, state.params

    return jax.jit(run)


def run_to_target(
    wl: Workload,
    batch_size: int,
    lrs: tuple[float, ...],
    seeds: tuple[int, ...],
    momentum: float = 0.0,
    *,
    limit: int | None = None,
    mesh: Any = None,
    return_params: bool = False,
) -> dict[str, Any]:
    """Train S seeds × L learning rates at one batch size until the steps to ``wl.target`` are known.

    Returns ``steps`` (S, L) ints (−1 = not reached), ``diverged`` (S, L) bools, ``checked`` (the
    steps whose loss was checked, up to the end), ``curve`` (checks, S, L) loss on the fixed training
    subset (NaN after divergence), and ``stopped`` (steps run); with ``return_params``, also
    ``params``: the final params stacked over the S·L models (seed-major), at the target when
    ``wl.freeze_at_target``.
    """
    train, _ = load_data()
    n = int(train.x.shape[0])
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    limit = min(wl.max_steps if limit is None else int(limit), wl.max_steps, wl.max_epochs * (n // batch_size))
    dtype = jnp.dtype(wl.dtype)
    params = init_models(mlp(wl.hidden), seeds, dtype=dtype)  # (S, ...) -> (S·L, ...): each rate from its seed's init
    params = jax.tree_util.tree_map(lambda a: jnp.repeat(a, len(lrs), axis=0), params)
    f = _compiled(wl, n, batch_size, len(seeds), len(lrs), float(momentum), mesh)
    x, y = train.x.astype(dtype), train.y
    orders = batch_orders(tuple(seeds), n, 1 if batch_size == n else wl.max_epochs)
    if mesh is not None:  # data parallel: params replicated; the batch split over the mesh's "data" axis
        from fnnet.parallel import batch_sharding, replicate, shard_batch

        batch_sharding(mesh, batch_size)  # refuses a batch that does not divide over the devices
        params, orders = replicate((params, orders), mesh)
        # full batch: the dataset itself is sharded; mini-batch: it is replicated and each gathered batch
        # is constrained to the data axis inside the step
        x, y = shard_batch((x, y), mesh) if batch_size == n else replicate((x, y), mesh)
    t, done, div, curve, final = f(
        params,
        jnp.tile(jnp.asarray(lrs, dtype), len(seeds)),
        orders,
        x,
        y,
        x[: wl.n_eval],
        y[: wl.n_eval],
        jnp.int32(limit),
    )
    t = int(t)
    sched = eval_schedule(wl.max_steps, wl.eval_ratio)
    k = int(np.searchsorted(sched, t, side="right"))
    out = {
        "steps": np.asarray(done).tolist(),
        "diverged": np.asarray(div).tolist(),
        "checked": sched[:k].tolist(),
        "curve": np.asarray(curve)[:k].tolist(),
        "stopped": t,
    }
    if return_params:
        out["params"] = final
    return out


def steps_at(checked: list[int], curve: list[float], target: float) -> int:
    """The first checked step whose loss is at or below ``target`` (``NOT_REACHED`` if none)."""
    for t, v in zip(checked, curve):
        if v is not None and np.isfinite(v) and v <= target:
            return int(t)
    return NOT_REACHED


def _score(steps: np.ndarray) -> float:
    """Steps of one learning rate over seeds: their mean, or inf unless every seed reached the target."""
    return float(np.mean(steps)) if np.all(steps > 0) else math.inf


@functools.cache
def tune_batch(
    wl: Workload,
    batch_size: int,
    center_exp: int,
    seeds: tuple[int, ...],
    momentum: float = 0.0,
    window: tuple[int, ...] = (-1, 0, 1, 2),
    max_extend: int = 6,
    targets: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Steps to target at one batch size with the learning rate re-tuned over powers of 2.

    Rates 2^(center_exp + w) for w in ``window`` are run first; while the best (fewest mean steps over
    seeds, every seed at the target) is the smallest or largest rate tried, the grid is extended by
    another window on that side (at most ``max_extend`` times). ``at_edge`` reports failure to bracket.

    ``targets``: looser losses (above ``wl.target``) read off the same runs' curves (first checked
    step at or below each), the best rate chosen per target among the rates tried; returned under
    ``by_target`` (keyed ``f"{T:g}"``) with the same fields as the main target.
    """
    tried: dict[int, dict[str, Any]] = {}

    def run(exps: list[int], limit: int | None) -> None:
        assert not set(exps) & set(tried), (exps, sorted(tried))  # windows never overlap: L stays fixed
        r = run_to_target(wl, batch_size, tuple(2.0**e for e in exps), seeds, momentum, limit=limit)
        for j, e in enumerate(exps):
            tried[e] = {
                "steps": [row[j] for row in r["steps"]],
                "diverged": [row[j] for row in r["diverged"]],
                "curve": [[c[s][j] for s in range(len(seeds))] for c in r["curve"]],
                "checked": r["checked"],
                "stopped": r["stopped"],
            }

    def best() -> tuple[int | None, float]:
        scores = {e: _score(np.asarray(v["steps"])) for e, v in tried.items()}
        e = min(scores, key=lambda k: (scores[k], k))
        return (e, scores[e]) if math.isfinite(scores[e]) else (None, math.inf)

    run([center_exp + w for w in window], None)
    for _ in range(max_extend):
        e, score = best()
        lo, hi = min(tried), max(tried)
        limit = None if e is None else int(math.ceil(wl.stop_factor * max(tried[e]["steps"])))
        if e is None:  # nothing reached: go down if the top rates diverged, else up
            down = all(tried[hi]["diverged"])
            run(
                [lo - len(window) + i for i in range(len(window))]
                if down
                else [hi + 1 + i for i in range(len(window))],
                limit,
            )
        elif e == lo:
            run([lo - len(window) + i for i in range(len(window))], limit)
        elif e == hi:
            run([hi + 1 + i for i in range(len(window))], limit)
        else:
            break
    e, score = best()
    exps = sorted(tried)
    by_target = {}
    for target in targets:
        if target < wl.target:
            raise ValueError(f"targets must be looser (higher loss) than the workload's {wl.target}, got {target}")
        st = {
            k: [steps_at(tried[k]["checked"], [c[s] for c in tried[k]["curve"]], target) for s in range(len(seeds))]
            for k in exps
        }
        sc = {k: _score(np.asarray(v)) for k, v in st.items()}
        kb = min(sc, key=lambda k: (sc[k], k))
        ok = math.isfinite(sc[kb])
        by_target[f"{target:g}"] = {
            "steps": [st[k] for k in exps],
            "best_exponent": kb if ok else None,
            "best_lr": 2.0**kb if ok else None,
            "best_steps": sc[kb] if ok else None,
            "best_steps_seeds": st[kb] if ok else None,
            "at_edge": (not ok) or kb in (exps[0], exps[-1]),
        }
    return {
        "by_target": by_target,
        "batch_size": batch_size,
        "momentum": momentum,
        "lr_exponents": exps,
        "steps": [tried[k]["steps"] for k in exps],  # (L, S), −1 = not reached
        "diverged": [tried[k]["diverged"] for k in exps],
        "stopped": [tried[k]["stopped"] for k in exps],
        "best_exponent": e,
        "best_lr": None if e is None else 2.0**e,
        "best_steps": score if e is not None else None,
        "best_steps_seeds": None if e is None else tried[e]["steps"],
        "at_edge": e is None or e in (exps[0], exps[-1]),
        "checked": None if e is None else tried[e]["checked"],
        "curve": None if e is None else tried[e]["curve"],
    }


def sweep_batches(
    wl: Workload,
    batch_sizes: tuple[int, ...],
    seeds: tuple[int, ...],
    momentum: float,
    lr0_exp: int,
    cache: PointCache,
    targets: tuple[float, ...] = (),
) -> list[dict[str, Any]]:
    """:func:`tune_batch` for each B in increasing order, each point cached in ``cache`` as ``sweep_m<μ>_B<B>``.

    The guess for each B is the previous B's best exponent (``lr0_exp`` for the first), so the
    window follows the optimum; a killed run resumes from the finished points.
    """
    out, center = [], lr0_exp
    for b in sorted(batch_sizes):
        compute = lambda b=b, c=center: tune_batch(wl, b, c, tuple(seeds), float(momentum), targets=tuple(targets))  # noqa: E731
        r = cache.point(f"sweep_m{momentum:g}_B{b}", compute)
        out.append(r)
        if r["best_exponent"] is not None:
            center = int(r["best_exponent"])
    return out


@functools.cache
def _eval_fn(net: fn.Layer):
    def one(p, x, y):
        pred, _ = net.forward(p, x, train=False)
        return fn.softmax_cross_entropy.forward(pred, y)[0], jnp.mean(jnp.argmax(pred, axis=-1) == y)

    return jax.jit(jax.vmap(one, (0, None, None)))


def evaluate_models(net: fn.Layer, params: Any, data: fdata.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy and accuracy of K stacked models on ``data`` (one compiled program per net)."""
    loss, acc = _eval_fn(net)(params, data.x, data.y)
    return np.asarray(loss), np.asarray(acc)
