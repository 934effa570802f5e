"""Embedding and PositionalEmbedding: the scatter-add rule, integer ids without gradient, the poison policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import DTypeError, ShapeError


def _ids(key, shape, vocab):
    return jax.random.randint(key, shape, 0, vocab)


def test_forward_picks_the_rows_of_E(key):
    emb = fn.Embedding(7, 4)
    out_shape, params = emb.init(key, (5,))
    ids = _ids(jax.random.key(1), (3, 5), 7)
    y, _ = emb.forward(params, ids)
    assert out_shape == (5, 4) and y.shape == (3, 5, 4)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(params["E"])[np.asarray(ids)])


def test_backward_is_the_gradient_of_the_forward_and_repeated_ids_accumulate(key):
    with jax.enable_x64(True):
        emb = fn.Embedding(6, 3)
        _, params = emb.init(key, (8,), jnp.float64)
        ids = jnp.array([[2, 2, 5, 0, 2, 1, 5, 5], [3, 2, 2, 2, 0, 0, 1, 4]])
        dy = jax.random.normal(jax.random.key(2), (2, 8, 3), jnp.float64)
        y, cache = emb.forward(params, ids)
        grads, dx = emb.backward(params, cache, dy)
        auto = jax.grad(lambda p: jnp.sum(emb.forward(p, ids)[0] * dy))(params)
        assert dx is None
        np.testing.assert_allclose(grads["E"], auto["E"], rtol=1e-12, atol=1e-12)
        # row 2 occurs 6 times: its gradient is the sum of those 6 cotangents; unused rows get 0
        host_ids, host_dy = np.asarray(ids), np.asarray(dy)
        np.testing.assert_allclose(grads["E"][2], host_dy[host_ids == 2].sum(axis=0), rtol=1e-12)
        assert (host_ids == 2).sum() == 6
        used = np.zeros(6, bool)
        used[np.unique(host_ids)] = True
        assert np.all(np.asarray(grads["E"])[~used] == 0)


def test_custom_vjp_gives_the_ids_a_float0_cotangent_and_E_the_manual_rule(key):
    emb = fn.Embedding(5, 2)
    _, params = emb.init(key, (4,))
    ids = jnp.array([[0, 4, 4, 1]])
    dy = jax.random.normal(jax.random.key(3), (1, 4, 2))
    f = fn.custom_vjp(emb)
    y, vjp = jax.vjp(f, params, ids)
    d_params, d_ids = vjp(dy)
    assert d_ids.dtype == jax.dtypes.float0 and d_ids.shape == ids.shape
    manual, _ = emb.backward(params, emb.forward(params, ids)[1], dy)
    np.testing.assert_allclose(d_params["E"], manual["E"], rtol=1e-6)
    g = jax.grad(lambda p: jnp.sum(f(p, ids) * dy))(params)
    np.testing.assert_allclose(g["E"], manual["E"], rtol=1e-6)


def test_the_three_gradient_sources_agree_on_a_tiny_language_model(key):
    net = fn.serial(fn.Embedding(6, 4), fn.Dense(6))
    _, params = net.init(key, (5,))
    ids = _ids(jax.random.key(4), (2, 5), 6)
    labels = _ids(jax.random.key(5), (2, 5), 6)
    results = [src(net, fn.sequence_cross_entropy)(params, ids, labels) for src in fn.grad.GRAD_SOURCES.values()]
    (l0, g0), *rest = results
    for loss, grads in rest:
        np.testing.assert_allclose(loss, l0, rtol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(g0)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_jit_and_vmap_agree_with_eager(key):
    emb = fn.Embedding(9, 3)
    _, params = emb.init(key, (4,))
    ids = _ids(jax.random.key(6), (2, 3, 4), 9)
    dy = jax.random.normal(jax.random.key(7), (2, 3, 4, 3))

    def rule(i, c):
        return emb.backward(params, emb.forward(params, i)[1], c)[0]["E"]

    eager = sum(rule(ids[k], dy[k]) for k in range(2))
    np.testing.assert_allclose(jax.jit(lambda i, c: jax.vmap(rule)(i, c).sum(0))(ids, dy), eager, rtol=1e-6)


def test_float_ids_are_refused_naming_the_dtype(key):
    emb = fn.Embedding(5, 2)
    _, params = emb.init(key, (3,))
    with pytest.raises(DTypeError, match=r"Embedding\(5, 2\) needs integer token ids, got dtype float32"):
        emb.forward(params, jnp.array([[0.0, 1.0, 2.0]]))


@pytest.mark.parametrize("bad", [5, -1])
def test_out_of_range_ids_raise_eagerly(key, bad):
    emb = fn.Embedding(5, 2)
    _, params = emb.init(key, (3,))
    with pytest.raises(ValueError, match=rf"token id {bad}, out of range for a vocabulary of 5 .*\[0, 4\]"):
        emb.forward(params, jnp.array([[0, bad, 1]]))


def test_out_of_range_ids_under_jit_give_nan_rows_and_no_gradient(key):
    emb = fn.Embedding(5, 2)
    _, params = emb.init(key, (4,))
    ids = jnp.array([[1, 5, -1, 1]])
    y = jax.jit(lambda p, i: emb.forward(p, i)[0])(params, ids)
    # id 5 and id -1 (not wrapped around to the last row) are poisoned; the in-range ones are not
    assert np.all(np.isnan(np.asarray(y[0, 1:3]))) and np.all(np.isfinite(np.asarray(y[0, [0, 3]])))
    dy = jnp.ones((1, 4, 2))
    g = jax.jit(lambda p, i: emb.backward(p, emb.forward(p, i)[1], dy)[0])(params, ids)
    expected = np.zeros((5, 2))
    expected[1] = 2.0
    np.testing.assert_array_equal(g["E"], expected)


def test_constructor_and_params_errors_name_the_argument(key):
    with pytest.raises(ValueError, match="Embedding needs a positive integer vocab_size, got 0"):
        fn.Embedding(0, 3)
    with pytest.raises(ValueError, match="Embedding needs a positive integer dim, got '3'"):
        fn.Embedding(4, "3")
    emb = fn.Embedding(4, 3)
    with pytest.raises(ShapeError, match=r"params\['E'\] has shape \(5, 3\), expected \(4, 3\)"):
        emb.forward({"E": jnp.zeros((5, 3))}, jnp.array([[0]]))


def test_default_init_is_standard_normal_as_torch(key):
    """E ~ N(0, 1): 64 000 draws, the sample std within 0.02 of 1 (its own std is ≈ 0.003)."""
    _, params = fn.Embedding(1000, 64).init(key, (1,))
    E = np.asarray(params["E"])
    assert abs(E.mean()) < 0.02 and abs(E.std() - 1.0) < 0.02


# ----------------------------------------------------------------------------------------------


def test_positional_embedding_adds_P_and_its_rule_is_the_gradient(key):
    with jax.enable_x64(True):
        pe = fn.PositionalEmbedding(7)
        out_shape, params = pe.init(key, (4, 3), jnp.float64)
        assert out_shape == (4, 3) and params["P"].shape == (7, 3)
        x = jax.random.normal(jax.random.key(8), (2, 4, 3), jnp.float64)
        dy = jax.random.normal(jax.random.key(9), (2, 4, 3), jnp.float64)
        y, cache = pe.forward(params, x)
        np.testing.assert_allclose(y, x + params["P"][None, :4], rtol=1e-15)
        grads, dx = pe.backward(params, cache, dy)
        auto_p, auto_x = jax.grad(lambda p, xx: jnp.sum(pe.forward(p, xx)[0] * dy), argnums=(0, 1))(params, x)
        np.testing.assert_allclose(grads["P"], auto_p["P"], rtol=1e-12)
        np.testing.assert_allclose(dx, auto_x, rtol=1e-12)
        assert np.all(np.asarray(grads["P"][4:]) == 0)  # positions beyond T get no gradient


def test_positional_embedding_refuses_sequences_longer_than_max_len(key):
    pe = fn.PositionalEmbedding(3)
    with pytest.raises(ShapeError, match=r"length 4, longer than max_len = 3"):
        pe.init(key, (4, 2))
    _, params = pe.init(key, (3, 2))
    with pytest.raises(ShapeError, match=r"length 5, longer than max_len = 3"):
        pe.forward(params, jnp.zeros((1, 5, 2)))
    with pytest.raises(ShapeError, match=r"expected inputs \(batch, \*, 2\), got \(1, 3, 4\)"):
        pe.forward(params, jnp.zeros((1, 3, 4)))
