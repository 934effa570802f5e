"""Deep nets for the initialization study: shared weight draws, a scanned stack, per-layer traces.

* :func:`draw_shared` / :func:`assemble`: one weight draw per initializer, shared by every activation.
* :func:`repeat`: a Layer applying one block ``depth`` times with stacked params, forward and
  hand-written backward each one ``lax.scan`` (compile time independent of depth).
* :func:`mlp`: Dense+activation layers made of fnnet's layers and :func:`repeat`;
  :func:`trace_forward` / :func:`trace_backward` run the same layers' forward and backward rules
  over such a stack and return per-layer statistics instead of caches.
* :func:`init_eager`, :func:`safe_norm`: eager stacked initialization; an underflow-safe norm.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

import fnnet as fn
from experiments.initialization._init_util import act_layer, initializer, leaky_alpha
from fnnet.core import Array, Layer

# ----------------------------------------------------------------------------------------------
# weight draws shared by every activation


def draw_shared(inits: tuple[str, ...], acts: tuple[str, ...], keys: Array, d_in: int, width: int) -> dict:
    """One Dense(width) draw per initializer (leaky-He once per slope α), vmapped over seed ``keys``.

    Returns {name: params with leading (S,)}; leaky-He is keyed ``leaky_he@α``. Orthogonal draws are
    made one seed at a time (a batched QR is far slower on CPU than one LAPACK call per matrix).
    """
    out = {}
    names = [n for n in inits if n != "leaky_he"]
    if "leaky_he" in inits:
        names += [f"leaky_he@{a}" for a in sorted({leaky_alpha(a) for a in acts})]
    for name in names:
        base, _, alpha = name.partition("@")
        act = next((a for a in acts if alpha and leaky_alpha(a) == float(alpha)), "relu")
        d = fn.Dense(width, initializer(base, act))
        if base == "orthogonal":
            ps = [d.init(k, (d_in,))[1] for k in keys]
            out[name] = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ps)
        else:
            out[name] = jax.vmap(lambda k, d=d: d.init(k, (d_in,))[1])(keys)
    return out


def assemble(shared: dict, inits: tuple[str, ...], act: str) -> dict:
    """The params of activation ``act`` for every init, stacked (I, S, ...), from :func:`draw_shared`."""
    ps = [shared[f"leaky_he@{leaky_alpha(act)}"] if n == "leaky_he" else shared[n] for n in inits]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ps)


# ----------------------------------------------------------------------------------------------
# deep nets as one scan


def repeat(block: Layer, depth: int) -> Layer:
    """``block`` applied ``depth`` times with independent params stacked on a leading axis.

    Forward is one ``lax.scan`` of ``block.forward``; backward one reverse ``lax.scan`` of the
    block's hand-written ``backward`` (dx of layer l is the dy of layer l−1); caches and grads are
    stacked like the params. The block must keep its input shape.
    """

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        out_shape, _ = block.init(key, in_shape, dtype)
        if tuple(out_shape) != tuple(in_shape):
            raise ValueError(f"repeat needs a block that keeps its shape, got {in_shape} -> {out_shape}")
        params = jax.vmap(lambda k: block.init(k, tuple(in_shape), dtype)[1])(jax.random.split(key, depth))
        return tuple(in_shape), params

    def forward(params, x: Array, *, key=None, train=True):
        def step(h, inp):
            p, k = inp
            return block.forward(p, h, key=k, train=train)

        keys = None if key is None else jax.random.split(key, depth)
        if keys is None:
            return lax.scan(lambda h, p: block.forward(p, h, key=None, train=train), x, params)
        return lax.scan(step, x, (params, keys))

    def backward(params, caches, dy: Array):
        def step(g, inp):
            p, c = inp
            dp, dx = block.backward(p, c, g)
            return dx, dp

        dx, dparams = lax.scan(step, dy, (params, caches), reverse=True)
        return dparams, dx

    update_state = None
    if block.update_state is not None:
        update_state = jax.vmap(block.update_state)
    return Layer(init, forward, backward, update_state)


def mlp(width: int, depth: int, act: str, w_init, b_init=None, out_dim: int | None = None, out_init=None) -> Layer:
    """``depth`` hidden layers Dense(width) + φ (the last depth − 1 as one :func:`repeat`), then an
    optional Dense(out_dim) readout. Params: (first Dense, (), stack[, readout])."""
    layers = [fn.Dense(width, w_init, b_init), act_layer(act)]
    if depth > 1:
        layers.append(repeat(fn.serial(fn.Dense(width, w_init, b_init), act_layer(act)), depth - 1))
    if out_dim is not None:
        layers.append(fn.Dense(out_dim, out_init or w_init))
    return fn.serial(*layers)


def mlp_layers(params) -> tuple[dict, dict | None]:
    """(first Dense params, stacked Dense params of layers 2..depth or None) of :func:`mlp` params."""
    stack = params[2][0] if len(params) > 2 and isinstance(params[2], tuple) else None
    return params[0], stack


def trace_forward(act: str, first: dict, stack: dict | None, x: Array, keep: bool = False):
    """Run the layers' forward rules; per-layer stats (depth,) of z = hW + b and h = φ(z).

    Returns (h_L, stats, caches): stats ``qz`` = mean z², ``qh`` = mean h², ``mh`` = mean h;
    caches (only with ``keep``) = (first Dense, first act, stacked (Dense, act)) caches.
    """
    dense, phi = fn.Dense(first["W"].shape[1]), act_layer(act)

    def layer(h, p):
        z, cd = dense.forward(p, h)
        h, ca = phi.forward((), z)
        stats = {"qz": jnp.mean(z * z), "qh": jnp.mean(h * h), "mh": jnp.mean(h)}
        return h, stats, ((cd, ca) if keep else ())

    h, s0, c0 = layer(x, first)
    if stack is None:
        return h, jax.tree_util.tree_map(lambda a: a[None], s0), (c0, None)

    def step(h, p):
        h, s, c = layer(h, p)
        return h, (s, c)

    h, (s, cs) = lax.scan(step, h, stack)
    stats = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), s0, s)
    return h, stats, (c0, cs)


def trace_backward(act: str, first: dict, stack: dict | None, caches, dh: Array):
    """The layers' hand-written backward from dL/dh_L = ``dh``; per-layer stats (depth,).

    ``qdz`` = mean (∂L/∂z)², ``qdh`` = mean (∂L/∂h)² (the gradient arriving at h_l), ``qdw`` =
    mean (∂L/∂W_l)², ``ndw`` = ‖∂L/∂W_l‖_F. Returns (∂L/∂x, stats).
    """
    dense, phi = fn.Dense(first["W"].shape[1]), act_layer(act)
    c0, cs = caches

    def layer(dh, p, c):
        cd, ca = c
        _, dz = phi.backward((), ca, dh)
        dp, dh_prev = dense.backward(p, cd, dz)
        s = {"qdz": jnp.mean(dz * dz), "qdh": jnp.mean(dh * dh), "qdw": jnp.mean(dp["W"] ** 2)}
        s["ndw"] = jnp.sqrt(jnp.sum(dp["W"] ** 2))
        return dh_prev, s

    ss = None
    if stack is not None:
        dh, ss = lax.scan(lambda g, inp: layer(g, *inp), dh, (stack, cs), reverse=True)
    dx, s0 = layer(dh, first, c0)
    if ss is None:
        return dx, jax.tree_util.tree_map(lambda a: a[None], s0)
    return dx, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), s0, ss)


# ----------------------------------------------------------------------------------------------
# small helpers


def init_eager(layer: Layer, in_shape: tuple[int, ...], keys: Array):
    """Params of one model per key, stacked on a leading axis, initialized eagerly (not under jit).

    Eager initialization reuses the per-shape compiled RNG primitives across calls and experiments;
    a jitted or vmapped init compiles every layer's RNG afresh, which costs seconds on CPU.
    """
    from fnnet.sweeps import stack

    return stack([layer.init(k, tuple(in_shape))[1] for k in keys])


def safe_norm(g: Array, axis: tuple[int, ...]) -> Array:
    """sqrt(Σ g²) over ``axis``, computed as m·sqrt(Σ (g/m)²) with m = max |g| so tiny values do not underflow."""
    m = jnp.max(jnp.abs(g), axis=axis, keepdims=True)
    m = jnp.where(m > 0, m, jnp.ones_like(m))
    r = g / m
    return jnp.sqrt(jnp.sum(r * r, axis=axis)) * jnp.squeeze(m, axis=axis)
