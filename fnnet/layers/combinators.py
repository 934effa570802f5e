"""Combinators that build Layers from Layers: ``serial`` and ``residual``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fnnet.core import Array, Layer, ShapeError, shape_str


def _split(key: Array | None, n: int) -> list[Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


def serial(*layers: Layer) -> Layer:
    """Compose layers left to right: y = f_n(... f_2(f_1(x))).

    ``init`` and ``forward`` split their key among the children (as ``stax.serial`` does).
    Backward runs the children's rules in reverse, feeding each one's dx to the one before:
        dx_{i-1} = backward_i(params_i, cache_i, dx_i),   dx_n = dy.
    Params, grads and caches are tuples with one entry per child.
    """
    if not layers:
        raise ValueError("serial needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"serial got {type(layer).__name__} as layer {i}; pass Layers such as fn.Dense(64), "
                f"and call constructors (fn.Relu(), not fn.Relu)"
            )

    def check_params(params: Any, what: str = "params") -> None:
        if not isinstance(params, (tuple, list)) or len(params) != len(layers):
            got = f"{len(params)} entries" if isinstance(params, (tuple, list)) else type(params).__name__
            raise ValueError(
                f"serial of {len(layers)} layers needs {what} with one entry per layer (as its init returns), got {got}"
            )

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        params = []
        shape = tuple(in_shape)
        for layer, k in zip(layers, _split(key, len(layers))):
            shape, p = layer.init(k, shape, dtype)
            params.append(p)
        return shape, tuple(params)

    def forward(params, x: Array, *, key=None, train=True):
        check_params(params)
        caches = []
        for layer, p, k in zip(layers, params, _split(key, len(layers))):
            x, c = layer.forward(p, x, key=k, train=train)
            caches.append(c)
        return x, tuple(caches)

    def backward(params, caches, dy: Array):
        check_params(params)
        check_params(caches, "caches")
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            grads[i], dy = layers[i].backward(params[i], caches[i], dy)
        return tuple(grads), dy

    update_state = None
    if any(layer.update_state is not None for layer in layers):

        def update_state(params, caches):
            return tuple(
                p if layer.update_state is None else layer.update_state(p, c)
                for layer, p, c in zip(layers, params, caches)
            )

    return Layer(init, forward, backward, update_state)


def residual(layer: Layer) -> Layer:
    """y = x + F(x). Backward: dx = dy + dx_F, where (dθ, dx_F) = F.backward(θ, cache, dy)."""

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        out_shape, params = layer.init(key, in_shape, dtype)
        if tuple(out_shape) != tuple(in_shape):
            raise ShapeError(
                f"residual needs F to keep the shape, but F maps {shape_str(in_shape)} to {shape_str(out_shape)}"
            )
        return tuple(in_shape), params

    def forward(params, x: Array, *, key=None, train=True):
        fx, cache = layer.forward(params, x, key=key, train=train)
        if fx.shape != x.shape:
            raise ShapeError(
                f"residual needs F to keep the shape, but F maps {shape_str(x.shape)} to {shape_str(fx.shape)}"
            )
        return x + fx, cache

    def backward(params, cache, dy: Array):
        dparams, dx = layer.backward(params, cache, dy)
        return dparams, dy + dx

    return Layer(init, forward, backward, layer.update_state)
