"""Curvature of the training loss: Gauss–Newton and Hessian-vector products, sharpness, spectral density.

For a network ``layer`` with params θ, a batch ``(x, target)`` and a ``loss``, write L(θ) for the mean
loss, f(θ) = pred the network's output, J = ∂f/∂θ and H_L = ∂²L/∂pred² the Hessian of the loss in the
prediction. Every function here works with products, never with a matrix::

    ggn_vp(layer, loss)(params, x, target, v)  ->  G v = Jᵀ H_L J v      (Gauss–Newton)
    hvp(layer, loss)(params, x, target, v)     ->  H v = ∇²L(θ) v        (exact Hessian)
    sharpness(layer, loss, params, x, target)  ->  λ_max(H), by Lanczos
    hessian_spectrum(layer, loss, params, x, target, key=...)  ->  the spectral density of H, by SLQ

``v`` and the products have the pytree structure of ``params``. The products take the keywords of
:func:`fnnet.value_and_grad` (``key=None, train=True, mask=None``) and pass them to the forward.

* :func:`ggn_vp` is built from the hand-written pieces alone (``layer.jvp``, ``loss.hvp``,
  ``layer.backward``); no autodiff is involved.
* :func:`hvp` is exact. For an MLP (a :func:`fnnet.serial` of Dense layers and elementwise activations)
  it runs Pearlmutter's R-operator, written out by hand; for every other network it is forward-over-reverse:
  ``jax.jvp`` of the hand-written gradient :func:`fnnet.value_and_grad`, i.e. autodiff applied to the
  manual backward code (the one place fnnet differentiates its own rules). :func:`hvp_path` says which.
* :func:`sharpness` and :func:`hessian_spectrum` run Lanczos with full reorthogonalization on the
  flattened params (``jax.flatten_util.ravel_pytree``), with a jit-compiled product.

Buffers (the ``"state"`` leaves, e.g. BatchNorm's running statistics) are flattened with the other
params; in training mode the loss does not depend on them, so their rows and columns of H and G are 0.

References:
    N. N. Schraudolph, "Fast curvature matrix-vector products for second-order gradient descent",
    Neural Computation 14(7), 2002 (the Gauss–Newton product G v = Jᵀ H_L J v).
    B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 6(1), 1994 (the
    R-operator).
    C. Lanczos, "An iteration method for the solution of the eigenvalue problem of linear differential and
    integral operators", J. Res. Nat. Bur. Standards 45, 1950.
    B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net optimization via Hessian
    eigenvalue density", ICML 2019 (stochastic Lanczos quadrature).
    J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, "Gradient descent on neural networks typically
    occurs at the edge of stability", ICLR 2021 (sharpness = λ_max of the training-loss Hessian).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnnet.activations import activation_of, derivative, second_derivative
from fnnet.core import (
    Array,
    Layer,
    Loss,
    Params,
    PRNGKey,
    annotate,
    check_tangent,
    mask_kwargs,
)
from fnnet.grad import value_and_grad
from fnnet.layers.combinators import parts
from fnnet.layers.dense import dense_of

__all__ = [
    "HessianSpectrum",
    "ggn_vp",
    "hessian_spectrum",
    "hvp",
    "hvp_path",
    "sharpness",
]

#: A curvature-vector product ``f(params, x, target, v, *, key=None, train=True, mask=None) -> params-shaped``.
CurvatureProduct = Callable[..., Params]

#: Activations that are not elementwise: their Jacobian is not diagonal, so the MLP R-operator skips them.
_NOT_ELEMENTWISE = frozenset({"softmax"})


# ----------------------------------------------------------------------------------------------
# checks


def _check_pair(where: str, layer: Layer, loss: Loss) -> None:
    if not isinstance(layer, Layer):
        raise TypeError(f"{where} expected a fnnet Layer, got {type(layer).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"{where} expected a fnnet Loss such as fn.mse, got {type(loss).__name__}")


def _loss_label(loss: Loss) -> str:
    return type(loss).__name__


def _zero_input_tangent(x: Array) -> Array | None:
    """The tangent of a fixed input: zeros of ``x``'s shape, or None for integer inputs (token ids)."""
    return jnp.zeros_like(x) if jnp.issubdtype(jnp.result_type(x), jnp.inexact) else None


# ----------------------------------------------------------------------------------------------
# Gauss–Newton


def ggn_vp(layer: Layer, loss: Loss) -> CurvatureProduct:
    """The generalized Gauss–Newton product ``f(params, x, target, v) -> G v``, from hand-written rules only.

    With J = ∂pred/∂θ and H_L = ∂²L/∂pred² (Schraudolph 2002)::

        G v = Jᵀ H_L J v:
            u  = J v           = layer.jvp(params, x, v, 0)[1]        (forward mode; the input is fixed)
            w  = H_L u         = loss.hvp(loss_cache, u)
            Gv = Jᵀ w          = layer.backward(params, cache, w)[0]

    G is the Hessian of L with the network linearized at θ, so it drops the term Σ_k (∂L/∂pred_k) ∇²pred_k
    of the full Hessian; it is positive semi-definite wherever H_L is (every fnnet loss is convex in pred).
    No autodiff is involved. Cost: one forward, one jvp (about two forwards) and one backward.

    Args:
        layer: the network; it needs a hand-written ``jvp``.
        loss: the loss; it needs a hand-written ``hvp``.

    Returns:
        ``f(params, x, target, v, *, key=None, train=True, mask=None)`` returning G v with the structure of
        ``params``; the keywords go to the forward, as in :func:`fnnet.value_and_grad`.

    Raises:
        TypeError: ``layer.jvp`` or ``loss.hvp`` is None (the message names which), or ``layer``/``loss``
            are not a Layer and a Loss.
        ValueError, ShapeError, DTypeError: (when called) ``v`` does not have the structure, leaf shapes or
            dtypes of ``params``.
    """
    _check_pair("ggn_vp", layer, loss)
    if layer.jvp is None:
        raise TypeError(
            f"ggn_vp needs the layer's hand-written forward mode, but {layer.label} has jvp=None; give it a "
            f"jvp rule (Layer(..., jvp=...)), or use fnnet.curvature.hvp, which needs none"
        )
    if loss.hvp is None:
        raise TypeError(
            f"ggn_vp needs the loss's Hessian-vector product, but {_loss_label(loss)} has hvp=None; give it "
            f"one (Loss(forward, backward, jvp, hvp))"
        )

    def f(params: Params, x: Array, target: Array, v: Params, *, key=None, train=True, mask=None) -> Params:
        check_tangent("ggn_vp", "v", v, params, "params")
        kw = mask_kwargs(layer, mask)
        pred, cache = layer.forward(params, x, key=key, train=train, **kw)
        _, loss_cache = loss.forward(pred, target)
        _, u = layer.jvp(params, x, v, _zero_input_tangent(x), key=key, train=train, **kw)
        gv, _ = layer.backward(params, cache, loss.hvp(loss_cache, u))
        return gv

    return f


# ----------------------------------------------------------------------------------------------
# Hessian: which path


class _Step(NamedTuple):
    """One child of an MLP: a Dense (``use_bias``) or an elementwise activation (``name``, ``kwargs``)."""

    layer: Layer
    kind: str  # "dense" or "activation"
    use_bias: bool = False
    name: str = ""
    kwargs: dict | None = None


def _mlp_steps(layer: Layer) -> tuple[_Step, ...] | None:
    """The children of ``layer`` if it is a serial of Dense layers and elementwise activations, else None."""
    structure = parts(layer)
    if structure is None or structure[0] != "serial":
        return None
    steps = []
    for child in structure[1]:
        dense = dense_of(child)
        act = activation_of(child)
        if dense is not None:
            steps.append(_Step(child, "dense", use_bias=bool(dense["use_bias"])))
        elif act is not None and act[0] not in _NOT_ELEMENTWISE:
            steps.append(_Step(child, "activation", name=act[0], kwargs=dict(act[1])))
        else:
            return None
    return tuple(steps)


def hvp_path(layer: Layer, loss: Loss | None = None) -> str:
    """Which way :func:`hvp` multiplies by the Hessian for ``layer``: ``"r-operator"`` or ``"forward-over-reverse"``.

    ``"r-operator"``: ``layer`` is a :func:`fnnet.serial` whose children are all Dense layers
    (:func:`fnnet.layers.dense.dense_of`) and elementwise activations
    (:func:`fnnet.activations.activation_of`; Softmax is not elementwise), and ``loss`` — when given —
    has a hand-written ``hvp``. ``"forward-over-reverse"``: anything else (convolutions, normalization,
    attention, a residual, a nested serial, a Softmax layer, a loss without ``hvp``).
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"hvp_path expected a fnnet Layer, got {type(layer).__name__}")
    if loss is not None and not isinstance(loss, Loss):
        raise TypeError(f"hvp_path expected a fnnet Loss such as fn.mse (or None), got {type(loss).__name__}")
    if loss is not None and loss.hvp is None:
        return "forward-over-reverse"
    return "r-operator" if _mlp_steps(layer) is not None else "forward-over-reverse"


def hvp(layer: Layer, loss: Loss) -> CurvatureProduct:
    """The exact Hessian-vector product ``f(params, x, target, v) -> H v``, H = ∇²_θ L(θ).

    Two paths (:func:`hvp_path` says which a network takes; both give the same H v up to rounding):

    **R-operator** (Pearlmutter 1994), for a serial of Dense layers and elementwise activations, written
    out by hand. R(·) = d/dε (·)(θ + εv) at ε = 0 is carried alongside each quantity of the forward and
    the backward pass. With a the input of a Dense (W, b), z = a W + b, and a' = f(z) an activation::

        R-forward:   R(z)  = R(a) W + a V_W + V_b,     R(a') = f'(z) ⊙ R(z),      R(x) = 0
        loss:        R(dpred) = H_L R(pred)             (loss.hvp)
        R-backward:  R(dz) = f''(z) R(z) ⊙ da' + f'(z) ⊙ R(da')
                     R(dW) = R(a)ᵀ dz + aᵀ R(dz),   R(db) = Σ_rows R(dz),   R(da) = R(dz) Wᵀ + dz V_Wᵀ
        H v = (R(dW), R(db)) for every Dense

    where dz, da are the gradients the hand-written backward rules give, and f', f'' come from
    :func:`fnnet.activations.derivative` and :func:`fnnet.activations.second_derivative`. Cost: about two
    forwards and two backwards. The loss's ``hvp`` and ``backward`` are used; a loss without ``hvp``
    takes the other path.

    **Forward-over-reverse**, for every other network: ``jax.jvp`` of ``θ ↦ value_and_grad(layer,
    loss)(θ, x, target)[1]``, the hand-written gradient. This applies autodiff to the manual backward code
    (allowed here: the rules themselves are hand-written; JAX only differentiates them once more), so H v
    is exact wherever each rule is exact and differentiable. Cost: about three times a gradient.

    Args:
        layer: the network.
        loss: the loss.

    Returns:
        ``f(params, x, target, v, *, key=None, train=True, mask=None)`` returning H v with the structure of
        ``params``; the keywords go to the forward, as in :func:`fnnet.value_and_grad`.

    Raises:
        TypeError: ``layer``/``loss`` are not a Layer and a Loss.
        ValueError, ShapeError, DTypeError: (when called) ``v`` does not have the structure, leaf shapes or
            dtypes of ``params``.
    """
    _check_pair("hvp", layer, loss)
    steps = _mlp_steps(layer) if hvp_path(layer, loss) == "r-operator" else None
    if steps is not None:
        return _r_operator_hvp(layer, steps, loss)
    grad = value_and_grad(layer, loss)

    def f(params: Params, x: Array, target: Array, v: Params, *, key=None, train=True, mask=None) -> Params:
        check_tangent("hvp", "v", v, params, "params")

        def gradient(p):
            return grad(p, x, target, key=key, train=train, mask=mask)[1]

        return jax.jvp(gradient, (params,), (v,))[1]

    return f


# ----------------------------------------------------------------------------------------------
# Hessian: the R-operator of an MLP


def _rows(a: Array) -> Array:
    """``a`` of shape (..., d) as rows (n, d): the leading axes of a Dense input are all batch-like."""
    return jnp.reshape(a, (-1, a.shape[-1]))


def _check_serial_params(layer: Layer, n: int, params: Any) -> None:
    """The serial's own check (a tuple with one entry per child), with its wording."""
    if not isinstance(params, (tuple, list)):
        raise TypeError(
            f"serial of {n} layers needs params as a tuple with one entry per layer (as its init returns), "
            f"got {type(params).__name__}"
        )
    if len(params) != n:
        raise ValueError(
            f"serial of {n} layers needs params with one entry per layer (as its init returns), "
            f"got {len(params)} entries"
        )


def _inside(i: int, f: Callable, *args, **kwargs):
    """``f(*args, **kwargs)``; an error gets ``serial layer i, `` in front, as :func:`fnnet.serial` writes it."""
    try:
        return f(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise annotate(e, f"serial layer {i}, ") from None


def _r_forward_dense(step: _Step, p: dict, v: dict, a: Array, ra: Array) -> Array:
    """R(z) = R(a) W + a V_W + V_b (V_b broadcast over the leading axes)."""
    rz = jnp.matmul(ra, p["W"]) + jnp.matmul(a, v["W"])
    if step.use_bias:
        rz = rz + jnp.reshape(v["b"], (1,) * (a.ndim - 1) + v["b"].shape)
    return rz


def _r_backward_dense(step: _Step, p: dict, v: dict, a: Array, ra: Array, dz: Array, rdz: Array):
    """(R(dW), R(db)) and R(da): R(dW) = R(a)ᵀ dz + aᵀ R(dz), R(db) = Σ R(dz), R(da) = R(dz) Wᵀ + dz V_Wᵀ."""
    rows_dz, rows_rdz = _rows(dz), _rows(rdz)
    r_grads = {"W": jnp.matmul(_rows(ra).T, rows_dz) + jnp.matmul(_rows(a).T, rows_rdz)}
    if step.use_bias:
        r_grads["b"] = jnp.sum(rows_rdz, axis=0)
    rda = jnp.matmul(rdz, p["W"].T) + jnp.matmul(dz, v["W"].T)
    return r_grads, rda


def _r_operator_hvp(layer: Layer, steps: tuple[_Step, ...], loss: Loss) -> CurvatureProduct:
    """H v of an MLP by Pearlmutter's R-operator (the formulas are in :func:`hvp`)."""
    n = len(steps)

    def f(params: Params, x: Array, target: Array, v: Params, *, key=None, train=True, mask=None) -> Params:
        del key, train  # Dense layers and activations ignore them
        mask_kwargs(layer, mask)  # an MLP takes no mask: a mask is a TypeError naming the net
        _check_serial_params(layer, n, params)
        check_tangent("hvp", "v", v, params, "params")
        # R-forward: inputs a_i, caches, and R(a_i); the input x is data, R(x) = 0.
        a, ra = x, jnp.zeros_like(x)
        inputs, r_inputs, caches = [], [], []
        for i, (step, p, t) in enumerate(zip(steps, params, v)):
            inputs.append(a)
            r_inputs.append(ra)
            y, cache = _inside(i, step.layer.forward, p, a)
            caches.append(cache)
            if step.kind == "dense":
                ra = _r_forward_dense(step, p, t, a, ra)
            else:
                ra = derivative(step.name, a, **step.kwargs) * ra
            a = y
        _, loss_cache = loss.forward(a, target)
        da = loss.backward(loss_cache)  # dpred
        rda = loss.hvp(loss_cache, ra)  # R(dpred) = H_L R(pred)
        # R-backward, last child first.
        r_grads = [None] * n
        for i in reversed(range(n)):
            step, p, t, a, ra = steps[i], params[i], v[i], inputs[i], r_inputs[i]
            _, dz = _inside(i, step.layer.backward, p, caches[i], da)  # the gradient at this child's input
            if step.kind == "dense":
                r_grads[i], rda = _r_backward_dense(step, p, t, a, ra, da, rda)
            else:
                # a is z here: R(dz) = f''(z) R(z) ⊙ da' + f'(z) ⊙ R(da')
                fpp = second_derivative(step.name, a, **step.kwargs)
                rda = fpp * ra * da + derivative(step.name, a, **step.kwargs) * rda
                r_grads[i] = ()
            da = dz
        return tuple(r_grads)

    return f


# ----------------------------------------------------------------------------------------------
# Lanczos


def _lanczos_of(layer: Layer, loss: Loss, params: Params) -> tuple[Callable, int, Any]:
    """``(run, n, dtype)``: :func:`_lanczos` on the flattened H v of ``layer`` and ``loss`` at params shaped like
    ``params``. Kept per (layer, loss, params' structure, shapes and dtypes), so repeated calls with the same
    layer and loss (``sharpness`` every k steps of a training loop) compile its step once."""
    flat, _ = ravel_pytree(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    layout = (treedef, tuple((jnp.shape(a), str(jnp.result_type(a))) for a in leaves))
    try:
        return _cached_lanczos(layer, loss, layout) + (flat.shape[0], flat.dtype)
    except TypeError:  # a layer or loss that cannot be hashed (a field holding a list or a dict): no cache
        return _build_lanczos(layer, loss, params) + (flat.shape[0], flat.dtype)


@functools.lru_cache(maxsize=16)
def _cached_lanczos(layer: Layer, loss: Loss, layout: tuple) -> tuple[Callable]:
    treedef, shapes = layout
    params = jax.tree_util.tree_unflatten(treedef, [jnp.zeros(shape, dtype) for shape, dtype in shapes])
    return _build_lanczos(layer, loss, params)


def _build_lanczos(layer: Layer, loss: Loss, params: Params) -> tuple[Callable]:
    flat, unravel = ravel_pytree(params)
    product = hvp(layer, loss)

    def matvec(args, flat_v):
        p, x, target = args
        return ravel_pytree(product(p, x, target, unravel(flat_v)))[0]

    return (_lanczos(matvec, flat.shape[0], flat.dtype),)


def _orthogonalize(Q: Array, w: Array) -> Array:
    """w minus its projection on the rows of Q (unused rows are 0), twice: classical Gram–Schmidt, repeated."""
    w = w - Q.T @ (Q @ w)
    return w - Q.T @ (Q @ w)


def _lanczos(matvec: Callable, n: int, dtype: Any) -> Callable:
    """``run(args, v0, steps, key, tol=None) -> (α, β)``: Lanczos with full reorthogonalization on ``matvec``.

    ``run`` builds the tridiagonal T_k = Q_kᵀ H Q_k (k ≤ ``steps``) of H = ``matvec(args, ·)``, an n × n
    symmetric operator::

        q_0 = v0/‖v0‖,   α_j = q_jᵀ H q_j,   w = H q_j − α_j q_j − β_{j−1} q_{j−1},
        w ⟂ q_0..q_j (classical Gram–Schmidt, twice),   β_j = ‖w‖,   q_{j+1} = w/β_j.

    If β_j ≤ 50·eps·max‖H q‖ (the Krylov space is invariant: a breakdown), q_{j+1} is a fresh random vector
    orthogonal to q_0..q_j (from ``key``) and β_j = 0, so that k = n steps still give all of H's
    eigenvalues. With ``tol``, it stops once the top Ritz value θ has residual |β_j s_j| ≤ tol·|θ|
    (s its eigenvector of T), or at a breakdown. α (k,) and β (k−1,) come back as NumPy float64 arrays.
    One step is one jit-compiled program, compiled once for all runs of one ``steps``.
    """
    eps = float(jnp.finfo(dtype).eps)

    @jax.jit
    def step(args, Q, j, beta_prev, hnorm, key):
        q, q_prev = Q[j], Q[jnp.maximum(j - 1, 0)] * (j > 0)
        hq = matvec(args, q)
        hnorm = jnp.maximum(hnorm, jnp.linalg.norm(hq))
        alpha = jnp.vdot(q, hq)
        w = _orthogonalize(Q, hq - alpha * q - beta_prev * q_prev)
        beta = jnp.linalg.norm(w)
        fresh = _orthogonalize(Q, jax.random.normal(jax.random.fold_in(key, j), (n,), dtype))
        fresh = fresh / jnp.maximum(jnp.linalg.norm(fresh), jnp.finfo(dtype).tiny)
        broke = beta <= 50 * eps * hnorm
        q_next = jnp.where(broke, fresh, w / jnp.where(broke, 1, beta))
        return alpha, jnp.where(broke, 0, beta), Q.at[j + 1].set(q_next), hnorm, broke

    def run(args, v0: Array, steps: int, key: PRNGKey, tol: float | None = None):
        Q = jnp.zeros((steps + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
        beta = hnorm = jnp.zeros((), dtype)
        alphas, betas = [], []
        for j in range(steps):
            alpha, beta, Q, hnorm, broke = step(args, Q, j, beta, hnorm, key)
            alphas.append(alpha)
            betas.append(beta)
            if tol is not None and j + 1 < steps:
                if bool(broke):
                    break
                theta, s = np.linalg.eigh(_tridiagonal(np.asarray(alphas), np.asarray(betas[:-1])))
                if abs(float(beta) * s[-1, -1]) <= tol * abs(theta[-1]):
                    break
        return np.asarray(alphas, np.float64), np.asarray(betas[:-1], np.float64)

    return run


def _tridiagonal(alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """The symmetric tridiagonal matrix with diagonal α and off-diagonal β."""
    return np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)


def sharpness(
    layer: Layer,
    loss: Loss,
    params: Params,
    x: Array,
    target: Array,
    *,
    key: PRNGKey | None = None,
    iters: int = 20,
    tol: float = 1e-6,
) -> float:
    """λ_max, the largest (algebraic) eigenvalue of the Hessian H = ∇²_θ L(θ): the sharpness.

    Lanczos (1950) with full reorthogonalization on the flattened params builds T_k = Q_kᵀ H Q_k from
    k ≤ ``iters`` products H q (:func:`hvp`, jit-compiled) and returns T_k's largest eigenvalue θ_max, which
    approaches λ_max from below. It stops early when the residual of that Ritz pair, ‖H y − θ y‖ = |β_k s_k|,
    is at most ``tol``·|θ_max| (then some eigenvalue lies within that distance of θ_max), or when the
    Krylov space is exhausted; k = n (the number of params) gives λ_max to rounding.

    The *algebraic* maximum is returned, as Cohen et al. (2021) track it: away from a minimum H has
    negative eigenvalues, and one of larger magnitude than λ_max would be what power iteration finds.
    Lanczos reaches both ends of the spectrum at once; this returns the top one.

    Cost: k Hessian-vector products and O(k·n) memory for the Lanczos basis. The Lanczos step is compiled
    once per (layer, loss, params' shapes and dtypes, ``iters``): tracking the sharpness of one network
    every few steps of training compiles it on the first call only.

    Args:
        layer, loss: the network and the loss.
        params, x, target: the point and the batch at which H is taken (the forward runs with
            ``key=None, train=True``).
        key: the PRNG key of the random start vector; None is ``jax.random.key(0)``.
        iters: the most Lanczos steps (at most n are taken).
        tol: the relative residual at which to stop; 0 runs all ``iters`` steps.

    Returns:
        λ_max as a Python float.
    """
    _check_pair("sharpness", layer, loss)
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"sharpness needs a positive integer iters, got {iters!r}")
    key = jax.random.key(0) if key is None else key
    run, n, dtype = _lanczos_of(layer, loss, params)
    k_start, k_restart = jax.random.split(key)
    v0 = jax.random.normal(k_start, (n,), dtype)
    alphas, betas = run((params, x, target), v0, min(int(iters), n), k_restart, tol=tol or None)
    return float(np.linalg.eigvalsh(_tridiagonal(alphas, betas))[-1])


# ----------------------------------------------------------------------------------------------
# spectral density


def _gaussian(t: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


class HessianSpectrum(NamedTuple):
    """The spectral density of a Hessian by stochastic Lanczos quadrature: nodes and weights per probe.

    For probe p, ``nodes[p]`` are the Ritz values θ_{p,i} (the eigenvalues of its Lanczos T) and
    ``weights[p]`` the squared first components τ_{p,i} = (e₁ᵀ u_i)² of T's eigenvectors; each row of
    weights sums to 1. The estimate of the density φ(t) = (1/n) Σ_j δ(t − λ_j) is the Gaussian-smoothed
    mixture (Ghorbani, Krishnan, Xiao 2019, eq. 3-5)::

        φ_σ(t) = (1/P) Σ_p Σ_i τ_{p,i} g_σ(t − θ_{p,i}),      g_σ(t) = exp(−t²/2σ²) / (σ √(2π))

    which integrates to 1.
    """

    nodes: np.ndarray  # (probes, k) float64, each row ascending
    weights: np.ndarray  # (probes, k) float64, each row sums to 1
    sigma: float  # the standard deviation of the smoothing Gaussian
    grid: np.ndarray  # (g,) the default grid of density()

    def density(self, grid: Any = None) -> np.ndarray:
        """φ_σ(t) at each t of ``grid`` (default: ``self.grid``), a float64 array of the grid's shape."""
        t = np.asarray(self.grid if grid is None else grid, np.float64)
        mix = _gaussian(t[..., None], self.nodes.reshape(-1), self.sigma) @ self.weights.reshape(-1)
        return mix / self.nodes.shape[0]


def hessian_spectrum(
    layer: Layer,
    loss: Loss,
    params: Params,
    x: Array,
    target: Array,
    *,
    key: PRNGKey,
    order: int = 90,
    probes: int = 10,
    grid: Any = None,
    sigma: float | None = None,
) -> HessianSpectrum:
    """The spectral density of the Hessian H = ∇²_θ L(θ) by stochastic Lanczos quadrature (SLQ).

    For each of ``probes`` Gaussian vectors v_p (drawn from ``key``), ``order`` steps of Lanczos with full
    reorthogonalization from v_p/‖v_p‖ give T_p = U diag(θ) Uᵀ; the Gauss quadrature of v̂_pᵀ g(H) v̂_p is
    Σ_i τ_i g(θ_i) with τ_i = (e₁ᵀ u_i)² (Golub & Meurant), and averaging over the probes estimates
    (1/n) tr g(H) = ∫ g(t) φ(t) dt, for the density φ(t) = (1/n) Σ_j δ(t − λ_j) (Ghorbani et al. 2019).

    ``order`` is capped at n, the number of params; with order = n the nodes of each probe are H's
    eigenvalues (to rounding: a probe's Krylov space that closes early is continued from a fresh random
    vector, whose nodes get weight 0).

    Cost: probes × order Hessian-vector products (:func:`hvp`, jit-compiled), O(order·n) memory.

    Args:
        layer, loss: the network and the loss.
        params, x, target: the point and the batch (the forward runs with ``key=None, train=True``).
        key: the PRNG key of the probes (required: the estimate is random).
        order: Lanczos steps per probe (Ghorbani et al. use 90).
        probes: the number of probe vectors.
        grid: the default grid of :meth:`HessianSpectrum.density`; None: 2001 points spanning the nodes
            with 5σ to spare on each side.
        sigma: the standard deviation of the smoothing Gaussian; None: 1 % of the span of the nodes (or 1e-3
            of their largest magnitude when all nodes coincide, or 1e-3 when those are 0).

    Returns:
        A :class:`HessianSpectrum`.
    """
    _check_pair("hessian_spectrum", layer, loss)
    for arg, val in (("order", order), ("probes", probes)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"hessian_spectrum needs a positive integer {arg}, got {val!r}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"hessian_spectrum needs sigma > 0, got {sigma!r}")
    run, n, dtype = _lanczos_of(layer, loss, params)
    steps = min(int(order), n)
    all_nodes, all_weights = [], []
    for k in jax.random.split(key, int(probes)):
        k_probe, k_restart = jax.random.split(k)
        alphas, betas = run((params, x, target), jax.random.normal(k_probe, (n,), dtype), steps, k_restart)
        theta, u = np.linalg.eigh(_tridiagonal(alphas, betas))
        all_nodes.append(theta)
        all_weights.append(u[0] ** 2)
    nodes, weights = np.stack(all_nodes), np.stack(all_weights)
    if sigma is None:
        span = float(nodes.max() - nodes.min())
        sigma = span / 100 if span > 0 else (1e-3 * float(np.abs(nodes).max()) or 1e-3)
    if grid is None:
        grid = np.linspace(nodes.min() - 5 * sigma, nodes.max() + 5 * sigma, 2001)
    return HessianSpectrum(nodes, weights, float(sigma), np.asarray(grid, np.float64))
