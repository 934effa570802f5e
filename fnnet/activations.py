"""Activations: each value, its hand-written derivative rule right below it, and a Layer form.

Every activation ``f`` comes as three functions::

    f(x) -> y                          the plain value
    f_forward(x) -> (y, cache)         the value and the smallest cache its rule needs
    f_backward(cache, dy) -> dx        the hand-written vector-Jacobian product
    f_second(x) -> f''(x)              the hand-written second derivative (elementwise f only)

and a Layer constructor (``Sigmoid()``, ``LeakyRelu(0.2)``, ...), whose ``jvp`` is the backward rule
applied to the tangent (every Jacobian here is symmetric: diagonal, or softmax's diag(y) − y yᵀ).
:func:`derivative` gives f'(x) elementwise from the rule (dy = 1), :func:`second_derivative` f''(x) for
curvature code (Pearlmutter's R-operator), and :func:`activation_of` tells which activation, with which
arguments, a Layer of this module is.

Contracts every activation keeps (each rule's docstring says where it is exact and what it assumes;
``tests/test_rule_domains.py`` probes each boundary against ``jax.grad`` of the very forward below):

* **Kinks** are pinned as in ``jax.nn``: relu'(0) = 0 and leaky_relu'(0) = 1, and ``jax.grad`` of fnnet's
  own forward gives the same values (the forwards are written with ``jnp.where`` on a comparison, never
  ``jnp.maximum``, whose gradient at a tie is ½).
* **NaN propagates**: a NaN input gives a NaN output, as in ``jax.nn`` (a NaN weight must not hide behind
  a finite loss). At a NaN input each rule returns what ``jax.grad`` of fnnet's forward returns there.
* **±∞ and overflow**: where f and f' have finite limits, the value and the rule give them (e.g.
  gelu(−∞) = 0, gelu'(+∞) = 1) instead of the inf · 0 = NaN of the naive formula, and so does
  ``jax.grad`` of the forward.
* **Second derivatives** are pinned to 0 at the kinks (relu''(0) = leaky_relu''(0) = 0, as
  ``jax.grad(jax.grad(f))`` of the forward gives) and are finite for every real x, with their limit 0 at
  ±∞; they are written in forms that keep their relative accuracy in the tails (σ(x)σ(−x), not
  σ(x)(1 − σ(x))).

References: A. Gulli, A. Kapoor, S. Pal, *Deep Learning with TensorFlow 2 and Keras*, 2nd ed., Packt,
2019, chapter "The Math Behind Deep Learning" (activation functions and their derivatives); "ML Math
Derivations (19): Neural Networks and Backpropagation" (an online series, chapter 19, backpropagation);
D. Hendrycks, K. Gimpel, "Gaussian Error Linear Units (GELUs)", 2016, eq. 1-2; P. Ramachandran,
B. Zoph, Q. V. Le, "Searching for Activation Functions", 2017 (swish); J. Bergstra, G. Desjardins,
P. Lamblin, Y. Bengio, "Quadratic polynomials learn better image features", 2009 (softsign);
B. A. Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation 6(1), 1994 (R-operator).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet.core import Array, Layer, ShapeError, check_float, check_no_params, check_tangent

# ----------------------------------------------------------------------------------------------
# sigmoid


def sigmoid(x: Array) -> Array:
    """σ(x) = 1 / (1 + e^{-x}), computed without overflow for large |x|; σ(NaN) = NaN."""
    return jax.nn.sigmoid(x)


def sigmoid_forward(x: Array) -> tuple[Array, Array]:
    y = sigmoid(x)
    return y, y  # the rule needs only the output


def sigmoid_backward(y: Array, dy: Array) -> Array:
    """dx = dy · σ(x)(1 − σ(x)) = dy · y(1 − y); at most 1/4, reached at x = 0.

    Exact for any x given the rounded output y, which is also what ``jax.grad`` of ``lax.logistic``
    computes. Where y rounds to 1 (x ≳ 17 in float32) the rule gives 0 while σ'(x) ≈ e^{−x} is below the
    dtype's eps: the absolute error is under one rounding of y. σ'(±∞) = 0; σ'(NaN) = NaN.
    """
    return dy * y * (1 - y)


def sigmoid_second(x: Array) -> Array:
    """σ''(x) = σ(x)(1 − σ(x))(1 − 2σ(x)) = −σ(x)σ(−x) tanh(x/2).

    Written with σ(−x) for 1 − σ(x) and −tanh(x/2) for 1 − 2σ(x), so it keeps its relative accuracy in
    both tails (σ''(x) ≈ ∓e^{−|x|}), where 1 − σ(x) would round to 0. σ''(±∞) = 0; σ''(NaN) = NaN.
    """
    return -sigmoid(x) * sigmoid(-x) * jnp.tanh(0.5 * x)


# ----------------------------------------------------------------------------------------------
# tanh


def tanh(x: Array) -> Array:
    """tanh(x) = (e^x − e^{-x}) / (e^x + e^{-x}); tanh(NaN) = NaN."""
    return jnp.tanh(x)


def tanh_forward(x: Array) -> tuple[Array, Array]:
    y = jnp.tanh(x)
    return y, y


def tanh_backward(y: Array, dy: Array) -> Array:
    """dx = dy · (1 − tanh²(x)) = dy · (1 − y²).

    From the output, as ``jax.grad`` of ``jnp.tanh``: where y rounds to ±1 (|x| ≳ 9 in float32) the rule
    gives 0 and the true derivative is below the dtype's eps. tanh'(±∞) = 0; tanh'(NaN) = NaN.
    """
    return dy * (1 - y * y)


def tanh_second(x: Array) -> Array:
    """tanh''(x) = −2 tanh(x)(1 − tanh²(x)) = −8 tanh(x) σ(2x) σ(−2x).

    1 − tanh²(x) = sech²(x) is written 4σ(2x)σ(−2x), which keeps its relative accuracy where tanh(x)
    rounds to ±1. tanh''(±∞) = 0; tanh''(NaN) = NaN.
    """
    return -8 * jnp.tanh(x) * sigmoid(2 * x) * sigmoid(-2 * x)


# ----------------------------------------------------------------------------------------------
# relu


def relu(x: Array) -> Array:
    """max(x, 0), with relu(NaN) = NaN.

    Written ``where(not x <= 0, x, 0)``: a NaN fails ``x <= 0`` and takes the identity branch, so it
    propagates (``where(x > 0, x, 0)`` would map it to 0), and ``jax.grad`` of this form is 0 at the kink
    (``jnp.maximum(x, 0)`` would give ½ there).
    """
    return jnp.where(~(x <= 0), x, jnp.zeros_like(x))


def relu_forward(x: Array) -> tuple[Array, Array]:
    mask = ~(x <= 0)  # x > 0, or x is NaN: a boolean mask, 1 byte per element
    return jnp.where(mask, x, jnp.zeros_like(x)), mask


def relu_backward(mask: Array, dy: Array) -> Array:
    """dx = dy · 1[x > 0]. At the kink relu'(0) = 0, as in ``jax.nn.relu``.

    Exact for any x, ±∞ included (relu'(−∞) = 0, relu'(+∞) = 1). At x = NaN the rule passes dy through
    (relu'(NaN) = 1), which is what ``jax.grad`` of fnnet's forward gives: the NaN takes the identity branch.
    """
    return jnp.where(mask, dy, jnp.zeros_like(dy))


def relu_second(x: Array) -> Array:
    """relu''(x) = 0 everywhere: 0 away from the kink (where ``jax.grad`` of the rule gives 0 too), and
    pinned to 0 at x = 0, where relu' jumps. NaN included, as ``jax.grad(jax.grad(relu))`` gives there."""
    return jnp.zeros_like(x)


# ----------------------------------------------------------------------------------------------
# leaky relu


def leaky_relu(x: Array, alpha: float = 0.01) -> Array:
    """x for x ≥ 0, αx otherwise; NaN propagates (it fails x ≥ 0 and α · NaN = NaN).

    With α = 0 the value at −∞ is 0 (as relu), not 0 · (−∞) = NaN.
    """
    return jnp.where(x >= 0, x, alpha * _finite_at_minus_inf(x, alpha))


def _finite_at_minus_inf(x: Array, alpha: float) -> Array:
    """x, except 0 at x = −∞ when α = 0, so α·x there is 0 and its gradient 0 (not NaN)."""
    return jnp.where((x == -jnp.inf) & (alpha == 0), jnp.zeros_like(x), x)


def leaky_relu_forward(x: Array, alpha: float = 0.01) -> tuple[Array, Array]:
    mask = x >= 0
    return leaky_relu(x, alpha), mask


def leaky_relu_backward(mask: Array, dy: Array, alpha: float = 0.01) -> Array:
    """dx = dy · (1 if x ≥ 0 else α). At the kink leaky_relu'(0) = 1, as in ``jax.nn.leaky_relu``.

    Exact for any x, ±∞ included. At x = NaN the rule gives dy · α, which is what ``jax.grad`` of fnnet's
    forward gives (the NaN fails x ≥ 0 and takes the αx branch).
    """
    return jnp.where(mask, dy, alpha * dy)


def leaky_relu_second(x: Array, alpha: float = 0.01) -> Array:
    """leaky_relu''(x) = 0 everywhere, pinned to 0 at the kink x = 0 (as :func:`relu_second`)."""
    del alpha
    return jnp.zeros_like(x)


# ----------------------------------------------------------------------------------------------
# the gated forms x·g(x) (gelu, swish) at ±∞


def _gated(formula: Callable[[Array], Array], x: Array) -> Array:
    """formula(x) = x·g(x) at finite x, where g(−∞) = 0 and g(+∞) = 1: so f(−∞) = 0, f(+∞) = +∞.

    The formula would give inf · 0 = NaN at −∞; a "double where" hands it 0 at ±∞ instead, so neither the
    value nor ``jax.grad`` of this forward (0 at −∞, 1 at +∞) sees the NaN. NaN inputs pass through.
    """
    inf = jnp.isinf(x)
    y = formula(jnp.where(inf, jnp.zeros_like(x), x))
    return jnp.where(x == jnp.inf, x, jnp.where(inf, jnp.zeros_like(x), y))


def _gated_slope(slope: Callable[[Array], Array], x: Array) -> Array:
    """slope(x) at finite x; the limits f'(−∞) = 0 and f'(+∞) = 1 of a gated form at ±∞ (see :func:`_gated`)."""
    inf = jnp.isinf(x)
    d = slope(jnp.where(inf, jnp.zeros_like(x), x))
    return jnp.where(x == jnp.inf, jnp.ones_like(x), jnp.where(inf, jnp.zeros_like(x), d))


# ----------------------------------------------------------------------------------------------
# gelu

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715
#: Beyond |x| = 10, u = √(2/π)(x + 0.044715x³) exceeds 43 and tanh(u) is ±1 in every float dtype: u is
#: computed from x clipped to ±10, which leaves every value unchanged and keeps x³ from overflowing
#: (float16 overflows at |x| > 40, and then rule and autodiff met 0 · ∞ = NaN).
_GELU_TANH_CLIP = 10.0


def _gelu_tanh_arg(x: Array) -> tuple[Array, Array]:
    """(u, x clipped to ±10), u = √(2/π)(x_c + 0.044715 x_c³)."""
    xc = jnp.clip(x, -_GELU_TANH_CLIP, _GELU_TANH_CLIP)
    return _SQRT_2_OVER_PI * (xc + _GELU_C * xc**3), xc


def gelu(x: Array, approximate: bool = False) -> Array:
    """x Φ(x) (exact), or 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))) when ``approximate``.

    fnnet's default is the exact form of Hendrycks & Gimpel; ``jax.nn.gelu`` defaults to the tanh
    approximation. Φ(x) = ½ erfc(−x/√2), accurate in the left tail too (1 + erf(x/√2) cancels to 0 there).
    gelu(−∞) = 0, gelu(+∞) = +∞, gelu(NaN) = NaN.
    """
    if approximate:
        return _gated(lambda v: 0.5 * v * (1 + jnp.tanh(_gelu_tanh_arg(v)[0])), x)
    return _gated(lambda v: 0.5 * v * lax.erfc(-v / math.sqrt(2.0)), x)


def gelu_forward(x: Array, approximate: bool = False) -> tuple[Array, Array]:
    return gelu(x, approximate), x


def gelu_backward(x: Array, dy: Array, approximate: bool = False) -> Array:
    """Exact: dx = dy · (Φ(x) + x φ(x)), φ(x) = e^{-x²/2}/√(2π).

    Tanh form: with t = tanh(u), u = √(2/π)(x + 0.044715x³),
    dx = dy · (½(1 + t) + ½ x (1 − t²) √(2/π)(1 + 3·0.044715 x²)), u taken at x clipped to ±10 as in the
    forward (there t = ±1 and the second term is 0 exactly).

    Exact for any real x, ±∞ included: gelu'(−∞) = 0, gelu'(+∞) = 1 (the limits; the naive formula gives
    inf · 0 = NaN there). gelu'(NaN) = NaN, as ``jax.grad`` of the forward.
    """
    if approximate:

        def slope(v):
            u, vc = _gelu_tanh_arg(v)
            t = jnp.tanh(u)
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * vc * vc)
            return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * du

        return dy * _gated_slope(slope, x)

    def slope(v):
        cdf = 0.5 * lax.erfc(-v / math.sqrt(2.0))
        pdf = jnp.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)
        return cdf + v * pdf

    return dy * _gated_slope(slope, x)


#: Beyond |x| = 50, φ(x) = e^{−x²/2}/√(2π) is 0 in every float dtype (e^{−1250}), and so is gelu''(x).
_GELU_PDF_CLIP = 50.0


def gelu_second(x: Array, approximate: bool = False) -> Array:
    """Exact: gelu''(x) = 2φ(x) + x φ'(x) = φ(x)(2 − x²), φ the standard normal pdf.

    Tanh form: with u = √(2/π)(x + 0.044715x³), u' = √(2/π)(1 + 3·0.044715x²), u'' = √(2/π)·6·0.044715x,
    t = tanh(u) and s = 1 − t² = sech²(u) (so s' = −2t s u')::

        gelu''(x) = s (u' − x t u'² + ½ x u''),

    with sech²(u) = 4σ(2u)σ(−2u), accurate where t rounds to ±1. Beyond |x| = 10 the forward takes u at
    x clipped to ±10 (t = ±1 exactly), so gelu is ½x(1 ± 1) there and gelu''(x) = 0, as ``jax.grad`` of
    the forward gives.

    Finite for every real x and 0 at ±∞ (the limits; x² φ(x) would be ∞ · 0 = NaN): the exact form takes
    x clipped to ±50, where φ is already 0 in every dtype. gelu''(NaN) = NaN.
    """
    if approximate:
        xc = jnp.clip(x, -_GELU_TANH_CLIP, _GELU_TANH_CLIP)
        u, _ = _gelu_tanh_arg(xc)
        t = jnp.tanh(u)
        s = 4 * sigmoid(2 * u) * sigmoid(-2 * u)
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * xc * xc)
        d2u = _SQRT_2_OVER_PI * 6 * _GELU_C * xc
        d2 = s * (du - xc * t * du * du + 0.5 * xc * d2u)
        return jnp.where(jnp.abs(x) > _GELU_TANH_CLIP, jnp.zeros_like(x), d2)
    xc = jnp.clip(x, -_GELU_PDF_CLIP, _GELU_PDF_CLIP)
    pdf = jnp.exp(-0.5 * xc * xc) / math.sqrt(2 * math.pi)
    return pdf * (2 - xc * xc)


# ----------------------------------------------------------------------------------------------
# swish / silu


def swish(x: Array) -> Array:
    """x σ(x) (also called SiLU); swish(−∞) = 0, swish(+∞) = +∞, swish(NaN) = NaN."""
    return _gated(lambda v: v * jax.nn.sigmoid(v), x)


def swish_forward(x: Array) -> tuple[Array, Array]:
    return swish(x), x


def swish_backward(x: Array, dy: Array) -> Array:
    """dx = dy · (σ(x) + x σ(x)(1 − σ(x))) = dy · σ(x)(1 + x(1 − σ(x))).

    Exact for any real x, ±∞ included: swish'(−∞) = 0, swish'(+∞) = 1 (the naive formula gives
    inf · 0 = NaN). swish'(NaN) = NaN, as ``jax.grad`` of the forward.
    """

    def slope(v):
        s = jax.nn.sigmoid(v)
        return s * (1 + v * (1 - s))

    return dy * _gated_slope(slope, x)


def swish_second(x: Array) -> Array:
    """swish''(x) = 2σ'(x) + x σ''(x) = σ(x)(1 − σ(x))(2 + x(1 − 2σ(x))) = σ(x)σ(−x)(2 − x tanh(x/2)).

    In the σ(−x), tanh(x/2) form it keeps its relative accuracy in both tails. swish''(±∞) = 0 (the
    limits; the formula would give 0 · ∞ = NaN there, so ±∞ is handed 0, a "double where").
    swish''(NaN) = NaN.
    """
    inf = jnp.isinf(x)
    v = jnp.where(inf, jnp.zeros_like(x), x)
    d2 = sigmoid(v) * sigmoid(-v) * (2 - v * jnp.tanh(0.5 * v))
    return jnp.where(inf, jnp.zeros_like(x), d2)


silu, silu_forward, silu_backward, silu_second = swish, swish_forward, swish_backward, swish_second


# ----------------------------------------------------------------------------------------------
# softplus


def softplus(x: Array) -> Array:
    """log(1 + e^x) = logaddexp(x, 0), which never overflows; softplus(−∞) = 0, softplus(NaN) = NaN.

    Not max(x, 0) + log1p(e^{−|x|}): the same values, but jax.grad of that form at x = 0 adds the
    subgradients of max and |·| chosen by JAX (½ and 1) and returns 0 instead of σ(0) = ½.
    """
    return jnp.logaddexp(x, jnp.zeros((), jnp.result_type(x)))


def softplus_forward(x: Array) -> tuple[Array, Array]:
    return softplus(x), x


def softplus_backward(x: Array, dy: Array) -> Array:
    """dx = dy · σ(x).

    Exact for any x, ±∞ included (softplus'(−∞) = 0, softplus'(+∞) = 1); softplus'(NaN) = NaN, as
    ``jax.grad`` of the forward.
    """
    return dy * jax.nn.sigmoid(x)


def softplus_second(x: Array) -> Array:
    """softplus''(x) = σ'(x) = σ(x)(1 − σ(x)) = σ(x)σ(−x), accurate in both tails (≈ e^{−|x|}).

    softplus''(±∞) = 0; softplus''(NaN) = NaN.
    """
    return sigmoid(x) * sigmoid(-x)


# ----------------------------------------------------------------------------------------------
# softsign


def softsign(x: Array) -> Array:
    """x / (1 + |x|), in (−1, 1); softsign(±∞) = ±1 (the limits, not ∞/∞ = NaN), softsign(NaN) = NaN."""
    inf = jnp.isinf(x)
    finite = jnp.where(inf, jnp.zeros_like(x), x)  # a "double where": neither value nor jax.grad sees ∞/∞
    return jnp.where(inf, jnp.sign(x), finite / (1 + jnp.abs(finite)))


def softsign_forward(x: Array) -> tuple[Array, Array]:
    return softsign(x), x


def softsign_backward(x: Array, dy: Array) -> Array:
    """dx = dy / (1 + |x|)², from the cached input; at most 1, reached at x = 0.

    Exact for any x, ±∞ included (softsign'(±∞) = 0). The derivative is continuous at 0 (softsign'(0) = 1
    from both sides); only the second derivative jumps there (from 2 to −2). softsign'(NaN) = NaN, as
    ``jax.grad`` of the forward.
    """
    d = 1 + jnp.abs(x)
    return dy / (d * d)


def softsign_second(x: Array) -> Array:
    """softsign''(x) = −2 sign(x) / (1 + |x|)³, pinned to 0 at x = 0, where it jumps from 2 to −2.

    0 is the mean of the one-sided limits and keeps f'' odd, as softsign is; ``jax.grad(jax.grad(f))``
    of the forward gives −2 there (the right-hand limit: JAX takes d|x|/dx = 1 at 0). Written
    −2 sign(x) r³ with r = 1/(1 + |x|), so (1 + |x|)³ never overflows: softsign''(±∞) = 0, and large
    finite |x| give the tiny true value (autodiff of the forward loses even its sign at |x| = 1e20).
    softsign''(NaN) = NaN.
    """
    r = 1 / (1 + jnp.abs(x))
    return -2 * jnp.sign(x) * (r * r * r)


# ----------------------------------------------------------------------------------------------
# identity


def identity(x: Array) -> Array:
    """x."""
    return x


def identity_forward(x: Array) -> tuple[Array, tuple]:
    return x, ()


def identity_backward(cache: tuple, dy: Array) -> Array:
    """dx = dy, for any x (NaN and ±∞ included)."""
    del cache
    return dy


def identity_second(x: Array) -> Array:
    """identity''(x) = 0, for any x (NaN and ±∞ included)."""
    return jnp.zeros_like(x)


# ----------------------------------------------------------------------------------------------
# softmax (not elementwise: its Jacobian is full)


def softmax(x: Array, axis: int = -1) -> Array:
    """p_i = e^{x_i − max x} / Σ_j e^{x_j − max x} along ``axis``.

    −∞ entries (masks) get p = 0. A NaN anywhere in a row makes the whole row NaN (its max is NaN), as
    in ``jax.nn.softmax``; so does a +∞ entry or a row of only −∞ (∞ − ∞).
    """
    e = jnp.exp(x - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def softmax_forward(x: Array, axis: int = -1) -> tuple[Array, Array]:
    y = softmax(x, axis)
    return y, y


def softmax_backward(y: Array, dy: Array, axis: int = -1) -> Array:
    """The Jacobian is diag(y) − y yᵀ, so dx = y ⊙ (dy − Σ_j dy_j y_j).

    Exact for any finite x and for −∞ entries (masks: y = 0 there, so dx = 0). Assumes no +∞ entry and at
    least one entry above −∞ per row; otherwise y, and so dx, is NaN, as ``jax.grad`` of the forward. A
    NaN input makes its whole row NaN, in the value and in dx.
    """
    return y * (dy - jnp.sum(dy * y, axis=axis, keepdims=True))


# ----------------------------------------------------------------------------------------------
# Layer forms


def derivative(name: str, x: Array, **kwargs) -> Array:
    """f'(x) elementwise from the hand-written rule of activation ``name`` (dy = 1)."""
    fwd, bwd = _RULES[name]
    _, cache = fwd(x, **kwargs)
    return bwd(cache, jnp.ones_like(x), **kwargs)


def second_derivative(name: str, x: Array, **kwargs) -> Array:
    """f''(x) elementwise for the elementwise activation ``name``, from its hand-written ``<name>_second``.

    The second derivatives are what curvature code needs beyond the rules, e.g. Pearlmutter's
    R-operator: R{f'(x)} = f''(x) · R{x} (Pearlmutter 1994). Each is written out in its
    docstring; at the kinks it is pinned to 0 (relu''(0) = leaky_relu''(0) = 0, softsign''(0) = 0), the
    values are finite for every real x and give the limits at ±∞ (0 for all of them), and NaN propagates
    except where f'' is 0 everywhere (relu, leaky_relu, identity), as ``jax.grad(jax.grad(f))`` of the
    forward. ``kwargs`` are the activation's (``alpha=``, ``approximate=``).

    Raises:
        ValueError: ``name`` is not an elementwise activation (softmax's second derivative is a
            third-order tensor, not an elementwise function).

    Reference: B. A. Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation 6(1),
    1994.
    """
    if name not in _SECOND:
        extra = "; softmax is not elementwise" if name == "softmax" else ""
        raise ValueError(
            f"no elementwise second derivative for activation {name!r}{extra}; choose one of "
            f"{', '.join(sorted(_SECOND))}"
        )
    return _SECOND[name](x, **kwargs)


def activation_of(layer: Layer) -> tuple[str, dict] | None:
    """``(name, kwargs)`` of a Layer built by this module, e.g. ``("leaky_relu", {"alpha": 0.2})``; else None.

    ``name`` is a key of :func:`derivative` and :func:`second_derivative` (``Silu()`` is ``"swish"``;
    ``Softmax(axis)`` is ``("softmax", {"axis": axis})``), so curvature code can take f' and f'' of the
    layer it meets::

        name, kwargs = activation_of(layer)
        d2 = second_derivative(name, x, **kwargs)      # f''(x), for the R-operator

    The fact is an attribute on the layer's ``forward`` (as :func:`fnnet.core.mark_takes_mask` marks
    forwards), so a Layer made otherwise, or wrapped by a combinator, gives None. ``kwargs`` is a copy.
    """
    mark = getattr(getattr(layer, "forward", None), "activation", None)
    if mark is None:
        return None
    name, kwargs = mark
    return name, dict(kwargs)


def _layer(label: str, activation: str, check: Callable[[Array], None] | None = None, **kwargs) -> Layer:
    """A parameter-free Layer of the activation ``activation`` (a key of ``_RULES``) with arguments ``kwargs``.

    ``check(x)``, if given, runs extra input checks (Softmax's axis) first, in ``forward`` and ``jvp`` alike.

    Forward mode: the Jacobian J of every activation here is symmetric — diagonal, diag(f'(x)), for an
    elementwise f, and diag(y) − y yᵀ for softmax — so J dx = Jᵀ dx and the JVP is the backward rule
    applied to the tangent, from the same cache: dy = f'(x) ⊙ dx (softmax: dy = y ⊙ (dx − Σ_j y_j dx_j)),
    with the kinks pinned as in the backward (relu'(0) = 0, leaky_relu'(0) = 1).
    """
    fwd, bwd = _RULES[activation]

    def init(key, in_shape, dtype=jnp.float32):
        del key, dtype
        return tuple(in_shape), ()

    def forward(params, x, *, key=None, train=True):
        del key, train
        if check is not None:
            check(x)
        check_no_params(label, params)
        check_float(label, x)
        return fwd(x, **kwargs)

    def backward(params, cache, dy):
        check_no_params(label, params)
        return (), bwd(cache, dy, **kwargs)

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        y, cache = forward(params, x, key=key, train=train)
        check_no_params(f"{label} jvp (dparams)", dparams)
        check_tangent(label, "dx", dx, x)
        return y, bwd(cache, dx, **kwargs)

    forward.activation = (activation, dict(kwargs))
    return Layer(init, forward, backward, jvp=jvp, name=label.removesuffix("()"))


def Sigmoid() -> Layer:
    """The logistic sigmoid as a parameter-free Layer, elementwise.

    Forward:
        y = σ(x) = 1 / (1 + e^{−x}), without overflow for large ``abs(x)``; σ(NaN) = NaN.

    Derivative:
        σ'(x) = σ(x)(1 − σ(x)) = y(1 − y), at most 1/4 (at x = 0); the rule is dx = dy · y(1 − y),
        computed from the cached output alone.

    Kink:
        None: σ is smooth. σ'(±∞) = 0.

    Forward mode (JVP):
        dy = y(1 − y) ⊙ dx, from the same cached output (the Jacobian is diagonal, so the forward and
        reverse rules coincide).
    """
    return _layer("Sigmoid()", "sigmoid")


def Tanh() -> Layer:
    """The hyperbolic tangent as a parameter-free Layer, elementwise.

    Forward:
        y = tanh(x) = (e^x − e^{−x}) / (e^x + e^{−x}); tanh(NaN) = NaN.

    Derivative:
        tanh'(x) = 1 − tanh²(x) = 1 − y²; the rule is dx = dy · (1 − y²), from the cached output.

    Kink:
        None: tanh is smooth. tanh'(±∞) = 0.

    Forward mode (JVP):
        dy = (1 − y²) ⊙ dx, from the same cached output (diagonal Jacobian: forward and reverse rules coincide).
    """
    return _layer("Tanh()", "tanh")


def Relu() -> Layer:
    """The rectified linear unit as a parameter-free Layer, elementwise.

    Forward:
        y = max(x, 0): x for x > 0, else 0; relu(NaN) = NaN.

    Derivative:
        relu'(x) = 1[x > 0]; the rule is dx = dy · 1[x > 0], from a boolean mask (1 byte per element).

    Kink:
        relu'(0) = 0, as ``jax.nn.relu`` and PyTorch; ``jax.grad`` of fnnet's forward agrees.

    Forward mode (JVP):
        dy = 1[x > 0] ⊙ dx, from the same mask, so relu'(0) = 0 here too (diagonal Jacobian: forward and
        reverse rules coincide).
    """
    return _layer("Relu()", "relu")


def LeakyRelu(alpha: float = 0.01) -> Layer:
    """The leaky ReLU of slope ``alpha`` (α) as a parameter-free Layer, elementwise.

    Forward:
        y = x for x ≥ 0, αx otherwise; NaN propagates.

    Derivative:
        leaky_relu'(x) = 1 for x ≥ 0, α otherwise; the rule is dx = dy · (1 if x ≥ 0 else α).

    Kink:
        leaky_relu'(0) = 1 (x ≥ 0 is the linear side), as ``jax.nn.leaky_relu``.

    Forward mode (JVP):
        dy = (1 if x ≥ 0 else α) ⊙ dx, from the same mask, leaky_relu'(0) = 1 (diagonal Jacobian: forward and
        reverse rules coincide).

    Args:
        alpha: the slope for x < 0, a finite real number ≥ 0 (0 gives ReLU's values, with slope 1 at 0).

    Raises:
        TypeError: ``alpha`` is not a real number.
        ValueError: ``alpha`` is negative or not finite.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"LeakyRelu: alpha must be a real number, got {alpha!r}")
    if not 0 <= alpha < math.inf:
        raise ValueError(f"LeakyRelu needs a finite slope alpha >= 0, got {alpha}")
    return _layer(f"LeakyRelu({alpha})", "leaky_relu", alpha=alpha)


def Gelu(approximate: bool = False) -> Layer:
    """The Gaussian error linear unit (Hendrycks & Gimpel 2016, eq. 1-2) as a parameter-free Layer.

    Forward:
        exact (default): y = x Φ(x), Φ the standard normal CDF, Φ(x) = ½ erfc(−x/√2).
        ``approximate=True``: y = ½ x (1 + tanh(u)), u = √(2/π)(x + 0.044715 x³).

    Derivative:
        exact: gelu'(x) = Φ(x) + x φ(x), φ(x) = e^{−x²/2}/√(2π).
        tanh form: with t = tanh(u), gelu'(x) = ½(1 + t) + ½ x (1 − t²) √(2/π)(1 + 3 · 0.044715 x²).
        The rule is dx = dy · gelu'(x), from the cached input.

    Kink:
        None: GELU is smooth. The limits hold at ±∞: gelu(−∞) = 0, gelu'(−∞) = 0, gelu'(+∞) = 1.

    Forward mode (JVP):
        dy = gelu'(x) ⊙ dx, from the same cached input (diagonal Jacobian: forward and reverse rules coincide).

    Args:
        approximate: use the tanh form (the default of ``jax.nn.gelu``) instead of the exact x Φ(x).
    """
    return _layer("Gelu()", "gelu", approximate=approximate)


def Swish() -> Layer:
    """Swish, also called SiLU (Ramachandran et al. 2017), as a parameter-free Layer, elementwise.

    Forward:
        y = x σ(x); swish(−∞) = 0, swish(+∞) = +∞, swish(NaN) = NaN.

    Derivative:
        swish'(x) = σ(x) + x σ(x)(1 − σ(x)) = σ(x)(1 + x(1 − σ(x))); the rule is dx = dy · swish'(x),
        from the cached input.

    Kink:
        None: swish is smooth. swish'(−∞) = 0, swish'(+∞) = 1.

    Forward mode (JVP):
        dy = swish'(x) ⊙ dx, from the same cached input (diagonal Jacobian: forward and reverse rules coincide).
    """
    return _layer("Swish()", "swish")


def Softplus() -> Layer:
    """Softplus as a parameter-free Layer, elementwise.

    Forward:
        y = log(1 + e^x) = logaddexp(x, 0), which never overflows; softplus(−∞) = 0.

    Derivative:
        softplus'(x) = σ(x); the rule is dx = dy · σ(x), from the cached input.

    Kink:
        None: softplus is smooth (a smooth ReLU); softplus'(0) = ½.

    Forward mode (JVP):
        dy = σ(x) ⊙ dx, from the same cached input (diagonal Jacobian: forward and reverse rules coincide).
    """
    return _layer("Softplus()", "softplus")


def Softsign() -> Layer:
    """Softsign (Bergstra et al. 2009; studied by Glorot & Bengio 2010, sec. 3) as a parameter-free Layer.

    Forward:
        y = x / (1 + |x|), in (−1, 1); like tanh it is odd and saturates at ±1, but polynomially
        (1 − |y| = 1/(1 + |x|)) instead of exponentially. softsign(±∞) = ±1.

    Derivative:
        softsign'(x) = 1 / (1 + |x|)² = (1 − |y|)², at most 1 (at x = 0); the rule is
        dx = dy / (1 + |x|)², from the cached input.

    Kink:
        None in the derivative: softsign'(0) = 1 from both sides (the second derivative jumps from 2 to −2
        at 0). softsign'(±∞) = 0.

    Forward mode (JVP):
        dy = dx / (1 + |x|)², from the same cached input (diagonal Jacobian: forward and reverse rules coincide).

    References:
        J. Bergstra, G. Desjardins, P. Lamblin, Y. Bengio, "Quadratic polynomials learn better image
        features", Technical Report 1337, Université de Montréal, 2009; X. Glorot, Y. Bengio,
        "Understanding the difficulty of training deep feedforward neural networks", AISTATS, 2010.
    """
    return _layer("Softsign()", "softsign")


def Identity() -> Layer:
    """The identity as a parameter-free Layer.

    Forward:
        y = x.

    Derivative:
        identity'(x) = 1; the rule is dx = dy. Nothing is cached.

    Kink:
        None.

    Forward mode (JVP):
        dy = dx.
    """
    return _layer("Identity()", "identity")


def Softmax(axis: int = -1) -> Layer:
    """Softmax over ``axis`` of each example as a parameter-free Layer (not elementwise).

    Forward:
        p_i = e^{x_i − max x} / Σ_j e^{x_j − max x} along ``axis``; −∞ entries (masks) get p = 0.

    Derivative:
        The Jacobian is diag(p) − p pᵀ, so the rule is dx = p ⊙ (dy − Σ_j dy_j p_j), from the cached output.

    Kink:
        None: softmax is smooth. A row with a +∞ entry, only −∞ entries or a NaN is NaN, value and rule.

    Forward mode (JVP):
        dy = p ⊙ (dx − Σ_j p_j dx_j), from the same cached output: the Jacobian diag(p) − p pᵀ is symmetric,
        so the forward and reverse rules coincide.

    Args:
        axis: the axis to normalize over, default the last; it must name a non-batch axis of the input.

    Raises:
        TypeError: ``axis`` is not an integer.
    """
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"Softmax: axis must be an integer, got {axis!r}")

    def check_axis(x):
        rank = jnp.ndim(x)
        if not (-rank <= axis < rank) or axis % max(rank, 1) == 0:
            raise ShapeError(
                f"Softmax(): axis {axis} must name a non-batch axis of the input; got an input of shape "
                f"{jnp.shape(x)} (rank {rank})"
            )
        if jnp.shape(x)[axis] == 0:
            raise ShapeError(
                f"Softmax(): axis {axis} of the input is empty (shape {jnp.shape(x)}); it needs >= 1 entry"
            )

    return _layer("Softmax()", "softmax", check_axis, axis=int(axis))


Silu = Swish  # the same constructor (and docstring) under PyTorch's name

_RULES: dict[str, tuple[Callable, Callable]] = {
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "gelu": (gelu_forward, gelu_backward),
    "swish": (swish_forward, swish_backward),
    "silu": (swish_forward, swish_backward),
    "softplus": (softplus_forward, softplus_backward),
    "softsign": (softsign_forward, softsign_backward),
    "identity": (identity_forward, identity_backward),
    "softmax": (softmax_forward, softmax_backward),
}

_SECOND: dict[str, Callable[..., Array]] = {
    "sigmoid": sigmoid_second,
    "tanh": tanh_second,
    "relu": relu_second,
    "leaky_relu": leaky_relu_second,
    "gelu": gelu_second,
    "swish": swish_second,
    "silu": swish_second,
    "softplus": softplus_second,
    "softsign": softsign_second,
    "identity": identity_second,
}

LAYERS: dict[str, Callable[..., Layer]] = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": Relu,
    "leaky_relu": LeakyRelu,
    "gelu": Gelu,
    "swish": Swish,
    "silu": Swish,
    "softplus": Softplus,
    "softsign": Softsign,
    "identity": Identity,
    "softmax": Softmax,
}


def get(name: str, **kwargs) -> Layer:
    """The Layer form of activation ``name`` (e.g. ``get("leaky_relu", alpha=0.2)``)."""
    if name not in LAYERS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(sorted(LAYERS))}")
    return LAYERS[name](**kwargs)
