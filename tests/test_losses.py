"""Losses: conventions, fused rules, stability and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet as fn


def test_mse_convention_against_optax(key):
    pred = jax.random.normal(key, (8, 3))
    y = jax.random.normal(jax.random.key(1), (8, 3))
    value, cache = fn.mse.forward(pred, y)
    want = optax.l2_loss(pred, y).sum(axis=1).mean()  # ½(ŷ−y)² summed per example, batch mean
    np.testing.assert_allclose(value, want, rtol=1e-6)
    np.testing.assert_allclose(value, 0.5 * optax.squared_error(pred, y).sum(axis=1).mean(), rtol=1e-6)
    # per example δ = ŷ − y; the gradient of the batch mean divides by B
    np.testing.assert_allclose(fn.mse.backward(cache), (pred - y) / 8, rtol=1e-6)


def test_softmax_cross_entropy_matches_optax_for_labels_and_one_hot(key):
    z = jax.random.normal(key, (6, 5))
    labels = jnp.array([0, 4, 2, 2, 1, 3])
    v1, c1 = fn.softmax_cross_entropy.forward(z, labels)
    v2, c2 = fn.softmax_cross_entropy.forward(z, jax.nn.one_hot(labels, 5))
    want = optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()
    np.testing.assert_allclose(v1, want, rtol=1e-6)
    np.testing.assert_allclose(v2, want, rtol=1e-6)
    # fused rule: (p − y) / B
    p = jax.nn.softmax(z)
    np.testing.assert_allclose(fn.softmax_cross_entropy.backward(c1), (p - jax.nn.one_hot(labels, 5)) / 6, atol=1e-7)
    np.testing.assert_allclose(fn.softmax_cross_entropy.backward(c2), fn.softmax_cross_entropy.backward(c1))


def test_softmax_cross_entropy_stable_at_1e4():
    z = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    labels = jnp.array([1, 0])
    value, cache = fn.softmax_cross_entropy.forward(z, labels)
    grad = fn.softmax_cross_entropy.backward(cache)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, (2e4 + 2e4 + np.log(2)) / 2, rtol=1e-6)
    auto = jax.grad(lambda v: fn.softmax_cross_entropy.forward(v, labels)[0])(z)
    assert np.all(np.isfinite(auto))
    np.testing.assert_allclose(grad, auto, atol=1e-7)


def test_binary_cross_entropy_matches_optax_and_is_guarded(key):
    z = 5 * jax.random.normal(key, (7, 2))
    y = jax.random.bernoulli(jax.random.key(1), 0.5, (7, 2)).astype(jnp.float32)
    value, cache = fn.binary_cross_entropy.forward(z, y)
    np.testing.assert_allclose(value, optax.sigmoid_binary_cross_entropy(z, y).sum(1).mean(), rtol=1e-5)
    np.testing.assert_allclose(fn.binary_cross_entropy.backward(cache), (jax.nn.sigmoid(z) - y) / 7, atol=1e-7)
    big = jnp.array([[1e3, -1e3]])
    v, c = fn.binary_cross_entropy.forward(big, jnp.array([[0.0, 1.0]]))  # log(0) would appear naively
    assert np.isfinite(v) and float(v) == pytest.approx(2e3)
    assert np.all(np.isfinite(fn.binary_cross_entropy.backward(c)))


def test_shape_mismatch_is_named():
    with pytest.raises(fn.ShapeError, match=r"mse got prediction \(4, 3\) and target \(4, 2\)"):
        fn.mse.forward(jnp.zeros((4, 3)), jnp.zeros((4, 2)))
    with pytest.raises(fn.ShapeError, match=r"labels must have shape \(4,\)"):
        fn.softmax_cross_entropy.forward(jnp.zeros((4, 3)), jnp.zeros((5,), jnp.int32))


def test_labels_out_of_range_are_named():
    with pytest.raises(ValueError, match=r"label 3, out of range for 3 classes"):
        fn.softmax_cross_entropy.forward(jnp.zeros((2, 3)), jnp.array([0, 3]))
    with pytest.raises(ValueError, match=r"label -1"):
        fn.softmax_cross_entropy.forward(jnp.zeros((2, 3)), jnp.array([-1, 0]))


def test_integer_predictions_are_refused():
    with pytest.raises(fn.DTypeError, match="floating-point prediction"):
        fn.mse.forward(jnp.arange(4).reshape(2, 2), jnp.zeros((2, 2)))
