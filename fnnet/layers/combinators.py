"""Combinators that build Layers from Layers: ``serial`` and ``residual``.

Their names list the children: ``serial(Dense(64), Relu, Dense(10))``, ``residual(Dense(8))``;
:func:`parts` gives the children themselves (what :func:`fnnet.summary` recurses into).

An error a child raises (its params do not fit, its input has the wrong shape) is re-raised with the
child's place in front, of the same type: ``serial layer 2, Dense(10): params['b'] has shape (5,),
expected (10,)``; ``residual branch, ...`` for the F of a residual. Nested combinators stack their
prefixes, outermost first.

Both compose their children's forward-mode rules (``jvp``) too; a combinator with a child whose ``jvp``
is None has ``jvp`` None itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fnnet.core import Array, Layer, ShapeError, annotate, mark_takes_mask, mask_kwargs, shape_str, takes_mask


def _split(key: Array | None, n: int) -> list[Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


def _inside(where: str, f: Callable, *args, **kwargs):
    """``f(*args, **kwargs)``; a ValueError/TypeError (fnnet's errors included) gets ``where`` in front."""
    try:
        return f(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise annotate(e, f"{where}, ") from None


def serial(*layers: Layer) -> Layer:
    """Compose layers left to right: y = f_n(... f_2(f_1(x))).

    ``init`` and ``forward`` split their key among the children (as ``stax.serial`` does).
    Backward runs the children's rules in reverse, feeding each one's dx to the one before:
        dx_{i-1} = backward_i(params_i, cache_i, dx_i),   dx_n = dy.
    Params, grads and caches are tuples with one entry per child. The rule is exact wherever each
    child's is (the chain rule adds no assumption). Params that are not a tuple/list are a TypeError,
    one of the wrong length a ValueError; a child's own error gets ``serial layer i, `` in front
    (i counts from 0, as ``params[i]``), keeping its type.

    ``forward(..., mask=mask)`` hands a key-padding mask to the children that take one
    (:func:`fnnet.core.takes_mask`); a serial takes a mask when any child does.

    Forward mode (JVP)::

        (x_i, dx_i) = jvp_i(params_i, x_{i-1}, dparams_i, dx_{i-1}),   (x_0, dx_0) = (x, dx),   (y, dy) = (x_n, dx_n)

    with the key split among the children as ``forward`` splits it (so a Dropout draws the same mask)
    and the mask handed to the same children; ``dparams`` is a tuple like ``params`` (checked alike).
    ``jvp`` is None when a child's is.
    """
    if not layers:
        raise ValueError("serial needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"serial got {type(layer).__name__} as layer {i}; pass Layers such as fn.Dense(64), "
                f"and call constructors (fn.Relu(), not fn.Relu)"
            )
    where = [f"serial layer {i}" for i in range(len(layers))]

    def check_params(params: Any, what: str = "params") -> None:
        if not isinstance(params, (tuple, list)):
            raise TypeError(
                f"serial of {len(layers)} layers needs {what} as a tuple with one entry per layer (as its init "
                f"returns), got {type(params).__name__}"
            )
        if len(params) != len(layers):
            raise ValueError(
                f"serial of {len(layers)} layers needs {what} with one entry per layer (as its init returns), "
                f"got {len(params)} entries"
            )

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        params = []
        shape = tuple(in_shape)
        for i, (layer, k) in enumerate(zip(layers, _split(key, len(layers)))):
            shape, p = _inside(where[i], layer.init, k, shape, dtype)
            params.append(p)
        return shape, tuple(params)

    masked = [takes_mask(layer) for layer in layers]

    label = f"serial({', '.join(c.label for c in layers)})"

    def forward(params, x: Array, *, key=None, train=True, mask=None):
        if mask is not None and not any(masked):
            raise TypeError(f"{label} takes no mask: none of its layers uses one; call it without mask=")
        check_params(params)
        caches = []
        for i, (layer, p, k) in enumerate(zip(layers, params, _split(key, len(layers)))):
            kw = {"mask": mask} if masked[i] and mask is not None else {}
            x, c = _inside(where[i], layer.forward, p, x, key=k, train=train, **kw)
            caches.append(c)
        return x, tuple(caches)

    if any(masked):
        forward = mark_takes_mask(forward)

    def backward(params, caches, dy: Array):
        check_params(params)
        check_params(caches, "caches")
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            grads[i], dy = _inside(where[i], layers[i].backward, params[i], caches[i], dy)
        return tuple(grads), dy

    update_state = None
    if any(layer.update_state is not None for layer in layers):

        def update_state(params, caches):
            check_params(params)
            check_params(caches, "caches")
            return tuple(
                p if layer.update_state is None else _inside(w, layer.update_state, p, c)
                for w, layer, p, c in zip(where, layers, params, caches)
            )

    jvp = None
    if all(layer.jvp is not None for layer in layers):

        def jvp(params, x: Array, dparams, dx: Array | None, *, key=None, train=True, mask=None):
            if mask is not None and not any(masked):
                raise TypeError(f"{label} takes no mask: none of its layers uses one; call it without mask=")
            check_params(params)
            check_params(dparams, "dparams")
            for i, (layer, p, dp, k) in enumerate(zip(layers, params, dparams, _split(key, len(layers)))):
                kw = {"mask": mask} if masked[i] and mask is not None else {}
                x, dx = _inside(where[i], layer.jvp, p, x, dp, dx, key=k, train=train, **kw)
            return x, dx

    init.parts = ("serial", tuple(layers))  # for fnnet.summary: the children, in order
    return Layer(init, forward, backward, update_state, jvp=jvp, name=label)


def parts(layer: Layer) -> tuple[str, tuple[Layer, ...]] | None:
    """``("serial", children)`` or ``("residual", (F,))`` for a layer these combinators built, else None."""
    return getattr(layer.init, "parts", None)


def residual(layer: Layer) -> Layer:
    """y = x + F(x). Backward: dx = dy + dx_F, where (dθ, dx_F) = F.backward(θ, cache, dy).

    Exact wherever F's rule is. Params are F's own; an error F raises gets ``residual branch, `` in
    front, keeping its type. ``forward(..., mask=mask)`` hands a mask to F when F takes one.

    Forward mode (JVP)::

        y = x + F(x),   dy = dx + dF,   where (F(x), dF) = F.jvp(θ, x, dθ, dx)

    ``jvp`` is None when F's is.
    """
    if not isinstance(layer, Layer):
        raise TypeError(
            f"residual got {type(layer).__name__}; pass a Layer such as fn.Dense(64) (a called constructor)"
        )
    where = "residual branch"

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        out_shape, params = _inside(where, layer.init, key, in_shape, dtype)
        if tuple(out_shape) != tuple(in_shape):
            raise ShapeError(
                f"residual needs F to keep the shape, but F maps {shape_str(in_shape)} to {shape_str(out_shape)}"
            )
        return tuple(in_shape), params

    def forward(params, x: Array, *, key=None, train=True, mask=None):
        kw = mask_kwargs(layer, mask)  # a mask for an F that takes none: TypeError
        fx, cache = _inside(where, layer.forward, params, x, key=key, train=train, **kw)
        if fx.shape != x.shape:
            raise ShapeError(
                f"residual needs F to keep the shape, but F maps {shape_str(x.shape)} to {shape_str(fx.shape)}"
            )
        return x + fx, cache

    def backward(params, cache, dy: Array):
        dparams, dx = _inside(where, layer.backward, params, cache, dy)
        return dparams, dy + dx

    jvp = None
    if layer.jvp is not None:

        def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True, mask=None):
            kw = mask_kwargs(layer, mask)  # a mask for an F that takes none: TypeError
            fx, dfx = _inside(where, layer.jvp, params, x, dparams, dx, key=key, train=train, **kw)
            if fx.shape != x.shape:
                raise ShapeError(
                    f"residual needs F to keep the shape, but F maps {shape_str(x.shape)} to {shape_str(fx.shape)}"
                )
            return x + fx, dx + dfx

    if takes_mask(layer):
        forward = mark_takes_mask(forward)

    update_state = None
    if layer.update_state is not None:

        def update_state(params, cache):
            return _inside(where, layer.update_state, params, cache)

    init.parts = ("residual", (layer,))  # for fnnet.summary
    return Layer(init, forward, backward, update_state, jvp=jvp, name=f"residual({layer.label})")
