"""MaxPool and AvgPool: parity with jax.vjp, forward against lax.reduce_window, the tie rule, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import normals as _normals
from _helpers import rel as _rel
from jax import lax

import fnnet as fn
from fnnet.core import ShapeError


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


CONFIGS = [
    pytest.param((7, 7, 2), dict(window_shape=3, stride=2, padding="SAME"), (4, 4), id="3x3-s2-SAME-odd"),
    pytest.param((6, 5, 2), dict(window_shape=(2, 3), stride=(2, 1)), (3, 3), id="uneven-overlap"),
    pytest.param((5, 5, 1), dict(window_shape=2), (2, 2), id="2x2-drops-last-row"),
    pytest.param((5, 4, 1), dict(window_shape=3, stride=1, padding="same"), (5, 4), id="3x3-s1-SAME"),
]


@pytest.mark.parametrize("dtype, bar", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("kind", ["MaxPool", "AvgPool"])
@pytest.mark.parametrize("in_shape, kwargs, out_hw", CONFIGS)
def test_backward_matches_autodiff_and_forward_matches_reduce_window(key, kind, in_shape, kwargs, out_hw, dtype, bar):
    """Random normal inputs: ties have probability 0, so the arg-max is unique (the tie rule is tested below)."""
    with jax.enable_x64(dtype == "float64"):
        layer = getattr(fn, kind)(**kwargs)
        assert layer.init(key, in_shape) == (out_hw + in_shape[2:], ())
        x, dy = _normals(key, [(2,) + in_shape, (2,) + out_hw + in_shape[2:]], jnp.dtype(dtype))

        @jax.jit
        def run(x, dy):
            y, cache = layer.forward((), x)
            _, vjp = jax.vjp(lambda xx: layer.forward((), xx)[0], x)
            return y, layer.backward((), cache, dy), vjp(dy)[0]

        y, (dparams, dx), dx_ad = run(x, dy)
        assert dparams == () and dx.shape == x.shape and dx.dtype == x.dtype
        assert _rel(dx, dx_ad) <= bar

        window = (1,) + _pair(kwargs["window_shape"]) + (1,)
        strides = (1,) + _pair(kwargs.get("stride") or kwargs["window_shape"]) + (1,)
        padding = kwargs.get("padding", "VALID").upper()
        if kind == "MaxPool":
            ref = lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding)
        else:  # the mean over the real (unpadded) pixels of each window
            total = lax.reduce_window(x, 0.0, lax.add, window, strides, padding)
            ref = total / lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, window, strides, padding)
        assert _rel(y, ref) <= bar


def test_max_pool_routes_the_gradient_to_the_arg_max(key):
    (x,) = _normals(key, [(1, 4, 4, 1)], jnp.float32)
    y, cache = fn.MaxPool(2).forward((), x)
    _, dx = fn.MaxPool(2).backward((), cache, jnp.ones_like(y))
    xs, dxs = np.asarray(x)[0, :, :, 0], np.asarray(dx)[0, :, :, 0]
    for i in range(2):
        for j in range(2):
            block, dblock = xs[2 * i : 2 * i + 2, 2 * j : 2 * j + 2], dxs[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            expected = np.zeros((2, 2))
            expected[np.unravel_index(np.argmax(block), (2, 2))] = 1.0
            np.testing.assert_array_equal(dblock, expected)


def test_max_pool_tie_rule_first_max_in_row_major_order_takes_all(key):
    """Tie rule: the first maximal pixel of a window in row-major order gets the whole gradient."""
    (dy,) = _normals(key, [(1, 2, 2, 1)], jnp.float32)
    dy = jnp.abs(dy) + 0.5  # nonzero, so "gets it all" is visible
    x = jnp.array(
        [[[3.0, 1.0], [0.5, 3.0]],  # window 0: tie at (0,0) and (1,1) -> (0,0)
         [[0.0, 2.0], [2.0, 2.0]]],  # window 1: three-way tie at (0,1), (1,0), (1,1) -> (0,1)
        jnp.float32,
    )  # fmt: skip
    # lay the two 2×2 windows side by side into one (1, 2, 4, 1) image with window 2 at stride 2
    img = jnp.concatenate([x[0], x[1]], axis=1).reshape(1, 2, 4, 1)
    layer = fn.MaxPool(2)
    y, cache = layer.forward((), img)
    np.testing.assert_array_equal(np.asarray(y).ravel(), [3.0, 2.0])
    g = dy[:, :1, :, :]  # (1, 1, 2, 1): one row of two windows
    _, dx = layer.backward((), cache, g)
    expected = np.zeros((2, 4))
    expected[0, 0] = g[0, 0, 0, 0]
    expected[0, 3] = g[0, 0, 1, 0]
    np.testing.assert_array_equal(np.asarray(dx)[0, :, :, 0], expected)
    # jax.grad of fnnet's forward follows the same rule ...
    auto = jax.grad(lambda z: jnp.sum(layer.forward((), z)[0] * g))(img)
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(dx))
    # ... while jax.grad of a plain jnp.max splits a tie evenly, as the docstring warns
    np.testing.assert_allclose(np.asarray(jax.grad(jnp.max)(x[1])), [[0, 1 / 3], [1 / 3, 1 / 3]], rtol=1e-6)


def test_overlapping_windows_add_up_at_a_shared_max(key):
    """Stride 1 < window 2: the global max of a 3×3 image sits in all four windows and collects all dy."""
    (x,) = _normals(key, [(1, 3, 3, 1)], jnp.float32)
    x = x.at[0, 1, 1, 0].set(10.0)
    (dy,) = _normals(jax.random.fold_in(key, 1), [(1, 2, 2, 1)], jnp.float32)
    layer = fn.MaxPool(2, stride=1)
    y, cache = layer.forward((), x)
    np.testing.assert_array_equal(np.asarray(y), 10.0)
    _, dx = layer.backward((), cache, dy)
    expected = np.zeros((3, 3), np.float32)
    expected[1, 1] = float(jnp.sum(dy))
    np.testing.assert_allclose(np.asarray(dx)[0, :, :, 0], expected, rtol=1e-6)


def test_avg_pool_same_divides_by_the_real_pixels_only(key):
    """SAME pads 5 → 6 with one pixel after; the last window holds 2 real pixels per axis, not 3."""
    (x,) = _normals(key, [(1, 5, 5, 1)], jnp.float32)
    y, cache = fn.AvgPool(3, stride=2, padding="SAME").forward((), x)
    assert y.shape == (1, 3, 3, 1)
    xs = np.asarray(x)[0, :, :, 0]
    np.testing.assert_allclose(float(y[0, 2, 2, 0]), xs[3:5, 3:5].mean(), rtol=1e-6)  # 4 real pixels, none padded
    np.testing.assert_allclose(float(y[0, 0, 0, 0]), xs[0:2, 0:2].mean(), rtol=1e-6)  # lo pad 1
    _, dx = fn.AvgPool(3, stride=2, padding="SAME").backward((), cache, jnp.ones_like(y))
    # each window's dy is spread over its real pixels, so the total is preserved: Σ dx = Σ dy
    np.testing.assert_allclose(float(jnp.sum(dx)), 9.0, rtol=1e-6)


def test_bad_arguments_and_shapes_raise_clear_errors(key):
    with pytest.raises(ValueError, match="padding must be 'VALID' or 'SAME'"):
        fn.MaxPool(2, padding="FULL")
    with pytest.raises(ValueError, match="padding must be 'VALID' or 'SAME'"):
        fn.AvgPool(2, padding=1)
    with pytest.raises(ValueError, match="window_shape to be an int >= 1"):
        fn.MaxPool(0)
    with pytest.raises(ValueError, match="window_shape to be an int >= 1"):
        fn.AvgPool((2, -1))
    with pytest.raises(ValueError, match="stride to be an int >= 1"):
        fn.MaxPool(2, stride=0)
    (x,) = _normals(key, [(2, 6, 6)], jnp.float32)
    with pytest.raises(ShapeError, match=r"MaxPool\(2\) expected inputs \(batch, \*, \*, \*\), got \(2, 6, 6\)"):
        fn.MaxPool(2).forward((), x)
    with pytest.raises(ShapeError, match="needs an input of at least"):
        fn.AvgPool(4).forward((), x[:, :3, :3, None])
    with pytest.raises(ShapeError, match=r"input shape \(height, width, channels\)"):
        fn.MaxPool(2).init(key, (6, 6))
