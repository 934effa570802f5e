"""Dropout: inverted dropout, where ``rate`` is the probability of **dropping** a unit.

Conventions differ between libraries, so mind the argument:

* fnnet, flax (``nn.Dropout(rate)``), equinox (``Dropout(p)``), Keras and PyTorch (``p``): the
  probability of **dropping** (zeroing) each unit. ``Dropout(0.1)`` keeps 90 %.
* ``jax.example_libraries.stax.Dropout(rate)``: the probability of **keeping** a unit.
  stax's ``Dropout(0.9)`` is fnnet's ``Dropout(0.1)``.

Reference: Srivastava et al. 2014, "Dropout: a simple way to prevent neural networks from
overfitting", sec. 4 (here in the inverted form, scaled at training time so evaluation is the identity).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.core import Array, Layer, check_float, check_no_params, check_tangent


def Dropout(rate: float) -> Layer:
    """Inverted dropout: y = m ⊙ x / (1 − rate), m_i ~ Bernoulli(1 − rate) i.i.d., in training.

    ``rate`` ∈ [0, 1) is the **drop** probability (stax uses a keep probability; module docstring).
    Training (``train=True``) needs a PRNG ``key``; the mask is drawn from it, so the same key gives
    the same mask. E[y] = x, so evaluation (``train=False``) is the identity: y = x.
    No parameters.

    Backward reuses the mask: dx = m ⊙ dy / (1 − rate) in training, dx = dy in evaluation.

    Forward mode (JVP) draws the same mask from the same key: dy = m ⊙ dx / (1 − rate) in training,
    dy = dx in evaluation (the map is diagonal, so forward and reverse rules coincide).

    Domain: given the mask, y is linear in x, so the rule is the exact VJP of the forward *with that
    mask* (the mask is drawn from ``key``, not from x: ``jax.grad`` of the forward with the same key
    agrees). The mask is m_i = [u_i < 1 − rate] with u_i ~ U[0, 1) drawn in float32 whatever x's
    dtype, so one key gives one mask in every dtype. ``rate = 0``: u < 1 always, every unit is kept,
    y = x / 1 = x exactly and dx = dy. A NaN or Inf in a dropped unit becomes 0 (``where``, not a
    product). No parameters: params must be ``()`` (arrays are a ValueError naming the layer).
    """
    real = not isinstance(rate, (bool, np.bool_)) and isinstance(rate, (int, float, np.integer, np.floating))
    if not real or not 0 <= rate < 1:  # also refuses NaN
        raise ValueError(
            f"Dropout needs a drop rate in [0, 1), got {rate!r}; rate is the probability of dropping a "
            f"unit (stax's Dropout takes the keep probability instead)"
        )
    name = f"Dropout({rate})"
    keep = 1.0 - float(rate)

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        del key, dtype
        return tuple(in_shape), ()

    def forward(params, x: Array, *, key=None, train=True):
        check_no_params(name, params)
        check_float(name, x)
        if not train:
            return x, ()
        if key is None:
            raise ValueError(
                f"{name} needs a PRNG key in training: forward(params, x, key=jax.random.key(0)); "
                f"pass train=False for evaluation"
            )
        # drawn in float32 whatever x's dtype (and x64 mode), so one key gives one mask everywhere
        mask = jax.random.uniform(key, jnp.shape(x), jnp.float32) < keep
        return jnp.where(mask, x / keep, jnp.zeros((), x.dtype)), mask

    def backward(params, mask, dy: Array):
        check_no_params(name, params)
        if isinstance(mask, tuple):  # evaluation: the identity
            return (), dy
        return (), jnp.where(mask, dy / keep, jnp.zeros((), dy.dtype))

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, mask = forward(params, x, key=key, train=train)
        check_no_params(f"{name} jvp (dparams)", dparams)
        check_tangent(name, "dx", dx, x)
        if not train:
            return y, dx
        return y, jnp.where(mask, dx / keep, jnp.zeros((), dx.dtype))

    return Layer(init, forward, backward, jvp=jvp, name=name)
