"""Forward mode through fnnet's hand-written rules: the ``custom_jvp`` bridge (``jax.jvp``, ``jacfwd``,
``linearize`` and, by transposition, ``jax.grad``), the ``custom_vjp`` bridge's limit, and the forward-mode
checks of ``gradcheck``/``check_layer``/``check_loss`` failing wrong rules.

The catalog-wide three-way check of every jvp is in ``tests/test_catalog.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.checking import TOLERANCES, GradcheckError


def rel(a, b):
    a, b = (np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree_util.tree_leaves(t)]) for t in (a, b))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def _normal_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(k, jnp.shape(a), jnp.result_type(a)) for k, a in zip(keys, leaves)]
    )


# (name, layer factory, input shape without batch, integer ids?, needs a key, train)
NETS = {
    "mlp": (lambda: fn.serial(fn.Dense(5), fn.Tanh(), fn.Dense(3)), (4,), False, False, True),
    "conv": (
        lambda: fn.serial(fn.Conv2D(3, 3), fn.Relu(), fn.MaxPool(2), fn.Flatten(), fn.Dense(2)),
        (6, 6, 2),
        False,
        False,
        True,
    ),
    "lstm": (lambda: fn.LSTM(4, return_sequences=True), (5, 3), False, False, True),
    "attention": (lambda: fn.MultiHeadAttention(2, causal=True), (5, 4), False, False, True),
    "batchnorm_eval": (lambda: fn.BatchNorm(), (4,), False, False, False),
    "dropout": (lambda: fn.serial(fn.Dense(6), fn.Dropout(0.5)), (4,), False, True, True),
    "gpt": (lambda: fn.gpt(7, 5, 4, 2, 1, tie_weights=True), (5,), True, False, True),
}


def _point(name, key):
    make, in_shape, ids, needs_key, train = NETS[name]
    layer = make()
    k_init, k_x, k_t, k_f = jax.random.split(key, 4)
    _, params = layer.init(k_init, in_shape, jnp.float64)
    if ids:
        x = jax.random.randint(k_x, (3, *in_shape), 0, 7)
    else:
        x = jax.random.normal(k_x, (3, *in_shape), jnp.float64)
    dparams = _normal_like(k_t, params)
    dx = None if ids else _normal_like(jax.random.fold_in(k_t, 1), x)
    return layer, params, x, dparams, dx, (k_f if needs_key else None), train


@pytest.mark.parametrize("name", list(NETS))
def test_jax_jvp_jacfwd_linearize_and_grad_run_the_hand_written_rules(name, key):
    with jax.enable_x64(True):
        layer, params, x, dparams, dx, k, train = _point(name, key)
        f = fn.custom_jvp(layer, train=train)
        forward = lambda p, xx: layer.forward(p, xx, key=k, train=train)[0]  # noqa: E731
        y_rule, dy_rule = layer.jvp(params, x, dparams, dx, key=k, train=train)
        if dx is None:  # integer ids: differentiate in params only
            y, dy = jax.jit(lambda p, t: jax.jvp(lambda q: f(q, x, k), (p,), (t,)))(params, dparams)
            _, dy_auto = jax.jvp(lambda q: forward(q, x), (params,), (dparams,))
        else:
            y, dy = jax.jit(lambda p, xx, tp, tx: jax.jvp(lambda q, z: f(q, z, k), (p, xx), (tp, tx)))(
                params, x, dparams, dx
            )
            _, dy_auto = jax.jvp(forward, (params, x), (dparams, dx))
        assert rel(y, y_rule) <= 1e-14 and rel(dy, dy_rule) <= 1e-12
        assert rel(dy, dy_auto) <= TOLERANCES["float64"].autodiff  # the rule is the derivative
        y_lin, lin = jax.linearize(lambda q: f(q, x, k), params)
        assert rel(lin(dparams), jax.jvp(lambda q: forward(q, x), (params,), (dparams,))[1]) <= 1e-10
        # jax.grad through custom_jvp transposes the hand-written JVP; it must agree with the hand-written VJP
        c = _normal_like(jax.random.fold_in(key, 9), y)
        g_transposed = jax.grad(lambda q: jnp.sum(c * f(q, x, k)))(params)
        _, cache = layer.forward(params, x, key=k, train=train)
        g_backward, _ = layer.backward(params, cache, c)
        assert rel(g_transposed, g_backward) <= 1e-10


def test_jacfwd_builds_the_jacobian_column_by_column_from_the_rule(key):
    with jax.enable_x64(True):
        layer, params, x, *_ = _point("mlp", key)
        f = fn.custom_jvp(layer)
        J = jax.jacfwd(f, argnums=1)(params, x)
        J_auto = jax.jacrev(lambda xx: layer.forward(params, xx)[0])(x)
        assert J.shape == (3, 3, 3, 4) and rel(J, J_auto) <= 1e-12


def test_the_custom_vjp_bridge_refuses_forward_mode_with_jaxs_error(key):
    with jax.enable_x64(True):
        layer, params, x, dparams, dx, *_ = _point("mlp", key)
        f = fn.custom_vjp(layer)
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(lambda q: f(q, x), (params,), (dparams,))


def test_custom_jvp_names_a_layer_without_a_forward_rule(key):
    bare = fn.Dense(3)._replace(jvp=None, name="MyDense")
    with pytest.raises(TypeError, match="MyDense has no hand-written forward-mode rule"):
        fn.custom_jvp(bare)


def test_custom_jvp_loss_runs_the_loss_rule_and_refuses_a_target_tangent(key):
    with jax.enable_x64(True):
        pred = jax.random.normal(key, (4, 3), jnp.float64)
        labels = jnp.asarray([0, 2, 1, 2])
        t = jax.random.normal(jax.random.fold_in(key, 1), (4, 3), jnp.float64)
        f = fn.custom_jvp_loss(fn.softmax_cross_entropy)
        value, dvalue = jax.jvp(lambda p: f(p, labels), (pred,), (t,))
        _, auto = jax.jvp(lambda p: fn.softmax_cross_entropy.forward(p, labels)[0], (pred,), (t,))
        assert abs(float(dvalue - auto)) <= 1e-12 * abs(float(auto))
        target = jax.nn.softmax(pred)
        g = fn.custom_jvp_loss(fn.mse)
        with pytest.raises(ValueError, match="target got a tangent"):
            jax.jvp(g, (pred, target), (t, t))


def _scaled(layer, factor):
    def jvp(params, x, dparams, dx, **kw):
        y, dy = layer.jvp(params, x, dparams, dx, **kw)
        return y, dy * factor

    return layer._replace(jvp=jvp)


def _drops_params_tangent(layer):
    def jvp(params, x, dparams, dx, **kw):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, dparams)
        return layer.jvp(params, x, zeros, dx, **kw)

    return layer._replace(jvp=jvp)


@pytest.mark.parametrize("bug", ["scale 1e-3", "sign", "drops dparams"])
def test_check_layer_fails_a_wrong_forward_rule_on_all_three_counts(bug, key):
    with jax.enable_x64(True):
        layer, params, x, *_ = _point("mlp", key)
    wrong = {
        "scale 1e-3": _scaled(layer, 1.001),
        "sign": _scaled(layer, -1.0),
        "drops dparams": _drops_params_tangent(layer),
    }[bug]
    with jax.enable_x64(True):
        right = fn.check_layer(layer, params, x, modes=("rev", "fwd"))
        report = fn.check_layer(wrong, params, x, modes=("rev", "fwd"))
    assert right.ok and right.forward.ok, str(right)
    f = report.forward
    assert not report.ok and not f.ok and all(leaf.ok for leaf in report.leaves), str(report)
    bar = TOLERANCES["float64"]
    assert f.rel_autodiff > bar.autodiff and f.rel_fd > bar.fd and f.adjoint > bar.adjoint_bar, str(report)
    assert "wrong: forward-mode rule" in str(report)


def test_check_loss_checks_the_loss_jvp(key):
    with jax.enable_x64(True):
        pred = jax.random.normal(key, (4, 3), jnp.float64)
        labels = jnp.asarray([0, 2, 1, 2])
        right = fn.check_loss(fn.softmax_cross_entropy, pred, labels, modes=("rev", "fwd"))
        loss = fn.softmax_cross_entropy
        wrong = loss._replace(jvp=lambda p, t, dp: (lambda v: (v[0], 2 * v[1]))(loss.jvp(p, t, dp)))
        report = fn.check_loss(wrong, pred, labels, modes=("rev", "fwd"))
    assert right.ok and right.forward is not None, str(right)
    assert not report.ok and not report.forward.ok


def test_gradcheck_checks_a_users_forward_rule(key):
    x = jax.random.normal(key, (5, 4))
    a = jax.random.normal(jax.random.fold_in(key, 1), (4, 3))
    loss = lambda a, x: jnp.sum(jnp.sin(x @ a) ** 2)  # noqa: E731
    grad = lambda a, x: x.T @ jnp.sin(2 * (x @ a))  # noqa: E731

    def jvp(primals, tangents):
        ((a_,), (da,)) = primals, tangents
        z = x @ a_
        return jnp.sum(jnp.sin(z) ** 2), jnp.sum(jnp.sin(2 * z) * (x @ da))

    report = fn.gradcheck(loss, grad, a, x, modes=("rev", "fwd"), jvp_fn=jvp)
    assert report.ok and report.forward is not None, str(report)
    halved = lambda p, t: (jvp(p, t)[0], 0.5 * jvp(p, t)[1])  # noqa: E731
    assert not fn.gradcheck(loss, grad, a, x, modes=("rev", "fwd"), jvp_fn=halved).ok
    with pytest.raises(GradcheckError, match="no jvp_fn"):
        fn.gradcheck(loss, grad, a, x, modes=("rev", "fwd"))
    with pytest.raises(ValueError, match="modes"):
        fn.gradcheck(loss, grad, a, x, modes=("fwd",), jvp_fn=jvp)
