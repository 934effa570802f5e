"""Conv2D: 2-D convolution (cross-correlation, as in every deep-learning library), NHWC × HWIO.

Forward, for one output pixel (with x already padded, s the stride, d the dilation)::

    y[b, i, j, o] = Σ_{p, q, c} x[b, i·s + p·d, j·s + q·d, c] · W[p, q, c, o] + b[o]

Backward, with dy of the shape of y:

* dW[p, q, c, o] = Σ_{b, i, j} x[b, i·s + p·d, j·s + q·d, c] · dy[b, i, j, o] — the correlation of
  the input with dy (dy acts as a kernel dilated by s; the window moves d pixels per weight).
* dx = the "full" convolution of dy with the kernel flipped in space and transposed in channels:
  dy is dilated by s (s − 1 zeros between pixels), padded by (k_eff − 1 − lo, k_eff − 1 − hi + r),
  and correlated with W[::-1, ::-1, :, :]ᵀ, where k_eff = (k − 1)·d + 1 and r counts the input rows
  the last window never reached. Negative padding crops.
* db[o] = Σ_{b, i, j} dy[b, i, j, o].

Forward mode (JVP): the convolution is bilinear in (x, W), so for a tangent (dx, dW, db)::

    dy = conv(dx, W) + conv(x, dW) + db

with the forward's own padding, stride and dilation (the same ``lax`` call).

All three rules are written with ``lax.conv_general_dilated``; no autodiff is used.

References: Dumoulin & Visin 2016, "A guide to convolution arithmetic for deep learning", sec. 2-5
(output sizes, transposed convolution as the gradient); A. Gulli, A. Kapoor, S. Pal, *Deep Learning
with TensorFlow 2 and Keras*, 2nd ed., Packt, 2019, chapter "The Math Behind Deep Learning", section
"Thinking about backpropagation and convnets" (the toy case of a 3×3 input and a 2×2 filter, where every weight
touches every output pixel, reproduced in fnnet's tests).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fnnet import initializers
from fnnet.core import (
    Array,
    Layer,
    ShapeError,
    check_dtype_match,
    check_input,
    check_param_dtype,
    check_params,
    check_tangent,
    is_int,
    shape_str,
)

Pair = tuple[int, int]
Padding = str | int | Pair | tuple[Pair, Pair]

_DN = ("NHWC", "HWIO", "NHWC")  # the layout of inputs, kernels and outputs


def as_pair(name: str, what: str, v: Any, minimum: int = 1) -> Pair:
    """An int or a pair of ints, each >= minimum, as a pair."""
    vs = (v, v) if not isinstance(v, (tuple, list)) else tuple(v)
    if len(vs) != 2 or any(not is_int(e) or e < minimum for e in vs):
        raise ValueError(f"{name} needs {what} to be an int >= {minimum} or a pair of them, got {v!r}")
    return int(vs[0]), int(vs[1])


def normalize_padding(name: str, padding: Padding) -> str | tuple[Pair, Pair]:
    """'VALID' | 'SAME' (any case), or explicit ((lo_h, hi_h), (lo_w, hi_w)) from an int or pair."""
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            raise ValueError(f"{name} padding must be 'VALID', 'SAME', an int or a pair, got {padding!r}")
        return padding.upper()
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        lo_hi = tuple(as_pair(name, "each (lo, hi) padding", p, 0) for p in padding)
        return lo_hi[0], lo_hi[1]
    ph, pw = as_pair(name, "padding", padding, 0)
    return (ph, ph), (pw, pw)


def explicit_pads(
    in_hw: Pair, kernel: Pair, stride: Pair, dilation: Pair, padding: str | tuple[Pair, Pair]
) -> tuple[Pair, Pair]:
    """(lo, hi) per spatial axis. SAME: out = ⌈n/s⌉, total = max((out−1)s + k_eff − n, 0), lo = ⌊total/2⌋."""
    if padding == "VALID":
        return (0, 0), (0, 0)
    if padding == "SAME":
        pads = []
        for n, k, s, d in zip(in_hw, kernel, stride, dilation):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]
    return padding  # type: ignore[return-value]


def out_size(n: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """⌊(n + lo + hi − k_eff) / s⌋ + 1 with k_eff = (k − 1)·d + 1 (may be < 1: the input is too small)."""
    return (n + lo + hi - ((k - 1) * d + 1)) // s + 1


def Conv2D(
    out_channels: int,
    kernel_size: int | Pair = 3,
    stride: int | Pair = 1,
    padding: Padding = "VALID",
    dilation: int | Pair = 1,
    w_init: initializers.Initializer | None = None,
    b_init: initializers.Initializer | None = None,
    use_bias: bool = True,
) -> Layer:
    """2-D convolution: x (B, H, W, C_in) ⊛ W (kh, kw, C_in, out_channels) + b -> (B, H', W', out_channels).

    ``padding`` is 'VALID' (none), 'SAME' (TensorFlow's rule: H' = ⌈H/s⌉, the odd pixel of padding
    goes after), an int or (ph, pw) for symmetric zero padding, or ((lo_h, hi_h), (lo_w, hi_w)).
    H' = ⌊(H + lo + hi − k_eff)/s⌋ + 1, k_eff = (k − 1)·dilation + 1.
    Default init: W ~ Glorot normal over fans (kh·kw·C_in, kh·kw·out) (as ``stax.Conv``), b = 0.

    Backward (module docstring for indices): dW = x ⋆ dy (correlation, dy dilated by the stride),
    dx = dy (dilated by the stride, fully padded) ⊛ flip(W)ᵀ, db = Σ_{b, i, j} dy.

    Forward mode (JVP), bilinearity, with the forward's padding, stride and dilation::

        dy = dx ⊛ W + x ⊛ dW + db

    Domain: linear in x and in (W, b), so the rule is exact for every padding, stride and dilation
    (rounding aside), including the boundaries: input rows that no window reaches (a stride that does
    not divide the input) get dx = 0; padding wider than the dilated kernel (lo ≥ k_eff, windows of
    padding only) makes the dx padding negative, a crop; SAME pads as TensorFlow (the odd pixel after).
    Zero padding only (no reflect/circular modes).

    Params: ``{"W": (kh, kw, C_in, out_channels), "b": (out_channels,)}`` (no ``"b"`` with
    ``use_bias=False``), one floating dtype; anything else is refused while tracing, naming the leaf.
    ``w_init``/``b_init`` are initializer functions (a name or an uncalled factory is a TypeError).
    """
    if not is_int(out_channels) or out_channels <= 0:
        raise ValueError(f"Conv2D needs a positive integer out_channels, got {out_channels!r}")
    out_channels = int(out_channels)
    name = f"Conv2D({out_channels})"
    kernel = as_pair(name, "kernel_size", kernel_size)
    strides = as_pair(name, "stride", stride)
    dil = as_pair(name, "dilation", dilation)
    pad_spec = normalize_padding(name, padding)
    w_init = initializers.resolve(name, "w_init", w_init, initializers.glorot_normal())
    b_init = initializers.resolve(name, "b_init", b_init, initializers.zeros())
    spec = {"W": kernel + ("C_in", out_channels)}
    if use_bias:
        spec["b"] = (out_channels,)

    def geometry(in_hw: Pair) -> tuple[tuple[Pair, Pair], Pair]:
        pads = explicit_pads(in_hw, kernel, strides, dil, pad_spec)
        outs = tuple(out_size(n, k, s, d, *p) for n, k, s, d, p in zip(in_hw, kernel, strides, dil, pads))
        if min(outs) < 1:
            raise ShapeError(
                f"{name} with kernel {kernel}, dilation {dil} and padding {pads} needs a larger input than "
                f"spatial size {shape_str(in_hw)}"
            )
        return pads, outs  # type: ignore[return-value]

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        if len(in_shape) != 3:
            raise ShapeError(f"{name} needs input shape (height, width, channels), got {shape_str(in_shape)}")
        check_param_dtype(name, dtype)
        _, outs = geometry(tuple(in_shape[:2]))
        k_w, k_b = jax.random.split(key)
        params = {"W": initializers.draw(name, "w_init", w_init, k_w, kernel + (in_shape[2], out_channels), dtype)}
        if use_bias:
            params["b"] = initializers.draw(name, "b_init", b_init, k_b, (out_channels,), dtype)
        return outs + (out_channels,), params

    def conv(x: Array, W: Array) -> Array:
        """x ⊛ W with this layer's stride, padding and dilation (the forward's and the jvp's one call)."""
        pads, _ = geometry(x.shape[1:3])
        return lax.conv_general_dilated(x, W, strides, pads, rhs_dilation=dil, dimension_numbers=_DN)

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        W = params["W"]
        check_input(name, x, (None, None, W.shape[2]))
        check_dtype_match(name, x, W)
        y = conv(x, W)
        if use_bias:
            y = y + jnp.reshape(params["b"], (1, 1, 1, out_channels))
        return y, x

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, _ = forward(params, x, key=key, train=train)
        check_tangent(name, "dparams", dparams, params, "params")
        check_tangent(name, "dx", dx, x, "x")
        dy = conv(dx, params["W"]) + conv(x, dparams["W"])
        if use_bias:
            dy = dy + jnp.reshape(dparams["b"], (1, 1, 1, out_channels))
        return y, dy

    def backward(params, x: Array, dy: Array):
        check_params(name, params, spec)
        W = params["W"]
        pads, outs = geometry(x.shape[1:3])
        k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
        # r: trailing (padded) input rows/cols that no window reached
        rest = [
            n + lo + hi - ((o - 1) * s + ke) for n, (lo, hi), o, s, ke in zip(x.shape[1:3], pads, outs, strides, k_eff)
        ]
        # dW[p,q,c,o] = Σ_{b,i,j} xpad[b, i·s + p·d, j·s + q·d, c] dy[b,i,j,o]: batch is the contracted
        # axis, so x is read as (C_in as "N", H, W, B as "C") and dy as (B as "I", H', W', out as "O").
        dW = lax.conv_general_dilated(
            x,
            dy,
            window_strides=dil,
            padding=[(lo, hi - r) for (lo, hi), r in zip(pads, rest)],
            rhs_dilation=strides,
            dimension_numbers=("CHWN", "IHWO", "HWNC"),
        )
        # dx = full correlation of the stride-dilated dy with W flipped in space, in/out swapped
        W_t = jnp.swapaxes(W[::-1, ::-1], 2, 3)
        dx = lax.conv_general_dilated(
            dy,
            W_t,
            window_strides=(1, 1),
            padding=[(ke - 1 - lo, ke - 1 - hi + r) for ke, (lo, hi), r in zip(k_eff, pads, rest)],
            lhs_dilation=strides,
            rhs_dilation=dil,
            dimension_numbers=_DN,
        )
        grads = {"W": dW}
        if use_bias:
            grads["b"] = jnp.sum(dy, axis=(0, 1, 2))
        return grads, dx

    return Layer(init, forward, backward, jvp=jvp, name=name)
