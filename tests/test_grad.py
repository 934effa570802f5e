"""The three gradient paths agree; vmap gives per-example gradients; custom_vjp runs the manual rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn


@pytest.fixture
def mlp(key):
    net = fn.serial(fn.Dense(16), fn.Relu(), fn.Dense(8), fn.Tanh(), fn.Dense(3))
    _, params = net.init(key, (5,))
    x = jax.random.normal(jax.random.key(1), (12, 5))
    y = jax.random.randint(jax.random.key(2), (12,), 0, 3)
    return net, params, x, y


def _close(a, b, rtol=1e-5, atol=1e-7):
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize("source", ["autodiff_value_and_grad", "custom_vjp_value_and_grad"])
def test_sources_agree_under_jit(mlp, source):
    net, p, x, y = mlp
    v1, g1 = jax.jit(fn.value_and_grad(net, fn.softmax_cross_entropy))(p, x, y)
    v2, g2 = jax.jit(getattr(fn, source)(net, fn.softmax_cross_entropy))(p, x, y)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    _close(g1, g2)


def test_vmap_gives_per_example_gradients(mlp):
    net, p, x, y = mlp
    per = jax.vmap(fn.value_and_grad(net, fn.softmax_cross_entropy), in_axes=(None, 0, 0))
    auto = jax.vmap(fn.autodiff_value_and_grad(net, fn.softmax_cross_entropy), in_axes=(None, 0, 0))
    v1, g1 = jax.jit(per)(p, x[:, None], y[:, None])
    v2, g2 = jax.jit(auto)(p, x[:, None], y[:, None])
    assert g1[0]["W"].shape == (12, 5, 16)
    _close(g1, g2)
    # the mean of per-example gradients is the batch gradient
    _, batch = fn.value_and_grad(net, fn.softmax_cross_entropy)(p, x, y)
    _close(jax.tree_util.tree_map(lambda g: g.mean(0), g1), batch)


def test_custom_vjp_runs_the_hand_written_rule(key):
    """A deliberately different backward proves jax.grad goes through the rule, not autodiff."""
    real = fn.Dense(2)
    doubled = fn.Layer(real.init, real.forward, lambda p, c, dy: real.backward(p, c, 2 * dy))
    _, p = real.init(key, (3,))
    x = jax.random.normal(key, (4, 3))
    f_real, f_doubled = fn.custom_vjp(real), fn.custom_vjp(doubled)
    g_real = jax.grad(lambda q: f_real(q, x).sum())(p)
    g_doubled = jax.grad(lambda q: f_doubled(q, x).sum())(p)
    _close(jax.tree_util.tree_map(lambda g: 2 * g, g_real), g_doubled)
    np.testing.assert_allclose(f_real(p, x), real.forward(p, x)[0])


def test_custom_vjp_inside_user_code(mlp):
    net, p, x, y = mlp
    f = fn.custom_vjp(net)

    def user_loss(params):  # research code mixing fnnet with plain JAX
        return jnp.mean(jax.nn.logsumexp(f(params, x), axis=-1)) + 0.1 * jnp.sum(params[0]["W"] ** 2)

    def reference(params):
        return jnp.mean(jax.nn.logsumexp(net.forward(params, x)[0], axis=-1)) + 0.1 * jnp.sum(params[0]["W"] ** 2)

    _close(jax.jit(jax.grad(user_loss))(p), jax.grad(reference)(p))


def test_custom_vjp_loss_uses_fused_rule(mlp):
    net, p, x, y = mlp
    z = net.forward(p, x)[0]
    f = fn.custom_vjp_loss(fn.softmax_cross_entropy)
    _close(jax.grad(f)(z, y), jax.grad(lambda v: fn.softmax_cross_entropy.forward(v, y)[0])(z))


def test_has_aux_returns_pred_and_cache(mlp):
    net, p, x, y = mlp
    (value, (pred, cache)), _ = fn.value_and_grad(net, fn.softmax_cross_entropy, has_aux=True)(p, x, y)
    assert pred.shape == (12, 3) and len(cache) == 5


def test_wrong_arguments_are_named():
    with pytest.raises(TypeError, match="expected a fnnet Loss"):
        fn.value_and_grad(fn.Dense(3), "mse")
