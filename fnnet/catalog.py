"""The catalog: every layer, activation and loss of fnnet, with example input shapes.

The test suite (``tests/test_catalog.py``) and ``fnnet check`` both walk :func:`entries` and check
each hand-written rule three ways (against ``jax.vjp`` with a random cotangent, against float64
central finite differences, and by ⟨J t, c⟩ = ⟨t, Jᵀ c⟩), in float32 and float64, under ``jit``
and ``vmap``. A new layer enters here and is checked at once.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from fnnet import activations as act
from fnnet import initializers, layers, losses
from fnnet.core import Layer, Loss
from fnnet.gradcheck import GradcheckReport, check_layer, check_loss


class Entry(NamedTuple):
    """One catalog row: how to build the thing and what to feed it.

    ``in_shape`` excludes the batch axis. ``sample(key, shape, dtype)`` draws inputs (default:
    standard normal); for losses ``target(key, pred, dtype)`` draws a matching target.
    """

    name: str
    make: Callable[[], Layer | Loss]
    in_shape: tuple[int, ...]
    batch: int = 3
    train: bool = True
    needs_key: bool = False
    sample: Callable[..., Any] | None = None
    target: Callable[..., Any] | None = None


def _normal(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


def _away_from_zero(key, shape, dtype):
    """Normal draws pushed off the kink at 0 by at least 0.1, so finite differences never straddle it."""
    x = jax.random.normal(key, shape, dtype)
    return x + jnp.where(x >= 0, 0.1, -0.1).astype(dtype)


def _labels(key, pred, dtype):
    del dtype
    return jax.random.randint(key, pred.shape[:-1], 0, pred.shape[-1])


def _probabilities(key, pred, dtype):
    return jax.nn.softmax(jax.random.normal(key, pred.shape, dtype), axis=-1)


def _same_shape(key, pred, dtype):
    return jax.random.normal(key, pred.shape, dtype)


def _bits(key, pred, dtype):
    return jax.random.bernoulli(key, 0.5, pred.shape).astype(dtype)


def _activation_entries() -> list[Entry]:
    kinked = dict(sample=_away_from_zero)
    return [
        Entry("Sigmoid", act.Sigmoid, (5,)),
        Entry("Tanh", act.Tanh, (5,)),
        Entry("Relu", act.Relu, (5,), **kinked),
        Entry("LeakyRelu(0.2)", lambda: act.LeakyRelu(0.2), (5,), **kinked),
        Entry("Gelu(exact)", act.Gelu, (5,)),
        Entry("Gelu(tanh)", lambda: act.Gelu(approximate=True), (5,)),
        Entry("Swish", act.Swish, (5,)),
        Entry("Softplus", act.Softplus, (5,)),
        Entry("Identity", act.Identity, (5,)),
        Entry("Softmax", act.Softmax, (5,)),
    ]


def _loss_entries() -> list[Entry]:
    return [
        Entry("mse", lambda: losses.mse, (4,), target=_same_shape),
        Entry("softmax_cross_entropy[labels]", lambda: losses.softmax_cross_entropy, (5,), target=_labels),
        Entry("softmax_cross_entropy[one-hot]", lambda: losses.softmax_cross_entropy, (5,), target=_probabilities),
        Entry("binary_cross_entropy", lambda: losses.binary_cross_entropy, (4,), target=_bits),
    ]


def _core_layer_entries() -> list[Entry]:
    he = initializers.he_normal()
    return [
        Entry("Dense(4)", lambda: layers.Dense(4), (6,)),
        Entry("Dense(3)[no bias]", lambda: layers.Dense(3, use_bias=False), (5,)),
        Entry("Dense(4)[(B,T,d)]", lambda: layers.Dense(4), (2, 6)),
        Entry("Flatten", layers.Flatten, (2, 3, 2)),
        Entry(
            "serial(Dense,Tanh,Dense)",
            lambda: layers.serial(layers.Dense(5), act.Tanh(), layers.Dense(3)),
            (4,),
        ),
        Entry(
            "residual(Dense,Tanh)", lambda: layers.residual(layers.serial(layers.Dense(4, w_init=he), act.Tanh())), (4,)
        ),
    ]


def _family_entries() -> list[Entry]:
    """Entries of the layer families in ``fnnet/layers/`` beyond Dense (conv, pooling, recurrent, ...)."""
    return [
        Entry("Conv2D(3)[3x3,VALID]", lambda: layers.Conv2D(3, 3), (5, 5, 2), batch=2),
        Entry("Conv2D(2)[3x3,s2,SAME,odd]", lambda: layers.Conv2D(2, 3, stride=2, padding="SAME"), (7, 5, 2), batch=2),
        Entry("Conv2D(2)[2x3,s(2,1),pad1,dil2]", lambda: layers.Conv2D(2, (2, 3), (2, 1), 1, 2), (6, 7, 1), batch=2),
        Entry("MaxPool(3)[s2,SAME]", lambda: layers.MaxPool(3, 2, "SAME"), (5, 5, 1), batch=2),
        Entry("AvgPool(3)[s2,SAME]", lambda: layers.AvgPool(3, 2, "SAME"), (5, 5, 1), batch=2),
        Entry("RNN(4)[last]", lambda: layers.RNN(4), (5, 3), batch=2),
        Entry("LSTM(3)[sequences]", lambda: layers.LSTM(3, return_sequences=True), (4, 2), batch=2),
        Entry("BatchNorm[train]", layers.BatchNorm, (4,), batch=5),
        Entry("BatchNorm[train,NHWC]", layers.BatchNorm, (3, 2, 2), batch=2),
        Entry("BatchNorm[eval]", layers.BatchNorm, (4,), batch=5, train=False),
        Entry("LayerNorm[(B,T,d)]", layers.LayerNorm, (2, 4)),
        Entry("Dropout(0.3)[train]", lambda: layers.Dropout(0.3), (6,), needs_key=True),
        Entry("Dropout(0.3)[eval]", lambda: layers.Dropout(0.3), (6,), train=False),
    ]


def entries() -> tuple[Entry, ...]:
    """Every catalog entry, in a stable order."""
    return tuple(_activation_entries() + _core_layer_entries() + _family_entries() + _loss_entries())


def is_loss(entry: Entry) -> bool:
    return entry.target is not None


def check_entry(entry: Entry, dtype: Any = jnp.float32, transform: str = "jit", seed: int = 0) -> GradcheckReport:
    """Run the three-way check of one entry in ``dtype`` under ``transform`` ("none", "jit", "vmap").

    Under "vmap" the inputs carry a leading axis of 2 independent batches.
    """
    dtype = jnp.dtype(dtype)
    with jax.enable_x64(dtype == jnp.float64):
        k_init, k_x, k_t, k_fwd, k_rng = jax.random.split(jax.random.key(seed), 5)
        lead = (2, entry.batch) if transform == "vmap" else (entry.batch,)
        x = (entry.sample or _normal)(k_x, lead + tuple(entry.in_shape), dtype)
        thing = entry.make()
        if is_loss(entry):
            return check_loss(thing, x, entry.target(k_t, x, dtype), transform=transform, rng=k_rng)
        _, params = thing.init(k_init, tuple(entry.in_shape), dtype)
        key = k_fwd if entry.needs_key else None
        return check_layer(thing, params, x, key=key, train=entry.train, transform=transform, rng=k_rng)
