"""``summary(layer, in_shape)``: a table of a model's layers, output shapes and parameter counts.

Shapes and counts come from ``layer.init`` under ``jax.eval_shape``: nothing is drawn or computed,
so a model of any size is summarized at once, and an input shape the model cannot take raises the
layer's own error (naming it), as ``init`` does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fnnet.core import Layer, Shape, annotate, prod, shape_str
from fnnet.layers.combinators import parts
from fnnet.optim import trainable_mask


def _init_shapes(layer: Layer, in_shape: Shape, dtype: Any) -> tuple[Shape, Any]:
    """(out_shape, params as ShapeDtypeStructs) of ``layer.init`` on ``in_shape``, without drawing anything."""
    out: list[Shape] = []

    def init(key):
        shape, params = layer.init(key, in_shape, dtype)
        out.append(tuple(int(d) for d in shape))
        return params

    params = jax.eval_shape(init, jax.random.key(0))
    return out[0], params


def _counts(params: Any) -> tuple[int, int]:
    """(trained entries, buffer entries) of a params pytree: buffers are the leaves under ``"state"``."""
    leaves = jax.tree_util.tree_leaves(params)
    mask = jax.tree_util.tree_leaves(trainable_mask(params))
    trained = sum(prod(leaf.shape) for leaf, on in zip(leaves, mask) if on)
    return trained, sum(prod(leaf.shape) for leaf in leaves) - trained


def _rows(layer: Layer, in_shape: Shape, dtype: Any, depth: int, rows: list) -> Shape:
    """Append the rows of ``layer`` (and of its children, one level deeper) to ``rows``; return its out_shape."""
    combinator = parts(layer)
    if combinator is None:
        out_shape, params = _init_shapes(layer, in_shape, dtype)
        rows.append((depth, layer.label, out_shape, *_counts(params)))
        return out_shape
    kind, children = combinator
    at = len(rows)
    rows.append(None)  # the combinator's own row, filled in once its output shape is known
    shape = in_shape
    for i, child in enumerate(children):
        where = f"serial layer {i}, " if kind == "serial" else "residual branch, "  # as the combinators say
        try:
            shape = _rows(child, shape if kind == "serial" else in_shape, dtype, depth + 1, rows)
        except (ValueError, TypeError) as e:
            raise annotate(e, where) from None
    out_shape = shape if kind == "serial" else tuple(in_shape)
    rows[at] = (depth, kind, out_shape, None, None)
    return out_shape


def summary(layer: Layer, in_shape: Shape, dtype: Any = jnp.float32) -> str:
    """A table of ``layer``'s layers with their output shapes and parameter counts, and the totals.

    Combinators (``serial``, ``residual``) are opened: their children are listed below them, indented,
    and their own row shows only the output shape. ``params`` counts the trained entries of each
    layer, ``buffers`` the non-trainable ones (the leaves under ``"state"``, such as BatchNorm's
    running statistics). Shapes exclude the batch axis, as ``init``'s do::

        print(fn.summary(fn.serial(fn.Dense(64), fn.Relu(), fn.Dense(10)), (784,)))

        layer         output shape   params   buffers
        input         (784,)
        serial        (10,)
          Dense(64)   (64,)          50,240         0
          Relu        (64,)               0         0
          Dense(10)   (10,)             650         0
        total                        50,890         0

    ``in_shape`` and ``dtype`` are those of ``layer.init``; nothing is drawn (``jax.eval_shape``).
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"summary needs a fnnet Layer such as fn.Dense(64), got {type(layer).__name__}")
    rows: list = []
    _rows(layer, tuple(in_shape), dtype, 0, rows)
    total = sum(r[3] for r in rows if r[3] is not None), sum(r[4] for r in rows if r[4] is not None)
    table = [("layer", "output shape", "params", "buffers"), ("input", shape_str(in_shape), "", "")]
    for depth, label, shape, trained, buffers in rows:
        counts = ("", "") if trained is None else (f"{trained:,}", f"{buffers:,}")
        table.append(("  " * depth + label, shape_str(shape), *counts))
    table.append(("total", "", f"{total[0]:,}", f"{total[1]:,}"))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}   {r[3]:>{widths[3]}}".rstrip() for r in table
    ]
    return "\n".join(lines)
