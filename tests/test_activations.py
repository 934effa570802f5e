"""Activations: rules against jax.grad, pinned kinks, minimal caches, softmax's full Jacobian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet import activations as act

ELEMENTWISE = ["sigmoid", "tanh", "relu", "leaky_relu", "gelu", "swish", "softplus", "softsign", "identity"]
PLAIN = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "swish": jax.nn.swish,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "identity": lambda x: x,
}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_value_matches_jax_nn(name, key):
    x = 3 * jax.random.normal(key, (64,))
    fwd, _ = act._RULES[name]
    np.testing.assert_allclose(fwd(x)[0], PLAIN[name](x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_autodiff_of_jax_nn(name, key):
    x = 3 * jax.random.normal(key, (64,))
    want = jax.vmap(jax.grad(PLAIN[name]))(x)
    np.testing.assert_allclose(act.derivative(name, x), want, rtol=1e-5, atol=1e-6)


def test_gelu_tanh_approximation_matches_jax(key):
    x = 3 * jax.random.normal(key, (64,))
    np.testing.assert_allclose(act.gelu(x, approximate=True), jax.nn.gelu(x, approximate=True), rtol=1e-6, atol=1e-6)
    want = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=True)))(x)
    np.testing.assert_allclose(act.derivative("gelu", x, approximate=True), want, rtol=1e-5, atol=1e-6)


def test_kinks_are_pinned_as_in_jax_nn():
    zero = jnp.zeros(3)
    assert np.all(act.derivative("relu", zero) == 0.0)
    assert np.all(jax.vmap(jax.grad(jax.nn.relu))(zero) == 0.0)  # the same convention
    assert np.all(act.derivative("leaky_relu", zero, alpha=0.2) == 1.0)
    assert np.all(jax.vmap(jax.grad(lambda v: jax.nn.leaky_relu(v, 0.2)))(zero) == 1.0)
    # and autodiff of fnnet's own forward agrees at the kink
    assert float(jax.grad(act.relu)(0.0)) == 0.0
    assert float(jax.grad(lambda v: act.leaky_relu(v, 0.2))(0.0)) == 1.0


@pytest.mark.parametrize("name", ["softplus", "softsign", "gelu", "swish", "sigmoid", "tanh"])
def test_smooth_activations_agree_with_autodiff_exactly_at_zero(name):
    """No kink: the rule and jax.grad of fnnet's forward both give f'(0) (softplus: σ(0) = ½)."""
    f = getattr(act, name)
    manual = float(act.derivative(name, jnp.zeros(())))
    assert float(jax.grad(f)(0.0)) == pytest.approx(manual, abs=1e-7)
    assert manual == pytest.approx(
        {"softplus": 0.5, "softsign": 1.0, "gelu": 0.5, "swish": 0.5, "sigmoid": 0.25, "tanh": 1.0}[name]
    )


def test_sigmoid_derivative_peaks_at_a_quarter():
    x = jnp.linspace(-8, 8, 1601)
    d = act.derivative("sigmoid", x)
    assert float(d.max()) == pytest.approx(0.25, abs=1e-7)
    assert float(x[jnp.argmax(d)]) == pytest.approx(0.0, abs=1e-6)


def test_softsign_rule_is_one_over_one_plus_abs_x_squared_and_saturates_polynomially():
    """softsign'(x) = 1/(1 + |x|)² (= (1 − |y|)², Glorot & Bengio 2010's contrast with tanh's exponential
    tails); at ±∞ the value and the rule give the limits ±1 and 0, not ∞/∞ = NaN, and so does jax.grad."""
    x = jnp.array([-1e3, -3.0, -0.5, 0.5, 3.0, 1e3])
    y, cache = act.softsign_forward(x)
    np.testing.assert_allclose(act.softsign_backward(cache, jnp.ones_like(x)), (1 - jnp.abs(y)) ** 2, rtol=1e-4)
    np.testing.assert_allclose(act.derivative("softsign", x), 1 / (1 + jnp.abs(x)) ** 2, rtol=1e-6)
    # the tail: at x = 5 tanh' = 4/(e^5 + e^-5)² ≈ 1.8e-4, softsign' = 1/36
    assert float(act.derivative("softsign", jnp.array(5.0))) == pytest.approx(1 / 36, rel=1e-6)
    assert float(act.derivative("tanh", jnp.array(5.0))) == pytest.approx(1.8158e-4, rel=1e-3)
    inf = jnp.array([-jnp.inf, jnp.inf])
    y, cache = act.softsign_forward(inf)
    np.testing.assert_array_equal(y, [-1.0, 1.0])
    np.testing.assert_array_equal(act.softsign_backward(cache, jnp.ones(2)), [0.0, 0.0])
    np.testing.assert_array_equal(jax.vmap(jax.grad(act.softsign))(inf), [0.0, 0.0])


def test_caches_are_minimal(key):
    x = jax.random.normal(key, (4, 5))
    y, cache = act.sigmoid_forward(x)
    assert cache is y  # the output, nothing else
    y, cache = act.tanh_forward(x)
    assert cache is y
    _, mask = act.relu_forward(x)
    assert mask.dtype == jnp.bool_ and mask.shape == x.shape


def test_softmax_backward_is_the_full_jacobian(key):
    x = jax.random.normal(key, (3, 6))
    dy = jax.random.normal(jax.random.key(1), (3, 6))
    y, cache = act.softmax_forward(x)
    got = act.softmax_backward(cache, dy)
    jac = jax.vmap(jax.jacobian(jax.nn.softmax))(x)  # (3, 6, 6)
    np.testing.assert_allclose(got, jnp.einsum("bi,bij->bj", dy, jac), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
    # the rule kills the direction along which softmax is invariant (adding a constant)
    np.testing.assert_allclose(act.softmax_backward(cache, jnp.ones_like(dy)), 0.0, atol=1e-7)


def test_softmax_is_stable_for_huge_logits():
    y = act.softmax(jnp.array([[1e4, 0.0, -1e4]]))
    assert np.all(np.isfinite(y)) and float(y[0, 0]) == 1.0


def test_sigmoid_is_finite_at_extremes():
    x = jnp.array([-1e3, 1e3])
    y, cache = act.sigmoid_forward(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(act.sigmoid_backward(cache, jnp.ones(2))))


@pytest.mark.parametrize(
    "make", [fn.Sigmoid, fn.Tanh, fn.Relu, fn.Gelu, fn.Swish, fn.Softplus, fn.Softsign, fn.Identity, fn.Softmax]
)
def test_layer_forms_keep_shape_and_have_no_params(make, key):
    layer = make()
    out_shape, params = layer.init(key, (7,))
    assert out_shape == (7,) and params == ()


def test_layer_rejects_integer_input():
    with pytest.raises(fn.DTypeError, match="Relu.*floating-point"):
        fn.Relu().forward((), jnp.arange(4))


def test_get_names_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'relu6'.*sigmoid"):
        act.get("relu6")
    assert isinstance(act.get("leaky_relu", alpha=0.2), fn.Layer)


@pytest.mark.parametrize("name", sorted(act._RULES))
def test_nan_propagates_and_the_rule_agrees_with_autodiff_at_nan(name, key):
    """NaN in, NaN out (as jax.nn), for the plain function, its forward and its Layer form; at a NaN input
    the rule gives what jax.grad of fnnet's own forward gives (stated in each docstring)."""
    x = jax.random.normal(key, (2, 4)).at[0, 1].set(jnp.nan).at[1, 2].set(0.0)
    dy = jax.random.normal(jax.random.key(1), x.shape)
    fwd, bwd = act._RULES[name]
    y, cache = fwd(x)
    nan_out = np.isnan(np.asarray(y))
    assert nan_out[0, 1] and not nan_out[1].any()  # softmax: the whole row of the NaN; elementwise: that entry
    assert np.isnan(np.asarray(getattr(act, name)(x))[0, 1])
    _, vjp = jax.vjp(lambda v: fwd(v)[0], x)
    np.testing.assert_allclose(bwd(cache, dy), vjp(dy)[0], rtol=1e-6, atol=1e-7)  # NaN exactly where autodiff's
    layer = act.LAYERS[name]()
    ly, lcache = layer.forward((), x)
    np.testing.assert_array_equal(ly, y)
    _, lvjp = jax.vjp(lambda v: layer.forward((), v)[0], x)
    np.testing.assert_allclose(layer.backward((), lcache, dy)[1], lvjp(dy)[0], rtol=1e-6, atol=1e-7)
