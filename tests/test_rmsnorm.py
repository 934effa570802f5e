"""RMSNorm: the forward of Zhang & Sennrich 2019 (as torch's rms_norm), its hand-written rule, its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import DTypeError, ShapeError


def _reference(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """x / √(mean(x²) + ε) · g over the last axis, in float64 NumPy."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def test_forward_is_the_rms_formula_and_init_gives_ones(key):
    layer = fn.RMSNorm()
    out_shape, params = layer.init(key, (3, 5))
    assert out_shape == (3, 5)
    np.testing.assert_array_equal(params["g"], np.ones(5))
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (2, 3, 5), jnp.float64) * 3.0
        g = jax.random.normal(jax.random.key(2), (5,), jnp.float64)
        y, _ = layer.forward({"g": g}, x)
        np.testing.assert_allclose(y, _reference(np.asarray(x), np.asarray(g), 1e-6), rtol=1e-13)
        # the output's root mean square is 1 per row (with g = 1, up to ε)
        y1, _ = layer.forward({"g": jnp.ones(5, jnp.float64)}, x)
        np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(y1) ** 2, axis=-1)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6)])
def test_backward_is_the_gradient_of_the_forward(key, shape):
    with jax.enable_x64(True):
        layer = fn.RMSNorm()
        x = jax.random.normal(jax.random.key(3), shape, jnp.float64)
        params = {"g": jax.random.normal(jax.random.key(4), (6,), jnp.float64)}
        dy = jax.random.normal(jax.random.key(5), shape, jnp.float64)
        grads, dx = layer.backward(params, layer.forward(params, x)[1], dy)
        auto_p, auto_x = jax.grad(lambda p, xx: jnp.sum(layer.forward(p, xx)[0] * dy), argnums=(0, 1))(params, x)
        np.testing.assert_allclose(grads["g"], auto_p["g"], rtol=1e-12)
        np.testing.assert_allclose(dx, auto_x, rtol=1e-11, atol=1e-13)


def test_a_zero_row_is_handled_by_eps(key):
    """x = 0: x̂ = 0, and dx = g ⊙ dy / √ε, what jax.grad gives too; nothing is NaN."""
    with jax.enable_x64(True):
        layer = fn.RMSNorm(eps=1e-4)
        x = jnp.zeros((1, 4), jnp.float64)
        params = {"g": jax.random.normal(key, (4,), jnp.float64)}
        dy = jax.random.normal(jax.random.key(6), (1, 4), jnp.float64)
        grads, dx = layer.backward(params, layer.forward(params, x)[1], dy)
        np.testing.assert_allclose(dx, np.asarray(params["g"]) * np.asarray(dy) / np.sqrt(1e-4), rtol=1e-12)
        np.testing.assert_array_equal(grads["g"], np.zeros(4))
        auto = jax.grad(lambda xx: jnp.sum(layer.forward(params, xx)[0] * dy))(x)
        np.testing.assert_allclose(dx, auto, rtol=1e-12)


def test_jit_and_vmap_agree_with_eager(key):
    layer = fn.RMSNorm()
    _, params = layer.init(key, (5,))
    x = jax.random.normal(jax.random.key(7), (3, 2, 5))
    dy = jax.random.normal(jax.random.key(8), (3, 2, 5))

    def rule(xx, c):
        return layer.backward(params, layer.forward(params, xx)[1], c)[1]

    np.testing.assert_allclose(jax.jit(jax.vmap(rule))(x, dy), rule(x, dy), rtol=1e-6, atol=1e-7)


def test_errors_name_the_problem(key):
    with pytest.raises(ValueError, match="RMSNorm needs eps > 0"):
        fn.RMSNorm(eps=0.0)
    layer = fn.RMSNorm()
    _, params = layer.init(key, (4,))
    with pytest.raises(ShapeError, match=r"RMSNorm\(\) expected inputs \(\.\.\., 4\), got \(2, 3\)"):
        layer.forward(params, jnp.ones((2, 3)))
    with pytest.raises(DTypeError, match="floating-point input"):
        layer.forward(params, jnp.ones((2, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"missing 'g'"):
        layer.forward({"gamma": jnp.ones(4)}, jnp.ones((2, 4)))


def test_matches_torch_rms_norm(key):
    torch = pytest.importorskip("torch")
    x = np.asarray(jax.random.normal(key, (2, 3, 5), jnp.float32), np.float64)
    g = np.asarray(jax.random.normal(jax.random.key(9), (5,), jnp.float32), np.float64)
    want = torch.nn.functional.rms_norm(torch.tensor(x), (5,), torch.tensor(g), eps=1e-6).numpy()
    with jax.enable_x64(True):
        got, _ = fn.RMSNorm(eps=1e-6).forward({"g": jnp.asarray(g)}, jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-12)
