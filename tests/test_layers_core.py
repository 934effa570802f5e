"""Dense, Flatten, serial and residual: the rules, shapes, keys and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn


def test_dense_rules_are_the_textbook_ones(key):
    layer = fn.Dense(3)
    _, p = layer.init(key, (4,))
    x = jax.random.normal(jax.random.key(1), (5, 4))
    dy = jax.random.normal(jax.random.key(2), (5, 3))
    y, cache = layer.forward(p, x)
    np.testing.assert_allclose(y, x @ p["W"] + p["b"][None], rtol=1e-6)
    g, dx = layer.backward(p, cache, dy)
    np.testing.assert_allclose(g["W"], x.T @ dy, rtol=1e-6)
    np.testing.assert_allclose(g["b"], dy.sum(0), rtol=1e-6)
    np.testing.assert_allclose(dx, dy @ p["W"].T, rtol=1e-6)


def test_dense_takes_extra_leading_axes(key):
    layer = fn.Dense(3)
    out_shape, p = layer.init(key, (7, 4))
    assert out_shape == (7, 3)
    x = jax.random.normal(jax.random.key(1), (2, 7, 4))
    y, cache = layer.forward(p, x)
    g, dx = layer.backward(p, cache, jnp.ones_like(y))
    auto = jax.grad(lambda q, v: layer.forward(q, v)[0].sum(), argnums=(0, 1))(p, x)
    np.testing.assert_allclose(g["W"], auto[0]["W"], rtol=1e-5)
    np.testing.assert_allclose(g["b"], auto[0]["b"], rtol=1e-5)
    np.testing.assert_allclose(dx, auto[1], rtol=1e-5)


def test_dense_shape_error_names_layer_and_shapes(key):
    layer = fn.Dense(10)
    _, p = layer.init(key, (64,))
    with pytest.raises(fn.ShapeError, match=r"Dense\(10\) expected inputs \(\.\.\., 64\), got \(32, 50\)"):
        layer.forward(p, jnp.ones((32, 50)))
    with pytest.raises(fn.DTypeError, match=r"Dense\(10\) needs a floating-point input, got dtype int32"):
        layer.forward(p, jnp.ones((32, 64), jnp.int32))
    with pytest.raises(ValueError, match="positive integer out_dim"):
        fn.Dense(0)


def test_dtype_follows_params_and_inputs(key):
    with jax.enable_x64(True):
        layer = fn.serial(fn.Dense(3), fn.Tanh())
        _, p = layer.init(key, (4,), jnp.float64)
        y, _ = layer.forward(p, jnp.ones((2, 4), jnp.float64))
        assert y.dtype == jnp.float64 and p[0]["W"].dtype == jnp.float64


def test_flatten_roundtrip(key):
    layer = fn.Flatten()
    out_shape, _ = layer.init(key, (2, 3, 4))
    assert out_shape == (24,)
    x = jax.random.normal(key, (5, 2, 3, 4))
    y, cache = layer.forward((), x)
    assert y.shape == (5, 24)
    _, dx = layer.backward((), cache, y)
    np.testing.assert_array_equal(dx, x)
    assert cache.size == 0  # the input shape travels as a zero-size token


def test_serial_splits_keys_among_children(key):
    net = fn.serial(fn.Dense(8), fn.Dense(8))
    _, p = net.init(key, (8,))
    assert not np.allclose(p[0]["W"], p[1]["W"])  # different keys per child
    _, p2 = net.init(key, (8,))
    np.testing.assert_array_equal(p[0]["W"], p2[0]["W"])  # same key, same draw


def test_serial_refuses_an_uncalled_constructor():
    with pytest.raises(TypeError, match=r"call constructors \(fn.Relu\(\), not fn.Relu\)"):
        fn.serial(fn.Dense(3), fn.Relu)


def test_residual_adds_identity_path(key):
    inner = fn.serial(fn.Dense(4), fn.Tanh())
    net = fn.residual(inner)
    _, p = net.init(key, (4,))
    x = jax.random.normal(key, (3, 4))
    y, cache = net.forward(p, x)
    np.testing.assert_allclose(y, x + inner.forward(p, x)[0], rtol=1e-6)
    _, dx = net.backward(p, cache, jnp.ones_like(y))
    _, dx_inner = inner.backward(p, inner.forward(p, x)[1], jnp.ones_like(y))
    np.testing.assert_allclose(dx, 1.0 + dx_inner, rtol=1e-6)
    with pytest.raises(fn.ShapeError, match="residual needs F to keep the shape"):
        fn.residual(fn.Dense(3)).init(key, (4,))
