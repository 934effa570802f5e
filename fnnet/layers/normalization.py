"""BatchNorm and LayerNorm: normalize, then scale by γ and shift by β, with the compact backward; RMSNorm.

RMSNorm (last section) rescales by the root mean square alone, without centring or shift.

Both compute, over a set of m entries that share a mean (the reduced axes),
    μ = (1/m) Σ x,   σ² = (1/m) Σ (x − μ)²   (biased: divided by m),
    x̂ = (x − μ) / √(σ² + ε),   y = γ ⊙ x̂ + β,
and both use the compact backward (Ioffe & Szegedy 2015, sec. 3, simplified), with dx̂ = dy ⊙ γ:
    dγ = Σ dy ⊙ x̂,   dβ = Σ dy   (sums over every axis but the features),
    dx = (1 / (m √(σ² + ε))) · (m dx̂ − Σ dx̂ − x̂ Σ (dx̂ ⊙ x̂))   (sums over the m entries).

BatchNorm reduces over every axis but the last (the batch of a Dense input; batch and space of an
NHWC image); LayerNorm reduces over the last axis of each example (Ba et al. 2016).

The domain of the rule: it is the exact VJP of the forward above for every input, because ε > 0
keeps √(σ² + ε) smooth and away from 0. In particular, where the m entries are all equal (a
constant feature over the batch for BatchNorm, a constant row or a single feature d = 1 for
LayerNorm), σ² = 0, x̂ = 0 (up to the rounding of μ), 1/√(σ² + ε) = 1/√ε, and the rule gives
dx = (1/√ε)(dx̂ − mean dx̂) — what ``jax.grad`` of the forward gives too (pinned by fnnet's tests).
Without ε the forward would divide 0 by 0 there. With m = 2 (the least BatchNorm trains with),
x̂ = ±√(σ²/(σ² + ε)) and dx = ±½(dx̂₁ − dx̂₂) ε/(σ² + ε)^{3/2}, tiny and computed as a difference of
nearly equal terms, conditioned like (σ² + ε)/ε: in float32 its relative error is of order
2⁻²⁴ (σ² + ε)/ε for this rule and ``jax.grad`` alike (measured against float64: 1e-4 to 1e-3 on
unit-variance inputs), a property of the function, not of the rule.

Forward mode (JVP): with dσ² = 2 mean((x − μ) dx) and d(1/√(σ² + ε)) = −½ (σ² + ε)^{-3/2} dσ²::

    dx̂ = (1/√(σ² + ε)) (dx − mean dx − x̂ mean(x̂ ⊙ dx)),   dy = dγ ⊙ x̂ + γ ⊙ dx̂ + dβ.

The Jacobian of x ↦ x̂ is the symmetric matrix (1/√(σ² + ε))(I − 𝟙𝟙ᵀ/m − x̂x̂ᵀ/m), so the tangent
map is the backward's own map applied to dx (``_normalize_backward``): the two rules are transposes
of each other by construction, and finite, with the same special cases (σ² = 0: dx̂ = (dx − mean dx)/√ε).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from fnnet.core import (
    STATE_KEY,
    Array,
    Layer,
    ShapeError,
    check_dtype_match,
    check_input,
    check_no_params,
    check_param_dtype,
    check_params,
    check_real,
    check_tangent,
    shape_str,
)


def _check_eps(name: str, eps: float) -> float:
    v = check_real(name, "eps", eps)
    if not 0 < v < float("inf"):
        raise ValueError(f"{name} needs eps > 0 (and finite), got {eps}")
    return v


def _row(v: Array, ndim: int) -> Array:
    """A (C,) vector shaped to broadcast over the last axis of a rank-``ndim`` array."""
    return jnp.reshape(v, (1,) * (ndim - 1) + (-1,))


def _normalize(x: Array, axes: tuple[int, ...], eps: float) -> tuple[Array, Array, Array, Array]:
    """(x̂, 1/√(σ² + ε), μ, σ²) over ``axes``, with keepdims so they broadcast against x."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = jnp.mean(centered * centered, axis=axes, keepdims=True)
    inv = 1.0 / jnp.sqrt(var + eps)
    return centered * inv, inv, mean, var


def _normalize_backward(xhat: Array, inv: Array, dxhat: Array, axes: tuple[int, ...]) -> Array:
    """dx = (inv/m)(m dx̂ − Σ dx̂ − x̂ Σ dx̂ ⊙ x̂), the sums over the m entries of ``axes``.

    Computed in the equal mean form inv · (dx̂ − mean dx̂ − x̂ · mean(dx̂ ⊙ x̂)): with m and inv/m
    inside the fused elementwise op, XLA's CPU backend wrote out full (B, C) broadcasts of them,
    and the step's temporary memory rose above autodiff's (``benchmarks/proposals.py bn``).
    """
    s1 = jnp.mean(dxhat, axis=axes, keepdims=True)
    s2 = jnp.mean(dxhat * xhat, axis=axes, keepdims=True)
    return inv * (dxhat - s1 - xhat * s2)


def _affine_tangent(gamma: Array, xhat: Array, dgamma: Array, dxhat: Array, dbeta: Array | None) -> Array:
    """dy = dγ ⊙ x̂ + γ ⊙ dx̂ (+ dβ), the (C,) vectors broadcast over the last axis."""
    n = xhat.ndim
    dy = _row(dgamma, n) * xhat + _row(gamma, n) * dxhat
    return dy if dbeta is None else dy + _row(dbeta, n)


def _affine_grads(xhat: Array, dy: Array) -> tuple[Array, Array]:
    """(dγ, dβ) = (Σ dy ⊙ x̂, Σ dy) over every axis but the last."""
    axes = tuple(range(dy.ndim - 1))
    return jnp.sum(dy * xhat, axis=axes), jnp.sum(dy, axis=axes)


def BatchNorm(momentum: float = 0.9, eps: float = 1e-5) -> Layer:
    """Batch normalization over every axis but the last (features): x (B, ..., C) -> y of the same shape.

    params = {"gamma": (C,) = 1, "beta": (C,) = 0, "state": {"mean": (C,) = 0, "var": (C,) = 1}}; ``mean``
    and ``var`` are the running statistics, non-trainable buffers kept in params under ``"state"``, the
    key every fnnet layer keeps its buffers under (:data:`fnnet.core.STATE_KEY`). A sub-dict rather
    than a marker type: params stay a plain pytree of dicts and arrays (jit, vmap, optax and
    checkpoints take them as they are), and the buffers are still recognizable from params alone, so
    ``fn.optim.trainable_mask(params)`` (False on them) serves as optax's ``mask=`` and
    ``fn.optim.add_weight_decay`` spares them by default.

    * ``train=True``: normalizes with the batch statistics μ_B and the **biased** σ²_B (÷ m, m = the
      number of entries per feature, B·H·W for images). The running buffers are not read; their
      gradient is 0. Needs m ≥ 2 (a ShapeError otherwise): a batch of 1 works in training only
      with spatial axes (m = H·W), and always with ``train=False``. A constant feature (σ²_B = 0)
      is handled by ε (module docstring).
    * ``train=False``: normalizes with the running ``mean`` and ``var``: x̂ = (x − mean)/√(var + ε).
    * ``update_state(params, cache)`` (after a training forward) returns new params with
          state.mean ← momentum · mean + (1 − momentum) · μ_B,
          state.var  ← momentum · var  + (1 − momentum) · σ²_B · m/(m − 1)   (**unbiased**, as PyTorch);
      γ, β unchanged. After an evaluation forward it returns params unchanged. momentum = 0.9 is
      PyTorch's default (its ``momentum=0.1`` weighs the *new* batch); ε = 1e-5 as PyTorch and flax.

    Backward, training (compact form; module docstring): dγ = Σ dy x̂, dβ = Σ dy,
        dx = (1/(m√(σ²_B + ε)))(m dx̂ − Σ dx̂ − x̂ Σ dx̂ x̂),   dx̂ = dy γ,   d mean = d var = 0
    (the buffers' gradient, ``grads["state"]``, is exactly 0).
    Backward, evaluation (the statistics are constants of x): dγ = Σ dy x̂, dβ = Σ dy,
        dx = dy γ / √(var + ε),   d mean = −Σ dx,   d var = −½ (var + ε)^{-1} Σ dx̂ x̂ / √(var + ε).

    Forward mode (JVP), dy = dγ ⊙ x̂ + γ ⊙ dx̂ + dβ with, in training (batch statistics; the buffers do
    not enter y, so their tangent is ignored)::

        dx̂ = (dx − mean dx − x̂ mean(x̂ ⊙ dx)) / √(σ²_B + ε)      (means over the m entries)

    and in evaluation (running statistics, whose tangent enters)::

        dx̂ = (dx − d mean) / √(var + ε) − x̂ ⊙ d var / (2 (var + ε))

    Params: ``{"gamma", "beta", "state": {"mean", "var"}}``, each leaf (C,) of one floating dtype;
    anything else (the flat layout ``{"gamma", "beta", "mean", "var"}`` of fnnet before buffers moved
    under ``"state"`` included) is refused while tracing, naming the leaf.

    References: Ioffe & Szegedy 2015, Algorithm 1-2 (training and inference); PyTorch's
    ``BatchNorm`` docs (unbiased running variance).
    """
    if not 0 <= check_real("BatchNorm", "momentum", momentum) < 1:
        raise ValueError(f"BatchNorm needs 0 <= momentum < 1, got {momentum}")
    eps = _check_eps("BatchNorm", eps)
    name = "BatchNorm()"
    spec = {"gamma": ("C",), "beta": ("C",), STATE_KEY: {"mean": ("C",), "var": ("C",)}}

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        del key
        if len(in_shape) < 1:
            raise ShapeError(f"{name} needs inputs with a feature axis, got shape {shape_str(in_shape)}")
        check_param_dtype(name, dtype)
        c = in_shape[-1]
        params = {
            "gamma": jnp.ones((c,), dtype),
            "beta": jnp.zeros((c,), dtype),
            STATE_KEY: {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)},
        }
        return tuple(in_shape), params

    def forward(params, x: Array, *, key=None, train=True):
        del key
        check_params(name, params, spec)
        gamma = params["gamma"]
        check_input(name, x, (gamma.shape[0],), leading="...")
        check_dtype_match(name, x, gamma)
        axes = tuple(range(x.ndim - 1))
        if train:
            m = x.size // gamma.shape[0]
            if m < 2:
                raise ShapeError(
                    f"{name} in training needs at least 2 values per feature to estimate a variance, "
                    f"got inputs of shape {shape_str(x.shape)}; use train=False or a larger batch"
                )
            xhat, inv, mean, var = _normalize(x, axes, eps)
            cache = {
                "xhat": xhat,
                "inv": inv,
                "batch_mean": jnp.reshape(mean, (-1,)),
                "batch_var": jnp.reshape(var, (-1,)),
            }
        else:
            stats = params[STATE_KEY]
            inv = _row(1.0 / jnp.sqrt(stats["var"] + eps), x.ndim)
            xhat = (x - _row(stats["mean"], x.ndim)) * inv
            cache = {"xhat": xhat, "inv": inv}
        return _row(gamma, x.ndim) * xhat + _row(params["beta"], x.ndim), cache

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, cache = forward(params, x, key=key, train=train)
        check_tangent(name, "dparams", dparams, params, "params")
        check_tangent(name, "dx", dx, x, "x")
        xhat, inv = cache["xhat"], cache["inv"]
        if train:
            dxhat = _normalize_backward(xhat, inv, dx, tuple(range(x.ndim - 1)))  # symmetric: module docstring
        else:
            dstats = dparams[STATE_KEY]
            dxhat = (dx - _row(dstats["mean"], x.ndim)) * inv - xhat * (0.5 * inv * inv) * _row(dstats["var"], x.ndim)
        return y, _affine_tangent(params["gamma"], xhat, dparams["gamma"], dxhat, dparams["beta"])

    def backward(params, cache, dy: Array):
        check_params(name, params, spec)
        xhat, inv = cache["xhat"], cache["inv"]
        dgamma, dbeta = _affine_grads(xhat, dy)
        dxhat = dy * _row(params["gamma"], dy.ndim)
        axes = tuple(range(dy.ndim - 1))
        if "batch_mean" in cache:  # training
            dx = _normalize_backward(xhat, inv, dxhat, axes)
            dmean, dvar = jnp.zeros_like(params[STATE_KEY]["mean"]), jnp.zeros_like(params[STATE_KEY]["var"])
        else:
            dx = dxhat * inv
            dmean = -jnp.sum(dx, axis=axes)
            inv_c = jnp.reshape(inv, (-1,))
            dvar = -0.5 * inv_c * inv_c * jnp.sum(dxhat * xhat, axis=axes)
        return {"gamma": dgamma, "beta": dbeta, STATE_KEY: {"mean": dmean, "var": dvar}}, dx

    def update_state(params, cache):
        check_params(name, params, spec)
        if "batch_mean" not in cache:  # an evaluation forward carries no batch statistics
            return params
        m = cache["xhat"].size // cache["batch_mean"].shape[0]
        unbiased = cache["batch_var"] * (m / (m - 1))
        old = params[STATE_KEY]
        stats = {
            "mean": momentum * old["mean"] + (1 - momentum) * cache["batch_mean"],
            "var": momentum * old["var"] + (1 - momentum) * unbiased,
        }
        return {**params, STATE_KEY: stats}

    return Layer(init, forward, backward, update_state, jvp=jvp, name="BatchNorm")


def LayerNorm(eps: float = 1e-5, use_affine: bool = True) -> Layer:
    """Layer normalization over the last axis of each example: x (..., d) -> y of the same shape.

    μ, σ² (biased, ÷ d) per example over the d features; y = γ x̂ + β, params = {"gamma": (d,) = 1,
    "beta": (d,) = 0}, or y = x̂ and params ``()`` when ``use_affine=False``. The same in training and
    evaluation; no state. ε = 1e-5 as PyTorch and flax.

    Backward (m = d, sums over the last axis): dγ = Σ_rows dy x̂, dβ = Σ_rows dy,
        dx = (1/(d√(σ² + ε)))(d dx̂ − Σ dx̂ − x̂ Σ dx̂ x̂),   dx̂ = dy γ.
    Exact for every input, a constant row (σ² = 0, handled by ε) and d = 1 (then x̂ = 0 and dx = 0)
    included; any batch size works, 1 too (module docstring).

    Forward mode (JVP), means over the last axis (dγ, dβ absent without the affine part)::

        dx̂ = (dx − mean dx − x̂ mean(x̂ ⊙ dx)) / √(σ² + ε),   dy = dγ ⊙ x̂ + γ ⊙ dx̂ + dβ

    Params: ``{"gamma": (d,), "beta": (d,)}`` of one floating dtype, or ``()`` without the affine
    part; anything else is refused while tracing, naming the leaf.

    Reference: Ba, Kiros & Hinton 2016, eq. 4.
    """
    eps = _check_eps("LayerNorm", eps)
    name = "LayerNorm()"
    spec = {"gamma": ("d",), "beta": ("d",)}

    def check(params) -> None:
        if use_affine:
            check_params(name, params, spec)
        else:
            check_no_params(name, params)

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        del key
        if len(in_shape) < 1:
            raise ShapeError(f"{name} needs inputs with a feature axis, got shape {shape_str(in_shape)}")
        check_param_dtype(name, dtype)
        d = in_shape[-1]
        params = {"gamma": jnp.ones((d,), dtype), "beta": jnp.zeros((d,), dtype)} if use_affine else ()
        return tuple(in_shape), params

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check(params)
        if use_affine:
            check_input(name, x, (params["gamma"].shape[0],), leading="...")
            check_dtype_match(name, x, params["gamma"])
        else:
            check_input(name, x, (None,), leading="...")
        xhat, inv, _, _ = _normalize(x, (x.ndim - 1,), eps)
        y = _row(params["gamma"], x.ndim) * xhat + _row(params["beta"], x.ndim) if use_affine else xhat
        return y, {"xhat": xhat, "inv": inv}

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, cache = forward(params, x, key=key, train=train)
        check_tangent(name, "dparams", dparams, params, "params")
        check_tangent(name, "dx", dx, x, "x")
        xhat = cache["xhat"]
        dxhat = _normalize_backward(xhat, cache["inv"], dx, (x.ndim - 1,))  # symmetric: module docstring
        if not use_affine:
            return y, dxhat
        return y, _affine_tangent(params["gamma"], xhat, dparams["gamma"], dxhat, dparams["beta"])

    def backward(params, cache, dy: Array):
        check(params)
        xhat, inv = cache["xhat"], cache["inv"]
        if use_affine:
            dgamma, dbeta = _affine_grads(xhat, dy)
            grads = {"gamma": dgamma, "beta": dbeta}
            dxhat = dy * _row(params["gamma"], dy.ndim)
        else:
            grads, dxhat = (), dy
        return grads, _normalize_backward(xhat, inv, dxhat, (dy.ndim - 1,))

    return Layer(init, forward, backward, jvp=jvp, name="LayerNorm")


def RMSNorm(eps: float = 1e-6) -> Layer:
    """Root-mean-square normalization over the last axis: x (..., d) -> y of the same shape.

    Forward (per row, the mean over the d features):
        r = 1 / √(mean(x²) + ε),   x̂ = x · r,   y = g ⊙ x̂,
    params = {"g": (d,) = 1}; no centring and no shift (Zhang & Sennrich 2019, eq. 4). The same as
    ``torch.nn.functional.rms_norm(x, (d,), g, eps)``; ε = 1e-6 here (PyTorch's default ``eps=None``
    means the dtype's machine epsilon). The same in training and evaluation; no state.

    Backward, with dx̂ = dy ⊙ g (∂r/∂x_j = −r³ x_j / d):
        dg = Σ_rows dy ⊙ x̂,
        dx = r · (dx̂ − x̂ · mean(dx̂ ⊙ x̂))   (the mean over the last axis).
    Exact for every input: ε > 0 keeps r finite, so a zero row gives x̂ = 0 and dx = dx̂/√ε.

    Forward mode (JVP), with dr = −r³ mean(x ⊙ dx) (the backward's map again: it is symmetric)::

        dx̂ = r · (dx − x̂ · mean(x̂ ⊙ dx)),   dy = dg ⊙ x̂ + g ⊙ dx̂
    (a zero row: dx̂ = dx/√ε).

    Params: ``{"g": (d,)}``, floating point; anything else is refused while tracing, naming the leaf.

    Reference: B. Zhang & R. Sennrich 2019, "Root Mean Square Layer Normalization", eq. 4.
    """
    eps = _check_eps("RMSNorm", eps)
    name = "RMSNorm()"
    spec = {"g": ("d",)}

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        del key
        if len(in_shape) < 1:
            raise ShapeError(f"{name} needs inputs with a feature axis, got shape {shape_str(in_shape)}")
        check_param_dtype(name, dtype)
        return tuple(in_shape), {"g": jnp.ones((in_shape[-1],), dtype)}

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        g = params["g"]
        check_input(name, x, (g.shape[0],), leading="...")
        check_dtype_match(name, x, g)
        r = 1.0 / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
        xhat = x * r
        return _row(g, x.ndim) * xhat, {"xhat": xhat, "inv": r}

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, cache = forward(params, x, key=key, train=train)
        check_tangent(name, "dparams", dparams, params, "params")
        check_tangent(name, "dx", dx, x, "x")
        xhat, r = cache["xhat"], cache["inv"]
        dxhat = r * (dx - xhat * jnp.mean(xhat * dx, axis=-1, keepdims=True))
        return y, _affine_tangent(params["g"], xhat, dparams["g"], dxhat, None)

    def backward(params, cache, dy: Array):
        check_params(name, params, spec)
        xhat, r = cache["xhat"], cache["inv"]
        dg = jnp.sum(dy * xhat, axis=tuple(range(dy.ndim - 1)))
        dxhat = dy * _row(params["g"], dy.ndim)
        dx = r * (dxhat - xhat * jnp.mean(dxhat * xhat, axis=-1, keepdims=True))
        return {"g": dg}, dx

    return Layer(init, forward, backward, jvp=jvp, name="RMSNorm")
