"""Gradients of a Layer + Loss: the manual path, its autodiff twin, and the bridges into JAX's transforms.

Two bridges, one per mode, since JAX gives a function either a custom JVP or a custom VJP, not both:

* :func:`custom_vjp` (reverse mode): ``jax.grad``, ``jax.vjp`` and ``jax.jacrev`` run the layer's
  hand-written ``backward``. ``jax.jvp``, ``jax.jacfwd`` and ``jax.linearize`` through it fail with
  JAX's own error ("can't apply forward-mode autodiff (jvp) to a custom_vjp function"): use the other
  bridge for them.
* :func:`custom_jvp` (forward mode): ``jax.jvp``, ``jax.jacfwd`` and ``jax.linearize`` run the layer's
  hand-written ``jvp``. ``jax.grad`` through it works too, but by JAX *transposing the hand-written JVP*
  (the forward rule's linear part, read backwards), not by running ``backward``.

All three have the signature ``f(params, x, target, *, key=None, train=True, mask=None)`` and return
``(loss, grads)``, or ``((loss, (pred, cache)), grads)`` with ``has_aux=True`` (the cache feeds
``layer.update_state``). They are pure, so they jit and vmap; vmapping over examples, each given a
batch axis of 1, yields per-example gradients::

    per_ex = jax.vmap(fn.value_and_grad(net, fn.mse), in_axes=(None, 0, 0))(params, x[:, None], y[:, None])

``mask`` (a boolean key-padding mask, True = attend) goes to the layer's forward when the layer takes
one (:func:`fnnet.core.takes_mask`); giving it to a layer that takes none is a TypeError. It is data:
it gets no gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fnnet.core import Array, Layer, Loss, mask_kwargs

__all__ = [
    "GRAD_SOURCES",
    "autodiff_value_and_grad",
    "custom_jvp",
    "custom_jvp_loss",
    "custom_vjp",
    "custom_vjp_loss",
    "custom_vjp_value_and_grad",
    "value_and_grad",
]


def _check_pair(layer: Layer, loss: Loss) -> None:
    if not isinstance(layer, Layer):
        raise TypeError(f"expected a fnnet Layer, got {type(layer).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"expected a fnnet Loss such as fn.mse, got {type(loss).__name__}")


def value_and_grad(layer: Layer, loss: Loss, *, has_aux: bool = False) -> Callable:
    """The manual path: forward, loss, loss backward, then the layer's hand-written backward.

    No autodiff is involved: grads = layer.backward(params, cache, loss.backward(loss_cache)).
    """
    _check_pair(layer, loss)

    def f(params, x: Array, target: Array, *, key=None, train=True, mask=None):
        pred, cache = layer.forward(params, x, key=key, train=train, **mask_kwargs(layer, mask))
        value, loss_cache = loss.forward(pred, target)
        grads, _ = layer.backward(params, cache, loss.backward(loss_cache))
        return ((value, (pred, cache)), grads) if has_aux else (value, grads)

    return f


def autodiff_value_and_grad(layer: Layer, loss: Loss, *, has_aux: bool = False) -> Callable:
    """The same function through ``jax.value_and_grad`` of the very same forward code."""
    _check_pair(layer, loss)

    def objective(params, x, target, key, train, mask):
        pred, cache = layer.forward(params, x, key=key, train=train, **mask_kwargs(layer, mask))
        value, _ = loss.forward(pred, target)
        return value, (pred, cache)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def f(params, x: Array, target: Array, *, key=None, train=True, mask=None):
        (value, aux), grads = grad_fn(params, x, target, key, train, mask)
        return ((value, aux), grads) if has_aux else (value, grads)

    return f


def custom_vjp(layer: Layer, *, train: bool = True, has_aux: bool = False) -> Callable:
    """A JAX function ``(params, x, key=None, mask=None) -> y`` whose VJP is the layer's hand-written rule.

    ``jax.grad`` (or ``jax.vjp``) through it runs ``layer.backward``; research code can mix fnnet
    layers with its own JAX code and still exercise the manual rules.

    ``has_aux=True`` returns ``(y, cache)`` instead, the forward's cache as an auxiliary output that
    no gradient flows through (its cotangent is ignored), so a layer with state is updated from the
    same forward, as on the manual path — with ``jax.value_and_grad(..., has_aux=True)``::

        f = fn.custom_vjp(net, has_aux=True)

        def objective(params, x, target):
            pred, cache = f(params, x)
            return loss_fn(pred, target), cache

        (loss, cache), grads = jax.value_and_grad(objective, has_aux=True)(params, x, target)
        params = optax.apply_updates(params, updates)                        # from grads
        params = net.update_state(params, cache)                             # BatchNorm statistics
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"custom_vjp expected a fnnet Layer, got {type(layer).__name__}")

    @jax.custom_vjp
    def f(params, x, key=None, mask=None):
        y, cache = layer.forward(params, x, key=key, train=train, **mask_kwargs(layer, mask))
        return (y, cache) if has_aux else y

    def fwd(params, x, key=None, mask=None):
        y, cache = layer.forward(params, x, key=key, train=train, **mask_kwargs(layer, mask))
        return ((y, cache) if has_aux else y), (params, cache)

    def bwd(res, out_bar):
        params, cache = res
        dy = out_bar[0] if has_aux else out_bar  # the cache's cotangent is ignored: it is not differentiated
        dparams, dx = layer.backward(params, cache, dy)
        return dparams, dx, None, None  # the key and the mask get no gradient

    f.defvjp(fwd, bwd)
    return f


def custom_vjp_loss(loss: Loss) -> Callable:
    """A JAX function ``(pred, target) -> loss`` whose VJP is the loss's fused hand-written rule."""

    @jax.custom_vjp
    def f(pred, target):
        return loss.forward(pred, target)[0]

    def fwd(pred, target):
        value, cache = loss.forward(pred, target)
        return value, cache

    def bwd(cache, g):
        return g * loss.backward(cache), None

    f.defvjp(fwd, bwd)
    return f


def custom_vjp_value_and_grad(layer: Layer, loss: Loss, *, has_aux: bool = False) -> Callable:
    """``jax.value_and_grad`` through :func:`custom_vjp` and :func:`custom_vjp_loss`: the third source.

    With ``has_aux=True`` the cache comes from the very forward the gradient was taken through
    (``custom_vjp(..., has_aux=True)``), not from a second forward.
    """
    _check_pair(layer, loss)
    loss_fn = custom_vjp_loss(loss)
    fs = {t: custom_vjp(layer, train=t, has_aux=True) for t in (True, False)}

    def objective(params, x, target, key, train, mask):
        pred, cache = fs[train](params, x, key, mask)
        return loss_fn(pred, target), (pred, cache)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def f(params, x: Array, target: Array, *, key=None, train=True, mask=None):
        mask_kwargs(layer, mask)  # a mask for a layer that takes none: TypeError, before tracing
        (value, aux), grads = grad_fn(params, x, target, key, train, mask)
        return ((value, aux), grads) if has_aux else (value, grads)

    return f


def _symbolic_zero(t) -> bool:
    return isinstance(t, jax.custom_derivatives.SymbolicZero)


def _instantiate(t, like):
    """A tangent as an array: JAX's symbolic zero made concrete (zeros of the primal's shape and dtype)."""
    return jax.tree_util.tree_map(
        lambda ti, p: jnp.zeros(jnp.shape(p), jnp.result_type(p)) if _symbolic_zero(ti) else ti,
        t,
        like,
        is_leaf=_symbolic_zero,
    )


def custom_jvp(layer: Layer, *, train: bool = True) -> Callable:
    """A JAX function ``(params, x, key=None, mask=None) -> y`` whose JVP is the layer's hand-written rule.

    ``jax.jvp``, ``jax.jacfwd`` and ``jax.linearize`` through it run ``layer.jvp`` (forward mode by hand;
    see the module docstring for which bridge serves which mode)::

        f = fn.custom_jvp(net)
        y, dy = jax.jvp(lambda p: f(p, x), (params,), (dparams,))  # net.jvp, dx = 0
        J = jax.jacfwd(f, argnums=1)(params, x)  # column by column

    ``jax.grad`` through it also works: JAX transposes the linear part of ``layer.jvp``, so the gradient
    comes from the forward rule, not from ``layer.backward`` (use :func:`custom_vjp` for that).

    An integer ``x`` (token ids) gets no tangent: the rule is given ``dx=None``. ``key`` and ``mask`` are
    data: a tangent for either is ignored. A layer without a forward rule (``layer.jvp is None``) is a
    TypeError naming it.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"custom_jvp expected a fnnet Layer, got {type(layer).__name__}")
    if layer.jvp is None:
        raise TypeError(
            f"{layer.label} has no hand-written forward-mode rule (layer.jvp is None), so custom_jvp cannot "
            "run it; give the Layer a jvp, or use fn.custom_vjp for reverse mode"
        )

    @jax.custom_jvp
    def f(params, x, key=None, mask=None):
        return layer.forward(params, x, key=key, train=train, **mask_kwargs(layer, mask))[0]

    def rule(primals, tangents):
        params, x, key, mask = primals
        dparams = _instantiate(tangents[0], params)
        integer = not jnp.issubdtype(jnp.result_type(x), jnp.inexact)
        dx = None if integer else _instantiate(tangents[1], x)
        return layer.jvp(params, x, dparams, dx, key=key, train=train, **mask_kwargs(layer, mask))

    f.defjvp(rule, symbolic_zeros=True)
    return f


def custom_jvp_loss(loss: Loss) -> Callable:
    """A JAX function ``(pred, target) -> loss`` whose JVP is the loss's hand-written ``loss.jvp``.

    The target is data: a tangent for it is a ValueError (the rule differentiates in ``pred`` only).
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"custom_jvp_loss expected a fnnet Loss such as fn.mse, got {type(loss).__name__}")
    if loss.jvp is None:
        raise TypeError("this Loss has no hand-written forward-mode rule (loss.jvp is None)")

    @jax.custom_jvp
    def f(pred, target):
        return loss.forward(pred, target)[0]

    def rule(primals, tangents):
        pred, target = primals
        if not _symbolic_zero(tangents[1]):
            raise ValueError(
                "custom_jvp_loss differentiates the loss in pred only; the target got a tangent (it is data: "
                "close over it, or pass it as a constant)"
            )
        return loss.jvp(pred, target, _instantiate(tangents[0], pred))

    f.defjvp(rule, symbolic_zeros=True)
    return f


GRAD_SOURCES = {
    "manual": value_and_grad,
    "autodiff": autodiff_value_and_grad,
    "custom_vjp": custom_vjp_value_and_grad,
}
