"""MultiHeadAttention: forward and hand-written backward against a naive reference, jax.grad and PyTorch;
masks (causal, key padding, fully masked rows); the blocked form against the dense one; the mask passed
through the combinators and the gradient functions; errors.

Tolerances: float64 comparisons at 1e-10 relative (the rules are exact; only the order of sums differs);
float32 blocked-vs-dense at 2e-5 relative (the online softmax rescales partial sums, so roundings differ).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import DTypeError, ShapeError
from fnnet.layers.attention import (
    CAUSAL_SPLIT_MIN_T,
    DEFAULT_BLOCK,
    DENSE_MAX_T,
    attention_backward,
    attention_forward,
    choose_block,
)
from tests._helpers import normals, rel

TOL64 = 1e-10
TOL32 = 2e-5


def naive_attention(params, x, heads, causal=False, mask=None):
    """softmax(Q Kᵀ/√d_head + M) V per head, then Wo, written with T × T arrays in the plainest way."""
    B, T, d = x.shape
    dh = d // heads

    def proj(w, b):
        return (x @ params[w] + params[b][None, None, :]).reshape(B, T, heads, dh).transpose(0, 2, 1, 3)

    q, k, v = proj("Wq", "bq"), proj("Wk", "bk"), proj("Wv", "bv")
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
    ok = jnp.ones((B, 1, T, T), bool)
    if causal:
        ok = ok & jnp.tril(jnp.ones((T, T), bool))[None, None]
    if mask is not None:
        ok = ok & mask[:, None, None, :]
    p = jnp.where(ok, jax.nn.softmax(jnp.where(ok, s, -1e30), axis=-1), 0.0)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
    return o @ params["Wo"] + params["bo"][None, None, :]


def setup(key, B, T, d, heads, dtype, **kw):
    layer = fn.MultiHeadAttention(heads, **kw)
    _, params = layer.init(key, (T, d), dtype)
    # nonzero biases, so that their gradients and their effect on the scores are exercised
    names = sorted(params)
    extra = normals(jax.random.fold_in(key, 1), [params[n].shape for n in names] + [(B, T, d), (B, T, d)], dtype)
    params = {n: params[n] + (0.3 * e if n.startswith("b") else 0.0) for n, e in zip(names, extra)}
    return layer, params, extra[-2], extra[-1]


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_grads_close(a, b, tol: float) -> None:
    """Per leaf, ‖a − b‖ ≤ tol · (the largest leaf norm): dbk is exactly 0 in exact arithmetic (adding
    q_i · bk to every score of row i does not change its softmax), so it holds only rounding."""
    a, b = _flat(a), _flat(b)
    assert set(a) == set(b)
    scale = max(float(np.linalg.norm(np.asarray(v, np.float64))) for v in b.values())
    for n in b:
        err = float(np.linalg.norm(np.asarray(a[n], np.float64) - np.asarray(b[n], np.float64)))
        assert err <= tol * scale, (n, err, scale)


MASK = np.array([[True, True, False, True, True, False, True], [True, False, True, True, True, True, False]])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [None, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_naive_reference_and_jax_grad(key, causal, block, masked):
    with jax.enable_x64(True):
        layer, params, x, dy = setup(key, 2, 7, 8, 2, jnp.float64, causal=causal, block_size=block)
        mask = jnp.asarray(MASK) if masked else None
        y, cache = layer.forward(params, x, mask=mask)
        assert rel(y, naive_attention(params, x, 2, causal, mask)) < TOL64
        grads, dx = layer.backward(params, cache, dy)
        ref = jax.grad(lambda p, x: jnp.sum(naive_attention(p, x, 2, causal, mask) * dy), (0, 1))(params, x)
        auto = jax.grad(lambda p, x: jnp.sum(layer.forward(p, x, mask=mask)[0] * dy), (0, 1))(params, x)
        assert_grads_close(grads, ref[0], TOL64)
        assert_grads_close(auto[0], ref[0], TOL64)
        assert rel(dx, ref[1]) < TOL64
        # the key bias cannot change a row's softmax: its rule is exactly 0, the references only rounding
        np.testing.assert_array_equal(np.asarray(grads["bk"]), 0.0)
        assert float(jnp.linalg.norm(ref[0]["bk"])) < TOL64 * float(jnp.linalg.norm(ref[0]["bq"]))


@pytest.mark.parametrize("causal", [False, True])
def test_matches_torch_scaled_dot_product_attention(key, causal):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    B, H, T, dh = 2, 2, 6, 3
    with jax.enable_x64(True):
        q, k, v, do = normals(key, [(B, H, T, dh)] * 4, jnp.float64)
        mask = jnp.asarray(MASK[:, :T]) if not causal else None
        o, lse = attention_forward(q, k, v, key_mask=mask, causal=causal)
        dq, dk, dv = attention_backward(q, k, v, o, lse, do, key_mask=mask, causal=causal)
    tq, tk, tv = (torch.tensor(np.asarray(a), requires_grad=True) for a in (q, k, v))
    attn_mask = None if mask is None else torch.tensor(np.asarray(mask))[:, None, None, :]
    to = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=attn_mask, is_causal=causal)
    to.backward(torch.tensor(np.asarray(do)))
    assert rel(o, to.detach().numpy()) < TOL64
    for mine, theirs in ((dq, tq), (dk, tk), (dv, tv)):
        assert rel(mine, theirs.grad.numpy()) < TOL64


@pytest.mark.parametrize("block", [None, 2])
def test_fully_masked_rows_give_bias_and_no_gradient(key, block):
    """Sequence 1 is all padding (every row fully masked); with causal attention and a left-padded
    sequence 0, its first two query rows are fully masked too. Those rows output bo and pass no gradient."""
    with jax.enable_x64(True):
        layer, params, x, dy = setup(key, 2, 5, 4, 2, jnp.float64, causal=True, block_size=block)
        mask = jnp.asarray([[False, False, True, True, True], [False] * 5])
        y, cache = layer.forward(params, x, mask=mask)
        empty = np.array([[True, True, False, False, False], [True] * 5])
        np.testing.assert_array_equal(np.asarray(y)[empty], np.broadcast_to(params["bo"], (int(empty.sum()), 4)))
        # an upstream gradient only on the fully masked rows reaches nothing but bo
        dy_empty = jnp.where(jnp.asarray(empty)[..., None], dy, 0.0)
        grads, dx = layer.backward(params, cache, dy_empty)
        for n in params:
            expect = np.asarray(jnp.sum(dy_empty, axis=(0, 1))) if n == "bo" else 0.0
            np.testing.assert_array_equal(np.asarray(grads[n]), np.broadcast_to(expect, grads[n].shape), err_msg=n)
        np.testing.assert_array_equal(np.asarray(dx), 0.0)
        # and through jax.grad of the same forward: finite, and the same
        auto = jax.grad(lambda p, x: jnp.sum(layer.forward(p, x, mask=mask)[0] * dy), (0, 1))(params, x)
        grads, dx = layer.backward(params, cache, dy)
        for leaf in jax.tree_util.tree_leaves((auto, grads, dx, y)):
            assert np.all(np.isfinite(np.asarray(leaf)))
        assert_grads_close(grads, auto[0], TOL64)
        assert rel(dx, auto[1]) < TOL64


@pytest.mark.parametrize("T, block", [(7, 3), (10, 4), (9, 9)])
def test_blocked_equals_dense_for_any_length(key, T, block):
    """Tiles that do not divide T (the last tile padded with masked keys) give the dense result."""
    mask = jnp.asarray(np.arange(2 * T).reshape(2, T) % 4 != 1)
    dense, params, x, dy = setup(key, 2, T, 8, 2, jnp.float32, causal=True, block_size=T)
    blocked = fn.MultiHeadAttention(2, causal=True, block_size=block)
    y_d, c_d = dense.forward(params, x, mask=mask)
    y_b, c_b = blocked.forward(params, x, mask=mask)
    assert rel(y_b, y_d) < TOL32
    (g_d, dx_d), (g_b, dx_b) = dense.backward(params, c_d, dy), blocked.backward(params, c_b, dy)
    assert_grads_close(g_b, g_d, TOL32)
    assert rel(dx_b, dx_d) < TOL32


def test_long_causal_scan_equals_dense(key):
    """Past DENSE_MAX_T a causal sweep is the scan over key tiles, whose backward lays each tile's scores
    out transposed, (keys, queries): in float64 it gives the dense result, with a padded last tile, a key
    mask and fully masked rows (batch 0's first three queries see only masked keys: O = 0, no gradient)."""
    T, block = DENSE_MAX_T + 44, 64
    with jax.enable_x64(True):
        q, k, v, do = (jax.random.normal(kk, (2, 2, T, 4), jnp.float64) for kk in jax.random.split(key, 4))
        mask = np.ones((2, T), bool)
        mask[0, :3] = False
        mask[1, 5::7] = False
        mask = jnp.asarray(mask)
        o_d, lse_d = attention_forward(q, k, v, key_mask=mask, causal=True)
        o_b, lse_b = attention_forward(q, k, v, key_mask=mask, causal=True, block=block)
        assert rel(o_b, o_d) < TOL64 and rel(lse_b, lse_d) < TOL64
        dense = attention_backward(q, k, v, o_d, lse_d, do, key_mask=mask, causal=True)
        blocked = attention_backward(q, k, v, o_b, lse_b, do, key_mask=mask, causal=True, block=block)
        for a, b in zip(blocked, dense):
            assert rel(a, b) < TOL64
        np.testing.assert_array_equal(np.asarray(o_b[0, :, :3]), 0.0)
        np.testing.assert_array_equal(np.asarray(blocked[0][0, :, :3]), 0.0)  # dQ of the empty rows
        np.testing.assert_array_equal(np.asarray(blocked[1][0, :, :3]), 0.0)  # dK of the masked keys


def _all_shapes(jaxpr) -> list[tuple[int, ...]]:
    """The shape of every value a jaxpr computes, sub-jaxprs (scan bodies) included."""
    out = []
    for eqn in jaxpr.eqns:
        out += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")]
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    out += _all_shapes(inner)
                elif hasattr(sub, "eqns"):
                    out += _all_shapes(sub)
    return out


def test_blocked_form_never_holds_a_T_by_T_array(key):
    """The manual gradient of the blocked layer computes no value of B·H·T² elements (a T × T array per
    head); the dense form does, and so does autodiff of the same blocked forward (it stacks every tile of P)."""
    T, d = 48, 8
    x = jax.random.normal(key, (1, T, d))
    mask = jnp.ones((1, T), bool)

    def shapes(source, block, causal=True):
        net = fn.serial(fn.MultiHeadAttention(2, causal=causal, block_size=block))
        _, params = net.init(key, (T, d))
        f = fn.grad.GRAD_SOURCES[source](net, fn.mse)
        return _all_shapes(jax.make_jaxpr(lambda p, x: f(p, x, x, mask=mask))(params, x).jaxpr)

    def square(shapes):
        return [s for s in shapes if math.prod(s) >= 2 * T * T]  # B = 1, H = 2

    assert square(shapes("manual", 16)) == []  # causal: the triangle of tiles
    assert square(shapes("manual", 16, causal=False)) == []  # the scan over tiles
    assert square(shapes("manual", None))  # dense: one tile of all T keys
    assert square(shapes("autodiff", 16, causal=False))  # the scan's stacked tiles of P: (3, 1, 2, T, 16)


def test_default_picks_blocked_by_length():
    assert choose_block(DENSE_MAX_T, None) == DENSE_MAX_T
    assert choose_block(4 * DENSE_MAX_T, None) < 4 * DENSE_MAX_T
    assert choose_block(10, 4) == 4 and choose_block(10, 64) == 10
    # causal: two tiles from CAUSAL_SPLIT_MIN_T on, so the triangle skips a quarter of the scores
    assert choose_block(DENSE_MAX_T, None, causal=True) == DENSE_MAX_T // 2
    assert choose_block(CAUSAL_SPLIT_MIN_T - 1, None, causal=True) == CAUSAL_SPLIT_MIN_T - 1
    assert choose_block(4 * DENSE_MAX_T, None, causal=True) == DEFAULT_BLOCK
    assert choose_block(CAUSAL_SPLIT_MIN_T, 8, causal=True) == 8


def _dot_flops(jaxpr) -> int:
    """2 · multiply-adds of every dot_general a jaxpr runs, a scan's body counted once per iteration."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                total += _dot_flops(inner) * eqn.params.get("length", 1)
    return total


@pytest.mark.parametrize("T, block", [(48, 16), (50, 16), (48, 48)])
def test_causal_tiles_skip_the_masked_scores(key, T, block):
    """The causal sweep multiplies only the tiles' rows that may attend a key of the tile: the forward and
    backward's products are (n + 1)/(2n) of those without the mask for n tiles (a padded last tile
    counted in full), and the same in the dense form (n = 1). Its results are the dense form's (above)."""
    q, k, v, do = (jax.random.normal(kk, (1, 2, T, 8)) for kk in jax.random.split(key, 4))

    def flops(causal):
        def f(q, k, v, do):
            o, lse = attention_forward(q, k, v, causal=causal, block=block)
            return attention_backward(q, k, v, o, lse, do, causal=causal, block=block)

        return _dot_flops(jax.make_jaxpr(f)(q, k, v, do).jaxpr)

    n = -(-T // block)
    rows = sum(T - t * block for t in range(n))  # the query rows each tile multiplies, summed
    assert flops(True) / flops(False) == pytest.approx(rows / (n * T), rel=1e-9)
    assert n == 1 or rows / (n * T) <= (n + 1) / (2 * n)


def test_mask_changes_the_output_only_where_it_should(key):
    """Masking key 3 changes every row (it was attended), but leaves a causal row before it alone."""
    layer, params, x, _ = setup(key, 1, 6, 4, 2, jnp.float32, causal=True)
    mask = jnp.asarray([[True, True, True, False, True, True]])
    y0, _ = layer.forward(params, x)
    y1, _ = layer.forward(params, x, mask=mask)
    np.testing.assert_allclose(np.asarray(y1)[0, :3], np.asarray(y0)[0, :3], rtol=1e-6)
    assert np.all(np.abs(np.asarray(y1 - y0)[0, 3:]).max(axis=-1) > 1e-4)


def test_mask_passes_through_serial_residual_and_value_and_grad(key):
    net = fn.serial(fn.Dense(8), fn.residual(fn.MultiHeadAttention(2, causal=False, block_size=3)), fn.Tanh())
    assert fn.core.takes_mask(net)
    with jax.enable_x64(True):
        _, params = net.init(key, (7, 5), jnp.float64)
        x, t = normals(key, [(2, 7, 5), (2, 7, 8)], jnp.float64)
        mask = jnp.asarray(MASK)
        out = {s: jax.jit(g(net, fn.mse))(params, x, t, mask=mask) for s, g in fn.grad.GRAD_SOURCES.items()}
        plain = fn.value_and_grad(net, fn.mse)(params, x, t)
        assert abs(float(out["manual"][0] - plain[0])) > 1e-6  # the mask reached the attention
        for s in ("autodiff", "custom_vjp"):
            assert abs(float(out[s][0] - out["manual"][0])) < 1e-12
            assert_grads_close(out[s][1], out["manual"][1], TOL64)
        y = fn.custom_vjp(net)(params, x, None, mask)
        np.testing.assert_allclose(np.asarray(y), np.asarray(net.forward(params, x, mask=mask)[0]), rtol=1e-12)


def test_layers_without_a_mask_are_unchanged_and_refuse_one(key):
    net = fn.serial(fn.Dense(3), fn.Relu())
    assert not fn.core.takes_mask(net) and not fn.core.takes_mask(fn.residual(fn.Dense(4)))
    _, params = net.init(key, (4,))
    x, t = jax.random.normal(key, (2, 4)), jax.random.normal(key, (2, 3))
    loss, _ = fn.value_and_grad(net, fn.mse)(params, x, t)
    assert np.isfinite(float(loss))
    mask = jnp.ones((2, 4), bool)
    with pytest.raises(TypeError, match="takes no mask"):
        fn.value_and_grad(net, fn.mse)(params, x, t, mask=mask)
    with pytest.raises(TypeError, match="takes no mask"):
        fn.autodiff_value_and_grad(net, fn.mse)(params, x, t, mask=mask)
    with pytest.raises(TypeError, match="takes no mask"):
        net.forward(params, x, mask=mask)
    with pytest.raises(TypeError, match="takes no mask"):
        fn.residual(fn.Dense(4)).forward(fn.Dense(4).init(key, (4,))[1], x, mask=mask)


def test_errors(key):
    with pytest.raises(ValueError, match="divisible by num_heads"):
        fn.MultiHeadAttention(3).init(key, (5, 8))
    layer = fn.MultiHeadAttention(2)
    _, params = layer.init(key, (5, 8))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        fn.MultiHeadAttention(3).forward(params, jnp.zeros((1, 5, 8)))
    x = jax.random.normal(key, (2, 5, 8))
    with pytest.raises(DTypeError, match="boolean"):
        layer.forward(params, x, mask=jnp.ones((2, 5), jnp.int32))
    with pytest.raises(ShapeError, match=r"\(B, T\) = \(2, 5\).*got \(2, 4\)"):
        layer.forward(params, x, mask=jnp.ones((2, 4), bool))
    with pytest.raises(ShapeError, match="expected inputs"):
        layer.forward(params, x[:, :, :6])
    with pytest.raises(ShapeError, match=r"\(T, d_model\)"):
        layer.init(key, (8,))
    for bad in (0, 2.0, "4"):
        with pytest.raises(ValueError, match="num_heads"):
            fn.MultiHeadAttention(bad)
    with pytest.raises(ValueError, match="block_size"):
        fn.MultiHeadAttention(2, block_size=0)
