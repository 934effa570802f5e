"""vmapped sweeps: K models trained at once in one compiled program, over seeds, learning rates, inits.

    params = fn.init_params(net, (40,), jax.random.split(jax.random.key(0), 16))  # 16 seeds
    res = fn.sweep(net, fn.softmax_cross_entropy, params, train, keys=jax.random.key(1),
                   learning_rates=jnp.logspace(-3, 0, 16), batch_size=64, epochs=20)
    res.history["test_accuracy"]            # (16, 20)
    one = fn.pick(res, 3)                    # model 3, as a TrainResult of one run

The epoch function of :func:`fnnet.training.make_epoch` is ``jax.vmap``-ed over the model axis (params,
optimizer state, key, learning rate) with the data shared, and jitted once: all K runs are one XLA
program, called once per epoch. Model k equals a run of its own::

    fn.train(net, loss, fn.pick(params, k), data, optimizer=optimizer(learning_rates[k]),
             key=keys[k], ...)

up to float32 rounding (batched and unbatched matmuls may sum in different orders). A sweep over
initializers stacks params made by differently initialized copies of one architecture:
``fn.stack([fn.serial(fn.Dense(100, w_init=i), ...).init(k, (40,))[1] for i in inits])``.
Batch size and architecture change shapes, so they are swept by a Python loop over calls.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet.core import Array, Layer, Loss, Params
from fnnet.optim import sgd
from fnnet.training import TrainResult, TrainState, init_state, jit_sweep_epoch, run_epochs, setup, shares_key

__all__ = ["init_params", "pick", "stack", "sweep"]


def stack(trees: list[Any]) -> Any:
    """K pytrees of one structure -> one pytree whose leaves have a leading axis of K."""
    if not trees:
        raise ValueError("stack needs at least one pytree")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def pick(tree: Any, k: int) -> Any:
    """Model ``k`` of a stacked pytree or of a sweep's :class:`TrainResult`."""
    if isinstance(tree, TrainResult):
        take = lambda d: {name: v[k] for name, v in d.items()}  # noqa: E731
        return tree._replace(
            params=pick(tree.params, k),
            state=pick(tree.state, k),
            history=take(tree.history),
            step_history=take(tree.step_history),
        )
    return jax.tree_util.tree_map(lambda a: a[k], tree)


def init_params(layer: Layer, in_shape: tuple[int, ...], keys: Array, dtype: Any = jnp.float32) -> Params:
    """Stacked params, one model per key: ``stack([layer.init(k, in_shape, dtype)[1] for k in keys])``.

    A loop of eager inits (JAX caches each random op by shape, so K models cost little more than one)
    rather than a vmap, which would compile a new program for every call.
    """
    return stack([layer.init(k, tuple(in_shape), dtype)[1] for k in keys])


def _num_models(params: Params) -> int:
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("sweep needs params with at least one array, stacked over models")
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"sweep needs params stacked over models (a common leading axis K, e.g. from fn.init_params "
            f"or fn.stack); found leading sizes {sorted(sizes)}"
        )
    return sizes.pop()


def sweep(
    layer: Layer,
    loss: Loss,
    params: Params,
    data: Any,
    *,
    keys: Array,
    optimizer: optax.GradientTransformation | Callable[[Any], optax.GradientTransformation] = sgd,
    learning_rates: Any = None,
    batch_size: int,
    epochs: int,
    grad: str = "manual",
    record: str = "epoch",
    per_layer_grad_norms: bool = False,
    test_data: Any = None,
    accuracy: Any = "auto",
    eval_train: bool = True,
    eval_batch_size: int | None = None,
    progress: bool = True,
    resume: TrainResult | None = None,
    callback: Callable[[int, TrainResult], None] | None = None,
) -> TrainResult:
    """Train K models in one vmapped, jitted program; every leaf of the result has a leading K axis.

    Args:
      params: stacked params, leading axis K (:func:`init_params`, :func:`stack`).
      keys: one PRNG key shared by all runs (same batch order) or K keys, shape (K,). When all
        runs share one key (one key, or K equal ones), the batch is drawn once per step and products
        with it run as one matmul across the K models (:func:`fnnet.training.jit_sweep_epoch`); the
        results are those of K separate runs either way.
      optimizer: with ``learning_rates``, a factory ``lr -> GradientTransformation`` accepting a
        traced scalar (default :func:`fnnet.optim.sgd`); without, one GradientTransformation.
      learning_rates: None, a scalar, or K values.
      The other options are those of :func:`fnnet.train`. A run that diverges is frozen and flagged
      (``result.diverged[k]``) while the others go on; the loop stops once all have diverged.
    """
    K = _num_models(params)
    spec, data, test_data = setup(
        layer,
        loss,
        optimizer,
        params,
        data,
        test_data,
        batch_size=batch_size,
        epochs=epochs,
        grad=grad,
        record=record,
        per_layer_grad_norms=per_layer_grad_norms,
        accuracy=accuracy,
        eval_train=eval_train,
        eval_batch_size=eval_batch_size,
        resume=resume,
        stacked=True,
    )
    if learning_rates is None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError("without learning_rates, optimizer must be a GradientTransformation")
        lrs = None
    else:
        if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
            raise TypeError("with learning_rates, optimizer must be a factory lr -> GradientTransformation")
        lrs = np.asarray(learning_rates)
        if lrs.dtype == bool or not (np.issubdtype(lrs.dtype, np.integer) or np.issubdtype(lrs.dtype, np.floating)):
            raise TypeError(f"sweep needs numeric learning_rates, got {learning_rates!r}")
        if lrs.shape not in ((), (K,)):
            raise ValueError(
                f"sweep needs learning_rates as one value or {K} values (one per model), got shape {lrs.shape}"
            )
        lrs = np.broadcast_to(lrs.astype(np.float64), (K,))
        for lr in lrs:
            optimizer(float(lr))  # validates every value (e.g. a non-positive rate) before compiling
        with np.errstate(over="ignore"):
            lrs32 = lrs.astype(np.float32)
        overflow = np.isfinite(lrs) & ~np.isfinite(lrs32)  # inf itself is the factory's to accept or refuse
        if np.any(overflow):
            raise ValueError(f"sweep's learning_rates must fit in float32, got {lrs[overflow][0]}")
        lrs = jnp.asarray(lrs32)
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if keys.ndim == 0:
        keys = jnp.stack([keys] * K)
    if keys.shape != (K,):
        raise ValueError(f"sweep needs one key or {K} keys (one per model), got key array of shape {keys.shape}")

    lr_axis = None if lrs is None else 0
    if resume is not None:
        state = resume.state
    else:
        make = (lambda lr: optimizer) if lrs is None else optimizer  # noqa: E731
        state = jax.vmap(lambda p, k, lr: init_state(p, make(lr), k), in_axes=(0, 0, lr_axis))(params, keys, lrs)
    assert isinstance(state, TrainState)
    return run_epochs(
        functools.partial(jit_sweep_epoch, spec, lr_axis, shares_key(state)),
        state,
        lrs,
        data,
        test_data,
        epochs=epochs,
        start=0 if resume is None else resume.history["loss"].shape[1],
        prior=resume,
        steps=spec.num_examples // batch_size,
        progress=progress,
        callback=callback,
        desc=f"sweep x{K}",
    )
