"""Hand-written optimizers and gradient transformations, as optax ``GradientTransformation``s.

Each is a pair of pure functions ``init(params) -> state`` and
``update(grads, state, params=None) -> (updates, state)``, exactly optax's contract, so they chain
with ``optax.chain`` and any optax optimizer or schedule can stand in their place. Apply updates with
``optax.apply_updates(params, updates)`` (θ ← θ + u).

* :func:`sgd` — plain, heavy-ball momentum and Nesterov SGD; step for step equal to ``optax.sgd``.
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
    "OPTIMIZERS",
    "ScalarOrSchedule",
    "SgdState",
    "add_l1_penalty",
    "add_weight_decay",
    "chain",
    "clip_by_global_norm",
    "get",
    "global_norm",
    "sgd",
    "trainable_mask",
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
