"""Activations: each value, its hand-written derivative rule right below it, and a Layer form.

Every activation ``f`` comes as three functions::

    f(x) -> y                          the plain value
    f_forward(x) -> (y, cache)         the value and the smallest cache its rule needs
    f_backward(cache, dy) -> dx        the hand-written vector-Jacobian product

and a Layer constructor (``Sigmoid()``, ``LeakyRelu(0.2)``, ...). :func:`derivative` gives f'(x)
elementwise from the rule (dy = 1). Kinks are pinned as in ``jax.nn``: relu'(0) = 0 and
leaky_relu'(0) = 1.

References: the derivative table of the texts (shared/references 000, "activation functions and
their derivatives"; 002, section on backpropagation); Hendrycks & Gimpel 2016 (GELU, eq. 1-2);
Ramachandran et al. 2017 (swish).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet.core import Array, Layer, ShapeError, check_float

# ----------------------------------------------------------------------------------------------
# sigmoid


def sigmoid(x: Array) -> Array:
    """σ(x) = 1 / (1 + e^{-x}), computed without overflow for large |x|."""
    return jax.nn.sigmoid(x)


def sigmoid_forward(x: Array) -> tuple[Array, Array]:
    y = sigmoid(x)
    return y, y  # the rule needs only the output


def sigmoid_backward(y: Array, dy: Array) -> Array:
    """dx = dy · σ(x)(1 − σ(x)) = dy · y(1 − y); at most 1/4, reached at x = 0."""
    return dy * y * (1 - y)


# ----------------------------------------------------------------------------------------------
# tanh


def tanh(x: Array) -> Array:
    """tanh(x) = (e^x − e^{-x}) / (e^x + e^{-x})."""
    return jnp.tanh(x)


def tanh_forward(x: Array) -> tuple[Array, Array]:
    y = jnp.tanh(x)
    return y, y


def tanh_backward(y: Array, dy: Array) -> Array:
    """dx = dy · (1 − tanh²(x)) = dy · (1 − y²)."""
    return dy * (1 - y * y)


# ----------------------------------------------------------------------------------------------
# relu


def relu(x: Array) -> Array:
    """max(x, 0)."""
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def relu_forward(x: Array) -> tuple[Array, Array]:
    mask = x > 0
    return jnp.where(mask, x, jnp.zeros_like(x)), mask  # a boolean mask, 1 byte per element


def relu_backward(mask: Array, dy: Array) -> Array:
    """dx = dy · 1[x > 0]. At the kink relu'(0) = 0, as in ``jax.nn.relu``."""
    return jnp.where(mask, dy, jnp.zeros_like(dy))


# ----------------------------------------------------------------------------------------------
# leaky relu


def leaky_relu(x: Array, alpha: float = 0.01) -> Array:
    """x for x ≥ 0, αx otherwise."""
    return jnp.where(x >= 0, x, alpha * x)


def leaky_relu_forward(x: Array, alpha: float = 0.01) -> tuple[Array, Array]:
    mask = x >= 0
    return jnp.where(mask, x, alpha * x), mask


def leaky_relu_backward(mask: Array, dy: Array, alpha: float = 0.01) -> Array:
    """dx = dy · (1 if x ≥ 0 else α). At the kink leaky_relu'(0) = 1, as in ``jax.nn.leaky_relu``."""
    return jnp.where(mask, dy, alpha * dy)


# ----------------------------------------------------------------------------------------------
# gelu

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


def gelu(x: Array, approximate: bool = False) -> Array:
    """x Φ(x) (exact), or 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))) when ``approximate``.

    fnnet's default is the exact form of Hendrycks & Gimpel; ``jax.nn.gelu`` defaults to the tanh
    approximation.
    """
    if approximate:
        u = _SQRT_2_OVER_PI * (x + _GELU_C * x**3)
        return 0.5 * x * (1 + jnp.tanh(u))
    return 0.5 * x * (1 + lax.erf(x / math.sqrt(2.0)))


def gelu_forward(x: Array, approximate: bool = False) -> tuple[Array, Array]:
    return gelu(x, approximate), x


def gelu_backward(x: Array, dy: Array, approximate: bool = False) -> Array:
    """Exact: dx = dy · (Φ(x) + x φ(x)), φ(x) = e^{-x²/2}/√(2π).

    Tanh form: with t = tanh(u), u = √(2/π)(x + 0.044715x³),
    dx = dy · (½(1 + t) + ½ x (1 − t²) √(2/π)(1 + 3·0.044715 x²)).
    """
    if approximate:
        t = jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x**3))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x * x)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
    cdf = 0.5 * (1 + lax.erf(x / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return dy * (cdf + x * pdf)


# ----------------------------------------------------------------------------------------------
# swish / silu


def swish(x: Array) -> Array:
    """x σ(x) (also called SiLU)."""
    return x * jax.nn.sigmoid(x)


def swish_forward(x: Array) -> tuple[Array, Array]:
    return swish(x), x


def swish_backward(x: Array, dy: Array) -> Array:
    """dx = dy · (σ(x) + x σ(x)(1 − σ(x))) = dy · σ(x)(1 + x(1 − σ(x)))."""
    s = jax.nn.sigmoid(x)
    return dy * s * (1 + x * (1 - s))


silu, silu_forward, silu_backward = swish, swish_forward, swish_backward


# ----------------------------------------------------------------------------------------------
# softplus


def softplus(x: Array) -> Array:
    """log(1 + e^x) = logaddexp(x, 0), which never overflows.

    Not max(x, 0) + log1p(e^{−|x|}): the same values, but jax.grad of that form at x = 0 adds the
    subgradients of max and |·| chosen by JAX (½ and 1) and returns 0 instead of σ(0) = ½.
    """
    return jnp.logaddexp(x, jnp.zeros((), jnp.result_type(x)))


def softplus_forward(x: Array) -> tuple[Array, Array]:
    return softplus(x), x


def softplus_backward(x: Array, dy: Array) -> Array:
    """dx = dy · σ(x)."""
    return dy * jax.nn.sigmoid(x)


# ----------------------------------------------------------------------------------------------
# identity


def identity(x: Array) -> Array:
    """x."""
    return x


def identity_forward(x: Array) -> tuple[Array, tuple]:
    return x, ()


def identity_backward(cache: tuple, dy: Array) -> Array:
    """dx = dy."""
    del cache
    return dy


# ----------------------------------------------------------------------------------------------
# softmax (not elementwise: its Jacobian is full)


def softmax(x: Array, axis: int = -1) -> Array:
    """p_i = e^{x_i − max x} / Σ_j e^{x_j − max x} along ``axis``."""
    e = jnp.exp(x - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def softmax_forward(x: Array, axis: int = -1) -> tuple[Array, Array]:
    y = softmax(x, axis)
    return y, y


def softmax_backward(y: Array, dy: Array, axis: int = -1) -> Array:
    """The Jacobian is diag(y) − y yᵀ, so dx = y ⊙ (dy − Σ_j dy_j y_j)."""
    return y * (dy - jnp.sum(dy * y, axis=axis, keepdims=True))


# ----------------------------------------------------------------------------------------------
# Layer forms


def derivative(name: str, x: Array, **kwargs) -> Array:
    """f'(x) elementwise from the hand-written rule of activation ``name`` (dy = 1)."""
    fwd, bwd = _RULES[name]
    _, cache = fwd(x, **kwargs)
    return bwd(cache, jnp.ones_like(x), **kwargs)


def _layer(label: str, fwd: Callable, bwd: Callable, **kwargs) -> Layer:
    """A parameter-free Layer from an activation's forward and backward rule."""

    def init(key, in_shape, dtype=jnp.float32):
        del key, dtype
        return tuple(in_shape), ()

    def forward(params, x, *, key=None, train=True):
        del params, key, train
        check_float(label, x)
        return fwd(x, **kwargs)

    def backward(params, cache, dy):
        del params
        return (), bwd(cache, dy, **kwargs)

    return Layer(init, forward, backward)


def Sigmoid() -> Layer:
    return _layer("Sigmoid()", sigmoid_forward, sigmoid_backward)


def Tanh() -> Layer:
    return _layer("Tanh()", tanh_forward, tanh_backward)


def Relu() -> Layer:
    return _layer("Relu()", relu_forward, relu_backward)


def LeakyRelu(alpha: float = 0.01) -> Layer:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"LeakyRelu: alpha must be a real number, got {alpha!r}")
    if not 0 <= alpha < math.inf:
        raise ValueError(f"LeakyRelu needs a finite slope alpha >= 0, got {alpha}")
    return _layer(f"LeakyRelu({alpha})", leaky_relu_forward, leaky_relu_backward, alpha=alpha)


def Gelu(approximate: bool = False) -> Layer:
    return _layer("Gelu()", gelu_forward, gelu_backward, approximate=approximate)


def Swish() -> Layer:
    return _layer("Swish()", swish_forward, swish_backward)


def Softplus() -> Layer:
    return _layer("Softplus()", softplus_forward, softplus_backward)


def Identity() -> Layer:
    return _layer("Identity()", identity_forward, identity_backward)


def Softmax(axis: int = -1) -> Layer:
    """Softmax over ``axis`` of each example (default the last; the batch axis 0 is refused)."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"Softmax: axis must be an integer, got {axis!r}")
    layer = _layer("Softmax()", softmax_forward, softmax_backward, axis=int(axis))

    def forward(params, x, *, key=None, train=True):
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
        return layer.forward(params, x, key=key, train=train)

    return layer._replace(forward=forward)


Silu = Swish

_RULES: dict[str, tuple[Callable, Callable]] = {
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "gelu": (gelu_forward, gelu_backward),
    "swish": (swish_forward, swish_backward),
    "silu": (swish_forward, swish_backward),
    "softplus": (softplus_forward, softplus_backward),
    "identity": (identity_forward, identity_backward),
    "softmax": (softmax_forward, softmax_backward),
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
    "identity": Identity,
    "softmax": Softmax,
}


def get(name: str, **kwargs) -> Layer:
    """The Layer form of activation ``name`` (e.g. ``get("leaky_relu", alpha=0.2)``)."""
    if name not in LAYERS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(sorted(LAYERS))}")
    return LAYERS[name](**kwargs)
