"""MaxPool and AvgPool over the spatial axes of NHWC inputs, with window and stride.

Both read the input as windows: with x padded, window (i, j) holds the k_h·k_w pixels
x[b, i·s_h + p, j·s_w + q, c] for p < k_h, q < k_w, numbered n = p·k_w + q (row-major order).

* MaxPool:  y[b,i,j,c] = max_n window_n.   Backward routes each dy to the arg-max:
  dx[b, i·s_h + p*, j·s_w + q*, c] += dy[b,i,j,c], with n* = p*·k_w + q* the arg-max.
  **Tie rule**: when several pixels of a window share the maximum, the *first* of them in row-major
  window order (top row first, left to right within a row — the order of ``jnp.argmax``) receives the
  whole gradient and the others receive 0. The forward selects its value with that same index, so
  ``jax.grad`` of this forward follows the same rule. ``jax.grad`` of ``lax.reduce_window`` with
  ``lax.max`` (what ``stax.MaxPool`` and flax use) also gives a tie wholly to the first max in
  row-major order, as measured and pinned by fnnet's tests; ``jax.grad`` of ``jnp.max`` over a window
  instead splits a tie evenly. Overlapping windows (stride < window) add up at a pixel that is the
  max of several.
  **Boundaries of the rule**: a NaN in a window is its maximum (``jnp.argmax`` picks the first NaN),
  so y is NaN and the gradient goes to the first NaN (``jax.grad`` of ``reduce_window`` max need not
  agree: on CPU it was measured to send it to a non-NaN pixel). A window whose real pixels are all
  −∞ ties with its −∞ padding ('SAME'); the gradient then goes to the window's first pixel, which
  may be padding, and is dropped — as with ``reduce_window``. Away from ties and NaN the max is
  locally linear and the rule is exact.
* AvgPool:  y[b,i,j,c] = (1/N_ij) Σ_n window_n.   Backward spreads each dy evenly:
  dx[b, i·s_h + p, j·s_w + q, c] += dy[b,i,j,c] / N_ij for every pixel of the window.
  N_ij counts the *real* (unpadded) pixels of the window: k_h·k_w with 'VALID', fewer at the borders
  with 'SAME' (as ``stax.AvgPool`` and TensorFlow; PyTorch's default ``count_include_pad=True`` differs).
  Linear in x, so the rule is exact everywhere (rounding aside).

Forward mode (JVP), window_n(dx) the windows of dx padded with zeros (padding is a constant)::

    MaxPool:  dy[b,i,j,c] = window_{n*}(dx)   (n* the forward's arg-max, the same tie rule)
    AvgPool:  dy[b,i,j,c] = (1/N_ij) Σ_n window_n(dx)   (AvgPool of dx, the same N_ij)

MaxPool's tangent reads dx at exactly the pixel its backward writes dy to, so the two rules are
transposes of each other at every input, ties included (pinned by fnnet's tests).

Neither layer has parameters: params must be ``()`` (arrays are refused with a ValueError naming the layer).

Padding is 'VALID' (none) or 'SAME' (H' = ⌈H/s⌉, TensorFlow's split); MaxPool pads with −∞.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet.core import (
    Array,
    Layer,
    ShapeError,
    check_input,
    check_no_params,
    check_tangent,
    shape_str,
    shape_token,
    token_shape,
)
from fnnet.layers.conv import Pair, as_pair, explicit_pads, out_size


def _check_padding(name: str, padding: Any) -> str:
    if not isinstance(padding, str) or padding.upper() not in ("VALID", "SAME"):
        raise ValueError(f"{name} padding must be 'VALID' or 'SAME', got {padding!r}")
    return padding.upper()


def _geometry(name: str, in_hw: Pair, window: Pair, stride: Pair, padding: str) -> tuple[tuple[Pair, Pair], Pair]:
    pads = explicit_pads(in_hw, window, stride, (1, 1), padding)
    outs = tuple(out_size(n, k, s, 1, *p) for n, k, s, p in zip(in_hw, window, stride, pads))
    if min(outs) < 1:
        raise ShapeError(
            f"{name} with window {window} and {padding} padding needs an input of at least "
            f"that size, got spatial size {shape_str(in_hw)}"
        )
    return pads, outs  # type: ignore[return-value]


def _windows(xp: Array, window: Pair, stride: Pair, outs: Pair) -> Array:
    """(B, H', W', k_h·k_w, C): window n = p·k_w + q of every output pixel, from the padded input."""
    (kh, kw), (sh, sw), (oh, ow) = window, stride, outs
    views = [
        xp[:, p : p + (oh - 1) * sh + 1 : sh, q : q + (ow - 1) * sw + 1 : sw, :] for p in range(kh) for q in range(kw)
    ]
    return jnp.stack(views, axis=3)


def _scatter_windows(dwin: Array, padded_hw: Pair, window: Pair, stride: Pair) -> Array:
    """The transpose of :func:`_windows`: add each window's gradient back onto the padded input.

    Window position (p, q) of output pixel (i, j) sits at (i·s_h + p, j·s_w + q): ``lax.pad`` with
    interior padding s − 1 places all of them at once, and the k_h·k_w placements are summed.
    """
    (kh, kw), (sh, sw) = window, stride
    _, oh, ow, _, _ = dwin.shape
    zero = jnp.zeros((), dwin.dtype)
    parts = []
    for p in range(kh):
        for q in range(kw):
            rows = (p, padded_hw[0] - p - (oh - 1) * sh - 1, sh - 1)
            cols = (q, padded_hw[1] - q - (ow - 1) * sw - 1, sw - 1)
            parts.append(lax.pad(dwin[:, :, :, p * kw + q, :], zero, [(0, 0, 0), rows, cols, (0, 0, 0)]))
    return sum(parts[1:], parts[0])


def _onehot(idx: Array, window: Pair) -> Array:
    """(B, H', W', k_h·k_w, C) booleans: True at window position idx of each output pixel."""
    return jnp.arange(window[0] * window[1]).reshape(1, 1, 1, -1, 1) == idx[:, :, :, None, :]


def _select(win: Array, idx: Array, window: Pair) -> Array:
    """(B, H', W', C): the entry at window position idx of each output pixel (a gather by one-hot sum)."""
    return jnp.sum(jnp.where(_onehot(idx, window), win, jnp.zeros((), win.dtype)), axis=3)


def _crop(dxp: Array, pads: tuple[Pair, Pair]) -> Array:
    (lo_h, hi_h), (lo_w, hi_w) = pads
    return dxp[:, lo_h : dxp.shape[1] - hi_h, lo_w : dxp.shape[2] - hi_w, :]


def _make(kind: str, window_shape: int | Pair, stride: int | Pair | None, padding: str):
    name = f"{kind}({window_shape})"
    window = as_pair(name, "window_shape", window_shape)
    strides = window if stride is None else as_pair(name, "stride", stride)
    padding = _check_padding(name, padding)

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        del key, dtype
        if len(in_shape) != 3:
            raise ShapeError(f"{name} needs input shape (height, width, channels), got {shape_str(in_shape)}")
        _, outs = _geometry(name, tuple(in_shape[:2]), window, strides, padding)
        return outs + (in_shape[2],), ()

    def prepare(params, x: Array, fill: float):
        check_no_params(name, params)
        check_input(name, x, (None, None, None))
        pads, outs = _geometry(name, x.shape[1:3], window, strides, padding)
        xp = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), constant_values=fill)
        return _windows(xp, window, strides, outs), pads

    def prepare_tangent(params, x: Array, dparams, dx: Array) -> Array:
        """The windows of dx, padded with zeros (a padded pixel is a constant, its tangent 0)."""
        check_no_params(name, dparams)
        check_tangent(name, "dx", dx, x, "x")
        dwin, _ = prepare(params, dx, 0.0)
        return dwin

    return name, window, strides, padding, init, prepare, prepare_tangent


def MaxPool(window_shape: int | Pair = 2, stride: int | Pair | None = None, padding: str = "VALID") -> Layer:
    """y = max over each k_h × k_w window (stride defaults to the window). (B, H, W, C) -> (B, H', W', C).

    Backward: dx gets dy at the arg-max of each window, 0 elsewhere; ties go wholly to the first max in
    row-major window order, as with ``jax.grad`` of ``lax.reduce_window`` max; NaN and all-−∞ windows
    are described in the module docstring.

    Forward mode (JVP), n* the forward's arg-max (same tie rule), so it is the transpose of backward::

        dy[b, i, j, c] = dx[b, i·s_h + p*, j·s_w + q*, c]   (0 where the arg-max is padding)
    """
    name, window, strides, padding, init, prepare, prepare_tangent = _make("MaxPool", window_shape, stride, padding)

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        win, _ = prepare(params, x, -jnp.inf)
        idx = jnp.argmax(win, axis=3)  # first max in row-major window order
        return _select(win, idx, window), (idx, shape_token(x.shape, x.dtype))

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, (idx, _) = forward(params, x, key=key, train=train)
        return y, _select(prepare_tangent(params, x, dparams, dx), idx, window)

    def backward(params, cache, dy: Array):
        check_no_params(name, params)
        idx, token = cache
        x_shape = token_shape(token)
        pads, _ = _geometry(name, x_shape[1:3], window, strides, padding)
        dwin = jnp.where(_onehot(idx, window), dy[:, :, :, None, :], jnp.zeros((), dy.dtype))
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(x_shape[1:3], pads))
        return (), _crop(_scatter_windows(dwin, padded, window, strides), pads)

    return Layer(init, forward, backward, jvp=jvp, name=name)


def AvgPool(window_shape: int | Pair = 2, stride: int | Pair | None = None, padding: str = "VALID") -> Layer:
    """y = mean over each window of real pixels (stride defaults to the window). (B,H,W,C) -> (B,H',W',C).

    Backward: dx[pixel] = Σ over the windows w that hold it of dy_w / N_w (N_w = real pixels in w).

    Forward mode (JVP), linearity: dy = AvgPool(dx), the same N_ij::

        dy[b, i, j, c] = (1/N_ij) Σ_{p, q} dx[b, i·s_h + p, j·s_w + q, c]   (dx zero-padded)
    """
    name, window, strides, padding, init, prepare, prepare_tangent = _make("AvgPool", window_shape, stride, padding)

    def counts(in_hw: Pair, dtype: Any) -> tuple[Array, tuple[Pair, Pair]]:
        """N_ij as a (1, H', W', 1) array: the number of unpadded pixels in window (i, j)."""
        pads, outs = _geometry(name, in_hw, window, strides, padding)
        ones = np.pad(np.ones(in_hw), pads)
        n = sum(
            ones[
                p : p + (outs[0] - 1) * strides[0] + 1 : strides[0], q : q + (outs[1] - 1) * strides[1] + 1 : strides[1]
            ]
            for p in range(window[0])
            for q in range(window[1])
        )
        return jnp.asarray(n, dtype).reshape((1,) + tuple(outs) + (1,)), pads

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        win, _ = prepare(params, x, 0.0)
        n, _ = counts(x.shape[1:3], x.dtype)
        return jnp.sum(win, axis=3) / n, shape_token(x.shape, x.dtype)

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, _ = forward(params, x, key=key, train=train)
        n, _ = counts(x.shape[1:3], x.dtype)
        return y, jnp.sum(prepare_tangent(params, x, dparams, dx), axis=3) / n

    def backward(params, token: Array, dy: Array):
        check_no_params(name, params)
        x_shape = token_shape(token)
        n, pads = counts(x_shape[1:3], dy.dtype)
        share = dy / n
        dwin = jnp.broadcast_to(share[:, :, :, None, :], share.shape[:3] + (window[0] * window[1],) + share.shape[3:])
        padded = tuple(d + lo + hi for d, (lo, hi) in zip(x_shape[1:3], pads))
        return (), _crop(_scatter_windows(dwin, padded, window, strides), pads)

    return Layer(init, forward, backward, jvp=jvp, name=name)
