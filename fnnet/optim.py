"""Hand-written optimizers and gradient transformations, as optax ``GradientTransformation``s.

Each is a pair of pure functions ``init(params) -> state`` and
``update(grads, state, params=None) -> (updates, state)``, exactly optax's contract, so they chain
with ``optax.chain`` and any optax optimizer or schedule can stand in their place. Apply updates with
``optax.apply_updates(params, updates)`` (θ ← θ + u).

* :func:`sgd` — plain, heavy-ball momentum and Nesterov SGD; step for step equal to ``optax.sgd``.
* :func:`adam`, :func:`adamw` — Adam and decoupled weight decay; equal to ``optax.adam``/``optax.adamw``.
* :func:`warmup_cosine`, :func:`linear_warmup` — learning-rate schedules ``count -> lr``.
* :func:`clip_by_global_norm` — g ← g · min(1, c / ‖g‖).
* :func:`add_weight_decay` — the gradient of an L2 penalty ½λ‖θ‖²: g ← g + λθ.
* :func:`add_l1_penalty` — a subgradient of λ‖θ‖₁: g ← g + λ sign(θ), sign(0) = 0.
* :func:`trainable_mask` — True on trained leaves, False on buffers (the leaves under a ``"state"``
  key, such as BatchNorm's running statistics), from the params alone.

Order matters in a chain: a penalty goes *before* ``sgd`` (it changes the gradient that is then
scaled by the learning rate), e.g. ``optax.chain(add_weight_decay(1e-4), clip_by_global_norm(1.0),
sgd(0.1, momentum=0.9))``.

**Buffers** (non-trainable state kept in params under a ``"state"`` key, e.g. BatchNorm's
``params["state"] = {"mean", "var"}``) get a zero gradient in training, so a plain gradient step
leaves them alone; transformations that act on the params themselves would not. fnnet's
:func:`add_weight_decay` and :func:`add_l1_penalty` spare them by default (``mask=None``); an
explicit ``mask`` overrides that. For optax's own transformations pass :func:`trainable_mask` as
their ``mask``, or wrap a chain in ``optax.masked``::

    optax.adamw(1e-3, weight_decay=1e-4, mask=fn.optim.trainable_mask)        # decay spares buffers
    optax.chain(optax.masked(optax.add_decayed_weights(1e-4), fn.optim.trainable_mask), sgd(0.1))
    optax.masked(optax.adam(1e-3), fn.optim.trainable_mask)                   # buffers never updated

(``optax.masked`` passes the gradient of a masked-out leaf through unchanged: 0 for a buffer in
training, so ``optax.apply_updates`` leaves it as it is and ``layer.update_state`` alone moves it.)

The learning rate may be a Python float, a JAX scalar — also a *traced* one, which is how
:func:`fnnet.sweep` trains K learning rates in one vmapped program — or an optax schedule
``count -> lr``. A concrete learning rate that is not positive and finite (0, negative, NaN, Inf) is
rejected with a ``ValueError``, one that is not a real number (a string, a bool) with a ``TypeError``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet.core import STATE_KEY, Array, Params, is_concrete

__all__ = [
    "AdamState",
    "OPTIMIZERS",
    "ScalarOrSchedule",
    "SgdState",
    "add_l1_penalty",
    "adam",
    "adamw",
    "add_weight_decay",
    "chain",
    "clip_by_global_norm",
    "get",
    "global_norm",
    "linear_warmup",
    "sgd",
    "trainable_mask",
    "warmup_cosine",
]

ScalarOrSchedule = float | Array | Callable[[Array], Array]
chain = optax.chain


def _check_positive(name: str, what: str, value: Any, *, allow_zero: bool = False, allow_inf: bool = False) -> None:
    """Reject a concrete scalar that is not (strictly) positive; tracers pass unchecked."""
    if callable(value) or not is_concrete(value):
        return
    v = np.asarray(value)
    if v.dtype == bool or not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
        raise TypeError(f"{name} needs {what} that is a real number, got {value!r} ({type(value).__name__})")
    if v.ndim != 0:
        raise ValueError(f"{name} needs a scalar {what}, got an array of shape {tuple(v.shape)}")
    bad = not bool(v >= 0) if allow_zero else not bool(v > 0)  # also catches NaN
    if bad or not (np.isfinite(v) or allow_inf):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} needs {what} {bound}{'' if allow_inf else ' (and finite)'}, got {float(v)}")


def global_norm(tree: Any) -> Array:
    """‖g‖ = sqrt(Σ_leaves Σ g²), the Euclidean norm of all leaves together (0 for an empty tree)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


# ----------------------------------------------------------------------------------------------


class SgdState(NamedTuple):
    """State of :func:`sgd`."""

    count: Array  # () int32: steps taken; the argument of a learning-rate schedule
    momentum: Params  # like params (same shapes and dtypes): the trace m_t; () when momentum is 0


def sgd(learning_rate: ScalarOrSchedule, momentum: float | Array = 0.0, nesterov: bool = False):
    r"""Stochastic gradient descent, with heavy-ball or Nesterov momentum.

    With step size α_t (the learning rate, or the schedule at count t) and momentum μ:

        m_t = g_t + μ m_{t−1},   m_0 = 0
        u_t = −α_t m_t                      (heavy ball; μ = 0 gives plain SGD, u_t = −α_t g_t)
        u_t = −α_t (g_t + μ m_t)            (Nesterov, in Sutskever et al.'s reformulation)

    and θ_{t+1} = θ_t + u_t. This is ``optax.sgd(learning_rate, momentum, nesterov)`` operation for
    operation, so the two agree bit for bit.

    Args:
      learning_rate: α > 0: a float, a (possibly traced) JAX scalar, or a schedule ``count -> α``.
      momentum: μ in [0, 1); 0 keeps no momentum buffer.
      nesterov: use the Nesterov look-ahead form (needs μ > 0 to differ from heavy ball).

    References:
      Polyak 1964, "Some methods of speeding up the convergence of iteration methods";
      Sutskever et al. 2013, "On the importance of initialization and momentum in deep learning",
      eq. 1-4.
    """
    _check_positive("sgd", "a learning_rate", learning_rate)
    _check_positive("sgd", "a momentum", momentum, allow_zero=True)
    if is_concrete(momentum) and not callable(momentum) and float(momentum) >= 1:
        raise ValueError(f"sgd needs a momentum < 1, got {float(momentum)}")
    use_momentum = not (is_concrete(momentum) and float(momentum) == 0.0)
    if nesterov and not use_momentum:
        raise ValueError("sgd with nesterov=True needs a momentum > 0")

    def init(params: Params) -> SgdState:
        m = jax.tree_util.tree_map(jnp.zeros_like, params) if use_momentum else ()
        return SgdState(count=jnp.zeros((), jnp.int32), momentum=m)

    def update(grads: Params, state: SgdState, params: Params | None = None):
        del params
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        if use_momentum:
            m = jax.tree_util.tree_map(lambda g, t: g + momentum * t, grads, state.momentum)
            direction = jax.tree_util.tree_map(lambda g, t: g + momentum * t, grads, m) if nesterov else m
        else:
            m, direction = (), grads
        updates = jax.tree_util.tree_map(lambda d: jnp.asarray(-lr, dtype=d.dtype) * d, direction)
        count = jnp.where(state.count < jnp.iinfo(jnp.int32).max, state.count + 1, state.count)
        return updates, SgdState(count=count, momentum=m)

    return optax.GradientTransformation(init, update)


# ----------------------------------------------------------------------------------------------


def clip_by_global_norm(max_norm: float | Array):
    """g ← g · min(1, c / ‖g‖), with ‖g‖ the norm of all leaves together (:func:`global_norm`).

    Gradients with ‖g‖ < c pass unchanged; longer ones are rescaled to length c, direction kept.
    ``max_norm=inf`` never clips (a sweep over clipping thresholds can include "off").
    Stateless (its state is ``optax.EmptyState()``), as ``optax.clip_by_global_norm``.

    References:
      Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks", alg. 1.
    """
    _check_positive("clip_by_global_norm", "a max_norm", max_norm, allow_inf=True)

    def update(grads: Params, state: Any, params: Params | None = None):
        del params
        norm = global_norm(grads)
        keep = norm < max_norm
        clipped = jax.tree_util.tree_map(lambda g: jnp.where(keep, g, (g / norm.astype(g.dtype)) * max_norm), grads)
        return clipped, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def trainable_mask(params: Params) -> Any:
    """A pytree of bools like ``params``: False on buffers (leaves under a ``"state"`` dict key), True elsewhere.

    Needs no Layer: buffers are recognizable from the params pytree alone (:mod:`fnnet.core`), e.g.
    ``trainable_mask(fn.BatchNorm().init(key, (4,))[1])`` is
    ``{"gamma": True, "beta": True, "state": {"mean": False, "var": False}}``. Usable wherever optax
    takes a ``mask`` (a pytree or a function of the params), e.g.
    ``optax.adamw(1e-3, weight_decay=1e-4, mask=fn.optim.trainable_mask)``. Works on
    ``ShapeDtypeStruct`` leaves too.
    """

    def trained(path: tuple, _: Any) -> bool:
        return not any(isinstance(k, jax.tree_util.DictKey) and k.key == STATE_KEY for k in path)

    return jax.tree_util.tree_map_with_path(trained, params)


def _penalty(name: str, rate: float | Array, term: Callable[[Array], Array], mask: Any):
    _check_positive(name, "a rate", rate, allow_zero=True)

    def update(grads: Params, state: Any, params: Params | None = None):
        if params is None:
            raise ValueError(f"{name} needs the params: call update(grads, state, params)")
        m = trainable_mask(params) if mask is None else mask(params) if callable(mask) else mask
        out = jax.tree_util.tree_map(
            lambda g, p, on: g + jnp.asarray(rate, g.dtype) * term(p) if on else g, grads, params, m
        )
        return out, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def add_weight_decay(rate: float | Array, mask: Any = None):
    """L2 penalty ½λ‖θ‖² added to the loss, as its gradient: g ← g + λθ.

    Placed before :func:`sgd` this is classic "coupled" weight decay (θ ← θ − α(g + λθ)).
    ``mask`` is a pytree of bools like params, or a function ``params -> mask``, choosing the leaves
    to penalise (e.g. weights but not biases); ``None`` penalises every trained leaf and spares the
    buffers (:func:`trainable_mask`), such as BatchNorm's running statistics.

    References:
      Krogh & Hertz 1992, "A simple weight decay can improve generalization".
    """
    return _penalty("add_weight_decay", rate, lambda p: p, mask)


def add_l1_penalty(rate: float | Array, mask: Any = None):
    """L1 penalty λ‖θ‖₁ added to the loss, as a subgradient: g ← g + λ sign(θ), with sign(0) = 0.

    ``mask`` as in :func:`add_weight_decay`.

    References:
      Tibshirani 1996, "Regression shrinkage and selection via the lasso".
    """
    return _penalty("add_l1_penalty", rate, jnp.sign, mask)


# ----------------------------------------------------------------------------------------------
# Adam and AdamW


class AdamState(NamedTuple):
    """State of :func:`adam` and :func:`adamw`."""

    count: Array  # () int32: steps taken; t − 1 during step t, the argument of a learning-rate schedule
    mu: Params  # like params (same shapes and dtypes): the first-moment estimate m_t
    nu: Params  # like params (same shapes and dtypes): the second-moment estimate v_t


def _check_decay(name: str, what: str, value: Any) -> None:
    """A concrete β must lie in [0, 1); tracers pass unchecked."""
    _check_positive(name, what, value, allow_zero=True)
    if is_concrete(value) and float(value) >= 1:
        raise ValueError(f"{name} needs {what} < 1, got {float(value)}")


def _adam(name: str, learning_rate, b1, b2, eps, weight_decay, mask):
    _check_positive(name, "a learning_rate", learning_rate)
    _check_decay(name, "b1", b1)
    _check_decay(name, "b2", b2)
    _check_positive(name, "an eps", eps, allow_zero=True)
    decoupled = weight_decay is not None
    if decoupled:
        _check_positive(name, "a weight_decay", weight_decay, allow_zero=True)

    def init(params: Params) -> AdamState:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return AdamState(count=jnp.zeros((), jnp.int32), mu=zeros, nu=jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(grads: Params, state: AdamState, params: Params | None = None):
        if decoupled and params is None:
            raise ValueError(f"{name} needs the params for its weight decay: call update(grads, state, params)")
        mu = jax.tree_util.tree_map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
        nu = jax.tree_util.tree_map(lambda g, v: (1 - b2) * (g * g) + b2 * v, grads, state.nu)
        count = jnp.where(state.count < jnp.iinfo(jnp.int32).max, state.count + 1, state.count)
        c1, c2 = 1 - b1**count, 1 - b2**count  # 1 − β^t, in float32 whatever the params' dtype
        u = jax.tree_util.tree_map(
            lambda m, v: (m / c1.astype(m.dtype)) / (jnp.sqrt(v / c2.astype(v.dtype)) + eps), mu, nu
        )
        if decoupled:
            on = trainable_mask(params) if mask is None else mask(params) if callable(mask) else mask
            u = jax.tree_util.tree_map(lambda d, p, keep: d + weight_decay * p if keep else d, u, params, on)
        if callable(learning_rate):
            lr = -learning_rate(state.count)
            u = jax.tree_util.tree_map(lambda d: jnp.asarray(lr, dtype=d.dtype) * d, u)
        else:
            u = jax.tree_util.tree_map(lambda d: -learning_rate * d, u)
        return u, AdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    r"""Adam: steps scaled by running estimates of the gradient's first and second moments.

    With step size α_t (the learning rate, or the schedule at count t − 1), t = 1, 2, ...:

        m_t = (1 − β₁) g_t + β₁ m_{t−1},   v_t = (1 − β₂) g_t² + β₂ v_{t−1},   m_0 = v_0 = 0
        m̂_t = m_t / (1 − β₁ᵗ),   v̂_t = v_t / (1 − β₂ᵗ)                       (bias correction)
        u_t = −α_t m̂_t / (√v̂_t + ε)

    and θ_t = θ_{t−1} + u_t. This is ``optax.adam(learning_rate, b1, b2, eps)`` (with its ``eps_root = 0``)
    operation for operation, so the two agree to rounding, state included (``AdamState`` has optax's
    fields ``count, mu, nu``). Buffers (leaves under a ``"state"`` key) get a zero gradient in training,
    hence m = v = 0 and a zero update: Adam leaves them alone.

    Args:
      learning_rate: α > 0: a float, a (possibly traced) JAX scalar, or a schedule ``count -> α``
        (such as :func:`warmup_cosine`), called with the number of steps already taken.
      b1: β₁ in [0, 1), the decay of the first moment.
      b2: β₂ in [0, 1), the decay of the second moment.
      eps: ε ≥ 0, added to √v̂ in the denominator.

    References:
      Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", Algorithm 1.
    """
    return _adam("adam", learning_rate, b1, b2, eps, None, None)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask: Any = None,
):
    r"""AdamW: Adam with decoupled weight decay, the decay added to the Adam step, not to the gradient.

    With m̂_t, v̂_t as in :func:`adam` and λ the weight decay:

        u_t = −α_t (m̂_t / (√v̂_t + ε) + λ θ_{t−1})      on the leaves the mask selects,
        u_t = −α_t  m̂_t / (√v̂_t + ε)                    on the others,

    so the decay is scaled by the learning rate (and its schedule) but not by 1/√v̂, as in
    ``optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=mask)``, which it equals to
    rounding. Unlike :func:`add_weight_decay` before :func:`sgd` (an L2 penalty), this decay does not pass
    through Adam's moment estimates.

    ``mask``: a pytree of bools like params, or a function ``params -> mask``, choosing the leaves to decay
    (e.g. weights but not biases or normalization gains). ``None`` — **unlike optax**, where ``None``
    decays every leaf — decays every trained leaf and spares the buffers (:func:`trainable_mask`), as
    fnnet's :func:`add_weight_decay` does: ``adamw(lr)`` equals
    ``optax.adamw(lr, weight_decay=1e-4, mask=fn.optim.trainable_mask)``. Pass ``mask=lambda p:
    jax.tree_util.tree_map(lambda _: True, p)`` to decay buffers too.

    Args:
      learning_rate: α > 0: a float, a (possibly traced) JAX scalar, or a schedule ``count -> α``.
      b1, b2, eps: as in :func:`adam`.
      weight_decay: λ ≥ 0 (optax's default 1e-4).
      mask: the leaves to decay, as above.

    References:
      Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2.
    """
    return _adam("adamw", learning_rate, b1, b2, eps, weight_decay, mask)


# ----------------------------------------------------------------------------------------------
# Schedules


def _check_steps(name: str, what: str, value: Any, *, allow_zero: bool) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} needs {what} as an integer, got {value!r} ({type(value).__name__})")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} needs {what} {'>= 0' if allow_zero else '> 0'}, got {value}")
    return int(value)


def _check_value(name: str, what: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} needs {what} as a real number, got {value!r} ({type(value).__name__})")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} needs {what} >= 0 (and finite), got {value}")
    return float(value)


def linear_warmup(peak: float, warmup_steps: int, init: float = 0.0) -> Callable[[Array], Array]:
    """A schedule ``count -> lr`` rising linearly from ``init`` to ``peak`` over ``warmup_steps``, then constant.

        lr(t) = init + (peak − init) · min(t, W) / W   (W = warmup_steps; W = 0: lr(t) = peak)

    The same values as ``optax.linear_schedule(init, peak, W)``.
    """
    peak = _check_value("linear_warmup", "a peak", peak)
    init = _check_value("linear_warmup", "an init", init)
    warmup_steps = _check_steps("linear_warmup", "warmup_steps", warmup_steps, allow_zero=True)

    def schedule(count: Array) -> Array:
        if warmup_steps == 0:
            return jnp.asarray(peak, jnp.float32)
        frac = jnp.clip(jnp.asarray(count, jnp.float32), 0, warmup_steps) / warmup_steps
        return init + (peak - init) * frac

    return schedule


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int, end: float = 0.0) -> Callable[[Array], Array]:
    """A schedule ``count -> lr``: linear warm-up from 0 to ``peak``, then a half cosine down to ``end``.

        lr(t) = peak · t / W                                     for t < W (W = warmup_steps),
        lr(t) = end + (peak − end) · ½ (1 + cos(π (t − W) / (S − W)))   for W ≤ t ≤ S (S = total_steps),
        lr(t) = end                                              for t > S.

    ``total_steps`` counts the warm-up too. The same values, to rounding, as
    ``optax.warmup_cosine_decay_schedule(0.0, peak, W, S, end)``.

    References:
      Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts", eq. 5 (the
      cosine); Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 2.2 (gradual warm-up).
    """
    peak = _check_value("warmup_cosine", "a peak", peak)
    end = _check_value("warmup_cosine", "an end", end)
    warmup_steps = _check_steps("warmup_cosine", "warmup_steps", warmup_steps, allow_zero=True)
    total_steps = _check_steps("warmup_cosine", "total_steps", total_steps, allow_zero=False)
    if total_steps <= warmup_steps:
        raise ValueError(
            f"warmup_cosine needs total_steps > warmup_steps (total_steps counts the warm-up), "
            f"got total_steps={total_steps}, warmup_steps={warmup_steps}"
        )

    def schedule(count: Array) -> Array:
        t = jnp.asarray(count, jnp.float32)
        warm = peak * t / warmup_steps if warmup_steps else jnp.asarray(peak, jnp.float32)
        progress = jnp.clip((t - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        cosine = end + (peak - end) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
        return jnp.where(t < warmup_steps, warm, cosine)

    return schedule


# ----------------------------------------------------------------------------------------------

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


def get(name: str, learning_rate: ScalarOrSchedule, *, momentum: float = 0.9):
    """A named optimizer: ``sgd``, ``momentum`` (heavy ball), ``nesterov`` (all :func:`sgd`) or ``adam``.

    ``momentum`` is used by ``momentum`` and ``nesterov`` only; ``adam`` is ``optax.adam``.
    """
    if name == "sgd":
        return sgd(learning_rate)
    if name == "momentum":
        return sgd(learning_rate, momentum=momentum)
    if name == "nesterov":
        return sgd(learning_rate, momentum=momentum, nesterov=True)
    if name == "adam":
        _check_positive("adam", "a learning_rate", learning_rate)
        return optax.adam(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
