"""gradcheck on user functions: passes right gradients, fails wrong ones and names the leaf."""

import jax
import jax.numpy as jnp
import numpy as np
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


# ----------------------------------------------------------------------------------------------
# The report: absolute errors, worst indices, the adjoint bar, and hints from planted bugs


def _square_loss(w):
    return jnp.sum(w**2)


def test_report_names_the_worst_element_and_absolute_errors(key):
    w = jax.random.normal(key, (4, 3))
    report = fn.gradcheck(_square_loss, lambda w: (2 * w).at[2, 1].add(0.5), w)
    (leaf,) = report.leaves
    assert not report.ok and leaf.worst_autodiff == (2, 1) and leaf.worst_fd == (2, 1)
    assert leaf.abs_autodiff == pytest.approx(0.5, rel=1e-6) and report.abs_autodiff == leaf.abs_autodiff
    assert "(2, 1)" in str(report) and "5.0e-01" in str(report)


def test_missing_factor_two_is_named(key):
    report = fn.gradcheck(_square_loss, lambda w: w, jax.random.normal(key, (5,)))
    assert not report.ok and any("manual = 0.5 x reference" in h and "missing factor 2" in h for h in report.hints)
    assert "hint: " in str(report)


def test_spurious_factor_is_named(key):
    report = fn.gradcheck(_square_loss, lambda w: 4 * w, jax.random.normal(key, (5,)))
    assert any("spurious factor 2" in h for h in report.hints), report


def test_sign_flip_is_named(key):
    report = fn.gradcheck(_square_loss, lambda w: -2 * w, jax.random.normal(key, (5,)))
    assert any("sign flip" in h for h in report.hints), report


def test_transposed_gradient_is_named(key):
    a = jax.random.normal(key, (3, 3))
    report = fn.gradcheck(lambda w: jnp.sum(w * a), lambda w: a.T, jnp.zeros((3, 3)))
    assert any("transposed" in h for h in report.hints), report
    with pytest.raises(GradcheckError, match="transposed"):  # a non-square leaf: the shape says it
        fn.gradcheck(lambda w: jnp.sum(w**2), lambda w: 2 * w.T, jnp.ones((2, 3)))


def test_zero_gradient_is_named(key):
    w = jax.random.normal(key, (6,))
    report = fn.gradcheck(_square_loss, jnp.zeros_like, w)
    assert any("returns zeros where the reference does not" in h for h in report.hints), report
    partial = fn.gradcheck(_square_loss, lambda w: jnp.where(w > 0, 2 * w, 0.0), w)  # a mask too many
    assert any("zero at" in h and "where the reference is not" in h for h in partial.hints), partial


def test_an_error_in_one_leaf_only_is_named(key):
    real = fn.Dense(4)

    def backward(p, cache, dy):  # the bias gradient takes the mean over the batch, the rest is right
        grads, dx = real.backward(p, cache, dy)
        return {**grads, "b": jnp.mean(dy, axis=0)}, dx

    wrong = real._replace(backward=backward)
    _, params = wrong.init(key, (6,))
    report = fn.check_layer(wrong, params, jax.random.normal(key, (3, 6)))
    assert not report.ok and report.failures == ["params['b']"]
    assert any("= 1/B (B = 3, the batch): a mean over the batch" in h for h in report.hints), report
    assert any("confined to one leaf, params['b']" in h for h in report.hints), report


def test_a_loss_missing_its_batch_mean_is_named(key):
    real = fn.mse
    wrong = fn.Loss(real.forward, lambda cache: real.backward(cache) * 4)  # forgot the 1/B of the mean, B = 4
    pred, target = jax.random.normal(key, (4, 3)), jax.random.normal(jax.random.key(1), (4, 3))
    report = fn.check_loss(wrong, pred, target)
    assert not report.ok and not report.dot_ok
    assert any("= B (B = 4, the batch): a missing 1/B" in h for h in report.hints), report


def test_adjoint_identity_has_its_own_bar_and_verdict(key):
    assert all(t.adjoint is not None and t.adjoint_bar == t.adjoint for t in TOLERANCES.values())
    real = fn.Tanh()
    wrong = real._replace(backward=lambda p, c, dy: real.backward(p, c, 1.01 * dy))
    x = jax.random.normal(key, (3, 4))
    good, bad = fn.check_layer(real, (), x), fn.check_layer(wrong, (), x)
    assert good.ok and good.dot_ok and good.dot_error <= TOLERANCES["float32"].adjoint
    assert not bad.dot_ok and "adjoint identity" in str(bad) and "(bar 1e-04): NO" in str(bad)


@pytest.mark.parametrize("transform", ["none", "jit", "vmap"])
def test_a_wrong_rule_fails_under_every_transform(key, transform):
    real = fn.Tanh()
    wrong = real._replace(backward=lambda p, c, dy: ((), dy * (1 - c)))  # forgot the square
    x = jax.random.normal(key, (2, 3, 4) if transform == "vmap" else (3, 4))
    assert fn.check_layer(real, (), x, transform=transform).ok
    assert not fn.check_layer(wrong, (), x, transform=transform).ok


def test_grad_fn_need_not_be_jittable(args):
    """gradcheck calls the user's grad_fn as written: here it computes on the host with NumPy."""
    import numpy as np

    def host_grad(params, x):
        g = user_grad(params, x)
        return {k: jnp.asarray(np.asarray(v)) for k, v in g.items()}

    assert fn.gradcheck(user_loss, host_grad, *args).ok


def test_checks_with_the_same_computation_share_one_compiled_program(key):
    from fnnet import checking

    x = jax.random.normal(key, (3, 6))
    _, params = fn.Dense(4).init(key, (6,))
    assert fn.check_layer(fn.Dense(4), params, x).ok
    compiled = len(checking._COMPILED)
    assert fn.check_layer(fn.Dense(4), params, x + 1).ok  # a new layer object, new values: the same program
    assert len(checking._COMPILED) == compiled


@pytest.mark.parametrize("elements", [12, 1200])  # probed element by element, and along random directions
def test_a_nan_in_one_leaf_stays_in_that_leaf(key, elements):
    """A NaN in one leaf's gradient marks that leaf and the whole report, not the other leaves' errors."""
    x = jax.random.normal(key, (elements,))
    loss = lambda a, b: jnp.sum(jnp.sin(a) * b)  # noqa: E731

    def grad(a, b):
        return jnp.cos(a) * b, jnp.full_like(b, jnp.nan)  # right for a, NaN for b

    report = fn.gradcheck(loss, grad, x, x + 1, argnums=(0, 1))
    a, b = report.leaves
    assert a.ok and a.rel_fd <= TOLERANCES["float32"].fd and a.rel_fd_autodiff <= TOLERANCES["float32"].fd
    assert not b.ok and np.isnan(b.rel_fd) and np.isnan(b.rel_autodiff)
    assert np.isnan(report.rel_fd) and np.isnan(report.rel_autodiff) and not report.ok
