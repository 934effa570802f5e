"""Conv2D: the texts' toy case in closed form, parity with jax.vjp on awkward geometries, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import normals as _normals
from _helpers import rel as _rel

import fnnet as fn
from fnnet.core import DTypeError, ShapeError


def _parity(layer, in_shape, dtype, key, batch=2):
    """Random params (of init's structure), x and cotangent dy from ``key``; returns (init's out_shape,
    x, params, y, manual (dparams, dx), autodiff (dparams, dx)), the rule and jax.vjp in one jit."""
    static = {}

    def shapes(k):
        static["out_shape"], params = layer.init(k, in_shape, dtype)
        return params

    leaves, tree = jax.tree_util.tree_flatten(jax.eval_shape(shapes, key))
    x_shape = (batch,) + tuple(in_shape)
    y_shape = (batch,) + tuple(static["out_shape"])
    *draws, x, dy = _normals(key, [leaf.shape for leaf in leaves] + [x_shape, y_shape], dtype)
    params = jax.tree_util.tree_unflatten(tree, draws)

    @jax.jit
    def run(params, x, dy):
        y, cache = layer.forward(params, x)
        _, vjp = jax.vjp(lambda p, xx: layer.forward(p, xx)[0], params, x)
        return y, layer.backward(params, cache, dy), vjp(dy)

    return (static["out_shape"], x, params) + run(params, x, dy)


def _off_zero(x):
    """Normal draws pushed at least 0.5 away from zero: every product below is visibly nonzero."""
    return x + jnp.where(x >= 0, 0.5, -0.5)


def test_toy_case_3x3_input_2x2_filter_closed_form(key):
    """The texts' example: X 3×3, one 2×2 filter W, no padding, stride 1, so Y is 2×2 with
    Y_ij = Σ_ab W_ab X_{i+a, j+b}. Backward, in closed form:
        dW_ab = Σ_ij dY_ij X_{i+a, j+b}                 (the correlation of X with dY)
        dX_pq = Σ_ab dY_{p−a, q−b} W_ab                 (the full convolution of dY with W)
    """
    with jax.enable_x64(True):
        layer = fn.Conv2D(1, 2, use_bias=False)
        X, W, dY = _normals(key, [(3, 3), (2, 2), (2, 2)], jnp.float64)
        X, params = _off_zero(X), {"W": _off_zero(W).reshape(2, 2, 1, 1)}
        y, cache = layer.forward(params, X.reshape(1, 3, 3, 1))
        grads, dx = layer.backward(params, cache, dY.reshape(1, 2, 2, 1))

        x, w, d = np.asarray(X), np.asarray(params["W"][:, :, 0, 0]), np.asarray(dY)
        y_closed = np.array(
            [[sum(w[a, b] * x[i + a, j + b] for a in range(2) for b in range(2)) for j in range(2)] for i in range(2)]
        )
        dW_closed = np.array(
            [
                [d[0, 0] * x[0, 0] + d[0, 1] * x[0, 1] + d[1, 0] * x[1, 0] + d[1, 1] * x[1, 1],
                 d[0, 0] * x[0, 1] + d[0, 1] * x[0, 2] + d[1, 0] * x[1, 1] + d[1, 1] * x[1, 2]],
                [d[0, 0] * x[1, 0] + d[0, 1] * x[1, 1] + d[1, 0] * x[2, 0] + d[1, 1] * x[2, 1],
                 d[0, 0] * x[1, 1] + d[0, 1] * x[1, 2] + d[1, 0] * x[2, 1] + d[1, 1] * x[2, 2]],
            ]
        )  # fmt: skip
        dX_closed = np.array(
            [
                [d[0, 0] * w[0, 0], d[0, 0] * w[0, 1] + d[0, 1] * w[0, 0], d[0, 1] * w[0, 1]],
                [d[0, 0] * w[1, 0] + d[1, 0] * w[0, 0],
                 d[0, 0] * w[1, 1] + d[0, 1] * w[1, 0] + d[1, 0] * w[0, 1] + d[1, 1] * w[0, 0],
                 d[0, 1] * w[1, 1] + d[1, 1] * w[0, 1]],
                [d[1, 0] * w[1, 0], d[1, 0] * w[1, 1] + d[1, 1] * w[1, 0], d[1, 1] * w[1, 1]],
            ]
        )  # fmt: skip
        np.testing.assert_allclose(np.asarray(y)[0, :, :, 0], y_closed, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(grads["W"])[:, :, 0, 0], dW_closed, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(dx)[0, :, :, 0], dX_closed, rtol=1e-13)

        # Every filter weight touches every output pixel: row (i, j) of ∂Y/∂W, read off the rule with
        # dY = e_ij, is the input patch X[i:i+2, j:j+2], and no entry of the 4×4 Jacobian is zero.
        jac = np.zeros((2, 2, 2, 2))
        for i in range(2):
            for j in range(2):
                e_ij = jnp.zeros((1, 2, 2, 1), jnp.float64).at[0, i, j, 0].set(1.0)
                jac[i, j] = np.asarray(layer.backward(params, cache, e_ij)[0]["W"][:, :, 0, 0])
                np.testing.assert_allclose(jac[i, j], x[i : i + 2, j : j + 2], rtol=1e-14)
        assert np.all(np.abs(jac) > 0)


GEOMETRIES = [
    pytest.param((7, 5, 2), dict(kernel_size=3, stride=2, padding="SAME"), (4, 3), id="s2-SAME-odd"),
    pytest.param((6, 5, 2), dict(kernel_size=(2, 3), stride=(2, 3), padding="VALID"), (3, 1), id="uneven-VALID"),
    pytest.param((9, 8, 1), dict(kernel_size=3, stride=2, padding=1, dilation=2), (4, 3), id="dilation-int-pad"),
    pytest.param((5, 6, 2), dict(kernel_size=2, stride=3, padding=((2, 0), (1, 2))), (2, 3), id="asymmetric-pad"),
    pytest.param((8, 7, 1), dict(kernel_size=3, stride=(1, 2), padding="same", dilation=(2, 1)), (8, 4), id="dil-SAME"),
]


@pytest.mark.parametrize("dtype, bar", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("in_shape, kwargs, out_hw", GEOMETRIES)
def test_backward_matches_autodiff(key, in_shape, kwargs, out_hw, dtype, bar):
    with jax.enable_x64(dtype == "float64"):
        layer = fn.Conv2D(3, **kwargs)
        out_shape, x, params, y, (grads, dx), (grads_ad, dx_ad) = _parity(layer, in_shape, jnp.dtype(dtype), key)
        assert out_shape == out_hw + (3,)
        assert y.shape == (2,) + out_shape and y.dtype == jnp.dtype(dtype)
        assert dx.shape == x.shape and dx.dtype == x.dtype
        assert _rel(dx, dx_ad) <= bar
        for name in ("W", "b"):
            assert grads[name].shape == params[name].shape
            assert _rel(grads[name], grads_ad[name]) <= bar


def test_forward_matches_a_naive_loop(key):
    """Stride 2, SAME on odd sizes: TensorFlow's rule puts the odd pad pixel after (lo=1, hi=1 here)."""
    with jax.enable_x64(True):
        layer = fn.Conv2D(2, 3, stride=2, padding="SAME", use_bias=False)
        W, x = _normals(key, [(3, 3, 1, 2), (1, 5, 5, 1)], jnp.float64)
        params = {"W": W}
        y, _ = layer.forward(params, x)
        xp = np.pad(np.asarray(x)[0, :, :, 0], 1)  # SAME: out = ⌈5/2⌉ = 3, total pad 2 → (1, 1)
        W = np.asarray(params["W"])[:, :, 0, :]
        naive = np.array([[np.einsum("pq,pqo->o", xp[2 * i : 2 * i + 3, 2 * j : 2 * j + 3], W) for j in range(3)]
                          for i in range(3)])  # fmt: skip
        np.testing.assert_allclose(np.asarray(y)[0], naive, rtol=1e-12)


def test_channel_mismatch_names_the_layer_and_the_shapes(key):
    layer = fn.Conv2D(8, 3)
    W, b, x = _normals(key, [(3, 3, 3, 8), (8,), (2, 6, 6, 4)], jnp.float32)
    params = {"W": W, "b": b}
    with pytest.raises(ShapeError, match=r"Conv2D\(8\) expected inputs \(batch, \*, \*, 3\), got \(2, 6, 6, 4\)"):
        layer.forward(params, x)
    with pytest.raises(ShapeError, match=r"Conv2D\(8\) expected inputs \(batch, \*, \*, 3\), got \(6, 6, 3\)"):
        layer.forward(params, x[0, :, :, :3])


def test_bad_arguments_raise_clear_errors(key):
    with pytest.raises(ValueError, match="padding must be 'VALID', 'SAME'"):
        fn.Conv2D(4, 3, padding="FULL")
    with pytest.raises(ValueError, match="kernel_size to be an int >= 1"):
        fn.Conv2D(4, 0)
    with pytest.raises(ValueError, match="kernel_size to be an int >= 1"):
        fn.Conv2D(4, (3, -1))
    with pytest.raises(ValueError, match="stride to be an int >= 1"):
        fn.Conv2D(4, 3, stride=0)
    with pytest.raises(ValueError, match="padding to be an int >= 0"):
        fn.Conv2D(4, 3, padding=-1)
    with pytest.raises(ValueError, match="positive integer out_channels"):
        fn.Conv2D(0, 3)
    with pytest.raises(ShapeError, match=r"needs input shape \(height, width, channels\)"):
        fn.Conv2D(4, 3).init(key, (6, 6))
    with pytest.raises(ShapeError, match="needs a larger input"):
        fn.Conv2D(4, 3, dilation=3).init(key, (6, 6, 1))


def test_dtype_mix_is_refused(key):
    layer = fn.Conv2D(2, 2)
    W, b, x = _normals(key, [(2, 2, 1, 2), (2,), (1, 4, 4, 1)], jnp.float32)
    with jax.enable_x64(True), pytest.raises(DTypeError, match="Conv2D"):
        layer.forward({"W": W, "b": b}, x.astype(jnp.float64))


def test_init_shapes(key):
    """init's out shape and HWIO kernel, traced with eval_shape (the Glorot draw itself is initializers' job)."""
    layer, static = fn.Conv2D(16, 3, stride=2, padding="SAME"), {}

    def init(k):
        static["out_shape"], params = layer.init(k, (9, 9, 8))
        return params

    params = jax.eval_shape(init, key)
    assert static["out_shape"] == (5, 5, 16)
    assert params["W"].shape == (3, 3, 8, 16) and params["W"].dtype == jnp.float32
    assert params["b"].shape == (16,)


# The matrix-product formulations (fnnet.layers.conv.plan), each against XLA's convolution and its vjp, in
# float64, over kernels that are not square, padding that is not symmetric, and 1, 2 and 16 input channels.
@pytest.mark.parametrize("c_in", [1, 2, 16])
@pytest.mark.parametrize(
    "kernel, pads", [((3, 3), ((1, 1), (1, 1))), ((2, 3), ((0, 1), (2, 0))), ((1, 1), ((0, 0), (0, 0)))]
)
def test_matmul_formulations_equal_lax(key, c_in, kernel, pads):
    from jax import lax

    from fnnet.layers import conv

    with jax.enable_x64(True):
        x, W = _normals(key, [(2, 5, 6, c_in), kernel + (c_in, 3)], jnp.float64)

        def ref(x, W):
            return lax.conv_general_dilated(x, W, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))

        y = ref(x, W)
        dy = _normals(jax.random.fold_in(key, 1), [y.shape], jnp.float64)[0]
        dx_ref, dW_ref = jax.vjp(lambda a, b: ref(a, b), x, W)[1](dy)
        out_hw = y.shape[1:3]
        for taps in (False, True):
            assert _rel(conv.matmul_forward(x, W, pads, out_hw, taps=taps), y) < 1e-13
        assert _rel(conv.matmul_weight_gradient(x, dy, kernel, pads), dW_ref) < 1e-13
        assert _rel(conv.matmul_input_gradient(dy, W, pads, x.shape[1:3]), dx_ref) < 1e-13


def test_plan_keeps_lax_off_stride_one_and_follows_the_measured_rule():
    from fnnet.layers.conv import Plan, plan

    same, k3 = ((1, 1), (1, 1)), (3, 3)
    assert plan(1, 32, (28, 28), k3, (1, 1), (1, 1), same) == Plan("taps", "im2col", "taps")
    assert plan(32, 64, (14, 14), k3, (1, 1), (1, 1), same) == Plan("im2col", "lax", "taps")
    assert plan(128, 128, (16, 16), k3, (1, 1), (1, 1), same) == Plan("lax", "lax", "lax")
    assert plan(8, 32, (28, 28), k3, (1, 1), (1, 1), same) == Plan("lax", "lax", "lax")
    assert plan(32, 64, (14, 14), (5, 5), (1, 1), (1, 1), same) == Plan("lax", "lax", "lax")
    for strides, dilation, pads in (
        ((2, 2), (1, 1), same),
        ((1, 1), (2, 1), same),
        ((1, 1), (1, 1), ((-1, 0), (0, 0))),
    ):
        assert plan(1, 32, (14, 14), k3, strides, dilation, pads) == Plan("lax", "lax", "lax")


def test_bench_cnn_layers_through_the_matmul_paths_match_autodiff(key):
    """The two planned paths of the bench CNN (one input channel: taps, im2col dW, taps; then 32 or more
    input channels on a small image: im2col forward, lax dW, taps), through the layer's own rules."""
    for in_shape, out in (((12, 12, 1), 4), ((5, 5, 32), 4)):
        layer = fn.Conv2D(out, 3, padding="SAME")
        with jax.enable_x64(True):
            _, params = layer.init(key, in_shape, jnp.float64)
            x = _normals(key, [(2,) + in_shape], jnp.float64)[0]
            y, cache = layer.forward(params, x)
            dy = _normals(jax.random.fold_in(key, 2), [y.shape], jnp.float64)[0]
            grads, dx = layer.backward(params, cache, dy)
            auto = jax.vjp(lambda p, x, layer=layer: layer.forward(p, x)[0], params, x)[1](dy)
        assert _rel(grads["W"], auto[0]["W"]) < 1e-12
        assert _rel(dx, auto[1]) < 1e-12
