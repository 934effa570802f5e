"""Every fused or simplified rule at the edges of its assumptions, against jax.grad of fnnet's forward.

Each docstring in ``fnnet/losses.py`` and ``fnnet/activations.py`` says for which inputs its rule is exact
("Exact for any ...") and what it assumes; these tests probe each of those boundaries. Inputs are tiny and
mostly eager, so the file costs few compiles.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet import activations as act

SCE, BCE = fn.softmax_cross_entropy, fn.binary_cross_entropy


def _manual(loss, pred, target):
    return loss.backward(loss.forward(pred, target)[1])


def _auto(loss, pred, target):
    return jax.grad(lambda p: loss.forward(p, target)[0])(pred)


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy: any real target rows, masked logits, out-of-range labels


def _odd_rows(key, classes=5):
    """Four target rows that are not distributions: multi-hot, unnormalized, negative soft, all-zero."""
    k1, k2 = jax.random.split(key)
    return jnp.stack(
        [
            2 * jax.nn.one_hot(1, classes),  # multi-hot: sums to 2
            3 * jax.nn.softmax(jax.random.normal(k1, (classes,))),  # unnormalized: sums to 3
            jax.random.normal(k2, (classes,)),  # negative soft entries, arbitrary sum
            jnp.zeros(classes),  # all-zero: sums to 0
        ]
    )


def test_softmax_ce_gradient_is_exact_for_any_real_target_rows(key):
    z = jax.random.normal(key, (4, 5))
    y = _odd_rows(jax.random.key(1))
    manual, auto = _manual(SCE, z, y), _auto(SCE, z, y)
    s = y.sum(-1, keepdims=True)
    np.testing.assert_allclose(manual, (s * jax.nn.softmax(z) - y) / 4, atol=1e-7)
    np.testing.assert_allclose(manual, auto, atol=1e-7)
    # the forward is −Σ y log softmax(z) for these rows too
    want = -jnp.sum(y * jax.nn.log_softmax(z)) / 4
    np.testing.assert_allclose(SCE.forward(z, y)[0], want, rtol=1e-6)
    assert np.all(manual[3] == 0.0)  # an all-zero row has no loss and no gradient


def test_softmax_ce_masked_logits_give_finite_loss_and_exact_gradient():
    """−inf logits (masked classes) with zero target: p = 0 there, 0 · log 0 counts as 0."""
    z = jnp.array([[0.3, -jnp.inf, 1.2], [-jnp.inf, 0.0, -0.5]])
    y = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.2, 0.8]])
    value = SCE.forward(z, y)[0]
    log_p = jax.nn.log_softmax(z)
    want = -jnp.sum(jnp.where(y > 0, y * log_p, 0.0)) / 2
    assert np.isfinite(value)
    np.testing.assert_allclose(value, want, rtol=1e-6)
    manual, auto = _manual(SCE, z, y), _auto(SCE, z, y)
    assert np.all(np.isfinite(manual)) and np.all(np.isfinite(auto))
    np.testing.assert_allclose(manual, auto, atol=1e-7)
    assert manual[0, 1] == 0.0 and manual[1, 0] == 0.0


def _value_and_rule(z, labels):
    value, cache = SCE.forward(z, labels)
    return value, SCE.backward(cache)


def test_out_of_range_labels_poison_loss_and_gradient_under_jit(key):
    z = jax.random.normal(key, (3, 4))
    for bad in (4, -1):
        labels = jnp.array([0, bad, 2])
        value, rule = jax.jit(_value_and_rule)(z, labels)
        auto = jax.jit(jax.grad(lambda v, t: SCE.forward(v, t)[0]))(z, labels)
        assert np.isnan(value), bad
        assert np.all(np.isnan(rule[1])) and np.all(np.isnan(auto[1])), bad  # the bad row is NaN
        np.testing.assert_allclose(rule[::2], auto[::2], atol=1e-7)  # the good rows are exact
    with pytest.raises(ValueError, match="label 4, out of range for 4 classes"):
        SCE.forward(z, jnp.array([0, 4, 2]))  # eagerly: the clear error


def test_out_of_range_labels_poison_only_their_problem_under_vmap(key):
    z = jax.random.normal(key, (2, 3, 4))
    labels = jnp.array([[0, 1, 3], [2, 9, 0]])  # the second problem has label 9 of 4 classes
    value, rule = jax.vmap(_value_and_rule)(z, labels)
    assert np.isfinite(value[0]) and np.isnan(value[1])
    assert np.all(np.isfinite(rule[0])) and np.all(np.isnan(rule[1, 1])) and np.all(np.isfinite(rule[1, ::2]))


# ----------------------------------------------------------------------------------------------
# binary cross-entropy: soft and out-of-[0, 1] targets, logits exactly 0


def test_bce_gradient_is_exact_for_any_real_targets_and_at_zero_logits():
    z = jnp.array([[0.0, 0.0, 0.0, 1.5, -2.0, 0.7]])
    y = jnp.array([[0.0, 1.0, 0.3, 1.7, -0.4, 0.5]])  # bits, soft, and outside [0, 1]
    manual, auto = _manual(BCE, z, y), _auto(BCE, z, y)
    np.testing.assert_allclose(manual, jax.nn.sigmoid(z) - y, atol=1e-7)
    np.testing.assert_allclose(auto, manual, atol=1e-7)  # at z = 0 too: σ(0) − y = ½ − y
    # the forward is −[y log σ(z) + (1 − y) log(1 − σ(z))] for any real y
    want = -jnp.sum(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
    np.testing.assert_allclose(BCE.forward(z, y)[0], want, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# activations at ±1e3 and ±∞ (value, rule and jax.grad of fnnet's forward against the limits)

_X = [-np.inf, -1e3, 1e3, np.inf]
_LIMITS = {  # name, kwargs -> (values at _X, derivatives at _X)
    ("sigmoid", ()): ([0, 0, 1, 1], [0, 0, 0, 0]),
    ("tanh", ()): ([-1, -1, 1, 1], [0, 0, 0, 0]),
    ("relu", ()): ([0, 0, 1e3, np.inf], [0, 0, 1, 1]),
    ("leaky_relu", (("alpha", 0.1),)): ([-np.inf, -100, 1e3, np.inf], [0.1, 0.1, 1, 1]),
    ("leaky_relu", (("alpha", 0.0),)): ([0, 0, 1e3, np.inf], [0, 0, 1, 1]),
    ("gelu", ()): ([0, 0, 1e3, np.inf], [0, 0, 1, 1]),
    ("gelu", (("approximate", True),)): ([0, 0, 1e3, np.inf], [0, 0, 1, 1]),
    ("swish", ()): ([0, 0, 1e3, np.inf], [0, 0, 1, 1]),
    ("softplus", ()): ([0, 0, 1e3, np.inf], [0, 0, 1, 1]),
    ("identity", ()): (_X, [1, 1, 1, 1]),
}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", list(_LIMITS), ids=[f"{n}{dict(k) or ''}" for n, k in _LIMITS])
def test_activation_values_and_rules_at_the_extremes(case, dtype):
    name, kw = case
    kwargs = dict(kw)
    values, slopes = _LIMITS[case]
    x = jnp.asarray(_X, dtype)
    fwd, bwd = act._RULES[name]
    y, cache = fwd(x, **kwargs)
    np.testing.assert_allclose(np.asarray(y, np.float64), values, rtol=2e-3, atol=0)
    rule = bwd(cache, jnp.ones_like(x), **kwargs)
    auto = jax.vmap(jax.grad(lambda v: fwd(v, **kwargs)[0]))(x)
    np.testing.assert_allclose(np.asarray(rule, np.float64), slopes, rtol=2e-3, atol=0)
    np.testing.assert_allclose(np.asarray(auto, np.float64), slopes, rtol=2e-3, atol=0)


def test_output_form_rules_lose_only_rounding_where_the_output_saturates():
    """sigmoid' = y(1 − y) and tanh' = 1 − y² from the cached output: where y rounds to ±1 the rule is 0
    (as jax.grad of lax.logistic / tanh), while the true derivative is below float32's eps."""
    x = jnp.array([10.0, 17.0, 20.0, 40.0])
    for name, exact in (
        ("sigmoid", jax.nn.sigmoid(x) * jax.nn.sigmoid(-x)),
        ("tanh", 4 / (jnp.exp(x) + jnp.exp(-x)) ** 2),
    ):
        rule = act.derivative(name, x)
        auto = jax.vmap(jax.grad(getattr(act, name)))(x)
        np.testing.assert_allclose(rule, auto, rtol=1e-6, atol=0)
        assert float(jnp.max(jnp.abs(rule - exact))) <= float(jnp.finfo(jnp.float32).eps)


def test_softmax_rule_with_masked_entries_and_its_nan_boundary(key):
    """−inf entries (masks) are exact: p = 0 and no gradient; a +inf entry or an all-masked row is NaN."""
    x = jnp.array([[0.5, -jnp.inf, -1.0, 2.0], [-jnp.inf, 0.0, -jnp.inf, 0.0]])
    dy = jax.random.normal(key, x.shape)
    y, cache = act.softmax_forward(x)
    _, vjp = jax.vjp(act.softmax, x)
    rule = act.softmax_backward(cache, dy)
    np.testing.assert_allclose(rule, vjp(dy)[0], atol=1e-7)
    assert y[0, 1] == 0.0 and rule[0, 1] == 0.0 and rule[1, 0] == 0.0
    for row in ([jnp.inf, 0.0], [-jnp.inf, -jnp.inf]):
        assert np.all(np.isnan(act.softmax(jnp.array([row]))))
