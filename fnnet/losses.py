"""Losses with fused, hand-written backward rules.

Each is a :class:`fnnet.Loss` value: ``forward(pred, target) -> (loss, cache)`` and
``backward(cache) -> dloss/dpred``. The first axis of ``pred`` is the batch; the loss is the **mean
over the batch** of a per-example loss that **sums** over the example's other axes.

Conventions, against optax:

* ``mse``: E = ½‖ŷ − y‖² per example, averaged over the batch, so per example δ = ŷ − y (the texts'
  convention, shared/references 000 and 002). ``optax.squared_error`` is (ŷ − y)² elementwise,
  without the ½ and without any reduction; ``optax.l2_loss`` is ½(ŷ − y)² elementwise, unreduced.
  So ``mse(pred, y) == optax.l2_loss(pred, y).sum(axis≠0).mean()``.
* ``softmax_cross_entropy``: −Σ_c y_c log softmax(z)_c per example, from logits through
  log-sum-exp, so logits of ±1e4 are safe. Targets are integer labels ``(B,)`` or one-hot /
  probability rows ``(B, C)``. Fused rule: dz = (softmax(z) − y) / B.
* ``binary_cross_entropy``: from logits, −[y log σ(z) + (1 − y) log(1 − σ(z))] summed per example,
  written as max(z, 0) − z y + log1p(e^{−|z|}) so log(0) never occurs. Fused rule:
  dz = (σ(z) − y) / B.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.core import Array, DTypeError, Loss, ShapeError, check_float, is_concrete, shape_str

__all__ = ["binary_cross_entropy", "mse", "softmax_cross_entropy"]


def _check_pair(name: str, pred: Array, target: Array) -> None:
    check_float(name, pred, "prediction")
    if jnp.ndim(pred) < 1:
        raise ShapeError(f"{name} needs a batch axis on the prediction, got a scalar")
    if jnp.shape(pred) != jnp.shape(target):
        raise ShapeError(
            f"{name} got prediction {shape_str(jnp.shape(pred))} and target "
            f"{shape_str(jnp.shape(target))}; they must have the same shape"
        )


def _batch_mean(per_example_sum: Array, pred: Array) -> Array:
    return jnp.sum(per_example_sum) / pred.shape[0]


# ----------------------------------------------------------------------------------------------


def _mse_forward(pred: Array, target: Array) -> tuple[Array, tuple[Array, Array]]:
    """L = (1/B) Σ_b ½‖ŷ_b − y_b‖²."""
    _check_pair("mse", pred, target)
    diff = pred - target.astype(pred.dtype)
    return 0.5 * jnp.sum(diff * diff) / pred.shape[0], (diff,)


def _mse_backward(cache: tuple[Array]) -> Array:
    """dL/dŷ = (ŷ − y) / B."""
    (diff,) = cache
    return diff / diff.shape[0]


mse = Loss(_mse_forward, _mse_backward)

# ----------------------------------------------------------------------------------------------


def _one_hot_target(name: str, logits: Array, target: Array) -> Array:
    """Integer labels (B,) -> one-hot rows; float rows (B, C) pass through (checked)."""
    check_float(name, logits, "logits")
    if jnp.ndim(logits) != 2:
        raise ShapeError(f"{name} expects logits (batch, classes), got {shape_str(jnp.shape(logits))}")
    batch, classes = logits.shape
    if jnp.issubdtype(jnp.result_type(target), jnp.integer):
        if jnp.shape(target) != (batch,):
            raise ShapeError(
                f"{name} got logits {shape_str(logits.shape)} and integer labels "
                f"{shape_str(jnp.shape(target))}; labels must have shape ({batch},)"
            )
        if is_concrete(target):
            labels = np.asarray(target)
            lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
            if lo < 0 or hi >= classes:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{name} got label {bad}, out of range for {classes} classes "
                    f"(labels must lie in [0, {classes - 1}])"
                )
        return jax.nn.one_hot(target, classes, dtype=logits.dtype)
    if jnp.issubdtype(jnp.result_type(target), jnp.floating):
        if jnp.shape(target) != logits.shape:
            raise ShapeError(
                f"{name} got logits {shape_str(logits.shape)} and targets "
                f"{shape_str(jnp.shape(target))}; one-hot targets must match the logits' shape, "
                f"integer labels must have shape ({batch},)"
            )
        return target.astype(logits.dtype)
    raise DTypeError(f"{name} needs integer labels or float one-hot targets, got {jnp.result_type(target)}")


def _sce_forward(logits: Array, target: Array) -> tuple[Array, tuple[Array, Array]]:
    """L = (1/B) Σ_b [logsumexp(z_b) − Σ_c y_bc z_bc] for rows y_b summing to one."""
    y = _one_hot_target("softmax_cross_entropy", logits, target)
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shifted = logits - m
    lse = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    log_p = shifted - lse
    loss = -jnp.sum(y * log_p) / logits.shape[0]
    return loss, (jnp.exp(log_p), y)


def _sce_backward(cache: tuple[Array, Array]) -> Array:
    """dL/dz = (softmax(z) − y) / B: the fused softmax + cross-entropy rule (p − y)."""
    p, y = cache
    return (p - y) / p.shape[0]


softmax_cross_entropy = Loss(_sce_forward, _sce_backward)

# ----------------------------------------------------------------------------------------------


def _bce_forward(logits: Array, target: Array) -> tuple[Array, tuple[Array, Array]]:
    """L = (1/B) Σ_b Σ_i [max(z, 0) − z y + log1p(e^{−|z|})]."""
    _check_pair("binary_cross_entropy", logits, target)
    y = target.astype(logits.dtype)
    per = jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return _batch_mean(per, logits), (jax.nn.sigmoid(logits), y)


def _bce_backward(cache: tuple[Array, Array]) -> Array:
    """dL/dz = (σ(z) − y) / B."""
    p, y = cache
    return (p - y) / p.shape[0]


binary_cross_entropy = Loss(_bce_forward, _bce_backward)

LOSSES = {
    "mse": mse,
    "softmax_cross_entropy": softmax_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
}
