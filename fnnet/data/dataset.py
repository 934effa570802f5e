"""The dataset type and its checks: :class:`Dataset`, :func:`validate`, the one label-range check, helpers.

The leaf of :mod:`fnnet.data`: it imports nothing else of the package.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.core import Array, is_concrete, is_int

__all__ = ["Dataset", "batches", "check_label_range", "one_hot", "standardize", "validate"]


class Dataset(NamedTuple):
    """Inputs and targets with the batch axis first."""

    x: Any  # (N, ...) float32 inputs
    y: Any  # (N,) int32 class labels, or (N, k) float32 regression targets


def validate(ds: Any, name: str = "dataset", num_classes: int | None = None) -> Dataset:
    """Check a dataset and return it as a :class:`Dataset`; raise ``ValueError`` naming the problem.

    Checks: a pair ``(x, y)``; at least one example; the same N; float inputs without NaN/Inf;
    integer labels ``(N,)`` in ``[0, num_classes)`` (when given, and never negative) or finite float
    targets. Integer (or bool) inputs are refused, not cast: every layer computes in floats, and an
    integer ``x`` is most often a mix-up (labels or raw pixels passed as inputs); convert explicitly,
    e.g. ``x.astype(np.float32) / 255``. Nested lists are read as NumPy arrays.
    """
    if not (isinstance(ds, tuple) and len(ds) == 2):
        raise ValueError(f"{name} must be a pair (x, y) such as fnnet.data.Dataset, got {type(ds).__name__}")
    arrays = []
    for what, a in (("inputs x", ds[0]), ("targets y", ds[1])):
        if not hasattr(a, "dtype"):
            try:
                a = np.asarray(a)
            except ValueError as e:
                raise ValueError(f"{name}: its {what} cannot be read as one array ({e})") from None
        if np.dtype(a.dtype).kind in "OSUVMm" and not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(f"{name} needs numeric {what}, got an array of dtype {a.dtype}")
        arrays.append(a)
    x, y = arrays
    xs, ys = np.shape(x), np.shape(y)
    if len(xs) < 1 or len(ys) < 1:
        raise ValueError(f"{name} needs a batch axis on x and y, got shapes {xs} and {ys}")
    if xs[0] == 0:
        raise ValueError(f"{name} is empty (x has shape {xs})")
    if xs[0] != ys[0]:
        raise ValueError(f"{name} has {xs[0]} inputs but {ys[0]} targets")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"{name} needs float inputs, got {jnp.result_type(x)}; e.g. x.astype(np.float32)")
    if not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name} has NaN or Inf in its inputs")
    if jnp.issubdtype(jnp.result_type(y), jnp.integer):
        if len(ys) != 1:
            raise ValueError(f"{name} needs integer labels of shape ({xs[0]},), got {ys}")
        check_label_range(y, num_classes, f"{name} has")
    elif jnp.issubdtype(jnp.result_type(y), jnp.floating):
        if not bool(np.all(np.isfinite(np.asarray(y)))):
            raise ValueError(f"{name} has NaN or Inf in its targets")
    else:
        raise ValueError(f"{name} needs integer labels or float targets, got {jnp.result_type(y)}")
    return Dataset(x, y)


def check_label_range(
    labels: Any, num_classes: int | None, who: str = "labels have", reason: str | None = None
) -> None:
    """The one label-range check of fnnet: concrete integer labels must lie in ``[0, num_classes)``.

    ``num_classes=None`` checks only that no label is negative. Raises ``ValueError``
    "``<who>`` label ``<bad>``, out of range for C classes (labels must lie in [0, C − 1])";
    ``reason`` replaces "out of range for C classes". Traced labels cannot be checked here (the
    losses keep their own in-trace check); empty label arrays pass.
    """
    if not np.size(labels):
        return
    lo, hi = int(np.min(labels)), int(np.max(labels))
    if lo >= 0 and (num_classes is None or hi < num_classes):
        return
    bad = lo if lo < 0 else hi
    if num_classes is None:
        raise ValueError(f"{who} label {bad}, negative (labels must lie in [0, ...))")
    why = reason or f"out of range for {num_classes} classes"
    raise ValueError(f"{who} label {bad}, {why} (labels must lie in [0, {num_classes - 1}])")


def standardize(x: Any, mean: Any = None, std: Any = None, *, eps: float = 1e-8) -> tuple[Any, Any, Any]:
    """z = (x − μ) / (σ + ε) per feature (over axis 0, kept as a leading 1): ``(z, μ, σ)``.

    Fit on the training set, then reuse its statistics: ``xtr, m, s = standardize(xtr)``;
    ``xte, _, _ = standardize(xte, m, s)``.
    """
    if mean is None:
        mean = x.mean(axis=0, keepdims=True)
    if std is None:
        std = x.std(axis=0, keepdims=True)
    return (x - mean) / (std + eps), mean, std


def one_hot(labels: Any, num_classes: int, dtype: Any = jnp.float32) -> Array:
    """(N,) integer labels -> (N, C) rows with a single 1 at the label."""
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"one_hot needs num_classes to be an integer >= 1, got {num_classes!r}")
    if is_concrete(labels):
        labels = np.asarray(labels)  # values are checked below; traced labels pass unchecked
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(f"one_hot needs integer labels, got {jnp.result_type(labels)}")
    if is_concrete(labels):
        check_label_range(labels, num_classes, "one_hot got")
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def batches(ds: Dataset, batch_size: int, key: Array | None = None, drop_remainder: bool = True) -> Iterator[Dataset]:
    """Python iterator over minibatches (shuffled with a key), for hand-written loops.

    :func:`fnnet.train` does not use it: it batches inside its compiled epoch.
    """
    n = int(np.shape(ds.x)[0])
    if not is_int(batch_size) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an integer in [1, {n}] for {n} examples, got {batch_size!r}")
    order = np.arange(n) if key is None else np.asarray(jax.random.permutation(key, n))
    stop = n - n % batch_size if drop_remainder else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield Dataset(ds.x[idx], ds.y[idx])
