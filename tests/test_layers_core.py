"""Dense, Flatten, serial and residual: the rules, shapes, keys and errors; every layer rule at the
boundaries of the domain its docstring states (constant features, batch 1, ties, rate 0, padding, kinks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import normals, rel
from jax import lax

import fnnet as fn
from fnnet.checking import TOLERANCES

BAR64 = TOLERANCES["float64"].autodiff  # the one table's float64 bar, manual vs autodiff


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


# ----------------------------------------------------------------------------------------------
# each rule at the boundary of the domain its docstring states: hand-written vs jax.vjp of the forward


def _parity(layer, params, x, dy, *, train=True, key=None):
    """(y, (dparams, dx) by the rule, (dparams, dx) by jax.vjp of the same forward), in one compiled program."""

    @jax.jit
    def run(params, x, dy):
        y, cache = layer.forward(params, x, key=key, train=train)
        _, vjp = jax.vjp(lambda p, xx: layer.forward(p, xx, key=key, train=train)[0], params, x)
        return y, layer.backward(params, cache, dy), vjp(dy)

    return run(params, x, dy)


def _assert_same(manual, auto, bar):
    for m, a in zip(jax.tree_util.tree_leaves(manual), jax.tree_util.tree_leaves(auto)):
        assert rel(m, a) <= bar


@pytest.mark.parametrize(
    "shape, train, constant_feature",
    [((4, 3), True, True), ((1, 2, 2, 3), True, False), ((1, 3), False, False), ((2, 3), True, False)],
    ids=["constant-feature", "batch-1-image-train", "batch-1-eval", "m=2"],
)
def test_batch_norm_at_its_boundaries(key, shape, train, constant_feature):
    """σ²_B = 0 (a constant feature) is handled by ε: dx = γ(dy − mean dy)/√ε there; batch 1 trains on images
    (m = H·W) and evaluates; m = 2, the least it trains with, is exact too."""
    with jax.enable_x64(True):
        g, b, m, v, x, dy = normals(key, [(3,)] * 4 + [shape, shape], jnp.float64)
        params = {"gamma": 1 + g / 2, "beta": b, "state": {"mean": m, "var": 0.5 + jnp.abs(v)}}
        if constant_feature:
            x = x.at[:, 1].set(2.5)
        y, (grads, dx), (grads_ad, dx_ad) = _parity(fn.BatchNorm(), params, x, dy, train=train)
        _assert_same((grads, dx), (grads_ad, dx_ad), BAR64)
        if constant_feature:
            d = np.asarray(dy[:, 1])
            expected = float(params["gamma"][1]) * (d - d.mean()) / np.sqrt(1e-5)
            np.testing.assert_allclose(np.asarray(dx[:, 1]), expected, rtol=1e-12)
            np.testing.assert_array_equal(np.asarray(y[:, 1]), float(params["beta"][1]))  # x̂ = 0 exactly
        if shape == (2, 3):  # dx is a near-cancellation, conditioned like (σ² + ε)/ε: the float32 rule and
            # the float32 jax.grad both stay within a few units of roundoff times that (and neither is exact)
            p32, x32, dy32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), (params, x, dy))
            _, (_, dx32), (_, dx32_ad) = _parity(fn.BatchNorm(), p32, x32, dy32)
            bound = 8 * 2.0**-24 * float(np.max((np.var(np.asarray(x), axis=0) + 1e-5) / 1e-5))
            assert rel(dx32, dx) <= bound and rel(dx32_ad, dx) <= bound


def test_layer_norm_on_a_constant_row_and_a_single_feature(key):
    with jax.enable_x64(True):
        g, b, x, dy = normals(key, [(3,), (3,), (4, 3), (4, 3)], jnp.float64)
        params = {"gamma": 1 + g / 2, "beta": b}
        x = x.at[1].set(-0.7)  # σ² = 0 in row 1
        _, manual, auto = _parity(fn.LayerNorm(), params, x, dy)
        _assert_same(manual, auto, BAR64)
        d = np.asarray(dy[1] * params["gamma"])
        np.testing.assert_allclose(np.asarray(manual[1][1]), (d - d.mean()) / np.sqrt(1e-5), rtol=1e-12)
        # d = 1: x̂ = 0 always, so y = β and dx = 0 (and dγ = 0), by the rule and by jax.grad
        one = {"gamma": params["gamma"][:1], "beta": params["beta"][:1]}
        y, manual, auto = _parity(fn.LayerNorm(), one, x[:, :1], dy[:, :1])
        _assert_same(manual, auto, 0.0)
        assert not np.any(np.asarray(manual[1])) and not np.any(np.asarray(manual[0]["gamma"]))


def test_max_pool_ties_nan_and_minus_inf_against_reduce_window(key):
    """Ties go wholly to the first max in row-major order, exactly as jax.grad of lax.reduce_window max;
    a NaN takes the gradient (first NaN); all-−∞ windows tie with the SAME padding, both ways alike."""
    layer = fn.MaxPool(3, stride=1, padding="SAME")

    @jax.jit
    def reduce_window(z, dy):
        """y and jax.vjp's dx of the max pooling of ``stax.MaxPool`` and flax: lax.reduce_window with lax.max."""
        y, vjp = jax.vjp(lambda v: lax.reduce_window(v, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME"), z)
        return y, vjp(dy)[0]

    ties = jnp.asarray(np.random.default_rng(0).integers(0, 3, (1, 5, 5, 2)), jnp.float32)  # many ties
    # distinct integers as cotangents: the sums at overlaps are exact, so "the same routing" means equal arrays
    dy = jnp.asarray(jax.random.permutation(key, 50).reshape(1, 5, 5, 2) + 1, jnp.float32)
    for x in (ties, jnp.full((1, 5, 5, 2), -jnp.inf)):
        y, (_, dx), (_, dx_ad) = _parity(layer, (), x, dy)
        y_rw, dx_rw = reduce_window(x, dy)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(y_rw))
        np.testing.assert_array_equal(np.asarray(dx), np.asarray(dx_rw))
        np.testing.assert_array_equal(np.asarray(dx), np.asarray(dx_ad))
    # all −∞: the first pixel of the 3×3 window at (0, 0) is padding, so its gradient is dropped
    assert float(jnp.sum(dx)) != pytest.approx(float(jnp.sum(dy)))
    z = jnp.array([1.0, jnp.nan, jnp.nan, 0.0], jnp.float32).reshape(1, 2, 2, 1)
    y, (_, dz), _ = _parity(fn.MaxPool(2), (), z, jnp.ones((1, 1, 1, 1), jnp.float32))
    assert np.isnan(float(y[0, 0, 0, 0]))
    np.testing.assert_array_equal(np.asarray(dz).ravel(), [0, 1, 0, 0])  # the first NaN takes it all


def test_dropout_rate_zero_and_the_mask(key):
    x, dy = normals(key, [(4, 3), (4, 3)], jnp.float32)
    y, (_, dx), (_, dx_ad) = _parity(fn.Dropout(0.0), (), x, dy, key=key)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))  # rate 0: y = x / 1 = x exactly
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(dy))
    np.testing.assert_array_equal(np.asarray(dx_ad), np.asarray(dy))
    # rate 0.5 with the same key: the rule's mask is jax.grad's mask; a NaN in a dropped unit becomes 0
    y, (_, dx), (_, dx_ad) = _parity(fn.Dropout(0.5), (), jnp.full((4, 3), jnp.nan), dy, key=key)
    dropped = np.asarray(y) == 0
    assert dropped.any() and np.isnan(np.asarray(y)[~dropped]).all()
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(dx_ad))
    assert not np.asarray(dx)[dropped].any()


@pytest.mark.parametrize(
    "in_shape, kwargs",
    [
        ((3, 3, 1), dict(kernel_size=2, stride=2, dilation=2, padding=((3, 0), (0, 3)))),
        ((6, 6, 1), dict(kernel_size=2, stride=4)),
    ],
    ids=["padding-wider-than-kernel", "rows-no-window-reaches"],
)
def test_conv_padding_and_stride_boundaries(key, in_shape, kwargs):
    with jax.enable_x64(True):
        layer = fn.Conv2D(2, **kwargs)
        out_shape, params = layer.init(key, in_shape, jnp.float64)
        x, dy = normals(jax.random.fold_in(key, 1), [(2,) + in_shape, (2,) + out_shape], jnp.float64)
        _, manual, auto = _parity(layer, params, x, dy)
        _assert_same(manual, auto, BAR64)
        if kwargs["stride"] == 4:  # windows cover rows/cols 0-1 and 4-5: rows and cols 2-3 get dx = 0
            assert not np.any(np.asarray(manual[1])[:, 2:4]) and not np.any(np.asarray(manual[1])[:, :, 2:4])


def test_rnn_relu_at_its_kink(key):
    """h_0 = 0, b = 0 and x_1 = 0 put every unit of step 1 exactly at relu's kink: relu'(0) = 0 in the
    rule and in jax.grad of the forward, so no gradient reaches x_1 either way."""
    with jax.enable_x64(True):
        layer = fn.RNN(3, activation="relu", return_sequences=True)
        _, params = layer.init(key, (3, 2), jnp.float64)
        x, dy = normals(jax.random.fold_in(key, 1), [(2, 3, 2), (2, 3, 3)], jnp.float64)
        x = x.at[:, 0].set(0.0)
        _, manual, auto = _parity(layer, params, x, dy)
        _assert_same(manual, auto, BAR64)
        assert not np.any(np.asarray(manual[1])[:, 0]) and np.all(np.asarray(manual[1])[:, 1:] != 0)
