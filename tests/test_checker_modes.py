"""The checker beyond one first derivative at one point: determinism, the zero cotangent, kinks, second order.

Each check is shown catching the bug it exists for, a bug the first-order checks at the drawn point let
through, and passing the right rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet import activations as act
from fnnet import catalog, checking
from fnnet.core import Layer, Loss

KEY = jax.random.key(0)


def _dense(backward=None, jvp=None) -> Layer:
    """Dense(3) with a replaceable backward (and jvp): the layer the mutants below are planted in."""
    base = fn.Dense(3)
    return base._replace(backward=backward or base.backward, jvp=jvp or base.jvp)


def _point(dtype=jnp.float64):
    with jax.enable_x64(dtype == jnp.float64):
        _, params = fn.Dense(3).init(KEY, (4,), dtype)
        x = jax.random.normal(jax.random.key(1), (5, 4), dtype)
    return params, x


# ----------------------------------------------------------------------------------------------
# determinism: the rule run twice


def test_a_rule_with_hidden_state_is_caught_by_running_it_twice():
    """A backward that keeps a call counter (hidden state) is right on its first call, so every first-order
    check passes; its second run differs, and only determinism sees it. It runs eagerly (transform="none"):
    under jit a Python counter is read once, at trace time, and baked in."""
    calls = [0]
    base = fn.Dense(3)

    def backward(params, cache, dy):
        dparams, dx = base.backward(params, cache, dy)
        calls[0] += 1
        return dparams, dx * (1 + 1e-3 * (calls[0] - 1))

    params, x = _point()
    with jax.enable_x64(True):
        report = checking.check_layer(_dense(backward), params, x, transform="none")
        assert report.rel_autodiff <= 1e-12 and report.dot_ok  # the first call is right
        assert not report.ok and 1e-4 < report.nondeterminism <= 1e-3  # relative to the largest entry of all leaves
        assert "determinism" in report.wrong and any("hidden state" in h for h in report.hints)
        calls[0] = 0
        tolerant = checking.check_layer(_dense(backward), params, x, transform="none", nondet_tol=1e-2)
    assert tolerant.ok and tolerant.deterministic and tolerant.nondet_tol == 1e-2


def test_gradcheck_calls_grad_fn_twice():
    state = {"n": 0}

    def grad_fn(v):
        state["n"] += 1
        return jnp.cos(v) * (1.0 if state["n"] == 1 else 1.001)

    x = jnp.linspace(-1.0, 1.0, 5)
    report = fn.gradcheck(lambda v: jnp.sum(jnp.sin(v)), grad_fn, x)
    assert state["n"] == 2 and not report.ok and report.wrong == ["determinism"]
    assert report.nondeterminism == pytest.approx(1e-3, rel=1e-3)


def test_every_right_rule_is_bit_equal_on_a_second_run():
    params, x = _point()
    with jax.enable_x64(True):
        for transform in ("none", "jit", "vmap"):
            xx = jnp.stack([x, 2 * x]) if transform == "vmap" else x
            report = checking.check_layer(fn.Dense(3), params, xx, transform=transform, modes=("rev", "fwd"))
            assert report.ok and report.nondeterminism == 0.0 and report.nondet_tol == 0.0, transform
    assert "determinism: two runs of the rule are bit-equal: yes" in str(report)


def test_the_atomics_bar_is_stated_per_entry():
    entries = {e.name: e for e in catalog.entries()}
    assert [n for n, e in entries.items() if e.atomics] == ["Embedding(5,3)"]  # its dE scatter-adds repeated ids
    expected = 0.0 if jax.default_backend() == "cpu" else checking.TOLERANCES["float32"].autodiff
    assert catalog.nondet_tol(entries["Embedding(5,3)"], jnp.float32) == expected
    assert catalog.nondet_tol(entries["Dense(4)"], jnp.float32) == 0.0


# ----------------------------------------------------------------------------------------------
# the zero cotangent (and the zero tangent)


def test_a_gradient_term_that_ignores_the_cotangent_is_caught_at_zero():
    """Weight decay folded into the backward, dW = xᵀdy + λW, with λ = 1e-13: below every first-order bar in
    float64 (a relative error of about 1e-13), but the gradient at dy = 0 is λW, not 0."""
    base = fn.Dense(3)

    def backward(params, cache, dy):
        dparams, dx = base.backward(params, cache, dy)
        return {**dparams, "W": dparams["W"] + 1e-13 * params["W"]}, dx

    params, x = _point()
    with jax.enable_x64(True):
        report = checking.check_layer(_dense(backward), params, x)
    assert report.rel_autodiff <= 1e-10 and report.rel_fd <= 1e-6 and report.dot_ok
    assert not report.ok and report.wrong == ["zero cotangent"]
    assert report.zero == pytest.approx(1e-13 * float(np.max(np.abs(params["W"]))), rel=1e-6)
    assert any("not linear in dy" in h for h in report.hints)


def test_a_nan_at_the_zero_cotangent_is_caught():
    """A rule that normalizes by ‖dy‖ and multiplies it back is right for every dy but 0, where it is 0/0."""
    base = fn.Dense(3)

    def backward(params, cache, dy):
        n = jnp.sqrt(jnp.sum(dy**2))
        dparams, dx = base.backward(params, cache, dy / n)
        return jax.tree_util.tree_map(lambda g: g * n, dparams), dx * n

    params, x = _point()
    with jax.enable_x64(True):
        report = checking.check_layer(_dense(backward), params, x)
    assert report.rel_autodiff <= 1e-10 and np.isnan(report.zero) and not report.ok


def test_a_forward_rule_must_give_zero_at_the_zero_tangent():
    base = fn.Dense(3)

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        y, dy = base.jvp(params, x, dparams, dx, key=key, train=train)
        return y, dy + 1e-14 * y  # an output-sized term: below the float64 bars, not linear in the tangent

    params, x = _point()
    with jax.enable_x64(True):
        report = checking.check_layer(_dense(jvp=jvp), params, x, modes=("rev", "fwd"))
    assert report.forward.rel_autodiff <= 1e-10 and report.forward.zero > 0
    assert not report.ok and report.wrong == ["forward-mode rule"]


# ----------------------------------------------------------------------------------------------
# kinks: the one-sided differences at two steps


def _measure(f, x, v, eps=1e-6):
    values = jnp.stack([f(x + s * eps * v) for s in (1.0, -1.0, 0.5, -0.5)])
    with jax.enable_x64(True):
        return checking._differences(values, f(x), eps, jnp.float64)


@pytest.mark.parametrize("delta", [0.0, 1e-7, 1 / 3 * 1e-6, 0.6e-6, 0.9e-6])
def test_the_kink_measure_sees_a_slope_jump_anywhere_inside_the_probe(delta):
    """|x − δ| along v = 1: a slope jump Δ = 2 at distance δ from the point, anywhere in (0, ε) or at the
    point itself (δ = 0, where central differences alone see nothing; δ = ε/3, where the one-sided gaps
    alone see nothing)."""
    with jax.enable_x64(True):
        fd, kink, floor = _measure(lambda x: jnp.abs(x - delta), jnp.float64(0.0), 1.0)
    assert float(kink) >= 2 * min(delta, 1e-6 - delta) / 1e-6 * 0.99 and float(kink) > 100 * float(floor)
    assert float(kink) > 0.1


@pytest.mark.parametrize("f", [jnp.sin, jnp.exp, lambda x: x**3 - 2 * x, jnp.tanh])
def test_the_kink_measure_is_rounding_on_smooth_functions(f):
    with jax.enable_x64(True):
        for x0 in (-1.3, 0.2, 2.0):
            fd, kink, floor = _measure(f, jnp.float64(x0), 1.0)
            assert float(kink) <= float(floor), (x0, float(kink), float(floor))
            assert float(fd) == pytest.approx(float(jax.grad(f)(x0)), rel=1e-8)


def test_a_wrong_rule_at_a_kink_still_fails():
    """relu'(0) = 1 instead of the pinned 0: right at the shifted point (no unit at 0 there), wrong at the point
    asked for, where autodiff (jax.nn.relu) pins 0."""
    x = jnp.array([0.0, 1.3, 0.0, -0.7])
    report = fn.gradcheck(lambda v: jnp.sum(jax.nn.relu(v)), lambda v: (v >= 0).astype(v.dtype), x)
    assert report.kink is not None and report.kink.resolved and not report.kink.at_point_ok
    assert report.rel_autodiff == 0.0 and report.rel_fd <= 1e-6  # the re-probe itself is right
    assert not report.ok and report.wrong == ["kink"]


def test_a_crossing_never_counts_as_a_pass():
    """Kinks everywhere (|sin(πx/ε)|·ε/π has one every ε): every shifted point crosses one too, so the
    differences decide nothing and the check fails, though the rule is right."""
    eps = checking.TOLERANCES["float64"].fd_eps
    k = jnp.pi / eps

    def loss(v):
        return jnp.sum(jnp.abs(jnp.sin(k * v)) / k)

    def rule(v):
        return jnp.sign(jnp.sin(k * v)) * jnp.cos(k * v)

    with jax.enable_x64(True):
        x = jnp.asarray([0.123456789e-6, 1.7e-3])
        report = fn.gradcheck(loss, rule, x)
    assert report.kink is not None and not report.kink.resolved
    assert report.kink.reprobes == checking.KINK_REPROBES and not report.ok
    assert "the differences decide nothing" in str(report)


def test_catalog_kink_rows_are_re_probed_and_the_cli_says_so(capsys):
    from fnnet import cli

    assert cli.main(["check", "--only", "MaxPool(2)[ties]", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "kink crossed, re-probed" in out and "x: 16 of 32 probes" in out and "1/1 passed" in out


def test_the_shift_is_drawn_from_the_key():
    point = ({"W": jnp.ones((2, 2)), "b": jnp.zeros(2)}, jnp.arange(3))
    a = checking._shifted(point, jax.random.key(3))
    b = checking._shifted(point, jax.random.key(3))
    c = checking._shifted(point, jax.random.key(4))
    np.testing.assert_array_equal(a[0]["W"], b[0]["W"])
    assert not np.array_equal(a[0]["W"], c[0]["W"])
    np.testing.assert_array_equal(a[1], point[1])  # integer leaves stay
    rms = float(jnp.sqrt(jnp.mean((a[0]["W"] - 1) ** 2)))
    assert 0.2 * checking.KINK_SHIFT < rms < 5 * checking.KINK_SHIFT  # a fraction of the leaf's RMS (1)
    assert float(jnp.max(jnp.abs(a[0]["b"]))) > 0  # an all-zero leaf moves by KINK_SHIFT x 1


# ----------------------------------------------------------------------------------------------
# second order: the rule's own derivative


def test_second_order_passes_right_rules_in_both_dtypes():
    for dtype in (jnp.float32, jnp.float64):
        params, x = _point(dtype)
        with jax.enable_x64(dtype == jnp.float64):
            for layer in (fn.Dense(3), fn.serial(fn.Dense(3), act.Tanh(), fn.Dense(2))):
                _, p = layer.init(KEY, (4,), dtype)
                report = checking.check_layer(layer, p, x, order=2)
                assert report.ok and report.second is not None and report.second.ok, str(report)


def test_a_stop_gradient_in_the_rule_is_caught_at_second_order_only():
    """Tanh whose backward reads y through stop_gradient: dx = dy (1 − y²) is right, so every first-order
    check passes, but the rule's own derivative misses −2y·dy·y′: what a Hessian-vector product through
    ``fn.custom_vjp`` would get wrong. Finite differences of the rule see it; symmetry too."""
    base = act.Tanh()

    def backward(params, cache, dy):
        y = jax.lax.stop_gradient(cache)  # the cache is y = tanh(x)
        return (), dy * (1 - y**2)

    layer = base._replace(backward=backward)
    with jax.enable_x64(True):
        x = jax.random.normal(KEY, (3, 5), jnp.float64)
        first = checking.check_layer(layer, (), x)
        second = checking.check_layer(layer, (), x, order=2)
    assert first.ok
    s = second.second
    assert not second.ok and second.wrong == ["second order"]
    assert s.rel_autodiff > 0.1 and s.rel_fd > 0.1
    assert "second order" in str(second)


def test_a_rule_right_only_at_the_point_is_caught_against_autodiff():
    """A backward that closes over the drawn W (not the W it is given): right at the point, so first order
    passes; its derivative in W is missing, which only the autodiff Hessian reveals (the rule's own finite
    differences agree with JAX's derivative of the same wrong rule)."""
    params, x = _point()
    frozen = params["W"]
    base = fn.Dense(3)

    def backward(p, cache, dy):
        dparams, _ = base.backward(p, cache, dy)
        return dparams, dy @ frozen.T

    with jax.enable_x64(True):
        report = checking.check_layer(_dense(backward), params, x, order=2)
    s = report.second
    assert s.rel_autodiff > 0.01 and s.rel_fd <= 1e-6  # the FD of the rule agrees with the rule's derivative
    assert not report.ok and report.wrong == ["second order"]
    assert report.rel_autodiff <= 1e-12 and report.dot_ok  # first order is right at the point


def test_a_loss_hvp_is_checked_against_the_rules_derivative():
    loss = fn.losses.softmax_cross_entropy
    wrong = loss._replace(hvp=lambda cache, v: 1.001 * loss.hvp(cache, v))
    with jax.enable_x64(True):
        pred = jax.random.normal(KEY, (4, 5), jnp.float64)
        target = jax.random.randint(jax.random.key(2), (4,), 0, 5)
        good = checking.check_loss(loss, pred, target, order=2)
        bad = checking.check_loss(wrong, pred, target, order=2)
    assert good.ok and good.second.rel_hvp <= 1e-12
    assert not bad.ok and bad.second.rel_hvp == pytest.approx(1e-3, rel=1e-2) and bad.wrong == ["second order"]


def test_gradcheck_second_order_on_a_user_function():
    def loss(v):
        return jnp.sum(jnp.sin(v) * v)

    def good(v):
        return jnp.cos(v) * v + jnp.sin(v)

    def stale(v):  # right value, derivative of the rule lost through stop_gradient
        return jax.lax.stop_gradient(good(v))

    with jax.enable_x64(True):
        x = jnp.linspace(-1.0, 2.0, 6)
        ok = fn.gradcheck(loss, good, x, order=2)
        bad = fn.gradcheck(loss, stale, x, order=2)
    assert ok.ok and ok.second.rel_autodiff <= 1e-12 and ok.second.rel_fd <= 1e-6
    assert bad.rel_autodiff == 0.0 and not bad.ok and bad.second.rel_autodiff == pytest.approx(1.0)


def test_order_is_validated():
    with pytest.raises(ValueError, match="order=3"):
        fn.gradcheck(jnp.sum, jnp.ones_like, jnp.ones(3), order=3)


def test_the_second_order_column_in_the_cli(capsys):
    from fnnet import cli

    assert cli.main(["check", "--only", "mse", "--dtype", "float64", "--order", "2"]) == 0
    out = capsys.readouterr().out
    assert "2nd" in out.splitlines()[0] and "1/1 passed" in out


def test_a_custom_loss_without_hvp_reports_none():
    mse = fn.losses.mse
    loss = Loss(mse.forward, mse.backward)
    with jax.enable_x64(True):
        pred = jax.random.normal(KEY, (3, 2), jnp.float64)
        report = checking.check_loss(loss, pred, jnp.zeros((3, 2)), order=2)
    assert report.ok and report.second.rel_hvp is None
