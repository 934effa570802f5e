"""Hand-written forward mode of the basic layers, and the activations' hand-written second derivatives.

Every ``jvp`` is checked three ways in float64, with and without ``jax.jit``: its ``y`` is the forward's,
its ``dy`` is ``jax.jvp`` of the very forward (rel 1e-10), and it is the transpose of the hand-written
backward, ⟨J t, c⟩ = ⟨t, Jᵀ c⟩ (rel 1e-10, no autodiff on either side). Every ``<name>_second`` is
checked against ``jax.grad(jax.grad(f))`` of the forward where that is accurate, against a 60-digit
``decimal`` evaluation of the textbook formula in the tails (where autodiff's 1 − σ(x) loses its
digits), and at ±∞, huge |x|, NaN and the kinks.
"""

from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet import activations as act
from fnnet.core import DTypeError, ShapeError
from fnnet.layers.dense import dense_of

RTOL = 1e-10

# ----------------------------------------------------------------------------------------------
# the shared check: y, dy against jax.jvp, and the adjoint identity with the hand-written backward


def _rel(a, b) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖) over all leaves of two pytrees (0 when both are 0)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    diff = np.sqrt(sum(float(jnp.sum((u - v) ** 2)) for u, v in zip(la, lb)))
    scale = max(np.sqrt(sum(float(jnp.sum(u**2)) for u in leaves)) for leaves in (la, lb))
    return diff / scale if scale else diff


def _inner(a, b) -> float:
    """⟨a, b⟩ summed over all leaves of two pytrees of one structure."""
    return sum(float(jnp.vdot(u, v)) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _normal_like(key, tree):
    """A random normal pytree of the structure, shapes and dtypes of ``tree``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([jax.random.normal(k, v.shape, v.dtype) for k, v in zip(keys, leaves)])


def check_jvp(layer, x, key, *, train=True, jit=False, layer_key=None):
    """Assert the three properties of ``layer.jvp`` at x, random params and random tangents (float64)."""
    k_init, k_dp, k_dx, k_c = jax.random.split(key, 4)
    _, params = layer.init(k_init, x.shape[1:], jnp.float64)
    dparams = _normal_like(k_dp, params)
    float_x = jnp.issubdtype(x.dtype, jnp.floating)
    dx = jax.random.normal(k_dx, x.shape, x.dtype) if float_x else None

    jvp = jax.jit(layer.jvp, static_argnames="train") if jit else layer.jvp
    y, dy = jvp(params, x, dparams, dx, key=layer_key, train=train)

    # 1. the forward's own y (jitted alike: XLA may evaluate e.g. tanh differently in a fused program)
    forward = jax.jit(layer.forward, static_argnames="train") if jit else layer.forward
    y_fwd, cache = forward(params, x, key=layer_key, train=train)
    np.testing.assert_allclose(y, y_fwd, rtol=1e-14, atol=0)

    # 2. dy against jax.jvp of the very forward
    if float_x:
        _, want = jax.jvp(lambda p, v: layer.forward(p, v, key=layer_key, train=train)[0], (params, x), (dparams, dx))
    else:
        _, want = jax.jvp(lambda p: layer.forward(p, x, key=layer_key, train=train)[0], (params,), (dparams,))
    assert dy.shape == y.shape and dy.dtype == y.dtype
    assert _rel(dy, want) <= RTOL, _rel(dy, want)

    # 3. ⟨J t, c⟩ = ⟨t, Jᵀ c⟩ between the two hand-written rules
    c = jax.random.normal(k_c, y.shape, y.dtype)
    dp_bar, dx_bar = layer.backward(params, cache, c)
    lhs = float(jnp.vdot(dy, c))
    rhs = _inner(dparams, dp_bar) + (float(jnp.vdot(dx, dx_bar)) if float_x else 0.0)
    assert abs(lhs - rhs) <= RTOL * max(abs(lhs), abs(rhs), 1e-300), (lhs, rhs)
    return y, dy


# ----------------------------------------------------------------------------------------------
# the layers

ACTIVATIONS = {
    "Sigmoid": fn.activations.Sigmoid,
    "Tanh": fn.activations.Tanh,
    "Relu": fn.activations.Relu,
    "LeakyRelu(0.2)": lambda: fn.activations.LeakyRelu(0.2),
    "LeakyRelu(0)": lambda: fn.activations.LeakyRelu(0.0),
    "Gelu": fn.activations.Gelu,
    "Gelu(tanh)": lambda: fn.activations.Gelu(approximate=True),
    "Swish": fn.activations.Swish,
    "Silu": fn.activations.Silu,
    "Softplus": fn.activations.Softplus,
    "Softsign": fn.activations.Softsign,
    "Identity": fn.activations.Identity,
    "Softmax": fn.activations.Softmax,
}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_jvp(name, jit, key):
    with jax.enable_x64(True):
        x = 3 * jax.random.normal(jax.random.fold_in(key, 1), (4, 7), jnp.float64)
        check_jvp(ACTIVATIONS[name](), x, key, jit=jit)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("axis", [1, -2])
def test_softmax_jvp_over_an_inner_axis(axis, jit, key):
    with jax.enable_x64(True):
        x = 2 * jax.random.normal(jax.random.fold_in(key, 1), (3, 5, 4), jnp.float64)
        _, dy = check_jvp(fn.activations.Softmax(axis), x, key, jit=jit)
        np.testing.assert_allclose(jnp.sum(dy, axis=axis), 0.0, atol=1e-14)  # the tangent of Σ p = 1


def test_activation_jvp_at_the_kinks_keeps_the_pinned_slopes(key):
    """At x = 0 the JVP uses relu'(0) = 0 and leaky_relu'(0) = 1, as jax.jvp of the forward does."""
    with jax.enable_x64(True):
        x = jnp.array([[-1.0, 0.0, 0.0, 2.0, -0.0]])
        dx = jax.random.normal(key, x.shape, jnp.float64)
        for layer, slope in (
            (fn.activations.Relu(), [0, 0, 0, 1, 0]),
            (fn.activations.LeakyRelu(0.2), [0.2, 1, 1, 1, 1]),
        ):
            _, dy = layer.jvp((), x, (), dx)
            np.testing.assert_array_equal(dy, dx * jnp.array([slope]))
            _, want = jax.jvp(lambda v, layer=layer: layer.forward((), v)[0], (x,), (dx,))
            np.testing.assert_array_equal(dy, want)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "layer, shape",
    [
        (fn.Dense(5), (6, 4)),
        (fn.Dense(5, use_bias=False), (6, 4)),
        (fn.Dense(3), (2, 5, 4)),  # leading axes beyond the batch
        (fn.Flatten(), (3, 2, 4)),
        (fn.PositionalEmbedding(6), (3, 5, 4)),
    ],
    ids=["Dense", "Dense-no-bias", "Dense-3d", "Flatten", "PositionalEmbedding"],
)
def test_dense_flatten_positional_jvp(layer, shape, jit, key):
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.fold_in(key, 1), shape, jnp.float64)
        check_jvp(layer, x, key, jit=jit)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_dropout_jvp_uses_the_forward_mask_in_training_and_is_the_identity_in_evaluation(jit, key):
    layer = fn.Dropout(0.3)
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.fold_in(key, 1), (8, 16), jnp.float64)
        mask_key = jax.random.key(7)
        y, dy = check_jvp(layer, x, key, jit=jit, layer_key=mask_key)
        dropped = y == 0
        assert 0 < int(dropped.sum()) < y.size  # some units dropped, some kept
        assert bool(jnp.all(jnp.where(dropped, dy == 0, True)))  # the tangent is dropped with the unit
        y_eval, dy_eval = check_jvp(layer, x, key, train=False, jit=jit)
        np.testing.assert_array_equal(y_eval, x)
        dx = jax.random.normal(jax.random.split(key, 4)[2], x.shape, x.dtype)
        np.testing.assert_array_equal(dy_eval, dx)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_embedding_jvp_looks_up_the_table_tangent(jit, key):
    layer = fn.Embedding(7, 4)
    with jax.enable_x64(True):
        ids = jax.random.randint(jax.random.fold_in(key, 1), (3, 5), 0, 7)
        ids = ids.at[0, :2].set(ids[0, 3])  # a repeated id
        check_jvp(layer, ids, key, jit=jit)


def test_embedding_jvp_out_of_range_ids_keep_the_forward_policy(key):
    """Concrete: the forward's ValueError. Under jit: y's row is the NaN poison and dy's row is 0, as
    jax.jvp of the forward (the poison is a constant) and the transpose of the backward give."""
    layer = fn.Embedding(5, 3)
    with jax.enable_x64(True):
        _, params = layer.init(key, (4,), jnp.float64)
        dparams = _normal_like(jax.random.fold_in(key, 1), params)
        bad = jnp.array([[0, 4, 5, -1]])
        with pytest.raises(ValueError, match="token id"):
            layer.jvp(params, bad, dparams, None)
        y, dy = jax.jit(layer.jvp)(params, bad, dparams, None)
        assert bool(jnp.all(jnp.isnan(y[0, 2:]))) and bool(jnp.all(jnp.isfinite(y[0, :2])))
        np.testing.assert_array_equal(dy[0, 2:], 0.0)
        np.testing.assert_array_equal(dy[0, :2], dparams["E"][jnp.array([0, 4])])

        def autodiff(p, ids, t):
            return jax.jvp(lambda q: layer.forward(q, ids)[0], (p,), (t,))

        _, want = jax.jit(autodiff)(params, bad, dparams)
        np.testing.assert_array_equal(dy, want)


# ----------------------------------------------------------------------------------------------
# the jvp's checks are the forward's, plus the tangents'


def test_jvp_runs_the_forward_checks(key):
    with jax.enable_x64(True):
        dense = fn.Dense(5)
        _, params = dense.init(key, (4,), jnp.float64)
        x = jax.random.normal(key, (2, 3), jnp.float64)
        with pytest.raises(ShapeError, match=r"Dense\(5\) expected inputs"):
            dense.jvp(params, x, params, x)
        with pytest.raises(ShapeError, match="non-batch axis"):
            fn.activations.Softmax(0).jvp((), x, (), x)
        with pytest.raises(DTypeError, match="floating-point"):
            fn.activations.Relu().jvp((), jnp.ones((2, 3), jnp.int32), (), jnp.ones((2, 3), jnp.int32))
        with pytest.raises(ValueError, match="PRNG key"):
            fn.Dropout(0.5).jvp((), x, (), x)


def test_jvp_refuses_bad_tangents_with_clear_errors(key):
    with jax.enable_x64(True):
        dense = fn.Dense(5)
        _, params = dense.init(key, (4,), jnp.float64)
        x = jax.random.normal(key, (2, 4), jnp.float64)
        with pytest.raises(ValueError, match=r"Dense\(5\) needs a tangent dparams .*dparams: missing \['b'\]"):
            dense.jvp(params, x, {"W": params["W"]}, x)
        with pytest.raises(ShapeError, match=r"tangent dparams\['W'\] has shape \(3, 5\), expected \(4, 5\)"):
            dense.jvp(params, x, {"W": jnp.zeros((3, 5)), "b": params["b"]}, x)
        with pytest.raises(ShapeError, match=r"tangent dx has shape \(2, 3\), expected \(2, 4\)"):
            dense.jvp(params, x, params, x[:, :3])
        with pytest.raises(DTypeError, match="tangent dx is float32, expected float64"):
            dense.jvp(params, x, params, x.astype(jnp.float32))
        with pytest.raises(TypeError, match="needs a tangent dx"):
            dense.jvp(params, x, params, None)
        with pytest.raises(ValueError, match=r"Relu\(\) jvp \(dparams\) has no parameters"):
            fn.activations.Relu().jvp((), x, params, x)
        with pytest.raises(ShapeError, match="tangent dx has shape"):
            fn.activations.Tanh().jvp((), x, (), x[:1])
        with pytest.raises(ShapeError, match="tangent dx has shape"):
            fn.Dropout(0.5).jvp((), x, (), x[:1], key=key)
        emb = fn.Embedding(5, 3)
        _, e_params = emb.init(key, (4,), jnp.float64)
        with pytest.raises(ShapeError, match=r"tangent dparams\['E'\]|params\['E'\] has shape"):
            emb.jvp(e_params, jnp.zeros((2, 4), jnp.int32), {"E": jnp.zeros((5, 2))}, None)


# ----------------------------------------------------------------------------------------------
# recognizable layers


def test_activation_of_names_each_activation_layer_and_its_arguments():
    A = fn.activations
    cases = [
        (A.Sigmoid(), ("sigmoid", {})),
        (A.Tanh(), ("tanh", {})),
        (A.Relu(), ("relu", {})),
        (A.LeakyRelu(0.2), ("leaky_relu", {"alpha": 0.2})),
        (A.Gelu(), ("gelu", {"approximate": False})),
        (A.Gelu(approximate=True), ("gelu", {"approximate": True})),
        (A.Swish(), ("swish", {})),
        (A.Silu(), ("swish", {})),
        (A.Softplus(), ("softplus", {})),
        (A.Softsign(), ("softsign", {})),
        (A.Identity(), ("identity", {})),
        (A.Softmax(), ("softmax", {"axis": -1})),
        (A.Softmax(1), ("softmax", {"axis": 1})),
        (A.get("leaky_relu", alpha=0.3), ("leaky_relu", {"alpha": 0.3})),
    ]
    for layer, want in cases:
        assert act.activation_of(layer) == want, layer
    for other in (fn.Dense(3), fn.Flatten(), fn.Dropout(0.1), fn.serial(fn.Dense(3), A.Relu()), "relu", None):
        assert act.activation_of(other) is None
    got = act.activation_of(A.LeakyRelu(0.2))
    got[1]["alpha"] = 5.0  # a copy: the layer keeps its own
    assert act.activation_of(A.LeakyRelu(0.2))[1] == {"alpha": 0.2}


def test_activation_of_gives_the_rules_of_the_layer(key):
    """What activation_of names is what the layer computes: derivative(name, x, **kw) is its backward at dy = 1."""
    with jax.enable_x64(True):
        x = 3 * jax.random.normal(key, (4, 5), jnp.float64)
        for make in ACTIVATIONS.values():
            layer = make()
            name, kwargs = act.activation_of(layer)
            _, cache = layer.forward((), x)
            np.testing.assert_array_equal(
                layer.backward((), cache, jnp.ones_like(x))[1], act.derivative(name, x, **kwargs)
            )


def test_dense_of_describes_dense_layers_only():
    assert dense_of(fn.Dense(5)) == {"out_dim": 5, "use_bias": True}
    assert dense_of(fn.Dense(3, use_bias=False)) == {"out_dim": 3, "use_bias": False}
    for other in (fn.activations.Relu(), fn.Flatten(), fn.Embedding(3, 2), fn.serial(fn.Dense(3)), None):
        assert dense_of(other) is None
    got = dense_of(fn.Dense(5))
    got["use_bias"] = False
    assert dense_of(fn.Dense(5))["use_bias"] is True


# ----------------------------------------------------------------------------------------------
# second derivatives

#: (name, kwargs, half-width R of the interval where jax.grad(jax.grad(f)) of the forward is accurate to
#: well below 1e-10: beyond it autodiff's 1 − σ(x), 1 − tanh²(x) round away the digits of tiny values)
SECOND = [
    ("sigmoid", {}, 8.0),
    ("tanh", {}, 4.0),
    ("relu", {}, 5.0),
    ("leaky_relu", {"alpha": 0.2}, 5.0),
    ("gelu", {}, 8.0),
    ("gelu", {"approximate": True}, 3.0),
    ("swish", {}, 8.0),
    ("silu", {}, 8.0),
    ("softplus", {}, 8.0),
    ("softsign", {}, 20.0),
    ("identity", {}, 5.0),
]
SECOND_IDS = [f"{n}{kw or ''}" for n, kw, _ in SECOND]


def _second_autodiff(name, kwargs):
    fwd = act._RULES[name][0]
    return jax.vmap(jax.grad(jax.grad(lambda v: fwd(v, **kwargs)[0])))


@pytest.mark.parametrize("name, kwargs, R", SECOND, ids=SECOND_IDS)
def test_second_derivative_matches_double_autodiff_of_the_forward(name, kwargs, R, key):
    with jax.enable_x64(True):
        x = jax.random.uniform(key, (2000,), jnp.float64, -R, R)
        got = act.second_derivative(name, x, **kwargs)
        np.testing.assert_allclose(got, _second_autodiff(name, kwargs)(x), rtol=RTOL, atol=1e-14)
        jitted = jax.jit(lambda v: act.second_derivative(name, v, **kwargs))(x)
        np.testing.assert_allclose(jitted, got, rtol=1e-12, atol=1e-16)


_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640628620899863")


def _second_decimal(name: str, x: float, kwargs: dict) -> float:
    """f''(x) from the textbook formula in 60-digit decimal arithmetic: no cancellation at these x."""
    with localcontext() as ctx:
        ctx.prec = 60
        v = Decimal(x)
        s = 1 / (1 + (-v).exp())  # σ(x)

        def tanh(u):
            e = (2 * u).exp()
            return (e - 1) / (e + 1)

        if name == "sigmoid":
            d2 = s * (1 - s) * (1 - 2 * s)
        elif name == "tanh":
            t = tanh(v)
            d2 = -2 * t * (1 - t * t)
        elif name == "gelu" and not kwargs.get("approximate"):
            d2 = (-v * v / 2).exp() / (2 * _PI).sqrt() * (2 - v * v)
        elif name == "gelu":
            k, c = (2 / _PI).sqrt(), Decimal("0.044715")
            t = tanh(k * (v + c * v**3))
            du, d2u = k * (1 + 3 * c * v * v), k * 6 * c * v
            d2 = (1 - t * t) * (du - v * t * du * du + v * d2u / 2)
        elif name == "swish":
            d2 = s * (1 - s) * (2 + v * (1 - 2 * s))
        elif name == "softplus":
            d2 = s * (1 - s)
        elif name == "softsign":
            d2 = -2 * (1 if v > 0 else -1) / (1 + abs(v)) ** 3
        else:
            raise AssertionError(name)
        return float(d2)


@pytest.mark.parametrize(
    "name, kwargs, top",
    [
        ("sigmoid", {}, 30.0),
        ("tanh", {}, 30.0),
        ("gelu", {}, 30.0),
        ("gelu", {"approximate": True}, 10.0),  # beyond 10 the forward clips u: gelu'' = 0 there
        ("swish", {}, 30.0),
        ("softplus", {}, 30.0),
        ("softsign", {}, 1e6),
    ],
    ids=["sigmoid", "tanh", "gelu", "gelu-tanh", "swish", "softplus", "softsign"],
)
def test_second_derivative_keeps_its_relative_accuracy_in_the_tails(name, kwargs, top):
    """On |x| ∈ [4, top], where f'' has no root but autodiff loses digits, against 60-digit decimals."""
    with jax.enable_x64(True):
        mags = np.geomspace(4.0, top, 60)
        x = np.concatenate([-mags, mags])
        want = np.array([_second_decimal(name, float(v), kwargs) for v in x])
        got = np.asarray(act.second_derivative(name, jnp.asarray(x), **kwargs))
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize("name, kwargs, R", SECOND, ids=SECOND_IDS)
def test_second_derivative_at_infinities_huge_values_and_nan(name, kwargs, R):
    """0 at ±∞ (the limit, no inf · 0 = NaN), finite at huge |x|, and at NaN what double autodiff gives."""
    del R
    with jax.enable_x64(True):
        x = jnp.array([-jnp.inf, -1e300, -1e155, -1e20, -1e3, 1e3, 1e20, 1e155, 1e300, jnp.inf])
        got = act.second_derivative(name, x, **kwargs)
        assert bool(jnp.all(jnp.isfinite(got)))
        assert got[0] == 0 and got[-1] == 0
        assert float(jnp.max(jnp.abs(got))) < 1e-8  # softsign''(1e3) = 2e-9
        nan = jnp.array([jnp.nan])
        np.testing.assert_array_equal(act.second_derivative(name, nan, **kwargs), _second_autodiff(name, kwargs)(nan))
    for dtype in (jnp.float32, jnp.float16):
        finfo = jnp.finfo(dtype)
        x = jnp.array([-jnp.inf, -float(finfo.max), -1e3, -30, 30, 1e3, float(finfo.max), jnp.inf], dtype)
        got = act.second_derivative(name, x, **kwargs)
        assert got.dtype == dtype and bool(jnp.all(jnp.isfinite(got)))
        assert got[0] == 0 and got[-1] == 0


def test_second_derivative_at_the_kinks_is_pinned_to_zero():
    zero = jnp.zeros(3)
    assert np.all(act.second_derivative("relu", zero) == 0)
    assert np.all(act.second_derivative("leaky_relu", zero, alpha=0.2) == 0)
    assert np.all(act.second_derivative("softsign", zero) == 0)  # the mean of the jump from 2 to −2
    assert float(jax.grad(jax.grad(act.relu))(0.0)) == 0.0  # double autodiff agrees at relu's kink
    assert float(jax.grad(jax.grad(lambda v: act.leaky_relu(v, 0.2)))(0.0)) == 0.0
    with jax.enable_x64(True):  # and softsign'' has the limits ∓2 on either side
        eps = jnp.array([-1e-12, 1e-12])
        np.testing.assert_allclose(act.second_derivative("softsign", eps), [2.0, -2.0], rtol=1e-11)


def test_second_derivative_closed_forms_at_simple_points():
    with jax.enable_x64(True):
        x = jnp.array([0.0, 1.0])
        s1 = 1 / (1 + np.exp(-1.0))
        np.testing.assert_allclose(act.second_derivative("sigmoid", x), [0.0, s1 * (1 - s1) * (1 - 2 * s1)], rtol=1e-14)
        np.testing.assert_allclose(act.second_derivative("softplus", x), [0.25, s1 * (1 - s1)], rtol=1e-14)
        phi = lambda v: np.exp(-v * v / 2) / np.sqrt(2 * np.pi)
        np.testing.assert_allclose(act.second_derivative("gelu", x), [2 * phi(0.0), phi(1.0)], rtol=1e-14)
        np.testing.assert_allclose(act.second_derivative("swish", x)[0], 0.5, rtol=1e-14)
        np.testing.assert_allclose(act.second_derivative("softsign", x)[1], -0.25, rtol=1e-14)
        np.testing.assert_allclose(
            act.second_derivative("tanh", x)[1], -2 * np.tanh(1) * (1 - np.tanh(1) ** 2), rtol=1e-14
        )


def test_second_derivative_refuses_softmax_and_unknown_names():
    with pytest.raises(ValueError, match="softmax is not elementwise"):
        act.second_derivative("softmax", jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="no elementwise second derivative for activation 'selu'"):
        act.second_derivative("selu", jnp.zeros(3))
