"""Losses with fused, hand-written backward rules.

Each is a :class:`fnnet.Loss` value: ``forward(pred, target) -> (loss, cache)``,
``backward(cache) -> dloss/dpred``, the forward-mode rule ``jvp(pred, target, dpred) -> (loss, dloss)``
and the Hessian-vector product ``hvp(cache, v) -> H v``, all hand-written. The first axis of ``pred`` is
the batch; the loss is the **mean over the batch** of a per-example loss that **sums** over the example's
other axes.

Conventions, against optax:

* ``mse``: E = ½‖ŷ − y‖² per example, averaged over the batch, so per example δ = ŷ − y (the convention
  of A. Gulli, A. Kapoor, S. Pal, *Deep Learning with TensorFlow 2 and Keras*, 2nd ed., Packt, 2019,
  chapter "The Math Behind Deep Learning", and of "ML Math Derivations (19): Neural Networks and
  Backpropagation", an online series, chapter 19). ``optax.squared_error`` is (ŷ − y)² elementwise,
  without the ½ and without any reduction; ``optax.l2_loss`` is ½(ŷ − y)² elementwise, unreduced.
  So ``mse(pred, y) == optax.l2_loss(pred, y).sum(axis≠0).mean()``.
* ``softmax_cross_entropy``: −Σ_c y_c log softmax(z)_c per example, from logits through
  log-sum-exp, so logits of ±1e4 are safe. Targets are integer labels ``(B,)`` or float rows
  ``(B, C)``: one-hot, probabilities, or any real rows. Fused rule: dz = (s·softmax(z) − y) / B with
  s = Σ_c y_c the row's sum (s = 1 for a distribution, giving the familiar (p − y) / B).
* ``sequence_cross_entropy``: softmax cross-entropy per token of logits (B, T, V) against integer labels
  (B, T), the **mean over the tokens** that count (all, or those an optional mask (B, T) keeps), as
  ``torch.nn.functional.cross_entropy`` with ``ignore_index``. Fused rule: dz = w (p − onehot(y)) / N.
* ``binary_cross_entropy``: from logits, −[y log σ(z) + (1 − y) log(1 − σ(z))] summed per example,
  written as softplus(z) − z y = logaddexp(z, 0) − z y, so log(0) never occurs. Fused rule:
  dz = (σ(z) − y) / B.

**Precision.** The per-example math and the batch reductions run in at least float32
(``jnp.promote_types(dtype, float32)``), and the loss is returned in the prediction's dtype. In float16
and bfloat16 the loss is then within rounding of the true value wherever that value is representable,
and +inf (never NaN) where it is not; summing the batch in float16 first would overflow (e.g. softmax
cross-entropy of logits ±1e4 over 8 examples). Gradients come back in the prediction's dtype. The cache
holds its arrays in that compute dtype (so for float16/bfloat16 inputs it is float32) plus a zero-size
token that carries the prediction's dtype.

**Targets that are not distributions.** Neither cross-entropy warns about them: the forward is a
well-defined function of any real target (label smoothing, weighted or multi-hot rows, soft targets), and
each fused rule is its exact gradient for any real target. Only integer labels are checked.

**Forward mode and curvature.** ``jvp`` returns the forward's loss and dloss = ⟨∇L, dpred⟩, with the
gradient of ``backward`` formed and the product summed in the compute dtype, returned in the prediction's
dtype. ``hvp`` multiplies by H = ∂²L/∂pred² of the mean loss (the target is data, so H is the Hessian in the
prediction alone), from the forward's cache, in the compute dtype, returned in the prediction's dtype. The
tangent ``dpred`` and the vector ``v`` must have the prediction's shape and dtype (nothing is cast silently).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.core import Array, DTypeError, Loss, ShapeError, check_float, is_concrete, shape_str

__all__ = [
    "BinaryCrossEntropy",
    "MeanSquaredError",
    "SoftmaxCrossEntropy",
    "SequenceCrossEntropy",
    "binary_cross_entropy",
    "mse",
    "sequence_cross_entropy",
    "softmax_cross_entropy",
]


def _check_pair(name: str, pred: Array, target: Array) -> None:
    check_float(name, pred, "prediction")
    if jnp.ndim(pred) < 1:
        raise ShapeError(f"{name} needs a batch axis on the prediction, got a scalar")
    if jnp.shape(pred) != jnp.shape(target):
        raise ShapeError(
            f"{name} got prediction {shape_str(jnp.shape(pred))} and target "
            f"{shape_str(jnp.shape(target))}; they must have the same shape"
        )


def _compute_dtype(pred: Array) -> jnp.dtype:
    """The dtype the loss is computed in: the prediction's, but at least float32."""
    return jnp.promote_types(jnp.result_type(pred), jnp.float32)


def _dtype_token(pred: Array) -> Array:
    """A zero-size array of the prediction's dtype: the cache's record of the dtype to return."""
    return jnp.zeros((0,), jnp.result_type(pred))


def _check_direction(name: str, what: str, v: Array, shape: tuple[int, ...], dtype: jnp.dtype) -> None:
    """Raise unless ``v`` (a tangent ``dpred`` or an hvp vector ``v``) has the prediction's shape and dtype."""
    if jnp.shape(v) != tuple(shape):
        raise ShapeError(
            f"{name} got {what} {shape_str(jnp.shape(v))} for a prediction {shape_str(shape)}; "
            f"it must have the prediction's shape"
        )
    if jnp.result_type(v) != jnp.dtype(dtype):
        raise DTypeError(
            f"{name} got {what} of dtype {jnp.result_type(v)} for a {jnp.dtype(dtype)} prediction; nothing is cast "
            f"silently, so give it the prediction's dtype (e.g. {what}.astype(jnp.{jnp.dtype(dtype)}))"
        )


def _directional(name: str, pred: Array, grad: Array, dpred: Array) -> Array:
    """⟨grad, dpred⟩ summed in ``grad``'s (compute) dtype and returned in the prediction's: a loss's dvalue."""
    _check_direction(name, "tangent dpred", dpred, jnp.shape(pred), jnp.result_type(pred))
    return jnp.sum(grad * dpred.astype(grad.dtype)).astype(jnp.result_type(pred))


# ----------------------------------------------------------------------------------------------


def _mse_forward(pred: Array, target: Array) -> tuple[Array, tuple[Array, Array]]:
    """L = (1/B) Σ_b ½‖ŷ_b − y_b‖², computed in at least float32."""
    _check_pair("mse", pred, target)
    ct = _compute_dtype(pred)
    diff = pred.astype(ct) - jnp.asarray(target).astype(ct)
    loss = 0.5 * jnp.sum(diff * diff) / pred.shape[0]
    return loss.astype(pred.dtype), (diff, _dtype_token(pred))


def _mse_backward(cache: tuple[Array, Array]) -> Array:
    """dL/dŷ = (ŷ − y) / B.

    Exact for any real prediction and target (the loss is a polynomial). The difference is kept in the
    compute dtype, so a half-precision difference that overflows its dtype still gives a finite gradient
    when (ŷ − y)/B is representable.
    """
    diff, token = cache
    return (diff / diff.shape[0]).astype(token.dtype)


def _mse_jvp(pred: Array, target: Array, dpred: Array) -> tuple[Array, Array]:
    """(L, dL) with dL = (1/B) Σ_b ⟨ŷ_b − y_b, dŷ_b⟩; the difference and the sum in at least float32."""
    value, (diff, _) = _mse_forward(pred, target)
    return value, _directional("mse", pred, diff / diff.shape[0], dpred)


def _mse_hvp(cache: tuple[Array, Array], v: Array) -> Array:
    """H v = v / B: the Hessian of L = (1/B) Σ_b ½‖ŷ_b − y_b‖² is I / B, whatever ŷ and y."""
    diff, token = cache
    _check_direction("mse", "vector v", v, diff.shape, token.dtype)
    return (v.astype(diff.dtype) / diff.shape[0]).astype(token.dtype)


class MeanSquaredError(Loss):
    """Half the squared error, summed over each example's features, averaged over the batch: ``fn.mse``.

    ``mse.forward(pred, target) -> (loss, cache)`` and ``mse.backward(cache) -> dL/dpred``; ``pred`` and
    ``target`` have the same shape, the batch (size B) first.

    Forward:
        L = (1/B) Σ_b ½‖ŷ_b − y_b‖², in at least float32, returned in the prediction's dtype.

    Backward:
        dL/dŷ = (ŷ − y) / B, i.e. δ = ŷ − y per example; exact for any real prediction and target.

    Forward mode (JVP):
        dL = (1/B) Σ_b ⟨ŷ_b − y_b, dŷ_b⟩ for a tangent dŷ of the prediction's shape and dtype.

    Hessian-vector product:
        H v = v / B (H = I / B, constant); ``mse.hvp(cache, v)``.

    ``optax.squared_error`` is (ŷ − y)² and ``optax.l2_loss`` ½(ŷ − y)², both elementwise and unreduced:
    ``mse(pred, y) == optax.l2_loss(pred, y).sum(axis≠0).mean()``.
    """

    __slots__ = ()


mse = MeanSquaredError(_mse_forward, _mse_backward, jvp=_mse_jvp, hvp=_mse_hvp)

# ----------------------------------------------------------------------------------------------


def _target_rows(name: str, logits: Array, target: Array, dtype: jnp.dtype) -> Array:
    """Integer labels (B,) -> one-hot rows; float rows (B, C) pass through (checked); both in ``dtype``.

    Out-of-range labels raise a ``ValueError`` when the labels are concrete. Under ``jit``/``vmap``
    they cannot be checked, and the row of each out-of-range label becomes NaN (a documented poison:
    the loss and the gradient of those examples are NaN).
    """
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
        y = jax.nn.one_hot(target, classes, dtype=dtype)
        if is_concrete(target):
            labels = np.asarray(target)
            lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
            if lo < 0 or hi >= classes:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{name} got label {bad}, out of range for {classes} classes "
                    f"(labels must lie in [0, {classes - 1}])"
                )
            return y
        in_range = (target >= 0) & (target < classes)
        return jnp.where(in_range[:, None], y, jnp.asarray(jnp.nan, dtype))
    if jnp.issubdtype(jnp.result_type(target), jnp.floating):
        if jnp.shape(target) != logits.shape:
            raise ShapeError(
                f"{name} got logits {shape_str(logits.shape)} and targets "
                f"{shape_str(jnp.shape(target))}; one-hot targets must match the logits' shape, "
                f"integer labels must have shape ({batch},)"
            )
        return target.astype(dtype)
    raise DTypeError(f"{name} needs integer labels or float one-hot targets, got {jnp.result_type(target)}")


def _sce_forward(logits: Array, target: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    """L = −(1/B) Σ_b Σ_c y_bc log softmax(z_b)_c, for any real target rows y_b.

    log softmax(z) = z − max z − log Σ e^{z − max z}, in at least float32. A term with y_bc = 0 counts as
    0 even where log softmax is −∞ (a masked logit z = −∞, or float16 logits ±4e4 whose shifted value
    underflows): 0 · log 0 = 0, not NaN.

    **Out-of-range integer labels** raise a ``ValueError`` when the labels are concrete. Under
    ``jax.jit``/``jax.vmap`` they cannot be checked; their target row becomes NaN, so the loss and the
    gradient rows of those examples (the fused rule and ``jax.grad`` of this forward alike) are NaN: a
    poison that ``fn.train`` records as divergence rather than a silently finite wrong loss. Wrap the call
    in ``jax.experimental.checkify`` to raise instead.

    Assumes logits below +∞ and at least one logit above −∞ per row (else max z is ±∞ and the row is NaN).
    """
    ct = _compute_dtype(logits)
    y = _target_rows("softmax_cross_entropy", logits, target, ct)
    z = logits.astype(ct)
    m = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    shifted = z - m
    lse = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    log_p = shifted - lse
    terms = jnp.where(y == 0, jnp.zeros((), ct), y * log_p)  # 0 · log 0 = 0; a NaN target stays NaN
    loss = -jnp.sum(terms) / logits.shape[0]
    return loss.astype(logits.dtype), (jnp.exp(log_p), y, _dtype_token(logits))


def _sce_backward(cache: tuple[Array, Array, Array]) -> Array:
    """dL/dz = (s · softmax(z) − y) / B, s = Σ_c y_c per row: the fused softmax + cross-entropy rule.

    From L_b = −Σ_c y_c z_c + s · logsumexp(z): exact for any real target rows (one-hot, probability,
    multi-hot, unnormalized, negative or all-zero), not only for rows that sum to 1, where it is the
    familiar (p − y)/B. Masked logits (−∞, with y = 0 there) get gradient 0. A NaN target row (an
    out-of-range label under tracing) gives a NaN gradient row.
    """
    return _sce_grad(cache).astype(cache[-1].dtype)


def _sce_grad(cache: tuple[Array, Array, Array]) -> Array:
    """(s · p − y) / B in the compute dtype: the gradient that backward returns and jvp contracts."""
    p, y, _ = cache
    s = jnp.sum(y, axis=-1, keepdims=True)
    return (s * p - y) / p.shape[0]


def _sce_jvp(logits: Array, target: Array, dlogits: Array) -> tuple[Array, Array]:
    """(L, dL) with dL = (1/B) Σ_b ⟨s_b p_b − y_b, dz_b⟩, p = softmax(z), s = Σ_c y_c."""
    value, cache = _sce_forward(logits, target)
    return value, _directional("softmax_cross_entropy", logits, _sce_grad(cache), dlogits)


def _sce_hvp(cache: tuple[Array, Array, Array], v: Array) -> Array:
    """H v = (s/B) (p ⊙ v − p (p · v)) per row: s/B times the softmax Jacobian diag(p) − p pᵀ.

    From L_b = −Σ_c y_c z_c + s · logsumexp(z): the first term is linear in z, and the Hessian of
    logsumexp is diag(p) − p pᵀ. With integer labels s = 1. A NaN target row gives a NaN row.
    """
    p, y, token = cache
    _check_direction("softmax_cross_entropy", "vector v", v, p.shape, token.dtype)
    v = v.astype(p.dtype)
    s = jnp.sum(y, axis=-1, keepdims=True)
    pv = jnp.sum(p * v, axis=-1, keepdims=True)
    return (s * (p * v - p * pv) / p.shape[0]).astype(token.dtype)


class SoftmaxCrossEntropy(Loss):
    """Cross-entropy of softmax(logits) against the targets, averaged over the batch: ``fn.softmax_cross_entropy``.

    ``forward(logits, target) -> (loss, cache)`` with logits ``(B, C)`` and integer labels ``(B,)`` or real
    target rows ``(B, C)`` (one-hot, probabilities, or any real rows); ``backward(cache) -> dL/dlogits``.

    Forward:
        L = −(1/B) Σ_b Σ_c y_bc log softmax(z_b)_c, with log softmax(z) = z − max z − log Σ_c e^{z_c − max z}
        (log-sum-exp, so logits of ±1e4 are safe), in at least float32; a term with y_bc = 0 counts as 0.

    Backward:
        dL/dz = (s · softmax(z) − y) / B, with s = Σ_c y_c the row's sum: the fused softmax + cross-entropy
        rule, (p − y)/B for rows that sum to 1, and exact for any real target rows.

    Forward mode (JVP):
        dL = (1/B) Σ_b ⟨s_b p_b − y_b, dz_b⟩, p = softmax(z), for a tangent dz of the logits' shape and dtype.

    Hessian-vector product:
        (H v)_b = (s_b / B) (p_b ⊙ v_b − p_b (p_b · v_b)), i.e. H = ⊕_b (s_b / B)(diag(p_b) − p_b p_bᵀ): the
        target term is linear in z, so only s · logsumexp(z) curves; s = 1 for integer labels.

    Raises:
        ShapeError: logits not ``(B, C)``, or targets of another shape.
        ValueError: a concrete integer label outside [0, C − 1]. Under ``jit``/``vmap`` such a label makes
            that example's loss and gradient NaN instead.
    """

    __slots__ = ()


softmax_cross_entropy = SoftmaxCrossEntropy(_sce_forward, _sce_backward, jvp=_sce_jvp, hvp=_sce_hvp)

# ----------------------------------------------------------------------------------------------


def _bce_forward(logits: Array, target: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    """L = (1/B) Σ_b Σ_i [softplus(z) − z y], softplus(z) = logaddexp(z, 0) = log(1 + e^z).

    The identity −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − z y holds for any real y. softplus
    is ``logaddexp`` rather than max(z, 0) + log1p(e^{−|z|}): the same values, but ``jax.grad`` of that
    form at z = 0 adds JAX's subgradients of max and |·| (½ and 1) and returns −y instead of σ(0) − y.
    Computed in at least float32. Assumes finite logits (at z = +∞ with y = 0 the term z·y is NaN).
    """
    _check_pair("binary_cross_entropy", logits, target)
    ct = _compute_dtype(logits)
    z, y = logits.astype(ct), jnp.asarray(target).astype(ct)
    per = jnp.logaddexp(z, jnp.zeros((), ct)) - z * y
    loss = jnp.sum(per) / logits.shape[0]
    return loss.astype(logits.dtype), (jax.nn.sigmoid(z), y, _dtype_token(logits))


def _bce_backward(cache: tuple[Array, Array, Array]) -> Array:
    """dL/dz = (σ(z) − y) / B.

    Exact for any real target, not only bits: soft targets in [0, 1] and targets outside it alike, since
    the loss is linear in y (outside [0, 1] it is unbounded below, but its gradient is still this). Exact
    at z = 0 (σ(0) = ½), where ``jax.grad`` of the forward agrees.
    """
    p, y, token = cache
    return ((p - y) / p.shape[0]).astype(token.dtype)


def _bce_jvp(logits: Array, target: Array, dlogits: Array) -> tuple[Array, Array]:
    """(L, dL) with dL = (1/B) Σ ⟨σ(z) − y, dz⟩."""
    value, (p, y, _) = _bce_forward(logits, target)
    return value, _directional("binary_cross_entropy", logits, (p - y) / p.shape[0], dlogits)


def _bce_hvp(cache: tuple[Array, Array, Array], v: Array) -> Array:
    """H v = σ(z)(1 − σ(z)) ⊙ v / B: diagonal, and the same for every target.

    The per-element loss softplus(z) − z y is linear in y, so its second derivative in z is softplus'' =
    σ(z)(1 − σ(z)) for any real (hard, soft or out-of-range) target. Formed from the cached σ(z) as
    p (1 − p), which is accurate to rounding in absolute terms (the curvature is at most ¼); for |z| past
    about 17 in float32 (37 in float64) it rounds to 0 where the true value is e^{−|z|}.
    """
    p, _, token = cache
    _check_direction("binary_cross_entropy", "vector v", v, p.shape, token.dtype)
    return (p * (1 - p) * v.astype(p.dtype) / p.shape[0]).astype(token.dtype)


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy from logits, summed per example, averaged over the batch: ``fn.binary_cross_entropy``.

    ``forward(logits, target) -> (loss, cache)`` with logits and targets of the same shape, the batch first;
    ``backward(cache) -> dL/dlogits``.

    Forward:
        L = (1/B) Σ_b Σ_i [softplus(z) − z y], softplus(z) = logaddexp(z, 0) = log(1 + e^z), which equals
        −[y log σ(z) + (1 − y) log(1 − σ(z))] and never takes log(0); in at least float32.

    Backward:
        dL/dz = (σ(z) − y) / B; exact for any real target (soft targets too) and at z = 0.

    Forward mode (JVP):
        dL = (1/B) Σ ⟨σ(z) − y, dz⟩, for a tangent dz of the logits' shape and dtype.

    Hessian-vector product:
        H v = σ(z)(1 − σ(z)) ⊙ v / B: diagonal, independent of the target (the loss is linear in y).
    """

    __slots__ = ()


binary_cross_entropy = BinaryCrossEntropy(_bce_forward, _bce_backward, jvp=_bce_jvp, hvp=_bce_hvp)

# ----------------------------------------------------------------------------------------------


def _sequence_parts(logits: Array, target) -> tuple[Array, Array | None]:
    """(labels, mask or None) from ``target``: the labels, or a ``(labels, mask)`` pair; checked."""
    name = "sequence_cross_entropy"
    check_float(name, logits, "logits")
    if jnp.ndim(logits) != 3:
        raise ShapeError(f"{name} expects logits (batch, time, vocabulary), got {shape_str(jnp.shape(logits))}")
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(f"{name} takes target = labels or (labels, mask), got a sequence of {len(target)} items")
        labels, mask = target
    else:
        labels, mask = target, None
    batch, time, _ = logits.shape
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise DTypeError(
            f"{name} needs integer labels (batch, time), got dtype {jnp.result_type(labels)}; "
            f"pass target = labels or (labels, mask)"
        )
    if jnp.shape(labels) != (batch, time):
        raise ShapeError(
            f"{name} got logits {shape_str(logits.shape)} and labels {shape_str(jnp.shape(labels))}; "
            f"labels must have shape ({batch}, {time})"
        )
    if mask is not None:
        mdtype = jnp.result_type(mask)
        if not (mdtype == jnp.bool_ or jnp.issubdtype(mdtype, jnp.integer) or jnp.issubdtype(mdtype, jnp.floating)):
            raise DTypeError(f"{name} needs a boolean (or 0/1) mask, got dtype {mdtype}")
        if jnp.shape(mask) != (batch, time):
            raise ShapeError(
                f"{name} got labels {shape_str(jnp.shape(labels))} and mask {shape_str(jnp.shape(mask))}; "
                f"the mask must have the labels' shape ({batch}, {time})"
            )
    return labels, mask


def _seq_forward(logits: Array, target) -> tuple[Array, tuple[Array, Array, Array, Array]]:
    """L = (1/N) Σ_{b,t} w_bt ℓ_bt, ℓ_bt = logsumexp(z_bt) − z_bt[y_bt], N = Σ w (1 where N = 0); w = mask or 1.

    Out-of-range labels of tokens that count raise a ``ValueError`` when concrete; under ``jit``/``vmap``
    such a token's loss (and so L) and its gradient row are NaN. Tokens the mask drops are never read:
    their labels may be anything (e.g. −100 padding, as PyTorch's ``ignore_index``) and their logits too.
    """
    labels, mask = _sequence_parts(logits, target)
    vocab = logits.shape[-1]
    ct = _compute_dtype(logits)
    w = jnp.ones(labels.shape, ct) if mask is None else jnp.asarray(mask).astype(ct)
    keep = w != 0
    valid = (labels >= 0) & (labels < vocab)
    if is_concrete(labels) and is_concrete(w):
        bad = np.asarray(keep) & ~np.asarray(valid)
        if bad.any():
            label = int(np.asarray(labels)[bad][0])
            raise ValueError(
                f"sequence_cross_entropy got label {label}, out of range for a vocabulary of {vocab} "
                f"(labels must lie in [0, {vocab - 1}], or be masked out)"
            )
    z = jnp.where(keep[..., None], logits.astype(ct), jnp.zeros((), ct))  # dropped tokens are never read
    m = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    shifted = z - m
    lse = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    log_p = shifted - lse
    hot = labels[..., None] == jnp.arange(vocab)[None, None, :]
    picked = jnp.sum(jnp.where(hot, log_p, jnp.zeros((), ct)), axis=-1)
    per_token = jnp.where(valid, -picked, jnp.asarray(jnp.nan, ct))  # the poison of an out-of-range label
    count = jnp.sum(w)
    n = jnp.where(count != 0, count, jnp.ones((), ct))
    loss = jnp.sum(jnp.where(keep, w * per_token, jnp.zeros((), ct))) / n
    scale = jnp.where(keep & valid, w / n, jnp.where(keep, jnp.asarray(jnp.nan, ct), jnp.zeros((), ct)))
    safe = jnp.where(valid, labels, 0)
    return loss.astype(logits.dtype), (jnp.exp(log_p), safe, scale, _dtype_token(logits))


def _seq_backward(cache: tuple[Array, Array, Array, Array]) -> Array:
    """dL/dz_bt = (w_bt / N) (softmax(z_bt) − onehot(y_bt)): the fused rule, 0 on the tokens the mask drops.

    From ℓ = logsumexp(z) − z_y: ∂ℓ/∂z = softmax(z) − onehot(y). With no token kept (N = 0) every
    row is 0; an out-of-range label of a kept token (under tracing) gives a NaN row.
    """
    return _seq_grad(cache).astype(cache[-1].dtype)


def _seq_grad(cache: tuple[Array, Array, Array, Array]) -> Array:
    """(w / N) (p − onehot(y)) per token in the compute dtype: what backward returns and jvp contracts."""
    p, labels, scale, _ = cache
    hot = labels[..., None] == jnp.arange(p.shape[-1])[None, None, :]
    return scale[..., None] * (p - hot.astype(p.dtype))


def _seq_jvp(logits: Array, target, dlogits: Array) -> tuple[Array, Array]:
    """(L, dL) with dL = Σ_{b,t} (w_bt / N) ⟨p_bt − onehot(y_bt), dz_bt⟩; dropped tokens' tangents never read."""
    value, cache = _seq_forward(logits, target)
    _check_direction("sequence_cross_entropy", "tangent dlogits", dlogits, logits.shape, logits.dtype)
    kept = cache[2][..., None] != 0  # scale = w / N is 0 exactly on the tokens the forward never reads
    dz = jnp.where(kept, dlogits, jnp.zeros((), dlogits.dtype))
    return value, _directional("sequence_cross_entropy", logits, _seq_grad(cache), dz)


def _seq_hvp(cache: tuple[Array, Array, Array, Array], v: Array) -> Array:
    """(H v)_bt = (w_bt / N) (p_bt ⊙ v_bt − p_bt (p_bt · v_bt)) per token: block diagonal, 0 on dropped tokens.

    From ℓ = logsumexp(z) − z_y, whose Hessian is diag(p) − p pᵀ (the label term is linear). Dropped
    tokens' entries of v are never read; an out-of-range label of a kept token (under tracing) gives a NaN row.
    """
    p, _, scale, token = cache
    _check_direction("sequence_cross_entropy", "vector v", v, p.shape, token.dtype)
    kept = scale[..., None] != 0
    v = jnp.where(kept, v.astype(p.dtype), jnp.zeros((), p.dtype))
    pv = jnp.sum(p * v, axis=-1, keepdims=True)
    return (scale[..., None] * (p * v - p * pv)).astype(token.dtype)


class SequenceCrossEntropy(Loss):
    """Softmax cross-entropy per token, the mean over the tokens that count: ``fn.sequence_cross_entropy``.

    ``forward(logits, target) -> (loss, cache)`` with logits ``(B, T, V)`` and ``target`` either integer labels
    ``(B, T)`` or a pair ``(labels, mask)`` with a mask ``(B, T)``: boolean, True = the token counts (a 0/1 or
    any real array is taken as weights w); ``backward(cache) -> dL/dlogits``. The loss is the mean over the
    kept tokens of the whole batch (not a mean of per-sequence means), as ``torch.nn.functional.cross_entropy``
    of the flattened tokens with ``ignore_index``; without a mask, the mean over all B·T tokens.

    Forward:
        L = (1/N) Σ_{b,t} w_bt ℓ_bt,   ℓ_bt = logsumexp(z_bt) − z_bt[y_bt],   N = Σ_{b,t} w_bt,
        with log-sum-exp shifted by the row's max (logits of ±1e4 are safe), in at least float32; w = 1 without
        a mask. With no token kept (N = 0) the loss is 0, not NaN.

    Backward:
        dL/dz_bt = (w_bt / N) (softmax(z_bt) − onehot(y_bt)): the fused rule; 0 on dropped tokens, and 0
        everywhere when N = 0. The mask itself gets no gradient.

    Forward mode (JVP):
        dL = Σ_{b,t} (w_bt / N) ⟨p_bt − onehot(y_bt), dz_bt⟩, p = softmax(z), for a tangent dz of the logits'
        shape and dtype; the tangents of dropped tokens are never read.

    Hessian-vector product:
        (H v)_bt = (w_bt / N) (p_bt ⊙ v_bt − p_bt (p_bt · v_bt)): one block (w/N)(diag(p) − p pᵀ) per token,
        0 on dropped tokens (and everywhere when N = 0).

    Raises:
        ShapeError: logits not ``(B, T, V)``, labels or mask not ``(B, T)``.
        DTypeError: float labels, or a mask that is not boolean or numeric.
        ValueError: a concrete label outside [0, V − 1] on a token that counts (dropped tokens are not read:
            padding labels such as −100 are fine). Under ``jit``/``vmap`` such a label makes the loss and that
            token's gradient row NaN instead.
    """

    __slots__ = ()


sequence_cross_entropy = SequenceCrossEntropy(_seq_forward, _seq_backward, jvp=_seq_jvp, hvp=_seq_hvp)

LOSSES = {
    "mse": mse,
    "softmax_cross_entropy": softmax_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
}
