"""The attention benchmark's paired-query-tile candidate computes fnnet's attention: the comparison of
its speed in ``benchmarks/attention_pairing.py`` is between two rules for the same function."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

import fnnet as fn
from fnnet.layers import attention

_SPEC = importlib.util.spec_from_file_location(
    "attention_pairing", Path(__file__).parents[1] / "benchmarks" / "attention_pairing.py"
)
ap = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ap)


@pytest.mark.parametrize("T, block", [(96, 16), (100, 16), (40, 8)])
def test_paired_sweep_equals_the_dense_form(key, T, block):
    """Even (6) and odd (7, padded to 8) tile counts, a padded last tile, a key mask and fully masked
    rows: O, lse, dQ, dK and dV agree with fnnet's dense form to 1e-10 in float64."""
    assert ap.check(key, T, block) < 1e-10


def test_pairs_cover_the_causal_triangle_once():
    """Each pair's n + 1 slots are query tile p with key tiles 0..p and tile n − 1 − p with 0..n − 1 − p:
    over all pairs, every (query tile, key tile ≤ query tile) once and nothing else."""
    n, key_tiles, sides = ap._pair_plan(7 * 16, 16)
    assert n == 8 and key_tiles.shape == sides.shape == (4, 9)
    seen = [(int(p if s == 0 else n - 1 - p), int(k)) for p in range(n // 2) for k, s in zip(key_tiles[p], sides[p])]
    assert sorted(seen) == sorted((i, j) for i in range(n) for j in range(i + 1))


def test_patch_is_undone_and_the_layer_agrees(key):
    """Inside ``paired()`` the layer's hand-written gradient is fnnet's own rule's; afterwards fnnet is unchanged."""
    net = fn.serial(fn.MultiHeadAttention(2, causal=True, block_size=8))
    _, params = net.init(key, (40, 8))
    x, y = (jax.random.normal(k, (1, 40, 8)) for k in jax.random.split(key))
    base = fn.value_and_grad(net, fn.mse)(params, x, y)
    with ap.paired():
        pairs = jax.jit(fn.value_and_grad(net, fn.mse)).lower(params, x, y).compile()(params, x, y)
    assert attention.attention_forward is ap._FORWARD and attention.attention_backward is ap._BACKWARD
    for a, b in zip(jax.tree_util.tree_leaves(pairs), jax.tree_util.tree_leaves(base)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
