"""Params that do not fit the layer: every family names itself and the leaf; serial/residual add the position.

Everything runs under ``jax.eval_shape``: the checks happen while tracing (shapes and dtypes are
static), so nothing here compiles, and a check that passed eagerly but not under ``jit`` would show.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn

KEY = jax.random.key(0)


def shapes_of(layer, in_shape):
    """The params ``layer.init`` makes, as ShapeDtypeStructs (nothing is drawn)."""
    return jax.eval_shape(lambda k: layer.init(k, in_shape)[1], KEY)


def S(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))


def forward(layer, params, x, train=True):
    return jax.eval_shape(lambda p, xx: layer.forward(p, xx, key=KEY, train=train), params, x)


def backward(layer, bad, good, x):
    """Backward with ``bad`` params and the cache of a forward with ``good`` ones."""
    y, cache = forward(layer, good, x)
    return jax.eval_shape(lambda p, c, dy: layer.backward(p, c, dy), bad, cache, y)


def replace(params, key, value):
    return {k: v for k, v in params.items() if k != key} | ({} if value is None else {key: value})


DENSE, CONV, RNN, LSTM = fn.Dense(3), fn.Conv2D(2, 3), fn.RNN(4), fn.LSTM(4)
BN, LN = fn.BatchNorm(), fn.LayerNorm()
P_DENSE, P_CONV = shapes_of(DENSE, (5,)), shapes_of(CONV, (5, 5, 1))
P_RNN, P_LSTM = shapes_of(RNN, (2, 3)), shapes_of(LSTM, (2, 3))
P_BN, P_LN = shapes_of(BN, (3,)), shapes_of(LN, (3,))
X_VEC, X_IMG, X_SEQ = S((2, 5)), S((2, 5, 5, 1)), S((2, 2, 3))

# (layer, params that do not fit, input, error type, the message)
CASES = {
    "dense-bias-length": (DENSE, replace(P_DENSE, "b", S((5,))), X_VEC, fn.ShapeError,
                          r"Dense\(3\): params\['b'\] has shape \(5,\), expected \(3,\)"),
    "dense-W-width": (DENSE, replace(P_DENSE, "W", S((5, 4))), X_VEC, fn.ShapeError,
                      r"Dense\(3\): params\['W'\] has shape \(5, 4\), expected \(d_in, 3\)"),
    "dense-W-rank": (DENSE, replace(P_DENSE, "W", S((5, 3, 1))), X_VEC, fn.ShapeError,
                     r"Dense\(3\): params\['W'\] has shape \(5, 3, 1\), expected \(d_in, 3\)"),
    "dense-missing-b": (DENSE, replace(P_DENSE, "b", None), X_VEC, ValueError,
                        r"Dense\(3\) needs params with keys 'W', 'b'.* got keys 'W' \(missing 'b'\)"),
    "dense-no-bias-extra-b": (fn.Dense(3, use_bias=False), P_DENSE, X_VEC, ValueError,
                              r"Dense\(3\) needs params with keys 'W'.*\(unexpected 'b'\)"),
    "dense-tuple": (DENSE, (P_DENSE["W"], P_DENSE["b"]), X_VEC, TypeError,
                    r"Dense\(3\) needs params as a dict with keys 'W', 'b'.* got a tuple of 2 entries"),
    "dense-empty-tuple": (DENSE, (), X_VEC, TypeError, r"Dense\(3\) needs params as a dict.*layer without param"),
    "dense-int-W": (DENSE, replace(P_DENSE, "W", S((5, 3), jnp.int32)), X_VEC, fn.DTypeError,
                    r"Dense\(3\): params\['W'\] has dtype int32; parameters must be floating-point"),
    "dense-mixed-dtypes": (DENSE, replace(P_DENSE, "b", S((3,), jnp.float16)), X_VEC, fn.DTypeError,
                           r"Dense\(3\): params\['b'\] is float16 but params\['W'\] is float32"),
    "conv-kernel": (CONV, replace(P_CONV, "W", S((2, 2, 1, 2))), X_IMG, fn.ShapeError,
                    r"Conv2D\(2\): params\['W'\] has shape \(2, 2, 1, 2\), expected \(3, 3, C_in, 2\)"),
    "conv-bias": (CONV, replace(P_CONV, "b", S((2, 1))), X_IMG, fn.ShapeError,
                  r"Conv2D\(2\): params\['b'\] has shape \(2, 1\), expected \(2,\)"),
    "rnn-U": (RNN, replace(P_RNN, "U", S((4, 3))), X_SEQ, fn.ShapeError,
              r"RNN\(4\): params\['U'\] has shape \(4, 3\), expected \(4, 4\)"),
    "lstm-given-rnn-params": (LSTM, P_RNN, X_SEQ, fn.ShapeError,
                              r"LSTM\(4\): params\['W'\] has shape \(3, 4\), expected \(d_in, 16\)"),
    "rnn-given-lstm-params": (RNN, P_LSTM, X_SEQ, fn.ShapeError,
                              r"RNN\(4\): params\['W'\] has shape \(3, 16\), expected \(d_in, 4\)"),
    "bn-missing-var": (BN, replace(P_BN, "state", replace(P_BN["state"], "var", None)), S((4, 3)), ValueError,
                       r"BatchNorm\(\) needs params\['state'\] with keys 'mean', 'var'.*\(missing 'var'\)"),
    "bn-flat-layout": (BN, {**replace(P_BN, "state", None), **P_BN["state"]}, S((4, 3)), ValueError,
                       r"BatchNorm\(\) needs params with keys 'gamma', 'beta', 'state'.*\(missing 'state'; "
                       r"unexpected 'mean', 'var'\)"),
    "bn-state-tuple": (BN, replace(P_BN, "state", (P_BN["state"]["mean"],)), S((4, 3)), TypeError,
                       r"BatchNorm\(\) needs params\['state'\] as a dict with keys 'mean', 'var'.* got a tuple of 1"),
    "bn-beta-length": (BN, replace(P_BN, "beta", S((4,))), S((4, 3)), fn.ShapeError,
                       r"BatchNorm\(\): params\['beta'\] has shape \(4,\), expected \(3,\)"),
    "bn-buffer-dtype": (BN, replace(P_BN, "state", replace(P_BN["state"], "mean", S((3,), jnp.float16))),
                        S((4, 3)), fn.DTypeError,
                        r"BatchNorm\(\): params\['state'\]\['mean'\] is float16 but params\['gamma'\] is float32"),
    "bn-buffer-length": (BN, replace(P_BN, "state", replace(P_BN["state"], "var", S((4,)))), S((4, 3)),
                         fn.ShapeError, r"BatchNorm\(\): params\['state'\]\['var'\] has shape \(4,\), expected \(3,\)"),
    "ln-gamma-rank": (LN, replace(P_LN, "gamma", S((3, 1))), S((4, 3)), fn.ShapeError,
                      r"LayerNorm\(\): params\['gamma'\] has shape \(3, 1\), expected \(d,\)"),
    "ln-without-affine": (fn.LayerNorm(use_affine=False), P_LN, S((4, 3)), ValueError,
                          r"LayerNorm\(\) has no parameters and takes params \(\), got a dict with keys .*'gamma'"),
    "flatten": (fn.Flatten(), P_DENSE, X_VEC, ValueError, r"Flatten\(\) has no parameters"),
    "maxpool": (fn.MaxPool(2), P_CONV, X_IMG, ValueError, r"MaxPool\(2\) has no parameters"),
    "avgpool": (fn.AvgPool(2), (P_CONV["b"],), X_IMG, ValueError, r"AvgPool\(2\) has no parameters.*got tuple"),
    "dropout": (fn.Dropout(0.5), P_DENSE, X_VEC, ValueError, r"Dropout\(0.5\) has no parameters"),
}  # fmt: skip
GOOD = {
    "dense": (DENSE, P_DENSE), "conv": (CONV, P_CONV), "rnn": (RNN, P_RNN), "lstm": (LSTM, P_LSTM),
    "bn": (BN, P_BN), "ln": (LN, P_LN), "ln-without-affine": (fn.LayerNorm(use_affine=False), ()),
    "flatten": (fn.Flatten(), ()), "maxpool": (fn.MaxPool(2), ()), "avgpool": (fn.AvgPool(2), ()),
    "dropout": (fn.Dropout(0.5), ()), "dense-no-bias-extra-b": (fn.Dense(3, use_bias=False), {"W": P_DENSE["W"]}),
}  # fmt: skip


def good_params(case, layer):
    for prefix in sorted(GOOD, key=len, reverse=True):
        if case.startswith(prefix):
            return GOOD[prefix][1]
    raise AssertionError(case)


@pytest.mark.parametrize("case", list(CASES))
def test_params_that_do_not_fit_name_the_layer_and_the_leaf(case):
    layer, bad, x, exc, match = CASES[case]
    with pytest.raises(exc, match=match) as forward_error:
        forward(layer, bad, x)
    assert type(forward_error.value) is exc
    if case in ("rnn-given-lstm-params", "lstm-given-rnn-params"):
        return  # the good params of the other layer give a cache of another structure
    with pytest.raises(exc, match=match):  # backward checks its params too
        backward(layer, bad, good_params(case, layer), x)


def test_the_params_init_makes_pass_in_every_family():
    for name, (layer, params) in GOOD.items():
        x = {"conv": X_IMG, "maxpool": X_IMG, "avgpool": X_IMG, "rnn": X_SEQ, "lstm": X_SEQ}.get(name, X_VEC)
        if name in ("bn", "ln", "ln-without-affine"):
            x = S((4, 3))
        y, _ = forward(layer, params, x)
        backward(layer, params, params, x)
        assert y.dtype == jnp.float32, name


NET = fn.serial(fn.Dense(4), fn.Relu(), fn.Dense(10))
NET_PARAMS = shapes_of(NET, (3,))
X = S((2, 3))


def test_another_nets_params_name_the_serial_position_and_the_leaf():
    other = shapes_of(fn.serial(fn.Dense(4), fn.Relu(), fn.Dense(5)), (3,))
    with pytest.raises(fn.ShapeError, match=r"^serial layer 2, Dense\(10\): params\['W'\] has shape \(4, 5\), "
                       r"expected \(d_in, 10\)"):  # fmt: skip
        forward(NET, other, X)
    short_bias = (NET_PARAMS[0], (), replace(NET_PARAMS[2], "b", S((5,))))
    message = r"^serial layer 2, Dense\(10\): params\['b'\] has shape \(5,\), expected \(10,\)"
    with pytest.raises(fn.ShapeError, match=message):
        forward(NET, short_bias, X)
    with pytest.raises(fn.ShapeError, match=message):
        backward(NET, short_bias, NET_PARAMS, X)
    with pytest.raises(fn.ShapeError, match=message):  # under jit: raised while tracing, same words
        jax.jit(NET.forward).trace(short_bias, X)


def test_serial_params_of_the_wrong_container_and_activation_position():
    with pytest.raises(TypeError, match=r"^serial of 3 layers needs params as a tuple with one entry per layer"):
        forward(NET, NET_PARAMS[0], X)
    # a Dense's params where the Dense expects none: the parameter-free layer refuses them by name
    net = fn.serial(fn.Dense(3), fn.Flatten(), fn.Dense(2))
    p = shapes_of(net, (3,))
    with pytest.raises(ValueError, match=r"^serial layer 1, Flatten\(\) has no parameters"):
        forward(net, (p[0], p[0], p[2]), X)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (lambda p: replace(p, "b", S((2,))), fn.ShapeError, r"params\['b'\] has shape \(2,\)"),
        (lambda p: replace(p, "b", S((3,), jnp.float16)), fn.DTypeError, r"params\['b'\] is float16"),
        (lambda p: replace(p, "U", S((3,))), ValueError, r"unexpected 'U'"),
        (lambda p: [p["W"], p["b"]], TypeError, r"needs params as a dict"),
    ],
    ids=["shape", "dtype", "keys", "container"],
)
def test_combinators_prefix_the_position_and_keep_the_type(bad, exc, match):
    inner = fn.serial(fn.Dense(3), fn.Tanh())
    net = fn.serial(fn.Dense(3), fn.residual(inner))
    p = shapes_of(net, (3,))
    broken = (p[0], (bad(p[1][0]), ()))
    with pytest.raises(exc, match=r"^serial layer 1, residual branch, serial layer 0, Dense\(3\)[: ].*" + match) as e:
        forward(net, broken, X)
    assert type(e.value) is exc  # the same type as the child raised, not a wrapper


def test_errors_at_init_carry_the_position_too():
    net = fn.serial(fn.Dense(2), fn.RNN(3, b_init=fn.initializers.he_normal()))
    with pytest.raises(ValueError, match=r"^serial layer 1, RNN\(3\) b_init \(drawing shape \(3,\)\): fans need"):
        net.init(KEY, (2, 3))
    with pytest.raises(fn.DTypeError, match=r"^residual branch, Dense\(3\) init needs a floating-point dtype"):
        fn.residual(fn.Dense(3)).init(KEY, (3,), jnp.int32)


def test_checks_see_per_model_shapes_under_vmap():
    """A stacked sweep's params (leading K axis) pass under vmap; a wrong per-model leaf is named."""
    stacked = jax.tree_util.tree_map(lambda s: S((2,) + s.shape, s.dtype), NET_PARAMS)
    run = jax.vmap(lambda p, x: NET.forward(p, x)[0], in_axes=(0, None))
    assert jax.eval_shape(run, stacked, X).shape == (2, 2, 10)
    with pytest.raises(fn.ShapeError, match=r"serial layer 0, Dense\(4\): params\['b'\] has shape \(5,\)"):
        jax.eval_shape(run, (replace(stacked[0], "b", S((2, 5))),) + stacked[1:], X)


def test_hidden_jacobian_norms_names_its_params():
    from fnnet.layers.recurrent import hidden_jacobian_norms

    x = jnp.asarray(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(TypeError, match=r"hidden_jacobian_norms needs params as a dict with keys 'W', 'U', 'b'"):
        hidden_jacobian_norms((P_RNN["W"], P_RNN["U"]), x)
    with pytest.raises(fn.ShapeError, match=r"hidden_jacobian_norms: params\['b'\] has shape \(3,\), expected \(4,\)"):
        jax.eval_shape(lambda p, xx: hidden_jacobian_norms(p, xx), replace(P_RNN, "b", S((3,))), x)
