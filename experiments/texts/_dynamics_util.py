"""Small helpers shared by the dynamics experiments (rnn_bptt, dead_relu, loss_landscape)."""

from __future__ import annotations

import jax
import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation with average ranks for ties; NaN when either side is constant."""

    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for val in np.unique(v):  # average the ranks of ties
            r[v == val] = r[v == val].mean()
        return r

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def key_tree(key, tree):
    """One fresh PRNG key per leaf of ``tree``, in a pytree of the same structure."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, max(len(leaves), 1)))[: len(leaves)])


def round_sig(x, digits: int) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits (float64), elementwise; NaN and ±inf pass through.

    Multi-threaded XLA CPU kernels may differ in the last bits between runs; rounding the reported
    values keeps metrics.json bit-identical and makes values equal up to rounding tie exactly.
    """
    a = np.asarray(x, np.float64)
    finite = np.isfinite(a) & (a != 0)
    scale = np.where(finite, 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(np.where(finite, a, 1.0))))), 1.0)
    return np.where(finite, np.round(a * scale) / scale, a)
