"""Hand-written forward mode (jvp) of Conv2D, MaxPool, AvgPool, BatchNorm, LayerNorm and RMSNorm.

Each rule is checked in float64 three ways, eagerly and under ``jax.jit``: its y is the forward's y,
its dy matches ``jax.jvp`` of the forward (rel 1e-10), and the adjoint identity
⟨J t, c⟩ = ⟨t, Jᵀ c⟩ holds against the layer's hand-written backward (rel 1e-10; no autodiff).
Pooling ties (all-equal inputs) and the normalizations' special cases (constant rows and features,
zero rows) are pinned on purpose.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import DTypeError, ShapeError

RTOL = 1e-10


def _rel(a, b) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖) over the leaves (0 when both vanish)."""
    a, b = (np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(t)] or [np.zeros(0)]) for t in (a, b))
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def _dot(a, b) -> float:
    return float(sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))))


def _normal_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)])


def _check_jvp(layer, params, x, key, *, train=True, jit=False):
    """The three checks of the module docstring at (params, x), with random tangents and cotangent."""
    k_p, k_x, k_c = jax.random.split(key, 3)
    dparams, dx = _normal_like(k_p, params), jax.random.normal(k_x, x.shape, x.dtype)

    def rule(p, x, dp, dx):
        return layer.jvp(p, x, dp, dx, train=train)

    def forward(p, x):
        return layer.forward(p, x, train=train)[0]

    rule_f = jax.jit(rule) if jit else rule
    y, dy = rule_f(params, x, dparams, dx)
    y_ref, cache = layer.forward(params, x, train=train)
    assert y.dtype == dy.dtype == x.dtype and dy.shape == y.shape
    assert _rel(y, y_ref) <= 1e-14
    _, dy_ref = jax.jvp(forward, (params, x), (dparams, dx))
    assert _rel(dy, dy_ref) <= RTOL, (layer.label, _rel(dy, dy_ref))
    c = jax.random.normal(k_c, y.shape, y.dtype)
    dp_bar, dx_bar = layer.backward(params, cache, c)
    lhs, rhs = _dot(dy, c), _dot(dparams, dp_bar) + _dot(dx, dx_bar)
    assert abs(lhs - rhs) <= RTOL * max(abs(lhs), abs(rhs), 1e-300), (layer.label, lhs, rhs)
    return y, dy


def _random_params(layer, key, in_shape):
    """The layer's params with every leaf redrawn (γ ≠ 1, β ≠ 0, running var > 0)."""
    _, params = layer.init(key, in_shape, jnp.float64)
    drawn = _normal_like(jax.random.fold_in(key, 1), params)
    if isinstance(params, dict) and "state" in params:
        drawn["state"]["var"] = jnp.exp(drawn["state"]["var"])
    return drawn


CONV_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=(2, 3), stride=2, padding="SAME"),
    dict(kernel_size=3, stride=(2, 1), padding=1, dilation=2),
    dict(kernel_size=2, padding=((0, 2), (1, 0)), dilation=(1, 2)),
    dict(kernel_size=3, stride=3, padding="VALID"),  # a stride that leaves input rows unread
    dict(kernel_size=3, padding=((4, 0), (0, 4))),  # padding wider than the kernel
    dict(kernel_size=3, padding="same", use_bias=False),
]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("kwargs", CONV_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv2d(key, kwargs, jit):
    with jax.enable_x64(True):
        layer = fn.Conv2D(4, **kwargs)
        in_shape = (7, 8, 3)
        params = _random_params(layer, key, in_shape)
        x = jax.random.normal(jax.random.fold_in(key, 2), (2,) + in_shape, jnp.float64)
        _check_jvp(layer, params, x, jax.random.fold_in(key, 3), jit=jit)


POOL_CASES = [
    dict(window_shape=2),
    dict(window_shape=3, stride=2, padding="SAME"),  # overlapping windows, padded borders
    dict(window_shape=(2, 3), stride=1),
    dict(window_shape=(3, 2), stride=(2, 3), padding="SAME"),
]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("kind", ["MaxPool", "AvgPool"])
@pytest.mark.parametrize("kwargs", POOL_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_pooling(key, kind, kwargs, jit):
    with jax.enable_x64(True):
        layer = getattr(fn, kind)(**kwargs)
        x = jax.random.normal(key, (2, 7, 8, 3), jnp.float64)
        _check_jvp(layer, (), x, jax.random.fold_in(key, 1), jit=jit)


@pytest.mark.parametrize("kwargs", POOL_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_maxpool_ties_follow_the_backward(key, kwargs):
    """All-equal windows: the tangent is read at the first pixel, exactly where backward writes dy."""
    with jax.enable_x64(True):
        layer = fn.MaxPool(**kwargs)
        x = jnp.full((2, 7, 8, 3), 0.5, jnp.float64)
        k_x, k_c = jax.random.split(key)
        dx = jax.random.normal(k_x, x.shape, x.dtype)
        y, dy = layer.jvp((), x, (), dx)
        y_ref, cache = layer.forward((), x)
        np.testing.assert_array_equal(y, y_ref)
        c = jax.random.normal(k_c, y.shape, y.dtype)
        _, dx_bar = layer.backward((), cache, c)
        lhs, rhs = _dot(dy, c), _dot(dx, dx_bar)
        assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))
        # the first pixel of each window, row-major (a window starting in padding is padded with −∞ there,
        # so its first real pixel wins; with VALID padding it is the window's top-left corner)
        if kwargs.get("padding", "VALID") == "VALID":
            sh, sw = fn.layers.conv.as_pair("", "", kwargs.get("stride", kwargs["window_shape"]))
            oh, ow = y.shape[1:3]
            np.testing.assert_array_equal(dy, dx[:, : oh * sh : sh, : ow * sw : sw, :])


def test_maxpool_tie_on_a_two_by_two_window():
    """A window with its max twice (bottom-left and top-right): the top-right, first in row-major order."""
    with jax.enable_x64(True):
        x = jnp.array([[0.0, 2.0], [2.0, 1.0]], jnp.float64).reshape(1, 2, 2, 1)
        dx = jnp.array([[10.0, 20.0], [30.0, 40.0]], jnp.float64).reshape(1, 2, 2, 1)
        y, dy = fn.MaxPool(2).jvp((), x, (), dx)
        assert float(y[0, 0, 0, 0]) == 2.0 and float(dy[0, 0, 0, 0]) == 20.0


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5, 2)], ids=["dense", "image"])
def test_batchnorm(key, shape, train, jit):
    with jax.enable_x64(True):
        layer = fn.BatchNorm()
        params = _random_params(layer, key, shape[1:])
        x = 1.5 + 2.0 * jax.random.normal(jax.random.fold_in(key, 2), shape, jnp.float64)
        _check_jvp(layer, params, x, jax.random.fold_in(key, 3), train=train, jit=jit)


def test_batchnorm_train_ignores_the_state_tangent_and_eval_uses_it(key):
    with jax.enable_x64(True):
        layer = fn.BatchNorm()
        params = _random_params(layer, key, (5,))
        x = jax.random.normal(jax.random.fold_in(key, 2), (6, 5), jnp.float64)
        dparams = jax.tree_util.tree_map(jnp.zeros_like, params)
        dparams["state"] = _normal_like(jax.random.fold_in(key, 3), params["state"])
        dx = jnp.zeros_like(x)
        _, dy_train = layer.jvp(params, x, dparams, dx, train=True)
        np.testing.assert_array_equal(dy_train, jnp.zeros_like(x))
        _, dy_eval = layer.jvp(params, x, dparams, dx, train=False)
        assert float(jnp.max(jnp.abs(dy_eval))) > 0


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_constant_feature(key, train):
    """σ²_B = 0 in one feature: finite, and the same as jax.jvp and the backward's transpose."""
    with jax.enable_x64(True):
        layer = fn.BatchNorm()
        params = _random_params(layer, key, (4,))
        x = jax.random.normal(jax.random.fold_in(key, 2), (6, 4), jnp.float64).at[:, 1].set(0.75)
        _, dy = _check_jvp(layer, params, x, jax.random.fold_in(key, 3), train=train)
        assert bool(jnp.all(jnp.isfinite(dy)))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("use_affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6), (3, 1)], ids=["rows", "sequence", "d=1"])
def test_layernorm(key, shape, use_affine, jit):
    with jax.enable_x64(True):
        layer = fn.LayerNorm(use_affine=use_affine)
        params = _random_params(layer, key, shape[1:])
        x = 0.5 + jax.random.normal(jax.random.fold_in(key, 2), shape, jnp.float64)
        _check_jvp(layer, params, x, jax.random.fold_in(key, 3), jit=jit)


def test_layernorm_constant_row(key):
    with jax.enable_x64(True):
        layer = fn.LayerNorm()
        params = _random_params(layer, key, (5,))
        x = jax.random.normal(jax.random.fold_in(key, 2), (3, 5), jnp.float64).at[1].set(-2.0)
        _, dy = _check_jvp(layer, params, x, jax.random.fold_in(key, 3))
        assert bool(jnp.all(jnp.isfinite(dy)))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6)], ids=["rows", "sequence"])
def test_rmsnorm(key, shape, jit):
    with jax.enable_x64(True):
        layer = fn.RMSNorm()
        params = _random_params(layer, key, shape[1:])
        x = jax.random.normal(jax.random.fold_in(key, 2), shape, jnp.float64)
        _check_jvp(layer, params, x, jax.random.fold_in(key, 3), jit=jit)


def test_rmsnorm_zero_row(key):
    """A zero row: x̂ = 0, dx̂ = dx/√ε, finite and exact."""
    with jax.enable_x64(True):
        layer = fn.RMSNorm(eps=1e-6)
        params = _random_params(layer, key, (5,))
        x = jax.random.normal(jax.random.fold_in(key, 2), (3, 5), jnp.float64).at[0].set(0.0)
        k_p, k_x = jax.random.split(jax.random.fold_in(key, 3))
        dparams, dx = _normal_like(k_p, params), jax.random.normal(k_x, x.shape, x.dtype)
        _, dy = layer.jvp(params, x, dparams, dx)
        np.testing.assert_allclose(dy[0], params["g"] * dx[0] / np.sqrt(1e-6), rtol=1e-12)
        _check_jvp(layer, params, x, jax.random.fold_in(key, 3))


def _layers():
    return [
        (fn.Conv2D(4, 3), (5, 5, 3)),
        (fn.MaxPool(2), (4, 4, 3)),
        (fn.AvgPool(2), (4, 4, 3)),
        (fn.BatchNorm(), (3,)),
        (fn.LayerNorm(), (3,)),
        (fn.RMSNorm(), (3,)),
    ]


@pytest.mark.parametrize("index", range(6))
def test_bad_tangents_raise_clear_errors(key, index):
    layer, in_shape = _layers()[index]
    _, params = layer.init(key, in_shape)
    x = jax.random.normal(key, (2,) + in_shape)
    # a wrong dx shape, a wrong dx dtype
    with pytest.raises(ShapeError, match=rf"{layer.label.split('(')[0]}.*dx has shape \(1,"):
        layer.jvp(params, x, params, x[:1])
    with pytest.raises(DTypeError, match="tangent dx is float16"):
        layer.jvp(params, x, params, x.astype(jnp.float16))
    if not params:
        with pytest.raises(ValueError, match="has no parameters"):
            layer.jvp(params, x, {"W": x}, x)
        return
    # a missing leaf, an unexpected leaf, a leaf of another shape
    leaf = next(k for k in params if k != "state")
    missing = {k: v for k, v in params.items() if k != leaf}
    with pytest.raises(ValueError, match=rf"dparams: missing \['{leaf}'\]"):
        layer.jvp(params, x, missing, x)
    with pytest.raises(ValueError, match=r"dparams: unexpected \['extra'\]"):
        layer.jvp(params, x, {**params, "extra": params[leaf]}, x)
    with pytest.raises(ShapeError, match=rf"dparams\['{leaf}'\] has shape"):
        layer.jvp(params, x, {**params, leaf: params[leaf][..., :1]}, x)
    # the forward's own checks run first: bad params give the forward's error
    with pytest.raises(ValueError, match="missing"):
        layer.jvp(missing, x, params, x)


def test_batchnorm_state_tangent_is_required(key):
    layer = fn.BatchNorm()
    _, params = layer.init(key, (3,))
    x = jax.random.normal(key, (4, 3))
    flat = {"gamma": params["gamma"], "beta": params["beta"]}
    with pytest.raises(ValueError, match=r"dparams: missing \['state'\]\['mean'\], \['state'\]\['var'\]"):
        layer.jvp(params, x, flat, x)
