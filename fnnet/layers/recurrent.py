"""Recurrent layers, RNN (Elman), LSTM and GRU, with backpropagation through time written by hand.

Inputs are batch first, x: (B, T, d_in); the initial state is zero. The forward is a ``lax.scan``
over time; the backward is a reverse ``lax.scan`` that carries the gradient flowing into the hidden
state from the future and sums the gradients of the shared W, U, b over the steps (BPTT).
``return_sequences=True`` returns every hidden state (B, T, H); False (the default, as in Keras)
only the last one, h_T: (B, H). Each layer's ``jvp`` (forward mode) is a forward ``lax.scan`` that
carries the state and its tangent, (h, ḣ) (and (c, ċ) for the LSTM), from ḣ_0 = 0 (h_0 is a constant).

The domain of the hand-written rules (what they assume):

* **Return modes.** With ``return_sequences=True`` the cotangent dy is (B, T, H), one per step, and
  enters every step of the reverse scan; with False it is (B, H), the cotangent of h_T alone, and
  enters at t = T only (the per-step cotangents are 0). Both are exact VJPs of their forward.
* **State.** h_0 = 0 (and c_0 = 0) are constants, not inputs: no gradient flows to them, and the
  reverse scan starts with δ_T = 0 (sequences) or δ_T = dy (last state). T ≥ 1 is required.
* **Kinks.** The rules use the activation's own backward (φ' from its cache), so at a kink they
  follow its convention (relu'(0) = 0); ``jax.grad`` of the forward agrees, the forward being written
  with the same masks. Elsewhere (tanh, sigmoid, LSTM gates) every function is smooth: exact.

:func:`hidden_jacobian_norms` gives ‖∂h_T/∂h_k‖ for every k from the same backward recursion, to
plot vanishing and exploding gradients over time.

References: Elman 1990 (the simple recurrent network); Werbos 1990 (BPTT); Hochreiter &
Schmidhuber 1997 and Gers et al. 2000 (LSTM with forget gate); Cho et al. 2014, "Learning Phrase
Representations using RNN Encoder-Decoder for Statistical Machine Translation", sec. 2.3 (the GRU;
fnnet follows PyTorch's ``torch.nn.GRU`` variant, reset gate applied after U_n); Pascanu et al. 2013, eq. 3-7
(∂h_T/∂h_k as a product of Jacobians; vanishing and exploding gradients); Jozefowicz et al. 2015
(forget-gate bias 1); A. Gulli, A. Kapoor, S. Pal, *Deep Learning with TensorFlow 2 and Keras*,
2nd ed., Packt, 2019, chapter "The Math Behind Deep Learning", section "Thinking about backpropagation
and RNNs" (vanishing and exploding gradients; the remark that LSTMs and GRUs deal with the former).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet import activations, initializers
from fnnet.core import (
    Array,
    Layer,
    ShapeError,
    check_dtype_match,
    check_float,
    check_param_dtype,
    check_params,
    check_real,
    check_tangent,
    is_int,
    shape_str,
)

_ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu", "gelu", "swish", "silu", "softplus", "identity")


def _activation(name: str, activation: str | Callable) -> tuple[Callable, Callable]:
    """(forward, backward) rule of an activation given by name or as fnnet's plain function."""
    label = activation if isinstance(activation, str) else None
    if callable(activation):
        label = next((a for a in _ACTIVATIONS if getattr(activations, a) is activation), None)
    if label not in _ACTIVATIONS:
        raise ValueError(
            f"{name} activation must be one of {', '.join(_ACTIVATIONS)} (a name or fnnet.activations.<name>), "
            f"got {activation!r}"
        )
    return getattr(activations, f"{label}_forward"), getattr(activations, f"{label}_backward")


def _check_sequence(name: str, x: Any, W: Array) -> None:
    d_in = W.shape[0]
    shape = tuple(jnp.shape(x))
    if len(shape) != 3 or shape[2] != d_in:
        raise ShapeError(f"{name} expected inputs (batch, time, {d_in}), got {shape_str(shape)}")
    if shape[1] < 1:
        raise ShapeError(f"{name} needs at least one time step, got inputs of shape {shape_str(shape)}")
    check_float(name, x)
    check_dtype_match(name, x, W)


def _check_tangents(name: str, params: Any, dparams: Any, x: Array, dx: Any) -> None:
    """A jvp's tangents fit its point: ``dparams`` as ``params``, ``dx`` as ``x`` (:func:`fnnet.core.check_tangent`)."""
    check_tangent(name, "dparams", dparams, params)
    check_tangent(name, "dx", dx, x)


def _tangent_inputs(params, dparams, xs: Array, dxs: Array) -> Array:
    """The tangent of x_t W + b over time-major xs: ẋ_t W + x_t Ẇ + ḃ."""
    return jnp.matmul(dxs, params["W"]) + jnp.matmul(xs, dparams["W"]) + jnp.reshape(dparams["b"], (1, 1, -1))


def _sequence_jvp(name: str, spec: Any, scan: Any, return_sequences: bool) -> Any:
    """The ``jvp`` of a recurrent layer: the forward's checks and the tangents', then ``scan(params, dparams,
    xs, dxs) -> (hs, dhs)`` over time-major inputs, and the outputs as the forward returns them."""

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        _check_sequence(name, x, params["W"])
        _check_tangents(name, params, dparams, x, dx)
        hs, dhs = scan(params, dparams, jnp.swapaxes(x, 0, 1), jnp.swapaxes(dx, 0, 1))
        return _outputs(hs, dhs, return_sequences)

    return jvp


def _outputs(hs: Array, dhs: Array, return_sequences: bool) -> tuple[Array, Array]:
    """(y, ẏ) from time-major (h_1..h_T, ḣ_1..ḣ_T): every step batch first, or the last one."""
    if return_sequences:
        return jnp.swapaxes(hs, 0, 1), jnp.swapaxes(dhs, 0, 1)
    return hs[-1], dhs[-1]


def _init_shapes(name: str, in_shape: tuple[int, ...], dtype: Any) -> tuple[int, int]:
    check_param_dtype(name, dtype)
    if len(in_shape) != 2:
        raise ShapeError(f"{name} needs input shape (time, features), got {shape_str(in_shape)}")
    return int(in_shape[0]), int(in_shape[1])


def _shift(hs: Array) -> Array:
    """(h_0, ..., h_{T-1}) from (h_1, ..., h_T), time-major, with h_0 = 0."""
    return jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)


def _rows(a: Array) -> Array:
    """(T, B, n) -> (T·B, n): every step's rows as one matrix."""
    return jnp.reshape(a, (-1, a.shape[-1]))


def _hoisted_gradients(xs: Array, hs: Array, dzs: Array, W: Array) -> tuple[Array, Array, Array, Array]:
    """(dW, dU, db, dx) from the pre-activation cotangents dz_1..dz_T that the reverse scan emitted.

    dW = Σ_t x_tᵀ dz_t, dU = Σ_t h_{t−1}ᵀ dz_t, db = Σ_t Σ_batch dz_t and dx_t = dz_t Wᵀ do not feed
    the recurrence, so each is one matmul over all T·B rows instead of T small ones inside the scan.
    """
    flat = _rows(dzs)
    return _rows(xs).T @ flat, _rows(_shift(hs)).T @ flat, jnp.sum(flat, axis=0), jnp.swapaxes(dzs @ W.T, 0, 1)


def _step_cotangents(dy: Array, hs: Array, return_sequences: bool) -> tuple[Array, Array]:
    """(per-step dL/dh_t from the output, time-major; dL/dh_T entering from beyond the last step)."""
    if return_sequences:
        return jnp.swapaxes(dy, 0, 1), jnp.zeros_like(hs[0])
    return jnp.zeros_like(hs), dy


def _norms(G: Array, ord: str | int) -> Array:
    """‖G[b]‖ over the last two axes: Frobenius ("fro") or spectral (2)."""
    if ord == "fro":
        return jnp.sqrt(jnp.sum(G * G, axis=(-2, -1)))
    return jnp.linalg.norm(G, ord=2, axis=(-2, -1))


# ----------------------------------------------------------------------------------------------
# RNN


def _rnn_scan(params, xs: Array, act_fwd: Callable) -> tuple[Array, Any]:
    """h_t = φ(x_t W + h_{t−1} U + b) over time-major xs (T, B, d); returns (h_1..h_T, φ caches)."""
    W, U, b = params["W"], params["U"], params["b"]
    xw = jnp.matmul(xs, W) + jnp.reshape(b, (1, 1, -1))

    def step(h, xw_t):
        h_new, act_cache = act_fwd(xw_t + jnp.matmul(h, U))
        return h_new, (h_new, act_cache)

    h0 = jnp.zeros((xs.shape[1], U.shape[0]), jnp.result_type(xs, U))
    _, (hs, acts) = lax.scan(step, h0, xw)
    return hs, acts


def _rnn_jvp_scan(params, dparams, xs: Array, dxs: Array, act_fwd: Callable, act_bwd: Callable):
    """:func:`_rnn_scan` with tangents: returns (h_1..h_T, ḣ_1..ḣ_T), carrying (h, ḣ) from (0, 0).

    φ acts elementwise, so its Jacobian is the diagonal φ'(a) and its VJP rule applied to ȧ is its JVP.
    """
    W, U, b, dU = params["W"], params["U"], params["b"], dparams["U"]
    xw = jnp.matmul(xs, W) + jnp.reshape(b, (1, 1, -1))
    dxw = _tangent_inputs(params, dparams, xs, dxs)

    def step(carry, inp):
        h, dh = carry
        xw_t, dxw_t = inp
        h_new, act_cache = act_fwd(xw_t + jnp.matmul(h, U))
        dh_new = act_bwd(act_cache, dxw_t + jnp.matmul(dh, U) + jnp.matmul(h, dU))
        return (h_new, dh_new), (h_new, dh_new)

    h0 = jnp.zeros((xs.shape[1], U.shape[0]), jnp.result_type(xs, U))
    _, (hs, dhs) = lax.scan(step, (h0, jnp.zeros_like(h0)), (xw, dxw))
    return hs, dhs


def RNN(
    hidden_dim: int,
    activation: str | Callable = "tanh",
    return_sequences: bool = False,
    w_init: initializers.Initializer | None = None,
    u_init: initializers.Initializer | None = None,
    b_init: initializers.Initializer | None = None,
) -> Layer:
    """Elman RNN: h_t = φ(a_t), a_t = x_t W + h_{t−1} U + b, h_0 = 0; x (B, T, d_in) -> (B, H) or (B, T, H).

    W: (d_in, H) ~ Glorot uniform, U: (H, H) orthogonal, b: (H,) = 0 (Keras' defaults).

    Backward (BPTT), a reverse scan t = T..1 carrying δ_t = ∂L/∂h_t from the future:
        g_t = dy_t + δ_t,   da_t = φ'(a_t) ⊙ g_t,   δ_{t−1} = da_t Uᵀ,   dx_t = da_t Wᵀ,
        dW = Σ_t x_tᵀ da_t,   dU = Σ_t h_{t−1}ᵀ da_t,   db = Σ_t Σ_batch da_t,
    with dy_t = 0 for t < T when only h_T is returned (then δ_T = dy). Only δ is sequential: dW, dU, db
    and dx are single matmuls over all T·B rows after the scan. Domain: the module docstring.

    Forward mode (JVP), a forward scan t = 1..T carrying (h_t, ḣ_t) from (0, 0), for tangents
    (Ẇ, U̇, ḃ, ẋ)::

        ȧ_t = ẋ_t W + x_t Ẇ + ḣ_{t−1} U + h_{t−1} U̇ + ḃ,   ḣ_t = φ'(a_t) ⊙ ȧ_t
        (tanh: φ'(a_t) = 1 − h_t²),

    and ẏ = (ḣ_1, ..., ḣ_T) or ḣ_T, as y. At a kink φ' follows the activation's backward (relu'(0) = 0).

    Params: ``{"W": (d_in, H), "U": (H, H), "b": (H,)}``, one floating dtype; anything else is refused
    while tracing, naming the leaf. ``w_init``/``u_init``/``b_init`` are initializer functions.
    """
    if not is_int(hidden_dim) or hidden_dim <= 0:
        raise ValueError(f"RNN needs a positive integer hidden_dim, got {hidden_dim!r}")
    hidden_dim = int(hidden_dim)
    name = f"RNN({hidden_dim})"
    act_fwd, act_bwd = _activation(name, activation)
    w_init = initializers.resolve(name, "w_init", w_init, initializers.glorot_uniform())
    u_init = initializers.resolve(name, "u_init", u_init, initializers.orthogonal())
    b_init = initializers.resolve(name, "b_init", b_init, initializers.zeros())
    spec = {"W": ("d_in", hidden_dim), "U": (hidden_dim, hidden_dim), "b": (hidden_dim,)}

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        T, d_in = _init_shapes(name, in_shape, dtype)
        k_w, k_u, k_b = jax.random.split(key, 3)
        params = {
            "W": initializers.draw(name, "w_init", w_init, k_w, (d_in, hidden_dim), dtype),
            "U": initializers.draw(name, "u_init", u_init, k_u, (hidden_dim, hidden_dim), dtype),
            "b": initializers.draw(name, "b_init", b_init, k_b, (hidden_dim,), dtype),
        }
        return ((T, hidden_dim) if return_sequences else (hidden_dim,)), params

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        _check_sequence(name, x, params["W"])
        xs = jnp.swapaxes(x, 0, 1)
        hs, acts = _rnn_scan(params, xs, act_fwd)
        y = jnp.swapaxes(hs, 0, 1) if return_sequences else hs[-1]
        return y, {"x": xs, "h": hs, "act": acts}

    def backward(params, cache, dy: Array):
        check_params(name, params, spec)
        W, U = params["W"], params["U"]
        xs, hs = cache["x"], cache["h"]
        dys, delta_T = _step_cotangents(dy, hs, return_sequences)

        def step(delta, inp):
            dy_t, act_t = inp
            da = act_bwd(act_t, dy_t + delta)
            return jnp.matmul(da, U.T), da

        _, das = lax.scan(step, delta_T, (dys, cache["act"]), reverse=True)
        dW, dU, db, dx = _hoisted_gradients(xs, hs, das, W)
        return {"W": dW, "U": dU, "b": db}, dx

    def scan(params, dparams, xs, dxs):
        return _rnn_jvp_scan(params, dparams, xs, dxs, act_fwd, act_bwd)

    jvp = _sequence_jvp(name, spec, scan, return_sequences)

    return Layer(init, forward, backward, jvp=jvp, name=name)


# ----------------------------------------------------------------------------------------------
# LSTM


def _lstm_scan(params, xs: Array) -> tuple[Array, Array, Array]:
    """The LSTM over time-major xs: returns (h_1..h_T, c_1..c_T, gates [i f g o] per step)."""
    W, U, b = params["W"], params["U"], params["b"]
    H = U.shape[0]
    xw = jnp.matmul(xs, W) + jnp.reshape(b, (1, 1, -1))

    def step(carry, xw_t):
        h, c = carry
        z = xw_t + jnp.matmul(h, U)
        i, f, o = (activations.sigmoid(z[:, k * H : (k + 1) * H]) for k in (0, 1, 3))
        g = jnp.tanh(z[:, 2 * H : 3 * H])
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        return (h_new, c_new), (h_new, c_new, jnp.concatenate([i, f, g, o], axis=-1))

    zeros = jnp.zeros((xs.shape[1], H), jnp.result_type(xs, U))
    _, (hs, cs, gates) = lax.scan(step, (zeros, zeros), xw)
    return hs, cs, gates


def _lstm_jvp_scan(params, dparams, xs: Array, dxs: Array) -> tuple[Array, Array]:
    """:func:`_lstm_scan` with tangents: returns (h_1..h_T, ḣ_1..ḣ_T), carrying (h, ḣ, c, ċ) from zeros."""
    W, U, b, dU = params["W"], params["U"], params["b"], dparams["U"]
    H = U.shape[0]
    xw = jnp.matmul(xs, W) + jnp.reshape(b, (1, 1, -1))
    dxw = _tangent_inputs(params, dparams, xs, dxs)

    def step(carry, inp):
        h, dh, c, dc = carry
        xw_t, dxw_t = inp
        z = xw_t + jnp.matmul(h, U)
        dz = dxw_t + jnp.matmul(dh, U) + jnp.matmul(h, dU)
        i, f, o = (activations.sigmoid(z[:, k * H : (k + 1) * H]) for k in (0, 1, 3))
        g = jnp.tanh(z[:, 2 * H : 3 * H])
        di, df, dg, do = (dz[:, k * H : (k + 1) * H] for k in range(4))
        di, df, do, dg = di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g * g)
        c_new = f * c + i * g
        dc_new = df * c + f * dc + di * g + i * dg
        tc = jnp.tanh(c_new)
        h_new = o * tc
        dh_new = do * tc + o * (1 - tc * tc) * dc_new
        return (h_new, dh_new, c_new, dc_new), (h_new, dh_new)

    zeros = jnp.zeros((xs.shape[1], H), jnp.result_type(xs, U))
    _, (hs, dhs) = lax.scan(step, (zeros, zeros, zeros, zeros), (xw, dxw))
    return hs, dhs


def _lstm_cell_vjp(U: Array, gates: Array, c_prev: Array, c: Array, dh: Array, dc: Array):
    """One step back through the cell: (dz, ∂L/∂h_{t−1}, ∂L/∂c_{t−1}) from (∂L/∂h_t, ∂L/∂c_t)."""
    H = U.shape[0]
    i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
    tc = jnp.tanh(c)
    dc = dc + dh * o * (1 - tc * tc)
    dz = jnp.concatenate(
        [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=-1
    )
    return dz, jnp.matmul(dz, U.T), dc * f


def LSTM(
    hidden_dim: int,
    return_sequences: bool = False,
    w_init: initializers.Initializer | None = None,
    u_init: initializers.Initializer | None = None,
    forget_bias: float = 1.0,
) -> Layer:
    """LSTM: z = x_t W + h_{t−1} U + b split into gates [i, f, g, o] (PyTorch's and Keras' order),
    i, f, o = σ(·), g = tanh(·), c_t = f ⊙ c_{t−1} + i ⊙ g, h_t = o ⊙ tanh(c_t), h_0 = c_0 = 0.

    W: (d_in, 4H) ~ Glorot uniform, U: (H, 4H) orthogonal, b: (4H,) = 0 except the forget gate's
    b_f = ``forget_bias`` = 1 (Jozefowicz et al. 2015; Keras' ``unit_forget_bias``).

    Backward (BPTT), a reverse scan carrying (δh, δc) = (∂L/∂h_t, ∂L/∂c_t) from the future:
        g_h = dy_t + δh,   g_c = δc + g_h ⊙ o ⊙ (1 − tanh² c_t),
        dz = [g_c ⊙ g ⊙ i(1−i),  g_c ⊙ c_{t−1} ⊙ f(1−f),  g_c ⊙ i ⊙ (1−g²),  g_h ⊙ tanh c_t ⊙ o(1−o)],
        δh ← dz Uᵀ,   δc ← g_c ⊙ f,   dx_t = dz Wᵀ,
        dW = Σ_t x_tᵀ dz_t,   dU = Σ_t h_{t−1}ᵀ dz_t,   db = Σ_t Σ_batch dz_t.
    Only δh is sequential; dW, dU, db and dx are single matmuls over all T·B rows after the scan.
    Every gate is smooth, so the rule is exact for every input; return modes and state: the module
    docstring.

    Forward mode (JVP), a forward scan carrying (h, ḣ, c, ċ) from zeros, for tangents (Ẇ, U̇, ḃ, ẋ)::

        ż = ẋ_t W + x_t Ẇ + ḣ_{t−1} U + h_{t−1} U̇ + ḃ,   split into [ż_i, ż_f, ż_g, ż_o],
        i̇ = i(1−i) ż_i,   ḟ = f(1−f) ż_f,   ȯ = o(1−o) ż_o,   ġ = (1−g²) ż_g,
        ċ_t = ḟ ⊙ c_{t−1} + f ⊙ ċ_{t−1} + i̇ ⊙ g + i ⊙ ġ,
        ḣ_t = ȯ ⊙ tanh c_t + o ⊙ (1 − tanh² c_t) ⊙ ċ_t,

    and ẏ = (ḣ_1, ..., ḣ_T) or ḣ_T, as y.

    Params: ``{"W": (d_in, 4H), "U": (H, 4H), "b": (4H,)}``, one floating dtype; anything else is
    refused while tracing, naming the leaf. ``w_init``/``u_init`` are initializer functions.
    """
    if not is_int(hidden_dim) or hidden_dim <= 0:
        raise ValueError(f"LSTM needs a positive integer hidden_dim, got {hidden_dim!r}")
    hidden_dim = int(hidden_dim)
    if not np.isfinite(check_real("LSTM", "forget_bias", forget_bias)):
        raise ValueError(f"LSTM needs a finite forget_bias, got {forget_bias!r}")
    name = f"LSTM({hidden_dim})"
    H = hidden_dim
    w_init = initializers.resolve(name, "w_init", w_init, initializers.glorot_uniform())
    u_init = initializers.resolve(name, "u_init", u_init, initializers.orthogonal())
    spec = {"W": ("d_in", 4 * H), "U": (H, 4 * H), "b": (4 * H,)}

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        T, d_in = _init_shapes(name, in_shape, dtype)
        k_w, k_u = jax.random.split(key)
        b = jnp.zeros((4 * H,), dtype).at[H : 2 * H].set(forget_bias)
        params = {
            "W": initializers.draw(name, "w_init", w_init, k_w, (d_in, 4 * H), dtype),
            "U": initializers.draw(name, "u_init", u_init, k_u, (H, 4 * H), dtype),
            "b": b,
        }
        return ((T, H) if return_sequences else (H,)), params

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        _check_sequence(name, x, params["W"])
        xs = jnp.swapaxes(x, 0, 1)
        hs, cs, gates = _lstm_scan(params, xs)
        y = jnp.swapaxes(hs, 0, 1) if return_sequences else hs[-1]
        return y, {"x": xs, "h": hs, "c": cs, "gates": gates}

    def backward(params, cache, dy: Array):
        check_params(name, params, spec)
        W, U = params["W"], params["U"]
        xs, hs, cs = cache["x"], cache["h"], cache["c"]
        dys, dh_T = _step_cotangents(dy, hs, return_sequences)

        def step(carry, inp):
            dh, dc = carry
            dy_t, c_prev, c_t, gates_t = inp
            dz, dh, dc = _lstm_cell_vjp(U, gates_t, c_prev, c_t, dy_t + dh, dc)
            return (dh, dc), dz

        inputs = (dys, _shift(cs), cs, cache["gates"])
        _, dzs = lax.scan(step, (dh_T, jnp.zeros_like(dh_T)), inputs, reverse=True)
        dW, dU, db, dx = _hoisted_gradients(xs, hs, dzs, W)
        return {"W": dW, "U": dU, "b": db}, dx

    jvp = _sequence_jvp(name, spec, _lstm_jvp_scan, return_sequences)

    return Layer(init, forward, backward, jvp=jvp, name=name)


# ----------------------------------------------------------------------------------------------
# GRU


def _uniform(bound: float) -> initializers.Initializer:
    """U(−bound, bound) for every entry, whatever the shape: PyTorch's init of its recurrent layers."""

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return jax.random.uniform(key, tuple(shape), dtype, -bound, bound)

    return init


def _gru_scan(params, xs: Array) -> tuple[Array, Array, Array]:
    """The GRU over time-major xs (T, B, d): returns (h_1..h_T, gates [r z n] per step, h U_n + bh_n per step)."""
    W, U, b, bh = params["W"], params["U"], params["b"], params["bh"]
    H = U.shape[0]
    xw = jnp.matmul(xs, W) + jnp.reshape(b, (1, 1, -1))

    def step(h, xw_t):
        hu = jnp.matmul(h, U) + jnp.reshape(bh, (1, -1))
        r = activations.sigmoid(xw_t[:, :H] + hu[:, :H])
        z = activations.sigmoid(xw_t[:, H : 2 * H] + hu[:, H : 2 * H])
        hu_n = hu[:, 2 * H :]
        n = jnp.tanh(xw_t[:, 2 * H :] + r * hu_n)
        h_new = (1 - z) * n + z * h
        return h_new, (h_new, jnp.concatenate([r, z, n], axis=-1), hu_n)

    h0 = jnp.zeros((xs.shape[1], H), jnp.result_type(xs, U))
    _, (hs, gates, hu_ns) = lax.scan(step, h0, xw)
    return hs, gates, hu_ns


def _gru_jvp_scan(params, dparams, xs: Array, dxs: Array) -> tuple[Array, Array]:
    """:func:`_gru_scan` with tangents: returns (h_1..h_T, ḣ_1..ḣ_T), carrying (h, ḣ) from (0, 0)."""
    W, U, b, bh = params["W"], params["U"], params["b"], params["bh"]
    dU, dbh = dparams["U"], dparams["bh"]
    H = U.shape[0]
    xw = jnp.matmul(xs, W) + jnp.reshape(b, (1, 1, -1))
    dxw = _tangent_inputs(params, dparams, xs, dxs)

    def step(carry, inp):
        h, dh = carry
        xw_t, dxw_t = inp
        hu = jnp.matmul(h, U) + jnp.reshape(bh, (1, -1))
        dhu = jnp.matmul(dh, U) + jnp.matmul(h, dU) + jnp.reshape(dbh, (1, -1))
        r = activations.sigmoid(xw_t[:, :H] + hu[:, :H])
        z = activations.sigmoid(xw_t[:, H : 2 * H] + hu[:, H : 2 * H])
        hu_n = hu[:, 2 * H :]
        n = jnp.tanh(xw_t[:, 2 * H :] + r * hu_n)
        h_new = (1 - z) * n + z * h
        dr = r * (1 - r) * (dxw_t[:, :H] + dhu[:, :H])
        dz = z * (1 - z) * (dxw_t[:, H : 2 * H] + dhu[:, H : 2 * H])
        dn = (1 - n * n) * (dxw_t[:, 2 * H :] + dr * hu_n + r * dhu[:, 2 * H :])
        dh_new = (1 - z) * dn + z * dh + dz * (h - n)
        return (h_new, dh_new), (h_new, dh_new)

    h0 = jnp.zeros((xs.shape[1], H), jnp.result_type(xs, U))
    _, (hs, dhs) = lax.scan(step, (h0, jnp.zeros_like(h0)), (xw, dxw))
    return hs, dhs


def GRU(
    hidden: int,
    return_sequences: bool = False,
    w_init: initializers.Initializer | None = None,
    u_init: initializers.Initializer | None = None,
    b_init: initializers.Initializer | None = None,
) -> Layer:
    """GRU with PyTorch's equations and layout; x (B, T, d_in) -> h_T (B, H) or every h_t (B, T, H).

    Forward, h_0 = 0, blocks ordered [r, z, n] along the 3H axis of W, U, b, bh:
        r = σ(x_t W_r + b_r + h_{t−1} U_r + bh_r)
        z = σ(x_t W_z + b_z + h_{t−1} U_z + bh_z)
        n = tanh(x_t W_n + b_n + r ⊙ (h_{t−1} U_n + bh_n))
        h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}
    (``torch.nn.GRU``; Cho et al. 2014 put r before U_n instead). The layout ports to and from
    PyTorch: W = ``weight_ih_l0.T`` (d_in, 3H), U = ``weight_hh_l0.T`` (H, 3H), b = ``bias_ih_l0``,
    bh = ``bias_hh_l0`` (3H,). Two biases, not one: bh_n sits inside r ⊙ (·), so it is not b_n.

    Default init, PyTorch's: every entry of W, U, b and bh ~ U(−1/√H, 1/√H). ``w_init``, ``u_init``
    and ``b_init`` (the last for b and bh) are initializer functions that replace it.

    Backward (BPTT), a reverse scan carrying δ_t = ∂L/∂h_t from the future, with g = dy_t + δ_t
    and a_n = x_t W_n + b_n + r ⊙ u_n, u_n = h_{t−1} U_n + bh_n:
        dn = g ⊙ (1 − z),   da_n = dn ⊙ (1 − n²),
        da_z = g ⊙ (h_{t−1} − n) ⊙ z(1 − z),   da_r = da_n ⊙ u_n ⊙ r(1 − r),
        dxw_t = [da_r, da_z, da_n]          (the gradient of x_t W + b),
        dhu_t = [da_r, da_z, da_n ⊙ r]      (the gradient of h_{t−1} U + bh),
        δ_{t−1} = g ⊙ z + dhu_t Uᵀ,   dx_t = dxw_t Wᵀ,
        dW = Σ_t x_tᵀ dxw_t,   db = Σ_t Σ_batch dxw_t,   dU = Σ_t h_{t−1}ᵀ dhu_t,   dbh = Σ_t Σ_batch dhu_t;
    Only δ is sequential: dW, dU, db, dbh and dx are single matmuls over all T·B rows after the scan.
    Every gate is smooth, so the rule is exact for every input; return modes and state: the module
    docstring.

    Forward mode (JVP), a forward scan carrying (h, ḣ) from (0, 0), for tangents (Ẇ, U̇, ḃ, ḃh, ẋ),
    with ẋw_t = ẋ_t W + x_t Ẇ + ḃ and u̇ = ḣ_{t−1} U + h_{t−1} U̇ + ḃh (blocks [r, z, n] as above)::

        ṙ = r(1−r) (ẋw_r + u̇_r),   ż = z(1−z) (ẋw_z + u̇_z),
        ṅ = (1−n²) (ẋw_n + ṙ ⊙ u_n + r ⊙ u̇_n),
        ḣ_t = (1−z) ⊙ ṅ + z ⊙ ḣ_{t−1} + ż ⊙ (h_{t−1} − n),

    and ẏ = (ḣ_1, ..., ḣ_T) or ḣ_T, as y.

    Params: ``{"W": (d_in, 3H), "U": (H, 3H), "b": (3H,), "bh": (3H,)}``, one floating dtype;
    anything else is refused while tracing, naming the leaf.

    Reference: Cho et al. 2014, sec. 2.3; PyTorch's ``torch.nn.GRU`` documentation (equations, layout, init).
    """
    if not is_int(hidden) or hidden <= 0:
        raise ValueError(f"GRU needs a positive integer hidden, got {hidden!r}")
    H = int(hidden)
    name = f"GRU({H})"
    default = _uniform(1.0 / float(np.sqrt(H)))
    w_init = initializers.resolve(name, "w_init", w_init, default)
    u_init = initializers.resolve(name, "u_init", u_init, default)
    b_init = initializers.resolve(name, "b_init", b_init, default)
    spec = {"W": ("d_in", 3 * H), "U": (H, 3 * H), "b": (3 * H,), "bh": (3 * H,)}

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        T, d_in = _init_shapes(name, in_shape, dtype)
        k_w, k_u, k_b, k_bh = jax.random.split(key, 4)
        params = {
            "W": initializers.draw(name, "w_init", w_init, k_w, (d_in, 3 * H), dtype),
            "U": initializers.draw(name, "u_init", u_init, k_u, (H, 3 * H), dtype),
            "b": initializers.draw(name, "b_init", b_init, k_b, (3 * H,), dtype),
            "bh": initializers.draw(name, "b_init", b_init, k_bh, (3 * H,), dtype),
        }
        return ((T, H) if return_sequences else (H,)), params

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        _check_sequence(name, x, params["W"])
        xs = jnp.swapaxes(x, 0, 1)
        hs, gates, hu_ns = _gru_scan(params, xs)
        y = jnp.swapaxes(hs, 0, 1) if return_sequences else hs[-1]
        return y, {"x": xs, "h": hs, "gates": gates, "hu_n": hu_ns}

    def backward(params, cache, dy: Array):
        check_params(name, params, spec)
        W, U = params["W"], params["U"]
        xs, hs = cache["x"], cache["h"]
        dys, delta_T = _step_cotangents(dy, hs, return_sequences)

        def step(delta, inp):
            dy_t, h_prev, gates_t, hu_n = inp
            r, z, n = (gates_t[:, k * H : (k + 1) * H] for k in range(3))
            g = dy_t + delta
            da_n = g * (1 - z) * (1 - n * n)
            da_z = g * (h_prev - n) * z * (1 - z)
            da_r = da_n * hu_n * r * (1 - r)
            dhu = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
            return g * z + jnp.matmul(dhu, U.T), (jnp.concatenate([da_r, da_z, da_n], axis=-1), dhu)

        inputs = (dys, _shift(hs), cache["gates"], cache["hu_n"])
        _, (dxws, dhus) = lax.scan(step, delta_T, inputs, reverse=True)
        flat_dxw, flat_dhu = _rows(dxws), _rows(dhus)
        grads = {
            "W": _rows(xs).T @ flat_dxw,
            "U": _rows(_shift(hs)).T @ flat_dhu,
            "b": jnp.sum(flat_dxw, axis=0),
            "bh": jnp.sum(flat_dhu, axis=0),
        }
        return grads, jnp.swapaxes(dxws @ W.T, 0, 1)

    jvp = _sequence_jvp(name, spec, _gru_jvp_scan, return_sequences)

    return Layer(init, forward, backward, jvp=jvp, name=name)


# ----------------------------------------------------------------------------------------------
# ‖∂h_T/∂h_k‖


def hidden_jacobian_norms(
    params, x: Array, *, activation: str | Callable | None = None, ord: str | int = "fro"
) -> Array:
    """‖∂h_T/∂h_k‖ for k = 0, ..., T, per example: an array (B, T + 1); entry [:, T] is ‖I‖.

    ``params`` are those of an :func:`RNN` (U: (H, H); give its ``activation`` unless it is tanh)
    or of an :func:`LSTM` (U: (H, 4H); ``activation`` must be None). ``ord`` is "fro" (Frobenius)
    or 2 (spectral). No autodiff: the Jacobian rows are the BPTT recursion run with the H unit
    cotangents at once (G_T = I, row i of G_k is ∂h_{T,i}/∂h_k):
        RNN:   G_{k−1} = (G_k ⊙ φ'(a_k)) Uᵀ = Π_t diag(φ'(a_t)) Uᵀ   (Pascanu et al. 2013, eq. 5);
        LSTM:  (G_{k−1}, C_{k−1}) = one step of the LSTM's BPTT from (G_k, C_k), (G_T, C_T) = (I, 0),
               so ∂h_T/∂h_k is taken with c_k held fixed (the state is the pair (h_k, c_k)).
    """
    name = "hidden_jacobian_norms"
    if not isinstance(params, Mapping) or "U" not in params or jnp.ndim(params["U"]) != 2:
        check_params(name, params, {"W": ("d_in", "H"), "U": ("H", "H"), "b": ("H",)})  # raises, naming it
    U = params["U"]
    H = U.shape[0]
    is_lstm = U.shape[1] == 4 * H
    if not is_lstm and U.shape[1] != H:
        raise ShapeError(
            f"hidden_jacobian_norms needs RNN or LSTM params (U of shape (H, H) or (H, 4H)), "
            f"got U of shape {shape_str(U.shape)}"
        )
    check_params(name, params, {"W": ("d_in", U.shape[1]), "U": (H, U.shape[1]), "b": (U.shape[1],)})
    if ord not in ("fro", 2):
        raise ValueError(f"hidden_jacobian_norms ord must be 'fro' or 2, got {ord!r}")
    _check_sequence(name, x, params["W"])
    xs = jnp.swapaxes(x, 0, 1)
    G_T = jnp.broadcast_to(jnp.eye(H, dtype=jnp.result_type(xs, U)), (x.shape[0], H, H))
    rows = {"in_axes": 1, "out_axes": 1}  # vmap over the H cotangent rows of G

    if is_lstm:
        if activation is not None:
            raise ValueError(f"{name}: an LSTM's activations are fixed; pass activation=None, got {activation!r}")
        hs, cs, gates = _lstm_scan(params, xs)

        def step(carry, inp):
            c_prev, c_t, gates_t = inp
            cell = jax.vmap(lambda dh, dc: _lstm_cell_vjp(U, gates_t, c_prev, c_t, dh, dc)[1:], **rows)
            carry = cell(*carry)
            return carry, _norms(carry[0], ord)

        _, norms = lax.scan(step, (G_T, jnp.zeros_like(G_T)), (_shift(cs), cs, gates), reverse=True)
    else:
        act_fwd, act_bwd = _activation(name, "tanh" if activation is None else activation)
        _, acts = _rnn_scan(params, xs, act_fwd)

        def step(G, act_t):
            G = jnp.matmul(jax.vmap(lambda g: act_bwd(act_t, g), **rows)(G), U.T)
            return G, _norms(G, ord)

        _, norms = lax.scan(step, G_T, acts, reverse=True)
    return jnp.concatenate([jnp.swapaxes(norms, 0, 1), _norms(G_T, ord)[:, None]], axis=1)
