"""Evaluation and the quantities the training loop records: accuracy, loss on a dataset, layer norms.

* :func:`evaluate` — mean loss and accuracy of params on a dataset, in eval mode (``train=False``),
  computed in chunks of ``batch_size`` rows when given (the chunks' means are weighted by size).
* :func:`accuracy_fn` — the accuracy that fits the targets and the loss: argmax accuracy for integer
  labels (N,) or one-hot rows with softmax cross-entropy, sign accuracy for binary cross-entropy
  (logit > 0 vs target > 0.5), None for regression.
* :func:`param_layers` / :func:`layer_norms` — the per-layer gradient norms of ``train``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.core import Array, Layer, Loss, Params, is_int
from fnnet.data.dataset import check_label_range, validate
from fnnet.optim import global_norm

__all__ = [
    "accuracy_fn",
    "label_accuracy",
    "one_hot_accuracy",
    "sign_accuracy",
    "evaluate",
    "layer_norms",
    "make_eval",
    "param_layers",
]


def param_layers(params: Params) -> list[int]:
    """Indices of the top-level children that have parameters: the columns of ``layer_grad_norms``.

    For ``serial(Dense, Relu, Dense)`` that is ``[0, 2]``. Params that are not a tuple/list count
    one column per leaf.
    """
    if isinstance(params, (tuple, list)):
        return [i for i, p in enumerate(params) if jax.tree_util.tree_leaves(p)]
    return list(range(len(jax.tree_util.tree_leaves(params))))


def layer_norms(grads: Params) -> Array:
    """‖g_l‖ = √(Σ g²) over the leaves of each entry of :func:`param_layers`, as an (L,) array."""
    if isinstance(grads, (tuple, list)):
        parts = [global_norm(grads[i]) for i in param_layers(grads)]
    else:
        parts = [jnp.sqrt(jnp.sum(jnp.square(g))) for g in jax.tree_util.tree_leaves(grads)]
    return jnp.stack(parts) if parts else jnp.zeros((0,), jnp.float32)


def label_accuracy(pred: Array, labels: Array) -> Array:
    """Fraction of rows whose argmax equals the integer label."""
    return jnp.mean(jnp.argmax(pred, axis=-1) == labels)


def one_hot_accuracy(pred: Array, target: Array) -> Array:
    """Fraction of rows whose argmax equals the argmax of the one-hot (or probability) target."""
    return jnp.mean(jnp.argmax(pred, axis=-1) == jnp.argmax(target, axis=-1))


def sign_accuracy(logits: Array, target: Array) -> Array:
    """Binary accuracy from logits: (logit > 0) == (target > 0.5), averaged over every entry."""
    return jnp.mean((logits > 0) == (target > 0.5))


def accuracy_fn(accuracy: Any, loss: Loss, y: Any) -> Callable | None:
    """The accuracy function for ``accuracy="auto"`` (see the module docstring), a given one, or None."""
    if callable(accuracy) or accuracy is None or accuracy is False:
        return accuracy or None
    if accuracy != "auto":
        raise ValueError(f"accuracy must be 'auto', None or a function (pred, y) -> fraction, got {accuracy!r}")
    from fnnet.losses import binary_cross_entropy, softmax_cross_entropy

    ydt = jnp.result_type(y)
    if jnp.issubdtype(ydt, jnp.integer) and np.ndim(y) == 1:
        return label_accuracy
    if loss is softmax_cross_entropy:
        return one_hot_accuracy
    if loss is binary_cross_entropy:
        return sign_accuracy
    return None


def make_eval(layer: Layer, loss: Loss, acc_fn: Callable | None, batch_size: int | None):
    """``(params, x, y) -> (mean loss, accuracy)`` in eval mode, in chunks of ``batch_size`` rows."""

    def chunk(params, x, y):
        pred, _ = layer.forward(params, x, key=None, train=False)
        value, _ = loss.forward(pred, y)
        acc = acc_fn(pred, y) if acc_fn else jnp.zeros((), value.dtype)
        return value, acc.astype(value.dtype)

    def run(params, x, y):
        n = x.shape[0]
        c = n if batch_size is None else min(batch_size, n)
        full, rest = divmod(n, c)
        head = (
            jnp.reshape(x[: full * c], (full, c) + x.shape[1:]),
            jnp.reshape(y[: full * c], (full, c) + y.shape[1:]),
        )
        values, accs = (
            jax.lax.map(lambda xy: chunk(params, *xy), head) if full > 1 else chunk(params, *[h[0] for h in head])
        )
        total_v, total_a = jnp.sum(values) * c, jnp.sum(accs) * c
        if rest:
            v, a = chunk(params, x[full * c :], y[full * c :])
            total_v, total_a = total_v + v * rest, total_a + a * rest
        return total_v / n, total_a / n

    return run


def check_labels(layer: Layer, loss: Loss, params: Params, datasets: dict[str, Any], *, stacked: bool = False):
    """Integer labels with softmax cross-entropy must lie below the model's number of classes.

    Inside the compiled epoch the labels are traced, so the loss cannot check them there (an
    out-of-range label would silently count as a zero one-hot row). The number of classes is read
    from the output shape of the forward, traced once by ``jax.eval_shape`` (nothing is compiled);
    a data set that does not fit the layer raises the layer's own error here. ``stacked``: params
    carry a leading model axis (:func:`fnnet.sweep`).
    """
    from fnnet.losses import softmax_cross_entropy

    todo = {k: ds for k, ds in datasets.items() if ds is not None and jnp.issubdtype(ds.y.dtype, jnp.integer)}
    if loss is not softmax_cross_entropy or not todo:
        return
    if stacked:
        params = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], jnp.result_type(a)), params)
    x = next(iter(todo.values())).x
    out = jax.eval_shape(
        lambda p, x: layer.forward(p, x, key=None, train=False)[0], params, jax.ShapeDtypeStruct(x.shape, x.dtype)
    )
    if len(out.shape) != 2:
        return  # the loss itself refuses logits of another rank, with its own message
    classes = int(out.shape[1])
    for name, ds in todo.items():
        reason = f"but the model has {classes} outputs (classes); softmax_cross_entropy needs them"
        check_label_range(np.asarray(ds.y), classes, f"{name} has", reason)


def evaluate(
    layer: Layer, loss: Loss, params: Params, data: Any, *, accuracy: Any = "auto", batch_size: int | None = None
) -> tuple[float, float | None]:
    """Mean loss and accuracy (None for regression) of ``params`` on ``data``, in eval mode.

    The loss is (1/N) Σ_chunks n_chunk · L_chunk over chunks of ``batch_size`` rows (one chunk when None),
    which equals the loss of the whole set in one batch; the accuracy is averaged the same way.

    Args:
        layer: the model, run with ``train=False`` (dropout off, BatchNorm on its running statistics).
        loss: a :class:`fnnet.Loss`, e.g. ``fn.softmax_cross_entropy``.
        params: the model's params.
        data: a :class:`fnnet.data.Dataset` or an ``(x, y)`` pair.
        accuracy: ``"auto"`` (see the module docstring), None, or a function ``(pred, y) -> fraction``.
        batch_size: rows per chunk, a positive integer, or None for the whole set at once.

    Returns:
        ``(loss, accuracy)`` as Python floats; accuracy is None when there is none to compute.

    Raises:
        ValueError: a bad ``batch_size`` or ``accuracy``, empty or non-finite data, or integer labels beyond
            the model's number of outputs.
    """
    ds = validate(data, "data")
    if batch_size is not None and not (is_int(batch_size) and batch_size > 0):
        raise ValueError(f"evaluate: batch_size must be a positive integer or None, got {batch_size!r}")
    check_labels(layer, loss, params, {"data": ds})
    acc_fn = accuracy_fn(accuracy, loss, ds.y)
    v, a = jax.jit(make_eval(layer, loss, acc_fn, batch_size))(params, jnp.asarray(ds.x), jnp.asarray(ds.y))
    return float(v), (float(a) if acc_fn else None)
