"""Dropout: rate is the DROP probability; mask statistics, expectation, eval identity, backward, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn

N = 100_000  # elements per statistical check


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)


def _positive(key, n=N, dtype=jnp.float32):
    """x ~ N(3, 1): nonzero, so a zero in the output can only come from the mask."""
    return 3 + jax.random.normal(key, (n,), dtype)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_rate_is_the_fraction_dropped(key, rate):
    """Over N = 100 000 units the dropped fraction has std √(rate(1−rate)/N) ≤ 0.0016; we allow 0.01 (> 6σ).
    Survivors are scaled by 1/(1 − rate) exactly (inverted dropout)."""
    k_x, k_mask = jax.random.split(key)
    x = _positive(k_x)
    y, mask = fn.Dropout(rate).forward((), x, key=k_mask)
    y, x, mask = np.asarray(y), np.asarray(x), np.asarray(mask)
    assert abs(np.mean(y == 0) - rate) < 0.01
    np.testing.assert_array_equal(y == 0, ~mask)
    np.testing.assert_allclose(y[mask], x[mask] / (1 - rate), rtol=1e-6)


def test_expectation_is_preserved(key):
    """E[y] = x. With x ~ N(3, 1) and rate 0.3, mean(y − x) has std √(E[x²]·rate/(1−rate)/N) ≈ 0.0066,
    i.e. 0.22 % of mean(x) = 3; we allow 2 % (9σ)."""
    k_x, k_mask = jax.random.split(key)
    x = _positive(k_x)
    y, _ = fn.Dropout(0.3).forward((), x, key=k_mask)
    assert abs(float(jnp.mean(y)) / float(jnp.mean(x)) - 1) < 0.02


def test_evaluation_is_the_identity_and_needs_no_key(key):
    x = jax.random.normal(key, (4, 6))
    layer = fn.Dropout(0.5)
    y, cache = layer.forward((), x, train=False)
    assert y is x and cache == ()
    dy = jax.random.normal(jax.random.fold_in(key, 1), (4, 6))
    assert layer.backward((), cache, dy) == ((), dy)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_backward_reuses_the_mask_and_matches_autodiff(key, dtype):
    with jax.enable_x64(dtype == "float64"):
        k_x, k_dy, k_mask = jax.random.split(key, 3)
        x = jax.random.normal(k_x, (8, 5), jnp.dtype(dtype))
        dy = jax.random.normal(k_dy, (8, 5), jnp.dtype(dtype))
        layer = fn.Dropout(0.25)
        y, mask = layer.forward((), x, key=k_mask)
        dparams, dx = layer.backward((), mask, dy)
        assert dparams == () and dx.dtype == x.dtype and y.dtype == x.dtype
        np.testing.assert_allclose(np.asarray(dx), np.where(np.asarray(mask), np.asarray(dy) / 0.75, 0), rtol=1e-6)
        _, vjp = jax.vjp(lambda xx: layer.forward((), xx, key=k_mask)[0], x)
        assert _rel(dx, vjp(dy)[0]) <= {"float64": 1e-15, "float32": 1e-7}[dtype]


def test_one_key_one_mask_in_every_dtype(key):
    x = jax.random.normal(key, (64,))
    layer = fn.Dropout(0.5)
    m1 = np.asarray(layer.forward((), x, key=key)[1])
    np.testing.assert_array_equal(m1, np.asarray(layer.forward((), x, key=key)[1]))
    assert not np.array_equal(m1, np.asarray(layer.forward((), x, key=jax.random.fold_in(key, 1))[1]))
    with jax.enable_x64(True):  # the mask does not depend on x's dtype (drawn in float32)
        np.testing.assert_array_equal(m1, np.asarray(layer.forward((), x.astype(jnp.float64), key=key)[1]))


def test_rate_zero_keeps_everything(key):
    x = jax.random.normal(key, (16,))
    y, _ = fn.Dropout(0.0).forward((), x, key=key)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_train_and_key_flow_through_serial(key):
    net = fn.serial(fn.Dense(6), fn.Dropout(0.5))
    _, params = net.init(key, (3,))
    x = jax.random.normal(key, (4, 3))
    dense_only, _ = fn.Dense(6).forward(params[0], x)
    y_eval, _ = net.forward(params, x, train=False)
    np.testing.assert_array_equal(np.asarray(y_eval), np.asarray(dense_only))
    y_train, _ = net.forward(params, x, key=key, train=True)
    assert np.any(np.asarray(y_train) == 0)
    with pytest.raises(ValueError, match=r"Dropout\(0.5\) needs a PRNG key in training"):
        net.forward(params, x, train=True)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, True, "0.5", None])
def test_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match=r"drop rate in \[0, 1\)"):
        fn.Dropout(rate)
