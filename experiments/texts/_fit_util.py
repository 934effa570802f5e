"""Full-batch training of K models at once: one jitted ``lax.scan`` over steps, ``vmap`` over models.

``fn.sweep`` runs one compiled call per epoch; with full-batch gradient descent an epoch is a single
step, so thousands of steps would pay Python dispatch each. Here the whole run is one XLA program.
Gradients come from fnnet's hand-written rules (``fn.value_and_grad``); the optimizer is any optax
``GradientTransformation`` (``fnnet.optim.sgd``, ``optax.adam``, ...).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax

import fnnet as fn


@functools.partial(jax.jit, static_argnames=("layer", "loss", "optimizer", "steps", "record_every"))
def fit_full_batch(
    layer: fn.Layer,
    loss: fn.Loss,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    record_every: int = 1,
) -> tuple[Any, jax.Array]:
    """Train stacked ``params`` (leading axis K) on shared data, or on per-model data if ``y`` has a K axis.

    Returns the final params (K, ...) and the loss every ``record_every`` steps, shape (K, steps // record_every).
    ``y`` of shape (K, N, ...) gives each model its own targets (e.g. several target functions).
    """
    vg = fn.value_and_grad(layer, loss)
    per_model_y = y.ndim == x.ndim + 1

    def train_one(p, yk):
        state = optimizer.init(p)

        def step(carry, _):
            p, s = carry
            value, g = vg(p, x, yk)
            updates, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, updates), s), value

        def chunk(carry, _):
            carry, values = jax.lax.scan(step, carry, None, length=record_every)
            return carry, values[0]

        (p, _), losses = jax.lax.scan(chunk, (p, state), None, length=steps // record_every)
        return p, losses

    if per_model_y:
        return jax.vmap(train_one)(params, y)
    return jax.vmap(train_one, in_axes=(0, None))(params, y)
