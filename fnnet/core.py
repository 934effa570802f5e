"""The two contracts of fnnet, and the input checks every layer shares.

A **Layer** is a tuple of pure functions, in the manner of ``jax.example_libraries.stax``::

    init(key, in_shape, dtype=jnp.float32) -> (out_shape, params)
    forward(params, x, *, key=None, train=True) -> (y, cache)
    backward(params, cache, dy) -> (dparams, dx)
    update_state(params, cache) -> params          # optional; None for stateless layers

* ``in_shape`` and ``out_shape`` exclude the batch dimension; ``x`` and ``y`` carry it first.
* ``forward`` uses only ``jax.numpy``/``lax``, so ``jax.grad`` differentiates the very same code: that
  is the reference every hand-written rule is checked against.
* ``backward`` is the hand-written vector-Jacobian product. It never calls ``jax.grad``, ``jax.vjp``
  or ``jax.jvp``. ``dparams`` has exactly the pytree structure of ``params``.
* ``cache`` holds only arrays (so it can be a ``jax.custom_vjp`` residual) and only what the rule
  needs. Static facts such as an input shape travel as a zero-size :func:`shape_token`.
* ``update_state`` is how layers with state (batch-norm running statistics) return it: the state
  lives in ``params`` as a non-trainable buffer whose gradient is zero in training mode, and
  ``update_state(params, cache)`` returns new params with the statistics of the last training
  forward folded in. Nothing is mutated.

A **Loss** is ``Loss(forward, backward)``::

    forward(pred, target) -> (mean loss over the batch, cache)
    backward(cache) -> dloss/dpred

Every loss is the *mean* over the batch (the first axis), so every gradient is the gradient of that
mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Shape = tuple[int, ...]
Params = Any  # a pytree of arrays; () for a layer without parameters
Cache = Any  # a pytree of arrays saved by forward for backward
PRNGKey = jax.Array

__all__ = [
    "Array",
    "Cache",
    "DTypeError",
    "Layer",
    "Loss",
    "Params",
    "PRNGKey",
    "Shape",
    "ShapeError",
    "check_dtype_match",
    "check_float",
    "check_input",
    "check_param_dtype",
    "check_real",
    "is_concrete",
    "is_int",
    "prod",
    "shape_str",
    "shape_token",
    "token_shape",
]


class Layer(NamedTuple):
    """A layer: ``init``, ``forward``, hand-written ``backward`` and optional ``update_state``."""

    init: Callable[..., tuple[Shape, Params]]
    forward: Callable[..., tuple[Array, Cache]]
    backward: Callable[[Params, Cache, Array], tuple[Params, Array]]
    update_state: Callable[[Params, Cache], Params] | None = None


class Loss(NamedTuple):
    """A loss: ``forward(pred, target) -> (mean loss, cache)`` and ``backward(cache) -> dpred``."""

    forward: Callable[[Array, Array], tuple[Array, Cache]]
    backward: Callable[[Cache], Array]


class ShapeError(ValueError):
    """An array has the wrong shape for the layer or loss it is given to."""


class DTypeError(TypeError):
    """An array has a dtype the layer or loss cannot take (e.g. integers where floats are needed)."""


def shape_str(shape: Shape) -> str:
    """``(32, 50)`` for a shape, with a trailing comma only for 1-tuples, as Python prints them."""
    return str(tuple(int(d) for d in shape))


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values now (not a tracer inside ``jit``/``vmap``/``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def is_int(v: Any) -> bool:
    """True for a Python or NumPy integer that is not a bool (``3`` and ``np.int64(3)``, not ``True``)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_real(name: str, arg: str, value: Any) -> float:
    """``value`` as a float if it is a real number (Python or NumPy, not a bool); else ``TypeError``.

    Only the type is checked here (NaN and Inf pass); callers check the range, naming ``arg``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} needs {arg} to be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_float(name: str, x: Any, what: str = "input") -> None:
    """Raise :class:`DTypeError` unless ``x`` is a floating-point array."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise DTypeError(
            f"{name} needs a floating-point {what}, got dtype {dtype}; convert it first, e.g. x.astype(jnp.float32)"
        )


def check_param_dtype(name: str, dtype: Any) -> None:
    """Raise :class:`DTypeError` unless ``dtype`` (given to ``init``) is a floating-point dtype."""
    try:
        d = jnp.dtype(dtype)
    except TypeError:
        raise DTypeError(f"{name} init needs a floating-point dtype such as jnp.float32, got {dtype!r}") from None
    if not jnp.issubdtype(d, jnp.floating):
        raise DTypeError(f"{name} init needs a floating-point dtype for its parameters, got {d}")


def check_input(name: str, x: Any, expected: tuple, *, leading: str = "batch") -> None:
    """Check that ``x`` is a float array of shape ``(batch, *expected)``.

    ``expected`` may hold ``None`` for an axis of any size. With ``leading="..."`` any number
    (at least one) of leading axes is allowed instead of exactly one batch axis. The error reads,
    e.g., ``Dense(10) expected inputs (..., 64), got (32, 50)``.
    """
    shape = tuple(jnp.shape(x))
    dims = ", ".join("*" if d is None else str(d) for d in expected)
    want = f"({leading}, {dims})" if dims else f"({leading},)"
    n = len(expected)
    ok_rank = len(shape) == n + 1 if leading == "batch" else len(shape) >= n + 1
    tail = shape[len(shape) - n :] if n else ()
    if not ok_rank or any(e is not None and e != s for e, s in zip(expected, tail)):
        raise ShapeError(f"{name} expected inputs {want}, got {shape_str(shape)}")
    check_float(name, x)


def check_dtype_match(name: str, x: Any, param: Any) -> None:
    """Raise :class:`DTypeError` when ``x`` and a parameter differ in dtype (no silent up/downcast)."""
    xd, pd = jnp.result_type(x), jnp.result_type(param)
    if xd != pd:
        raise DTypeError(
            f"{name} got {xd} inputs but its parameters are {pd}; nothing is cast silently, so cast one "
            f"(e.g. x.astype(jnp.{pd}) or init the layer with dtype=jnp.{xd})"
        )


def shape_token(shape: Shape, dtype: Any = jnp.float32) -> Array:
    """A zero-size array whose shape carries ``shape``: a static fact a cache can hold for free."""
    return jnp.zeros(tuple(shape) + (0,), dtype)


def token_shape(token: Array) -> Shape:
    """The shape stored in a :func:`shape_token`."""
    return tuple(token.shape[:-1])


def prod(shape: Shape) -> int:
    """The number of elements of ``shape`` (1 for ``()``)."""
    return int(np.prod(shape, dtype=np.int64)) if shape else 1
