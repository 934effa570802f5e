"""Hand-written forward mode (``Layer.jvp``) of the sequence layers, RNN, LSTM, GRU and MultiHeadAttention,
and of the attention core :func:`attention_jvp`.

Each rule is checked in float64 at a random point along random tangents (dparams of the params' structure,
dx of x's shape), three ways: its y is the forward's y (to 1e-14 relative); its ẏ is ``jax.jvp`` of the
forward (to 1e-10 relative); and ⟨ẏ, c⟩ = ⟨dparams, dp̄⟩ + ⟨dx, dx̄⟩ for a random cotangent c and the
hand-written backward's (dp̄, dx̄) = backward(params, cache, c) (to 1e-10 relative; no autodiff in it).
The rules are exact, so in float64 only the order of sums differs. The blocked attention sweep (online
softmax) is checked against the dense one to 1e-12.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import DTypeError, ShapeError
from fnnet.layers.attention import attention_forward, attention_jvp
from tests._helpers import rel

TOL = 1e-10  # ẏ against jax.jvp, and the adjoint identity
TOL_Y = 1e-14  # y against the forward's y
TOL_BLOCKED = 1e-12  # the blocked sweep against the dense one

B, T, D_IN, HIDDEN = 2, 4, 3, 3
T_ATT, D_MODEL, HEADS = 7, 8, 2


def _like(key, tree):
    """Standard normal arrays with the structure, shapes and dtypes of ``tree``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])


def _dot(a, b) -> float:
    """⟨a, b⟩ summed over every leaf of two pytrees of one structure, in float64."""
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return float(sum(np.vdot(np.asarray(u, np.float64), np.asarray(v, np.float64)) for u, v in pairs))


def check_jvp(layer, params, x, key, *, mask=None, train=True, jit=False):
    """Assert the three checks of the module docstring for ``layer.jvp`` at (params, x); returns (y, ẏ)."""
    kw = {} if mask is None else {"mask": mask}
    k_p, k_x, k_c = jax.random.split(key, 3)
    dparams, dx = _like(k_p, params), jax.random.normal(k_x, x.shape, x.dtype)
    jvp = functools.partial(layer.jvp, train=train, **kw)
    y, dy = (jax.jit(jvp) if jit else jvp)(params, x, dparams, dx)

    y_ref, cache = layer.forward(params, x, train=train, **kw)
    assert y.shape == y_ref.shape and dy.shape == y_ref.shape and dy.dtype == y_ref.dtype
    assert rel(y, y_ref) <= TOL_Y

    def f(p, x):
        return layer.forward(p, x, train=train, **kw)[0]

    _, dy_auto = jax.jvp(f, (params, x), (dparams, dx))
    assert rel(dy, dy_auto) <= TOL, rel(dy, dy_auto)

    c = jax.random.normal(k_c, y.shape, y.dtype)
    dp_bar, dx_bar = layer.backward(params, cache, c)
    lhs, rhs = _dot(dy, c), _dot(dparams, dp_bar) + _dot(dx, dx_bar)
    assert abs(lhs - rhs) <= TOL * max(abs(lhs), abs(rhs)), (lhs, rhs)
    return y, dy


def _point(key, layer, in_shape, batch=B):
    k_i, k_x = jax.random.split(key)
    _, params = layer.init(k_i, in_shape, jnp.float64)
    return params, jax.random.normal(k_x, (batch, *in_shape), jnp.float64)


# ----------------------------------------------------------------------------------------------
# RNN, LSTM, GRU

RECURRENT = {
    "rnn": lambda rs: fn.RNN(HIDDEN, return_sequences=rs),
    "lstm": lambda rs: fn.LSTM(HIDDEN, return_sequences=rs, forget_bias=0.5),
    "gru": lambda rs: fn.GRU(HIDDEN, return_sequences=rs),
}


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_recurrent_jvp(key, kind, return_sequences):
    with jax.enable_x64(True):
        layer = RECURRENT[kind](return_sequences)
        params, x = _point(key, layer, (T, D_IN))
        params = jax.tree_util.tree_map(lambda a, e: a + 0.3 * e, params, _like(jax.random.fold_in(key, 1), params))
        y, _ = check_jvp(layer, params, x, jax.random.fold_in(key, 2))
        assert y.shape == ((B, T, HIDDEN) if return_sequences else (B, HIDDEN))


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "leaky_relu", "gelu", "swish", "softplus", "identity"])
def test_rnn_jvp_with_other_activations(key, activation):
    with jax.enable_x64(True):
        layer = fn.RNN(HIDDEN, activation=activation, return_sequences=True)
        check_jvp(layer, *_point(key, layer, (T, D_IN)), jax.random.fold_in(key, 1))


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_recurrent_jvp_one_step_eval_and_jit(key, kind):
    """T = 1 (the tangent of h_1 only: h_0 = 0 is a constant), train=False, and under jax.jit."""
    with jax.enable_x64(True):
        layer = RECURRENT[kind](False)
        check_jvp(layer, *_point(key, layer, (1, D_IN)), key, train=False)
        check_jvp(layer, *_point(key, layer, (T, D_IN)), key, jit=True)


def test_recurrent_last_state_tangent_is_the_last_of_the_sequence(key):
    with jax.enable_x64(True):
        for kind in sorted(RECURRENT):
            last, seq = RECURRENT[kind](False), RECURRENT[kind](True)
            params, x = _point(key, last, (T, D_IN))
            dparams, dx = _like(jax.random.fold_in(key, 1), params), jax.random.normal(key, x.shape, x.dtype)
            y_last, dy_last = last.jvp(params, x, dparams, dx)
            y_seq, dy_seq = seq.jvp(params, x, dparams, dx)
            np.testing.assert_array_equal(y_last, y_seq[:, -1])
            np.testing.assert_allclose(dy_last, dy_seq[:, -1], rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# MultiHeadAttention


def _attention_point(key, layer):
    """Params with nonzero biases (so that their tangents and their effect on the scores count), and x."""
    params, x = _point(key, layer, (T_ATT, D_MODEL))
    shift = _like(jax.random.fold_in(key, 1), params)
    return {n: a + 0.3 * shift[n] if n.startswith("b") else a for n, a in params.items()}, x


def _padding_mask():
    """A key-padding mask: the first sequence attends its first 5 keys, the second none (fully masked)."""
    return jnp.arange(T_ATT)[None, :] < jnp.array([[5], [0]])


ATTENTION_OPTIONS = [
    {},
    {"causal": True},
    {"use_bias": False},
    {"block_size": 2},
    {"block_size": 3, "causal": True},
    {"block_size": 3, "use_bias": False, "causal": True},
]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(
    "options", ATTENTION_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "dense"
)
def test_attention_jvp(key, options, masked):
    with jax.enable_x64(True):
        layer = fn.MultiHeadAttention(HEADS, **options)
        params, x = _attention_point(key, layer)
        mask = _padding_mask() if masked else None
        _, dy = check_jvp(layer, params, x, jax.random.fold_in(key, 2), mask=mask)
        assert bool(jnp.all(jnp.isfinite(dy)))
        if masked and options.get("use_bias", True):  # the fully masked sequence: y = bo, so ẏ = ḃo
            dparams, dx = _like(jax.random.fold_in(key, 3), params), jax.random.normal(key, x.shape, x.dtype)
            _, dy = layer.jvp(params, x, dparams, dx, mask=mask)
            np.testing.assert_allclose(dy[1], jnp.broadcast_to(dparams["bo"], dy[1].shape), rtol=0, atol=1e-14)


def test_attention_jvp_under_jit_and_in_eval_mode(key):
    with jax.enable_x64(True):
        layer = fn.MultiHeadAttention(HEADS, causal=True, block_size=3)
        params, x = _attention_point(key, layer)
        check_jvp(layer, params, x, key, mask=_padding_mask(), jit=True)
        check_jvp(layer, params, x, key, train=False)


def test_attention_jvp_in_bfloat16_keeps_float32_statistics(key):
    """bf16: y is the forward's y, ẏ is bf16 and near the float64 truth (O and Ȯ are float32 inside)."""
    layer = fn.MultiHeadAttention(HEADS, causal=True, block_size=3)
    with jax.enable_x64(True):
        params, x = _attention_point(key, layer)
        dparams, dx = _like(jax.random.fold_in(key, 3), params), jax.random.normal(key, x.shape, x.dtype)
        _, dy64 = layer.jvp(params, x, dparams, dx)
        half = [jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), t) for t in (params, x, dparams, dx)]
        y, dy = layer.jvp(*half)
        np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(layer.forward(*half[:2])[0], np.float32))
        assert dy.dtype == jnp.bfloat16 and rel(dy, dy64) <= 2e-2
        q = jax.random.normal(key, (B, HEADS, T_ATT, 4), jnp.bfloat16)
        outs = attention_jvp(q, q, q, q, q, q, block=3)
        assert all(o.dtype == jnp.float32 for o in outs)


# ----------------------------------------------------------------------------------------------
# attention_jvp: the core on (B, H, T, d)


def _qkv(key, d=4):
    return [jax.random.normal(k, (B, HEADS, T_ATT, d), jnp.float64) for k in jax.random.split(key, 6)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_jvp_blocked_equals_dense_and_autodiff(key, causal, masked):
    with jax.enable_x64(True):
        q, k, v, dq, dk, dv = _qkv(key)
        kw = {"key_mask": _padding_mask() if masked else None, "causal": causal}
        o, lse, do = attention_jvp(q, k, v, dq, dk, dv, **kw)
        o_ref, lse_ref = attention_forward(q, k, v, **kw)
        assert rel(o, o_ref) <= TOL_Y and rel(lse, lse_ref) <= TOL_Y
        _, do_auto = jax.jvp(lambda q, k, v: attention_forward(q, k, v, **kw)[0], (q, k, v), (dq, dk, dv))
        assert rel(do, do_auto) <= TOL
        for block in (2, 3):
            ob, lseb, dob = attention_jvp(q, k, v, dq, dk, dv, block=block, **kw)
            for a, b in ((ob, o), (lseb, lse), (dob, do)):
                assert rel(a, b) <= TOL_BLOCKED, (block, rel(a, b))
        if masked:  # the fully masked sequence: O = 0 and Ȯ = 0 exactly, nothing NaN
            assert bool(jnp.all(o[1] == 0)) and bool(jnp.all(dob[1] == 0)) and bool(jnp.all(do[1] == 0))
            assert bool(jnp.all(jnp.isfinite(do))) and bool(jnp.all(jnp.isfinite(dob)))


def test_attention_jvp_of_causal_first_query_is_its_value_tangent(key):
    """With causal=True query 0 attends key 0 alone: P = 1, so O_0 = V_0 and Ȯ_0 = V̇_0 (Ṡ cancels)."""
    with jax.enable_x64(True):
        q, k, v, dq, dk, dv = _qkv(key)
        for block in (None, 2):
            o, _, do = attention_jvp(q, k, v, dq, dk, dv, causal=True, block=block)
            np.testing.assert_allclose(o[:, :, 0], v[:, :, 0], rtol=1e-14)
            np.testing.assert_allclose(do[:, :, 0], dv[:, :, 0], rtol=1e-13, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# errors: the forward's checks, and tangents that do not fit


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "attention"])
def test_jvp_raises_the_forwards_errors_and_names_bad_tangents(key, kind):
    with jax.enable_x64(True):
        if kind == "attention":
            layer = fn.MultiHeadAttention(HEADS)
            params, x = _attention_point(key, layer)
        else:
            layer = RECURRENT[kind](False)
            params, x = _point(key, layer, (T, D_IN))
        dparams, dx = _like(key, params), jax.random.normal(key, x.shape, x.dtype)

        bad_x = x[..., :-1]
        with pytest.raises(ShapeError) as want:
            layer.forward(params, bad_x)
        with pytest.raises(ShapeError) as got:
            layer.jvp(params, bad_x, dparams, dx[..., :-1])
        assert str(got.value) == str(want.value)

        missing = {n: a for n, a in dparams.items() if n != "W" + ("o" if kind == "attention" else "")}
        with pytest.raises(ValueError, match=r"tangent dparams.*missing \['(W|Wo)'\]"):
            layer.jvp(params, x, missing, dx)
        with pytest.raises(ShapeError, match="the tangent dx has shape"):
            layer.jvp(params, x, dparams, dx[:, :-1])
        with pytest.raises(DTypeError, match=r"the tangent dparams\['\w+'\] is float32"):
            layer.jvp(params, x, jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), dparams), dx)
        if kind == "attention":
            with pytest.raises(DTypeError, match="boolean"):
                layer.jvp(params, x, dparams, dx, mask=jnp.ones(x.shape[:2], jnp.int32))
