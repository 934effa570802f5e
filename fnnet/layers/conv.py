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

No autodiff is used. Each rule takes the formulation that reaches the fast kernels, chosen per shape by
measurement (``benchmarks/conv_formulations.py``, whose table is in ``benchmarks/results/``): at stride 1
and dilation 1, for few channels or small images, XLA's CPU convolutions ran at 7-46 % of the matmul peak
where one or a few matrix products of the same numbers ran at 25-77 %, so there

* the forward is one GEMM of the im2col patches, ``cols (B·H'·W', kh·kw·C_in) @ W (kh·kw·C_in, C_out)``,
  or for one input channel (where that GEMM's inner dimension would be only kh·kw) the sum over the
  kh·kw taps of ``shift_pq(x) (B·H'·W', C_in) @ W[p, q]``;
* dW is one GEMM ``colsᵀ (kh·kw·C_in, B·H'·W') @ dy (B·H'·W', C_out)``, the transposed patches built
  directly in that layout (the matmul kernels want the left operand contracted over its minor axis);
* dx is the sum over the taps of ``dy (B·H'·W', C_out) @ W[p, q]ᵀ`` added into the padded input at the
  tap's offset, then cropped.

Each is used only at the shapes where it measured faster (:func:`plan`); XLA's convolution keeps the
others, and every stride or dilation other than 1 and every negative padding.
The im2col buffers hold kh·kw copies of the input (forward: B·H'·W'·kh·kw·C_in elements; dW the same,
transposed), and the per-tap dx one padded copy of dx: that is the temporary memory these formulations
cost over ``lax.conv_general_dilated``.

References: Dumoulin & Visin 2016, "A guide to convolution arithmetic for deep learning", sec. 2-5
(output sizes, transposed convolution as the gradient); A. Gulli, A. Kapoor, S. Pal, *Deep Learning
with TensorFlow 2 and Keras*, 2nd ed., Packt, 2019, chapter "The Math Behind Deep Learning", section
"Thinking about backpropagation and convnets" (the toy case of a 3×3 input and a 2×2 filter, where every weight
touches every output pixel, reproduced in fnnet's tests).
"""

from __future__ import annotations

from typing import Any, NamedTuple

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


class Plan(NamedTuple):
    """Which formulation each rule of a convolution runs: ``"lax"`` (``lax.conv_general_dilated``),
    ``"im2col"`` (one GEMM of the patches) or ``"taps"`` (one GEMM per kernel tap)."""

    forward: str
    dW: str
    dx: str


#: The largest C_in·C_out, and the largest H'·W', at which the matrix-product formulations beat XLA's
#: convolution in every run of ``benchmarks/conv_formulations.py`` (the table is in ``benchmarks/results/``).
#: Where the runs disagreed (4, 8 and 16 input channels, 5x5 kernels) or XLA won (16x16, 128 -> 128), XLA's
#: convolution is kept.
MATMUL_MAX_CHANNEL_PRODUCT = 8192
MATMUL_MAX_PIXELS = 196


def plan(c_in: int, c_out: int, out_hw: Pair, kernel: Pair, strides: Pair, dilation: Pair, pads: tuple) -> Plan:
    """The formulation of each rule for this geometry, as measured on a 2-core CPU. Only stride 1,
    dilation 1, non-negative padding and kernels up to 3x3 are candidates; every other geometry runs
    ``lax`` everywhere.

    * One input channel: the per-tap GEMMs forward (a single im2col GEMM would have an inner dimension of
      only kh·kw; measured 2x faster than XLA), one GEMM of the transposed patches for dW (2.4x), the
      per-tap GEMMs for dx (3.6x).
    * 32 or more input channels on a small image (H'·W' ≤ :data:`MATMUL_MAX_PIXELS`, C_in·C_out ≤
      :data:`MATMUL_MAX_CHANNEL_PRODUCT`): one im2col GEMM forward (1.2-1.7x) and the per-tap GEMMs for dx
      (1.0-1.7x); XLA's dW (the patches' GEMM was within 6 % of it, either way).
    * Anything else: XLA.
    """
    candidate = tuple(strides) == (1, 1) and tuple(dilation) == (1, 1) and max(kernel) <= 3
    if not candidate or min(min(p) for p in pads) < 0:
        return Plan("lax", "lax", "lax")
    if c_in == 1:
        return Plan("taps", "im2col", "taps")
    if c_in >= 32 and c_in * c_out <= MATMUL_MAX_CHANNEL_PRODUCT and out_hw[0] * out_hw[1] <= MATMUL_MAX_PIXELS:
        return Plan("im2col", "lax", "taps")
    return Plan("lax", "lax", "lax")


def _padded(x: Array, pads: tuple[Pair, Pair]) -> Array:
    return jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))


def _taps(kernel: Pair) -> list[Pair]:
    return [(p, q) for p in range(kernel[0]) for q in range(kernel[1])]


def matmul_forward(x: Array, W: Array, pads: tuple[Pair, Pair], out_hw: Pair, taps: bool) -> Array:
    """x ⊛ W at stride 1, dilation 1: the per-tap GEMMs summed (``taps``), else one im2col GEMM."""
    kh, kw, c, o = W.shape
    h, w = out_hw
    xp = _padded(x, pads)
    shifted = [xp[:, p : p + h, q : q + w, :] for p, q in _taps((kh, kw))]
    if taps:
        y = sum(s.reshape(-1, c) @ W[p, q] for s, (p, q) in zip(shifted, _taps((kh, kw))))
    else:
        y = jnp.concatenate(shifted, axis=-1).reshape(-1, kh * kw * c) @ W.reshape(kh * kw * c, o)
    return y.reshape(x.shape[0], h, w, o)


def matmul_weight_gradient(x: Array, dy: Array, kernel: Pair, pads: tuple[Pair, Pair]) -> Array:
    """dW = colsᵀ dy at stride 1, dilation 1, with colsᵀ (kh·kw·C_in, B·H'·W') built transposed."""
    _, h, w, o = dy.shape
    c = x.shape[3]
    xt = jnp.transpose(_padded(x, pads), (3, 0, 1, 2))  # (C_in, B, Hp, Wp)
    cols_t = jnp.stack([xt[:, :, p : p + h, q : q + w] for p, q in _taps(kernel)])
    dW = cols_t.reshape(kernel[0] * kernel[1] * c, -1) @ dy.reshape(-1, o)
    return dW.reshape(kernel + (c, o))


def matmul_input_gradient(dy: Array, W: Array, pads: tuple[Pair, Pair], in_hw: Pair) -> Array:
    """dx at stride 1, dilation 1: each tap's dy @ W[p, q]ᵀ added into the padded input at its offset, then
    the padding cropped."""
    kh, kw, c, o = W.shape
    b, h, w, _ = dy.shape
    (lo_h, hi_h), (lo_w, hi_w) = pads
    flat = dy.reshape(-1, o)
    dxp = jnp.zeros((b, in_hw[0] + lo_h + hi_h, in_hw[1] + lo_w + hi_w, c), dy.dtype)
    for p, q in _taps((kh, kw)):
        dxp = dxp.at[:, p : p + h, q : q + w, :].add((flat @ W[p, q].T).reshape(b, h, w, c))
    return dxp[:, lo_h : lo_h + in_hw[0], lo_w : lo_w + in_hw[1], :]


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
        pads, outs = geometry(x.shape[1:3])
        how = plan(W.shape[2], W.shape[3], outs, kernel, strides, dil, pads).forward
        if how != "lax":
            return matmul_forward(x, W, pads, outs, taps=how == "taps")
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
        how = plan(W.shape[2], W.shape[3], outs, kernel, strides, dil, pads)
        k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
        # r: trailing (padded) input rows/cols that no window reached
        rest = [
            n + lo + hi - ((o - 1) * s + ke) for n, (lo, hi), o, s, ke in zip(x.shape[1:3], pads, outs, strides, k_eff)
        ]
        if how.dW == "im2col":
            dW = matmul_weight_gradient(x, dy, kernel, pads)
        else:
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
        if how.dx == "taps":
            dx = matmul_input_gradient(dy, W, pads, x.shape[1:3])
        else:
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
