"""RNN and LSTM: hand-written BPTT against autodiff (T = 1, 2, 50), ‖∂h_T/∂h_k‖, init, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import normals as _normals
from _helpers import rel as _rel

import fnnet as fn
from fnnet.core import DTypeError, ShapeError
from fnnet.layers.recurrent import hidden_jacobian_norms


def _setup(layer, T, dtype, key, batch=2, d_in=3):
    """Params of init's structure drawn N(0, 1/fan_in) (biases N(0, 1/4)), x (batch, T, d_in), and dy."""
    static = {}

    def shapes(k):
        static["out_shape"], params = layer.init(k, (T, d_in), dtype)
        return params

    leaves, tree = jax.tree_util.tree_flatten(jax.eval_shape(shapes, key))
    y_shape = (batch,) + static["out_shape"]
    *draws, x, dy = _normals(key, [leaf.shape for leaf in leaves] + [(batch, T, d_in), y_shape], dtype)
    draws = [d / np.sqrt(d.shape[0]) if d.ndim == 2 else d / 2 for d in draws]
    return static["out_shape"], jax.tree_util.tree_unflatten(tree, draws), x, dy


def _both(layer):
    @jax.jit
    def run(params, x, dy):
        y, cache = layer.forward(params, x)
        _, vjp = jax.vjp(lambda p, xx: layer.forward(p, xx)[0], params, x)
        return y, layer.backward(params, cache, dy), vjp(dy)

    return run


CASES = [(kind, T, seq, "float64") for kind in ("RNN", "LSTM") for T in (1, 2, 50) for seq in (False, True)]
CASES += [(kind, 50, seq, "float32") for kind in ("RNN", "LSTM") for seq in (False, True)]


@pytest.mark.parametrize("kind, T, return_sequences, dtype", CASES)
def test_bptt_matches_autodiff(key, kind, T, return_sequences, dtype):
    bar = {"float64": 1e-12, "float32": 1e-5}[dtype]
    with jax.enable_x64(dtype == "float64"):
        layer = getattr(fn, kind)(4, return_sequences=return_sequences)
        out_shape, params, x, dy = _setup(layer, T, jnp.dtype(dtype), key)
        assert out_shape == ((T, 4) if return_sequences else (4,))
        y, (grads, dx), (grads_ad, dx_ad) = _both(layer)(params, x, dy)
        assert y.shape == (2,) + out_shape and y.dtype == jnp.dtype(dtype)
        assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
        assert dx.shape == x.shape and _rel(dx, dx_ad) <= bar
        for name in ("W", "U", "b"):
            assert grads[name].shape == params[name].shape and grads[name].dtype == jnp.dtype(dtype)
            assert _rel(grads[name], grads_ad[name]) <= bar, name


@pytest.mark.parametrize("activation", ["relu", fn.activations.sigmoid, "gelu"], ids=["relu", "sigmoid", "gelu"])
def test_bptt_with_other_activations(key, activation):
    with jax.enable_x64(True):
        layer = fn.RNN(4, activation=activation, return_sequences=True)
        _, params, x, dy = _setup(layer, 5, jnp.float64, key)
        _, (grads, dx), (grads_ad, dx_ad) = _both(layer)(params, x, dy)
        assert _rel(dx, dx_ad) <= 1e-12
        assert all(_rel(grads[n], grads_ad[n]) <= 1e-12 for n in ("W", "U", "b"))


def test_last_state_is_the_last_of_the_sequence(key):
    _, params, x, _ = _setup(fn.LSTM(4), 6, jnp.float32, key)
    h_T, _ = fn.LSTM(4).forward(params, x)
    hs, _ = fn.LSTM(4, return_sequences=True).forward(params, x)
    np.testing.assert_array_equal(np.asarray(h_T), np.asarray(hs[:, -1]))


def _reference_h_T(kind, params, x, k, h_k, c_k):
    """h_T from the state at step k, written independently of fnnet (for jax.jacrev)."""
    W, U, b = params["W"], params["U"], params["b"][None, :]
    h, c, H = h_k[None, :], c_k[None, :], U.shape[0]
    for t in range(k, x.shape[1]):
        z = x[:, t] @ W + h @ U + b
        if kind == "RNN":
            h = jnp.tanh(z)
        else:
            i, f, o = (jax.nn.sigmoid(z[:, j * H : (j + 1) * H]) for j in (0, 1, 3))
            c = f * c + i * jnp.tanh(z[:, 2 * H : 3 * H])
            h = o * jnp.tanh(c)
    return h[0]


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_hidden_jacobian_norms_match_autodiff_jacobians(key, kind):
    """‖∂h_T/∂h_k‖ (Frobenius and spectral) for k = 0..T against jax.jacrev of an independent loop."""
    T = 5
    with jax.enable_x64(True):
        layer = getattr(fn, kind)(3, return_sequences=True)
        _, params, x, _ = _setup(layer, T, jnp.float64, key, batch=1)
        hs, cache = jax.jit(layer.forward)(params, x)
        cs = cache["c"] if kind == "LSTM" else jnp.zeros((T, 1, 3), jnp.float64)  # time-major cell states
        fro, spec = map(
            np.asarray, jax.jit(lambda p, x: [hidden_jacobian_norms(p, x, ord=o) for o in ("fro", 2)])(params, x)
        )
        assert fro.shape == spec.shape == (1, T + 1)

        @jax.jit  # every k in one compile
        def jacobians(params, x, hs, cs):
            zero = jnp.zeros(3, jnp.float64)
            return [
                jax.jacrev(lambda h, k=k: _reference_h_T(kind, params, x, k, h, cs[k - 1, 0] if k else zero))(
                    hs[0, k - 1] if k else zero
                )
                for k in range(T + 1)
            ]

        for k, J in enumerate(jacobians(params, x, hs, cs)):
            np.testing.assert_allclose(fro[0, k], np.linalg.norm(J), rtol=1e-10)
            np.testing.assert_allclose(spec[0, k], np.linalg.norm(J, 2), rtol=1e-10)
        np.testing.assert_allclose(fro[0, T], np.sqrt(3), rtol=1e-12)  # ∂h_T/∂h_T = I
        np.testing.assert_allclose(spec[0, T], 1.0, rtol=1e-12)


def test_rnn_jacobian_norms_vanish_at_the_rate_of_the_recurrent_spectral_norm(key):
    """tanh' ≤ 1 and U = 0.5·Q (Q orthogonal) give ‖∂h_T/∂h_k‖₂ ≤ 0.5^(T−k) (Pascanu et al. 2013, eq. 7)."""
    T, H = 12, 4
    with jax.enable_x64(True):
        _, params, x, _ = _setup(fn.RNN(H, activation="tanh"), T, jnp.float64, key)
        q, _ = np.linalg.qr(np.asarray(params["U"]) + np.eye(H))
        params["U"] = jnp.asarray(0.5 * q)
        norms = np.asarray(hidden_jacobian_norms(params, x, activation="tanh", ord=2))
        bound = 0.5 ** (T - np.arange(T + 1))
        assert np.all(norms <= bound[None, :] * (1 + 1e-12))
        assert norms[0, 0] < 1e-3 < norms[0, -2]  # vanishes over the sequence


def test_init_shapes_and_lstm_forget_bias(key):
    static = {}

    def init(k):
        static["out_shape"], params = fn.LSTM(5).init(k, (7, 3))
        return params

    params = jax.jit(init)(key)
    assert static["out_shape"] == (5,)
    assert {n: params[n].shape for n in params} == {"W": (3, 20), "U": (5, 20), "b": (20,)}
    np.testing.assert_array_equal(np.asarray(params["b"]), np.r_[np.zeros(5), np.ones(5), np.zeros(10)])
    U = np.asarray(params["U"])  # orthogonal (H, 4H): orthonormal rows
    np.testing.assert_allclose(U @ U.T, np.eye(5), atol=1e-5)

    def rnn_init(k):
        static["rnn_out_shape"], params = fn.RNN(6, return_sequences=True).init(k, (7, 3))
        return params

    shapes = jax.eval_shape(rnn_init, key)
    assert static["rnn_out_shape"] == (7, 6)
    assert {n: shapes[n].shape for n in shapes} == {"W": (3, 6), "U": (6, 6), "b": (6,)}


def test_bad_inputs_raise_clear_errors(key):
    layer = fn.RNN(4)
    _, params, x, _ = _setup(layer, 3, jnp.float32, key)
    with pytest.raises(ShapeError, match=r"RNN\(4\) expected inputs \(batch, time, 3\), got \(2, 3\)"):
        layer.forward(params, x[:, 0])
    with pytest.raises(ShapeError, match=r"RNN\(4\) expected inputs \(batch, time, 3\), got \(2, 3, 2\)"):
        layer.forward(params, x[:, :, :2])
    with pytest.raises(ShapeError, match=r"LSTM\(4\) expected inputs \(batch, time, 3\), got \(2, 3, 1, 3\)"):
        fn.LSTM(4).forward(_setup(fn.LSTM(4), 3, jnp.float32, key)[1], x[:, :, None, :])
    with pytest.raises(ShapeError, match="at least one time step"):
        layer.forward(params, x[:, :0])
    with pytest.raises(DTypeError, match="floating-point"):
        layer.forward(params, x.astype(jnp.int32))
    with pytest.raises(ShapeError, match=r"input shape \(time, features\)"):
        layer.init(key, (3,))
    with pytest.raises(ValueError, match="activation must be one of"):
        fn.RNN(4, activation="softsign")
    with pytest.raises(ValueError, match="activation must be one of"):
        fn.RNN(4, activation=lambda z: z)
    with pytest.raises(ValueError, match="positive integer hidden_dim"):
        fn.LSTM(0)
    with pytest.raises(ValueError, match="ord must be"):
        hidden_jacobian_norms(params, x, ord=1)
    with pytest.raises(ShapeError, match="RNN or LSTM params"):
        hidden_jacobian_norms({"W": params["W"], "U": params["U"][:, :3], "b": params["b"]}, x)
    with pytest.raises(ValueError, match="activations are fixed"):
        hidden_jacobian_norms(_setup(fn.LSTM(4), 3, jnp.float32, key)[1], x, activation="relu")
