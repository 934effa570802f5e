"""transformer_block (Pre-LN and Post-LN) and gpt (untied and tied): forward against a plain jnp reference,
hand-written gradients against jax.grad, causality, the mask, errors.

Tolerances: float64 at 1e-10 relative (the rules are exact; only the order of sums differs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import ShapeError
from tests._helpers import normals, rel
from tests.test_attention import assert_grads_close, naive_attention

TOL64 = 1e-10


def _ln(p, x, eps=1e-5):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["gamma"][None, None, :] + p["beta"][None, None, :]


def _dense(p, x):
    return x @ p["W"] + p["b"][None, None, :]


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def reference_block(params, x, heads, prenorm, mask=None):
    """The block's equations, written out with jnp and the naive attention."""
    if prenorm:
        (ln1, attn), (ln2, w1, _, w2) = params
        h = x + naive_attention(attn, _ln(ln1, x), heads, True, mask)
        return h + _dense(w2, _gelu(_dense(w1, _ln(ln2, h))))
    attn, ln1, (w1, _, w2), ln2 = params
    h = _ln(ln1, x + naive_attention(attn, x, heads, True, mask))
    return _ln(ln2, h + _dense(w2, _gelu(_dense(w1, h))))


def _perturbed(key, params, dtype):
    """params with every leaf moved by 0.2·N(0, 1): nonzero biases, LayerNorm gains ≠ 1."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    extra = normals(key, [leaf.shape for leaf in leaves], dtype)
    return jax.tree_util.tree_unflatten(tree, [a + 0.2 * e for a, e in zip(leaves, extra)])


@pytest.mark.parametrize("prenorm", [True, False])
def test_block_matches_reference_and_autodiff(key, prenorm):
    blk = fn.transformer_block(8, 2, prenorm=prenorm, mlp_ratio=2)
    with jax.enable_x64(True):
        _, params = blk.init(key, (5, 8), jnp.float64)
        params = _perturbed(jax.random.fold_in(key, 1), params, jnp.float64)
        x, t = normals(jax.random.fold_in(key, 2), [(2, 5, 8), (2, 5, 8)], jnp.float64)
        mask = jnp.asarray([[True, True, True, False, False], [False, True, True, True, True]])
        y, _ = blk.forward(params, x, mask=mask)
        assert rel(y, reference_block(params, x, 2, prenorm, mask)) < TOL64
        (loss, grads) = fn.value_and_grad(blk, fn.mse)(params, x, t, mask=mask)
        # fn.mse: half the squared error summed over each example, averaged over the batch
        ref_loss = lambda p: 0.5 * jnp.mean(jnp.sum((reference_block(p, x, 2, prenorm, mask) - t) ** 2, (1, 2)))  # noqa: E731
        ref = jax.grad(ref_loss)(params)
        auto_loss, auto = fn.autodiff_value_and_grad(blk, fn.mse)(params, x, t, mask=mask)
        assert abs(float(loss - ref_loss(params))) < 1e-12 and abs(float(loss - auto_loss)) < 1e-12
        assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
        assert_grads_close(grads, ref, TOL64)
        assert_grads_close(auto, ref, TOL64)


def test_post_ln_output_is_normalized_and_pre_ln_is_not(key):
    """Post-LN ends with a LayerNorm, so (with γ = 1, β = 0 at init) each row has mean 0 and variance ≈ 1;
    Pre-LN's output is the residual stream x + ..., not normalized."""
    x = 3.0 * jax.random.normal(key, (2, 5, 8)) + 1.0
    for prenorm in (True, False):
        blk = fn.transformer_block(8, 2, prenorm=prenorm)
        _, params = blk.init(key, (5, 8))
        y, _ = blk.forward(params, x)
        var = np.asarray(jnp.var(y, axis=-1))
        if prenorm:
            assert np.abs(var - 1).max() > 0.5
        else:
            np.testing.assert_allclose(np.asarray(jnp.mean(y, axis=-1)), 0, atol=1e-5)
            np.testing.assert_allclose(var, 1, rtol=1e-3)


def test_block_is_causal(key):
    blk = fn.transformer_block(8, 2)
    _, params = blk.init(key, (6, 8))
    x = jax.random.normal(key, (1, 6, 8))
    y0, _ = blk.forward(params, x)
    y1, _ = blk.forward(params, x.at[0, 4].add(1.0))
    np.testing.assert_array_equal(np.asarray(y1[0, :4]), np.asarray(y0[0, :4]))
    assert float(jnp.abs(y1[0, 4:] - y0[0, 4:]).max()) > 1e-3


@pytest.mark.parametrize("tie", [False, True])
def test_gpt_gradients_match_autodiff(key, tie):
    net = fn.gpt(11, 8, 8, 2, 2, mlp_ratio=2, tie_weights=tie)
    assert fn.core.takes_mask(net)
    with jax.enable_x64(True):
        out_shape, params = net.init(key, (6,), jnp.float64)
        assert out_shape == (6, 11)
        ids = jax.random.randint(jax.random.fold_in(key, 1), (2, 6), 0, 11)
        labels = jax.random.randint(jax.random.fold_in(key, 2), (2, 6), 0, 11)
        logits, _ = net.forward(params, ids)
        assert logits.shape == (2, 6, 11) and logits.dtype == jnp.float64
        mask = jnp.asarray([[True] * 6, [True] * 4 + [False] * 2])
        loss, grads = fn.value_and_grad(net, fn.sequence_cross_entropy)(params, ids, labels, mask=mask)
        auto_loss, auto = fn.autodiff_value_and_grad(net, fn.sequence_cross_entropy)(params, ids, labels, mask=mask)
        assert abs(float(loss - auto_loss)) < 1e-12
        assert_grads_close(grads, auto, TOL64)
        if tie:
            assert "W" not in params[-1] and len(params) == 2 + 2 + 1  # embedding, positions, 2 blocks, final LN
            # the head's share of dE is there: without it the embedding gradient would differ
            body = fn.serial(*fn.layers.combinators.parts(net)[1])
            h, cache = body.forward(params, ids)
            dz = jax.grad(lambda z: fn.sequence_cross_entropy.forward(z, labels)[0])(h @ params[0]["E"].T)
            g_body, _ = body.backward(params, cache, dz @ params[0]["E"])
            assert rel(g_body[0]["E"], grads[0]["E"]) > 1e-3
        else:
            assert set(params[-1]) == {"W", "b"} and params[-1]["W"].shape == (8, 11)


def test_gpt_is_causal_and_checks_length(key):
    net = fn.gpt(7, 5, 8, 2, 1)
    _, params = net.init(key, (5,))
    ids = jnp.asarray([[1, 2, 3, 4, 5]])
    z0, _ = net.forward(params, ids)
    z1, _ = net.forward(params, ids.at[0, 3].set(6))
    np.testing.assert_array_equal(np.asarray(z1[0, :3]), np.asarray(z0[0, :3]))
    with pytest.raises(ShapeError, match="max_len"):
        net.forward(params, jnp.zeros((1, 6), jnp.int32))


def test_errors(key):
    with pytest.raises(ValueError, match="divisible by num_heads"):
        fn.transformer_block(10, 3)
    with pytest.raises(ValueError, match="mlp_ratio"):
        fn.transformer_block(8, 2, mlp_ratio=0)
    with pytest.raises(ShapeError, match=r"d_model=8.*\(T, 8\).*got \(5, 6\)"):
        fn.transformer_block(8, 2).init(key, (5, 6))
    for bad in dict(vocab_size=0), dict(max_len=-1), dict(num_layers=1.5):
        kw = dict(vocab_size=5, max_len=4, d_model=8, num_heads=2, num_layers=1) | bad
        with pytest.raises(ValueError, match=next(iter(bad))):
            fn.gpt(**kw)
