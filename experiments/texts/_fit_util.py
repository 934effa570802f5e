"""Full-batch training of K models at once: one jitted ``lax.scan`` over steps, ``vmap`` over models.

``fn.sweep`` runs one compiled call per epoch; with full-batch gradient descent an epoch is a single
step, so thousands of steps would pay Python dispatch each. Here the whole run is one XLA program
scanning the library's own step, :func:`fnnet.make_step` (fnnet's hand-written rules, any optax
``GradientTransformation`` such as ``fnnet.optim.sgd`` or ``optax.adam``, and its divergence freeze).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax

import fnnet as fn
from fnnet.training import init_state


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

    Each step is :func:`fnnet.make_step`'s: (L, g) on the whole of (x, y); u, s ← optimizer.update(g, s, θ);
    θ ← θ + u. A model whose loss, gradient or params turn non-finite is frozen at its last finite
    params, like a diverged :func:`fnnet.train` run, and its later recorded losses are NaN.

    Returns the final params (K, ...) and the loss every ``record_every`` steps, shape (K, steps // record_every).
    ``y`` of shape (K, N, ...) gives each model its own targets (e.g. several target functions).
    """
    step = fn.make_step(layer, loss, optimizer)
    per_model_y = y.ndim == x.ndim + 1

    def train_one(p, yk):
        def chunk(state, _):
            # the layers draw no randomness (key None); the recorded loss is the chunk's first
            state, metrics = jax.lax.scan(lambda s, _: step(s, (x, yk), None), state, None, length=record_every)
            return state, metrics["loss"][0]

        # the state's key is never drawn from: every step sees the whole batch, in order
        state, losses = jax.lax.scan(
            chunk, init_state(p, optimizer, jax.random.key(0)), None, length=steps // record_every
        )
        return state.params, losses

    if per_model_y:
        return jax.vmap(train_one)(params, y)
    return jax.vmap(train_one, in_axes=(0, None))(params, y)
