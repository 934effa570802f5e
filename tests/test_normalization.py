"""BatchNorm (train and eval paths, update_state) and LayerNorm: parity with jax.vjp, conventions, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import normals as _normals
from _helpers import rel as _rel

import fnnet as fn
from fnnet.core import ShapeError


def _bn_params(key, c, dtype):
    """Random γ, β and running statistics (var > 0), so no term of the rule hides behind a 1 or a 0."""
    g, b, m, v = _normals(key, [(c,)] * 4, dtype)
    return {"gamma": 1 + g / 2, "beta": b, "state": {"mean": m, "var": 0.5 + jnp.abs(v)}}


def _leaf(tree, name):
    """gamma and beta at the top of BatchNorm's params, the running statistics under "state"."""
    return tree["state"][name] if name in ("mean", "var") else tree[name]


def _both(layer, train):
    @jax.jit
    def run(params, x, dy):
        y, cache = layer.forward(params, x, train=train)
        _, vjp = jax.vjp(lambda p, xx: layer.forward(p, xx, train=train)[0], params, x)
        return y, cache, layer.backward(params, cache, dy), vjp(dy)

    return run


SHAPES = [pytest.param((6, 4), id="dense(B,C)"), pytest.param((3, 3, 2, 2), id="image(B,H,W,C)")]


@pytest.mark.parametrize("dtype, bar", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_backward_matches_autodiff(key, shape, train, dtype, bar):
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        k_p, k_x = jax.random.split(key)
        params = _bn_params(k_p, shape[-1], dt)
        x, dy = _normals(k_x, [shape, shape], dt)
        x = 2 * x + 1  # batch statistics far from the running ones
        _, _, (grads, dx), (grads_ad, dx_ad) = _both(fn.BatchNorm(), train)(params, x, dy)
        assert _rel(dx, dx_ad) <= bar
        assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
        for name in ("gamma", "beta", "mean", "var"):
            g, p = _leaf(grads, name), _leaf(params, name)
            assert g.shape == p.shape and g.dtype == dt
            assert _rel(g, _leaf(grads_ad, name)) <= bar, name
        stats = grads["state"]
        if train:  # the running statistics are buffers: not read in training, so their gradient is 0
            assert np.all(np.asarray(stats["mean"]) == 0) and np.all(np.asarray(stats["var"]) == 0)
        else:  # evaluation reads them: a real, nonzero gradient
            assert np.all(np.asarray(stats["mean"]) != 0) and np.all(np.asarray(stats["var"]) != 0)


def test_batch_norm_train_uses_biased_batch_statistics(key):
    """y = γ (x − μ_B)/√(σ²_B + ε) + β with σ²_B = mean((x − μ_B)²) (÷ m), whatever the running buffers."""
    with jax.enable_x64(True):
        params = _bn_params(key, 3, jnp.float64)
        (x,) = _normals(jax.random.fold_in(key, 1), [(2, 4, 3)], jnp.float64)
        y, _ = fn.BatchNorm(eps=1e-5).forward(params, x)
        xs = np.asarray(x).reshape(-1, 3)  # m = 8 entries per feature
        xhat = (xs - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-5)  # numpy's var is the biased one
        expected = np.asarray(params["gamma"]) * xhat + np.asarray(params["beta"])
        np.testing.assert_allclose(np.asarray(y).reshape(-1, 3), expected, rtol=1e-12)


def test_batch_norm_eval_uses_the_running_statistics(key):
    with jax.enable_x64(True):
        params = _bn_params(key, 3, jnp.float64)
        (x,) = _normals(jax.random.fold_in(key, 1), [(5, 3)], jnp.float64)
        y, _ = fn.BatchNorm().forward(params, x, train=False)
        p = jax.tree_util.tree_map(np.asarray, params)
        expected = p["gamma"] * (np.asarray(x) - p["state"]["mean"]) / np.sqrt(p["state"]["var"] + 1e-5) + p["beta"]
        np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(fn.BatchNorm().forward(params, x[:1], train=False)[0]), expected[:1])


def test_update_state_folds_in_the_batch_with_momentum_and_unbiased_variance(key):
    with jax.enable_x64(True):
        params = _bn_params(key, 3, jnp.float64)
        before = jax.tree_util.tree_map(np.asarray, params)
        (x,) = _normals(jax.random.fold_in(key, 1), [(5, 3)], jnp.float64)
        layer = fn.BatchNorm(momentum=0.8)
        _, cache = layer.forward(params, x, train=True)
        new = layer.update_state(params, cache)
        xs = np.asarray(x)
        old, stats = before["state"], new["state"]
        np.testing.assert_allclose(np.asarray(stats["mean"]), 0.8 * old["mean"] + 0.2 * xs.mean(0), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(stats["var"]), 0.8 * old["var"] + 0.2 * xs.var(0, ddof=1), rtol=1e-12)
        for name in ("gamma", "beta"):
            np.testing.assert_array_equal(np.asarray(new[name]), before[name])
        for name in ("gamma", "beta", "mean", "var"):  # nothing was mutated
            np.testing.assert_array_equal(np.asarray(_leaf(params, name)), _leaf(before, name))
        _, eval_cache = layer.forward(params, x, train=False)
        assert layer.update_state(params, eval_cache) is params  # no batch statistics in evaluation


def test_update_state_through_serial_and_jit(key):
    """serial composes update_state; a jitted train step returns the new running statistics explicitly."""
    net = fn.serial(fn.Dense(3), fn.BatchNorm(), fn.Relu())
    _, params = net.init(key, (4,))
    (x,) = _normals(key, [(6, 4)], jnp.float32)

    @jax.jit
    def step(params, x):
        y, cache = net.forward(params, x, train=True)
        return net.update_state(params, cache)

    new = step(params, x)
    h = np.asarray(x @ params[0]["W"] + params[0]["b"][None, :])
    np.testing.assert_allclose(np.asarray(new[1]["state"]["mean"]), 0.1 * h.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(new[1]["state"]["var"]), 0.9 + 0.1 * h.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(new[0]["W"]), np.asarray(params[0]["W"]))


def test_layer_norm_backward_matches_autodiff_and_normalizes_each_example(key):
    for dtype, bar in (("float64", 1e-12), ("float32", 1e-5)):
        with jax.enable_x64(dtype == "float64"):
            dt = jnp.dtype(dtype)
            g, b, x, dy = _normals(key, [(5,), (5,), (2, 3, 5), (2, 3, 5)], dt)
            for layer, params in (
                (fn.LayerNorm(), {"gamma": 1 + g / 2, "beta": b}),
                (fn.LayerNorm(use_affine=False), ()),
            ):
                y, cache, (grads, dx), (grads_ad, dx_ad) = _both(layer, True)(params, 3 * x - 1, dy)
                assert _rel(dx, dx_ad) <= bar
                for name in ("gamma", "beta") if params else ():
                    assert _rel(grads[name], grads_ad[name]) <= bar
                if not params:
                    assert grads == ()
                    np.testing.assert_allclose(np.asarray(jnp.mean(y, axis=-1)), 0, atol=1e-5)
                    np.testing.assert_allclose(np.asarray(jnp.var(y, axis=-1)), 1, rtol=1e-3)  # biased, ε = 1e-5


def test_bad_arguments_and_shapes_raise_clear_errors(key):
    params = _bn_params(key, 3, jnp.float32)
    (x,) = _normals(key, [(4, 5)], jnp.float32)
    with pytest.raises(ShapeError, match=r"BatchNorm\(\) expected inputs \(\.\.\., 3\), got \(4, 5\)"):
        fn.BatchNorm().forward(params, x)
    with pytest.raises(ShapeError, match="at least 2 values per feature"):
        fn.BatchNorm().forward(params, x[:1, :3], train=True)
    with pytest.raises(ShapeError, match=r"LayerNorm\(\) expected inputs \(\.\.\., 3\), got \(4, 5\)"):
        fn.LayerNorm().forward({"gamma": params["gamma"], "beta": params["beta"]}, x)
    with pytest.raises(ValueError, match="momentum"):
        fn.BatchNorm(momentum=1.0)
    with pytest.raises(ValueError, match="eps > 0"):
        fn.BatchNorm(eps=0.0)
    with pytest.raises(ValueError, match="eps > 0"):
        fn.LayerNorm(eps=-1e-5)


def test_batch_norm_keeps_its_buffers_under_state_and_refuses_the_flat_layout(key):
    """The running statistics sit in params["state"], so they are recognizable without the Layer; the
    flat layout of older fnnet ({"gamma", "beta", "mean", "var"}) is refused while tracing, naming the key."""
    _, params = fn.BatchNorm().init(key, (3,))
    assert set(params) == {"gamma", "beta", "state"} and set(params["state"]) == {"mean", "var"}
    assert fn.optim.trainable_mask(params) == {"gamma": True, "beta": True, "state": {"mean": False, "var": False}}
    flat = {"gamma": params["gamma"], "beta": params["beta"], **params["state"]}
    with pytest.raises(
        ValueError,
        match=r"BatchNorm\(\) needs params with keys 'gamma', 'beta', 'state'.*"
        r"\(missing 'state'; unexpected 'mean', 'var'\)",
    ):
        fn.BatchNorm().forward(flat, jnp.ones((4, 3)))
    bad = {**params, "state": {"mean": params["state"]["mean"], "var": jnp.ones((4,))}}
    with pytest.raises(
        ShapeError, match=r"BatchNorm\(\): params\['state'\]\['var'\] has shape \(4,\), expected \(3,\)"
    ):
        fn.BatchNorm().forward(bad, jnp.ones((4, 3)))
