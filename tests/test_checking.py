"""gradcheck on user functions: passes right gradients, fails wrong ones and names the leaf."""

import jax
import jax.numpy as jnp
import pytest

import fnnet as fn
from fnnet.checking import TOLERANCES, GradcheckError


def user_loss(params, x):
    """A user's own function, not built from fnnet layers."""
    h = jnp.sin(x @ params["a"]) * params["c"][None]
    return jnp.sum(h**2) + jnp.sum(jnp.cos(params["a"]))


def user_grad(params, x):
    """Its hand-derived gradient."""
    z = x @ params["a"]
    h = jnp.sin(z) * params["c"][None]
    dz = 2 * h * jnp.cos(z) * params["c"][None]
    return {"a": x.T @ dz - jnp.sin(params["a"]), "c": jnp.sum(2 * h * jnp.sin(z), axis=0)}


@pytest.fixture
def args(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"a": jax.random.normal(k1, (4, 3)), "c": jax.random.normal(k2, (3,))}, jax.random.normal(k3, (5, 4))


def test_right_gradient_passes_in_float32_and_float64(args):
    report = fn.gradcheck(user_loss, user_grad, *args)
    assert report.ok, report
    assert report.dtype == "float32" and report.fd_dtype == "float64"
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), args)
        report = fn.gradcheck(user_loss, user_grad, *p64)
        assert report.ok, report
        assert report.rel_autodiff <= TOLERANCES["float64"].autodiff
        assert report.rel_fd <= TOLERANCES["float64"].fd


def test_wrong_gradient_fails_and_names_the_leaf(args):
    def wrong(params, x):
        g = user_grad(params, x)
        return {"a": g["a"], "c": g["c"] * 1.001}  # a 0.1% error in one leaf

    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), args)
        report = fn.gradcheck(user_loss, wrong, *p64)
    assert not report.ok
    assert report.failures == ["args[0]['c']"]
    assert "wrong: args[0]['c']" in str(report) and "FAIL" in str(report)


def test_large_leaves_use_random_directions(key):
    w = jax.random.normal(key, (40, 30))
    report = fn.gradcheck(lambda w: jnp.sum(jnp.tanh(w) ** 2), lambda w: 2 * jnp.tanh(w) * (1 - jnp.tanh(w) ** 2), w)
    assert report.ok and report.leaves[0].fd_probes == 8


def test_structure_mismatch_is_a_clear_error(args):
    with pytest.raises(GradcheckError, match="structure"):
        fn.gradcheck(user_loss, lambda p, x: user_grad(p, x)["a"], *args)
    with pytest.raises(GradcheckError, match=r"shape \(3, 4\), its parameter \(4, 3\)"):
        fn.gradcheck(user_loss, lambda p, x: {"a": user_grad(p, x)["a"].T, "c": user_grad(p, x)["c"]}, *args)
