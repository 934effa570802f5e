"""The catalog: every layer, activation and loss of fnnet, with example input shapes.

The test suite (``tests/test_catalog.py``) and ``fnnet check`` both walk :func:`entries` and check
each hand-written rule three ways (against ``jax.vjp`` with a random cotangent, against float64
central finite differences, and by ⟨J t, c⟩ = ⟨t, Jᵀ c⟩), in float32 and float64, under ``jit``
and ``vmap``. A new layer enters here and is checked at once.

Besides one entry per rule at generic inputs (drawn from keys, pushed off kinks), **edge entries** probe
each fused or simplified rule at the boundary of what it assumes: softmax cross-entropy with target rows
that are not distributions, binary cross-entropy with soft and out-of-[0, 1] targets at logits exactly 0,
the activations with kinks at exactly 0, BatchNorm with a constant feature, LayerNorm with a constant row
and MaxPool with tied maxima. Each says what it probes in ``Entry.probes``; where central differences
are not the derivative (a kink, a tie) it sets ``fd=False`` and the rule is checked against autodiff and
the adjoint identity only.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import activations as act
from fnnet import initializers, layers, losses
from fnnet.checking import GradcheckReport, check_layer, check_loss, run_compiled
from fnnet.core import Layer, Loss


class Entry(NamedTuple):
    """One catalog row, public: how to build a layer or loss and what to feed it. ``fnnet check`` checks the
    catalog's entries, and those of a user module's ``CATALOG = [Entry(...), ...]`` with ``--module``.

    Fields:
      name: the row's name in the table (unique within a catalog).
      make: a function of no arguments returning the :class:`~fnnet.core.Layer` or :class:`~fnnet.core.Loss`.
      in_shape: the shape of one example, without the batch axis (for a loss: of one prediction).
      batch: the batch size of the checked input (default 3).
      train: passed to a layer's forward (``train=False``: eval mode, e.g. BatchNorm's running statistics).
      needs_key: the forward takes a PRNG key (e.g. Dropout); a fixed one is drawn.
      sample: ``sample(key, shape, dtype)`` draws the input, ``shape`` with the batch axis (default: standard
        normal); push inputs off kinks so that central differences are the derivative.
      target: losses only, and what makes an entry a loss: ``target(key, pred, dtype)`` draws a target
        matching ``pred``.
      fd: ``False`` skips the finite-difference reference, for inputs where central differences straddle a kink
        or a tie and so are not the derivative (autodiff and the adjoint identity still check the rule).
      probes: for an edge entry, which assumption boundary of the rule its inputs sit on.

    A layer: ``Entry("Square", Square, (5,))`` (``Square()`` returns a ``Layer``; checked at inputs of shape
    (3, 5) with ``init(key, (5,), dtype)`` parameters). A loss: ``Entry("my_mse", lambda: my_mse, (4,),
    target=lambda key, pred, dtype: jax.random.normal(key, pred.shape, dtype))``.
    """

    name: str
    make: Callable[[], Layer | Loss]
    in_shape: tuple[int, ...]
    batch: int = 3
    train: bool = True
    needs_key: bool = False
    sample: Callable[..., Any] | None = None
    target: Callable[..., Any] | None = None
    fd: bool = True
    probes: str = ""


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


def _draw(key, shape) -> np.ndarray:
    """Standard normal draws as a host array, from one float32 draw: the edge samplers below shape them with
    NumPy, so each costs one compiled op whatever the dtype."""
    return np.asarray(jax.random.normal(key, tuple(shape), jnp.float32), np.float64)


def _with_zeros(key, shape, dtype):
    """Normal draws with every other entry exactly 0: inputs on the kink, on purpose."""
    x = _draw(key, shape)
    x.reshape(-1)[::2] = 0.0
    return jnp.asarray(x, dtype)


def _soft_targets(key, pred, dtype):
    """Targets uniform in [−0.5, 1.5]: soft values in [0, 1] and values outside it."""
    return jax.random.uniform(key, pred.shape, dtype, -0.5, 1.5)


def _rows_not_distributions(key, pred, dtype):
    """One row of each kind per batch of 4: multi-hot (classes 0 and 2 hot, sum 2), unnormalized positive
    (e^g, sum ≠ 1), negative soft entries (any sum) and all-zero (sum 0)."""
    lead, c = pred.shape[:-2], pred.shape[-1]
    g = _draw(key, lead + (2, c))
    multi = np.zeros(lead + (c,))
    multi[..., [0, 2]] = 1.0
    rows = np.stack([multi, np.exp(g[..., 0, :]), g[..., 1, :], np.zeros(lead + (c,))], axis=-2)
    return jnp.asarray(rows, dtype)


def _constant_feature(key, shape, dtype):
    """Normal draws whose first feature is 0.75 everywhere: a feature with batch variance exactly 0
    (0.75 and a batch of 4 keep its mean exact in every dtype)."""
    x = _draw(key, shape)
    x[..., 0] = 0.75
    return jnp.asarray(x, dtype)


def _constant_row(key, shape, dtype):
    """Normal draws whose first example is 0.75 in every feature (4 of them): a row with variance exactly 0."""
    x = _draw(key, shape)
    x[..., 0, :] = 0.75
    return jnp.asarray(x, dtype)


def _tied_rows(key, shape, dtype):
    """(…, H, W, C) normal draws with rows 2i and 2i + 1 equal: every 2×2 window's maximum is tied."""
    x = _draw(key, shape)
    return jnp.asarray(np.repeat(x[..., ::2, :, :], 2, axis=-3), dtype)


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
        Entry("Relu[x=0]", act.Relu, (4,), sample=_with_zeros, fd=False, probes="the kink: relu'(0) = 0"),
        Entry(
            "LeakyRelu(0.2)[x=0]",
            lambda: act.LeakyRelu(0.2),
            (4,),
            sample=_with_zeros,
            fd=False,
            probes="the kink: leaky_relu'(0) = 1",
        ),
    ]


def _loss_entries() -> list[Entry]:
    return [
        Entry("mse", lambda: losses.mse, (4,), target=_same_shape),
        Entry("softmax_cross_entropy[labels]", lambda: losses.softmax_cross_entropy, (5,), target=_labels),
        Entry("softmax_cross_entropy[one-hot]", lambda: losses.softmax_cross_entropy, (5,), target=_probabilities),
        Entry("binary_cross_entropy", lambda: losses.binary_cross_entropy, (4,), target=_bits),
        Entry(
            "softmax_cross_entropy[any rows]",
            lambda: losses.softmax_cross_entropy,
            (5,),
            batch=4,
            target=_rows_not_distributions,
            probes="target rows that are not distributions: multi-hot, unnormalized, negative, all-zero",
        ),
        Entry(
            "binary_cross_entropy[soft,z=0]",
            lambda: losses.binary_cross_entropy,
            (4,),
            sample=_with_zeros,
            target=_soft_targets,
            probes="soft and out-of-[0, 1] targets, logits exactly 0",
        ),
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
        Entry(
            "BatchNorm[train,constant feature]",
            layers.BatchNorm,
            (3,),
            batch=4,
            sample=_constant_feature,
            probes="a feature with batch variance 0 (x̂ = 0, 1/√ε scale)",
        ),
        Entry("LayerNorm[constant row]", layers.LayerNorm, (4,), sample=_constant_row, probes="a row with variance 0"),
        Entry(
            "MaxPool(2)[ties]",
            lambda: layers.MaxPool(2),
            (4, 4, 1),
            batch=2,
            sample=_tied_rows,
            fd=False,
            probes="tied maxima in every window: the first in row-major order takes the gradient",
        ),
        Entry("Dropout(0.3)[train]", lambda: layers.Dropout(0.3), (6,), needs_key=True),
        Entry("Dropout(0.3)[eval]", lambda: layers.Dropout(0.3), (6,), train=False),
    ]


def entries() -> tuple[Entry, ...]:
    """Every catalog entry, in a stable order."""
    return tuple(_activation_entries() + _core_layer_entries() + _family_entries() + _loss_entries())


_every_entry = entries  # for check_all, whose ``entries`` argument hides the function


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
        sample = entry.sample or _normal
        x = _compiled_or_eager(lambda k: sample(k, lead + tuple(entry.in_shape), dtype), k_x)
        thing = entry.make()
        if is_loss(entry):
            target = _compiled_or_eager(lambda k, pred: entry.target(k, pred, dtype), k_t, x)
            return check_loss(thing, x, target, transform=transform, rng=k_rng, finite_differences=entry.fd)
        params = _compiled_or_eager(lambda k: thing.init(k, tuple(entry.in_shape), dtype)[1], k_init)
        key = k_fwd if entry.needs_key else None
        return check_layer(
            thing, params, x, key=key, train=entry.train, transform=transform, rng=k_rng, finite_differences=entry.fd
        )


_UNTRACEABLE = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
)


def _compiled_or_eager(draw: Callable[..., Any], *operands: Any) -> Any:
    """``draw(*operands)`` as one compiled program (an initializer or sampler is many small ops, each its own
    compilation when run eagerly); eagerly where it is not traceable (a sampler shaping its draws with NumPy)."""
    try:
        return run_compiled(draw, bool(jax.config.jax_enable_x64), *operands)
    except _UNTRACEABLE:
        return draw(*operands)


class CheckRow(NamedTuple):
    """One row of :func:`check_all`: an entry checked in one dtype under one transform."""

    entry: str  # the entry's name
    dtype: str  # "float32" or "float64"
    transform: str  # "jit", "vmap" or "none"
    rel_autodiff: float  # relative error of the manual rule vs jax.grad
    rel_fd: float | None  # vs central finite differences; None where FD is skipped (a kink or a tie)
    adjoint: float  # error of the identity <J t, c> = <t, J^T c>
    ok: bool  # within the dtype's bars
    failures: list  # the names of the failed checks


def check_all(
    entries: Any = None,
    dtypes: tuple[str, ...] = ("float32", "float64"),
    transforms: tuple[str, ...] = ("jit",),
    on_row: Callable[[CheckRow], None] | None = None,
    seed: int = 0,
    on_report: Callable[[CheckRow, GradcheckReport], None] | None = None,
) -> list[CheckRow]:
    """Run :func:`check_entry` for every entry (default: all of :func:`entries`), dtype and transform.

    ``on_row(row)`` is called as each row finishes (for progress output), ``on_report(row, report)``
    too, with the row's full :class:`~fnnet.checking.GradcheckReport` (per-leaf errors, worst indices,
    hints); ``seed`` draws the inputs and probes. Returns the rows in order: entry, then dtype, then
    transform. ``fnnet check`` and the ``gradient_checks`` experiment both run this one loop.
    """
    rows = []
    for entry in _every_entry() if entries is None else entries:
        for dtype in dtypes:
            for transform in transforms:
                r = check_entry(entry, jnp.dtype(dtype), transform, seed=seed)
                row = CheckRow(
                    entry=entry.name,
                    dtype=str(dtype),
                    transform=transform,
                    rel_autodiff=r.rel_autodiff,
                    rel_fd=None if r.fd_dtype == "skipped" else r.rel_fd,
                    adjoint=r.dot_error,
                    ok=r.ok,
                    failures=r.failures,
                )
                rows.append(row)
                if on_row is not None:
                    on_row(row)
                if on_report is not None:
                    on_report(row, r)
    return rows
