"""Dense (fully connected) and Flatten layers."""

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
    check_no_params,
    check_param_dtype,
    check_params,
    check_tangent,
    is_int,
    prod,
    shape_str,
    shape_token,
    token_shape,
)


def Dense(
    out_dim: int,
    w_init: initializers.Initializer | None = None,
    b_init: initializers.Initializer | None = None,
    use_bias: bool = True,
) -> Layer:
    """y = x W + b, with x: (..., d_in), W: (d_in, out_dim), b: (out_dim,).

    Leading axes of ``x`` beyond the last are all batch-like (e.g. (B, T, d_in) works).
    Default init: W ~ Glorot normal (as ``stax.Dense``), b = 0. ``w_init``/``b_init`` are initializer
    functions such as ``fn.initializers.he_normal()`` (a name or an uncalled factory is a TypeError).

    Backward, with X and dY flattened to rows (n, d_in) and (n, out_dim):
        dW = Xᵀ dY,   db = Σ_rows dY,   dx = dY Wᵀ.

    Forward mode (JVP), for tangents (dW, db) of the params and dx of x:
        dy = dx W + x dW + db   (dy = dx W + x dW with ``use_bias=False``).

    Domain: the map is linear in x and in (W, b), so the rules are exact everywhere (no kinks, no
    division); it differs from ``jax.grad`` only by the rounding of the sums (their order).

    Params: ``{"W": (d_in, out_dim), "b": (out_dim,)}`` (no ``"b"`` with ``use_bias=False``), one
    floating dtype. Anything else (another net's params, a bias of the wrong length, missing or extra
    keys) is refused while tracing, naming the layer and the leaf: TypeError/ValueError/ShapeError/DTypeError.
    """
    if not is_int(out_dim) or out_dim <= 0:
        raise ValueError(f"Dense needs a positive integer out_dim, got {out_dim!r}")
    out_dim = int(out_dim)
    name = f"Dense({out_dim})"
    w_init = initializers.resolve(name, "w_init", w_init, initializers.glorot_normal())
    b_init = initializers.resolve(name, "b_init", b_init, initializers.zeros())
    spec = {"W": ("d_in", out_dim), "b": (out_dim,)} if use_bias else {"W": ("d_in", out_dim)}

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        if len(in_shape) < 1:
            raise ShapeError(f"{name} needs inputs with a feature axis, got shape {shape_str(in_shape)}")
        check_param_dtype(name, dtype)
        k_w, k_b = jax.random.split(key)
        d_in = in_shape[-1]
        params = {"W": initializers.draw(name, "w_init", w_init, k_w, (d_in, out_dim), dtype)}
        if use_bias:
            params["b"] = initializers.draw(name, "b_init", b_init, k_b, (out_dim,), dtype)
        return tuple(in_shape[:-1]) + (out_dim,), params

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        W = params["W"]
        check_input(name, x, (W.shape[0],), leading="...")
        check_dtype_match(name, x, W)
        y = jnp.matmul(x, W)
        if use_bias:
            y = y + jnp.reshape(params["b"], (1,) * (x.ndim - 1) + (out_dim,))
        return y, x

    def backward(params, x: Array, dy: Array):
        check_params(name, params, spec)
        W = params["W"]
        rows_x = jnp.reshape(x, (-1, W.shape[0]))
        rows_dy = jnp.reshape(dy, (-1, out_dim))
        grads = {"W": weight_gradient(rows_x, rows_dy)}
        if use_bias:
            grads["b"] = jnp.sum(rows_dy, axis=0)
        return grads, jnp.matmul(dy, W.T)

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, _ = forward(params, x, key=key, train=train)
        check_tangent(name, "dparams", dparams, params)
        check_tangent(name, "dx", dx, x)
        dy = jnp.matmul(dx, params["W"]) + jnp.matmul(x, dparams["W"])
        if use_bias:
            dy = dy + jnp.reshape(dparams["b"], (1,) * (x.ndim - 1) + (out_dim,))
        return y, dy

    forward.dense = {"out_dim": out_dim, "use_bias": bool(use_bias)}
    return Layer(init, forward, backward, jvp=jvp, name=name)


def dense_of(layer: Layer) -> dict | None:
    """``{"out_dim": int, "use_bias": bool}`` for a Layer made by :func:`Dense`, else None.

    For curvature code that treats affine layers apart (e.g. Kronecker-factored approximations, which need
    the layer's input and output cotangent). The fact is an attribute on the layer's ``forward`` (as
    :func:`fnnet.core.mark_takes_mask` marks forwards), so a Layer made otherwise, or wrapped by a
    combinator, gives None. The dict is a copy.
    """
    mark = getattr(getattr(layer, "forward", None), "dense", None)
    return None if mark is None else dict(mark)


# Below this many multiply-adds the transposed copy does not pay on CPU (measured on a 2-core AMD EPYC:
# (256, 512) x (256, 512) is 12% faster with it, (128, 512) x (128, 512) 20% slower; see fnnet bench).
FAST_WEIGHT_GRADIENT_MACS = 1 << 26


def weight_gradient(rows_x: Array, rows_dy: Array) -> Array:
    """dW = Xᵀ dY for rows X: (n, d_in), dY: (n, d_out) — the weight gradient of ``X W``.

    Equal to ``rows_x.T @ rows_dy``. For large products (n·d_in·d_out ≥ 2^26) on CPU it goes through
    :func:`transpose_for_matmul`, which XLA runs on its faster matmul kernels (1.07-1.6x on the
    benchmark's shapes).
    """
    n, d_in = rows_x.shape
    if n * d_in * rows_dy.shape[1] < FAST_WEIGHT_GRADIENT_MACS:
        return jnp.matmul(rows_x.T, rows_dy)
    return jnp.matmul(transpose_for_matmul(rows_x, after=rows_dy), rows_dy)


def transpose_for_matmul(x: Array, after: Array) -> Array:
    """``x.T`` (last two axes swapped), written out in memory on CPU, for a weight gradient ``xᵀ dy``.

    The values are exactly ``jnp.swapaxes(x, -1, -2)``; only where and when XLA computes them changes.
    Why: XLA's CPU backend hands a matmul to its fast YNNPACK kernels only when the left operand is
    contracted over its last (minor) axis. In ``xᵀ dy`` the batch axis of ``x`` is its first, so XLA
    folds a plain transpose into the dot and falls back to a slower kernel (1.6x slower for
    (4096 x 256) @ (256 x 4096)). Two things fix it at a cost of B·d_in copied floats, small next to
    the B·d_in·d_out matmul:

    * an optimization barrier keeps the transposed copy (XLA cannot fold it back into the dot);
    * the copy depends on ``after`` (the cotangent ``dy``) through an added zero, (dy₀₀ ≠ dy₀₀)·0 —
      exactly 0.0 for every dy, NaN included — so XLA's scheduler makes it when the backward pass
      needs it, not at the start, where it would stay alive and raise the peak memory.

    Other backends transpose inside their matmul for free, so there the plain transpose is used.
    """

    def cpu(x: Array, after: Array) -> Array:
        corner = after[..., :1, :1]
        zero = (corner != corner).astype(x.dtype) * 0
        return lax.optimization_barrier(jnp.swapaxes(x, -1, -2) + zero)

    return lax.platform_dependent(x, after, cpu=cpu, default=lambda x, after: jnp.swapaxes(x, -1, -2))


def Flatten() -> Layer:
    """(B, d1, d2, ...) -> (B, d1·d2·...). Backward: dx = reshape(dy, x.shape), exact everywhere.

    Forward mode (JVP): dy = reshape(dx, (B, d1·d2·...)), the same reshape.

    No parameters: params must be ``()`` (anything holding arrays is a ValueError naming the layer).
    """
    name = "Flatten()"

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        del key, dtype
        return (prod(tuple(in_shape)),), ()

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_no_params(name, params)
        if jnp.ndim(x) < 1:
            raise ShapeError(f"{name} needs a batch axis, got a scalar of shape {shape_str(jnp.shape(x))}")
        return jnp.reshape(x, (x.shape[0], -1)), shape_token(x.shape[1:], x.dtype)

    def backward(params, token: Array, dy: Array):
        check_no_params(name, params)
        return (), jnp.reshape(dy, (dy.shape[0],) + token_shape(token))

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, _ = forward(params, x, key=key, train=train)
        check_no_params(f"{name} jvp (dparams)", dparams)
        check_tangent(name, "dx", dx, x)
        return y, jnp.reshape(dx, (dx.shape[0], -1))

    return Layer(init, forward, backward, jvp=jvp, name="Flatten")
