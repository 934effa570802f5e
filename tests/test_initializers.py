"""Initializers: variances stated in the docstrings, measured with a fixed key and a stated tolerance.

Each statistical check draws 256 × 512 = 131072 samples; the sample variance of that many draws has
relative standard error ≈ √(2/131072) ≈ 0.4% (normal) and less for the uniform, so 3% is > 7 σ.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnet import initializers as I

SHAPE = (256, 512)  # fan_in 256, fan_out 512
FAN_IN, FAN_OUT = 256, 512
CASES = [
    ("glorot_uniform", {}, 2 / (FAN_IN + FAN_OUT)),
    ("glorot_normal", {}, 2 / (FAN_IN + FAN_OUT)),
    ("he_uniform", {}, 2 / FAN_IN),
    ("he_normal", {}, 2 / FAN_IN),
    ("lecun_uniform", {}, 1 / FAN_IN),
    ("lecun_normal", {}, 1 / FAN_IN),
    ("leaky_he_normal", {"alpha": 0.2}, 2 / ((1 + 0.04) * FAN_IN)),
    ("standard_uniform", {}, 1 / (3 * FAN_IN)),
    ("orthogonal", {}, 1 / FAN_OUT),
    ("normal", {"stddev": 0.1}, 0.01),
]


@pytest.mark.parametrize("name,kwargs,variance", CASES, ids=[c[0] for c in CASES])
def test_variance(name, kwargs, variance, key):
    w = I.get(name, **kwargs)(key, SHAPE, jnp.float32)
    assert w.shape == SHAPE and w.dtype == jnp.float32
    assert float(jnp.var(w)) == pytest.approx(variance, rel=0.03)
    assert abs(float(jnp.mean(w))) < 4 * np.sqrt(variance / w.size)


@pytest.mark.parametrize(
    "name", ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal", "lecun_uniform"]
)
def test_matches_jax_nn_initializers(name, key):
    mine = I.get(name)(key, (3, 3, 16, 32), jnp.float32)  # conv kernel: receptive field 9
    theirs = getattr(jax.nn.initializers, name)()(key, (3, 3, 16, 32), jnp.float32)
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_conv_fans_use_the_receptive_field():
    assert I.compute_fans((3, 3, 16, 32)) == (144.0, 288.0)
    w = I.he_normal()(jax.random.key(0), (5, 5, 64, 64))
    assert float(jnp.var(w)) == pytest.approx(2 / (25 * 64), rel=0.03)


def test_truncated_normal_is_truncated_at_two_std(key):
    w = I.he_normal()(key, SHAPE)
    std = np.sqrt(2 / FAN_IN) / 0.87962566103423978
    assert float(jnp.abs(w).max()) <= 2 * std * (1 + 1e-6)


def test_orthogonal_is_orthogonal(key):
    w = I.orthogonal(scale=2.0)(key, (64, 32))
    np.testing.assert_allclose(w.T @ w, 4.0 * jnp.eye(32), atol=1e-4)
    w = I.orthogonal()(key, (32, 64))
    np.testing.assert_allclose(w @ w.T, jnp.eye(32), atol=1e-5)


def test_zeros_and_dtype_follow_request(key):
    assert not np.any(I.zeros()(key, (3, 4)))
    with jax.enable_x64(True):
        assert I.he_normal()(key, (3, 4), jnp.float64).dtype == jnp.float64


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mode must be"):
        I.variance_scaling(1.0, "fan_sum", "normal")
    with pytest.raises(ValueError, match="unknown initializer 'xavier'"):
        I.get("xavier")
    with pytest.raises(ValueError, match="rank >= 2"):
        I.he_normal()(jax.random.key(0), (5,))
