"""Helpers of ``perceptron_xor``: Rosenblatt's rule in JAX and the max-margin separator's margin.

The perceptron is not gradient descent on a smooth loss: it updates only on a mistake,

    ŷ = sign(wᵀx̃) (+1 if ≥ 0),   on ŷ ≠ y:  w ← w + η y x̃,

with x̃ = (x, 1) so the bias is the last weight (shared/references 002, 'The Perceptron', learning
algorithm; η = 1 and w₀ = 0, so η only rescales w and never changes a prediction).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import nnls


def augment(x: jax.Array) -> jax.Array:
    """x̃ = (x, 1): the bias becomes a weight on a constant input."""
    return jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)


def _predict(w: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.where(x @ w >= 0, 1.0, -1.0)


@functools.partial(jax.jit, static_argnames="max_epochs")
def perceptron(x: jax.Array, y: jax.Array, w0: jax.Array, max_epochs: int) -> dict[str, jax.Array]:
    """Cycle through (x̃, y) (y = ±1) in order until an epoch has no mistake, or ``max_epochs``.

    Returns the final w, the number of updates (= mistakes), the epochs run, and whether it
    converged. vmap it over datasets: the loop then runs until every dataset is done.
    """

    def one_epoch(carry):
        w, updates, epochs, _ = carry

        def step(c, xy):
            w, n = c
            xi, yi = xy
            wrong = _predict(w, xi) != yi
            w = w + jnp.where(wrong, yi, 0.0) * xi
            return (w, n + wrong.astype(jnp.int32)), None

        (w, n), _ = jax.lax.scan(step, (w, jnp.int32(0)), (x, y))
        return w, updates + n, epochs + 1, n

    def more(carry):
        _, _, epochs, mistakes = carry
        return (mistakes > 0) & (epochs < max_epochs)

    w, updates, epochs, last = jax.lax.while_loop(more, one_epoch, (w0, jnp.int32(0), jnp.int32(0), jnp.int32(1)))
    return {"w": w, "updates": updates, "epochs": epochs, "converged": last == 0}


@functools.partial(jax.jit, static_argnames="epochs")
def perceptron_trace(x: jax.Array, y: jax.Array, w0: jax.Array, epochs: int) -> dict[str, jax.Array]:
    """Run the rule for a fixed number of epochs; the training accuracy after every single step."""

    def step(w, xy):
        xi, yi = xy
        wrong = _predict(w, xi) != yi
        w = w + jnp.where(wrong, yi, 0.0) * xi
        acc = jnp.mean((_predict(w, x) == y).astype(jnp.float32))
        return w, (acc, jnp.linalg.norm(w), w)

    xs = jnp.tile(x, (epochs, 1))
    ys = jnp.tile(y, (epochs,))
    w, (acc, norms, ws) = jax.lax.scan(step, w0, (xs, ys))
    return {"w": w, "accuracy": acc, "w_norm": norms, "ws": ws}


def max_margin(x_aug: np.ndarray, y: np.ndarray, big: float = 1e4) -> dict[str, float | np.ndarray]:
    """The max-margin separator through the origin of the augmented points (so w* includes the bias).

    For z_i = y_i x̃_i, max over unit u of min_i uᵀz_i equals the norm of the point p of the convex
    hull of {z_i} nearest the origin (when the data are separable). p is found by NNLS with the
    constraint Σλ = 1 enforced by a heavily weighted row. The margin returned is the *certified*
    one, ρ = min_i z_iᵀ p/‖p‖, a lower bound on the true maximum, so a Novikoff bound (R/ρ)² built
    on it is never smaller than the tightest one; ``gap`` = ‖p‖ − ρ ≥ 0 measures how far from optimal.
    """
    z = (y[:, None] * x_aug).astype(np.float64)
    n = z.shape[0]
    A = np.vstack([z.T, big * np.ones((1, n))])
    b = np.concatenate([np.zeros(z.shape[1]), [big]])
    lam, _ = nnls(A, b, maxiter=50 * n)
    p = z.T @ lam
    norm_p = float(np.linalg.norm(p))
    u = p / norm_p
    rho = float(np.min(z @ u))
    return {"w": u, "margin": rho, "gap": norm_p - rho}
