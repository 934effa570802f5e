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

import concurrent.futures
import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import activations as act
from fnnet import initializers, layers, losses
from fnnet.checking import TOLERANCES, GradcheckReport, check_layer, check_loss, run_compiled, x64_available
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
      fd: ``False`` skips the finite-difference reference. An entry at a kink or a tie does not need it: the
        check detects probes that cross one, counts nothing there as a pass and re-probes at a shifted point
        (:class:`fnnet.checking.KinkReport`), while autodiff and the adjoint identities check the rule at the
        point itself.
      probes: for an edge entry, which assumption boundary of the rule its inputs sit on.
      atomics: the backward scatter-adds (repeated indices), which XLA may do with atomic adds on an
        accelerator, in an order that can change between runs: there the determinism check allows
        ``nondet_tol`` = the dtype's autodiff bar (:func:`nondet_tol`); on CPU it asks for bit equality.

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
    atomics: bool = False


def nondet_tol(entry: Entry, dtype: Any) -> float:
    """The determinism bar of ``entry`` in ``dtype`` on the current backend: 0 (the rule run twice must give
    identical results), except for an entry whose backward scatter-adds (``atomics``) off the CPU, where XLA's
    atomic adds may sum in another order: the dtype's autodiff bar."""
    if entry.atomics and jax.default_backend() != "cpu":
        return TOLERANCES[str(jnp.dtype(dtype))].autodiff
    return 0.0


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
        Entry("Softsign", act.Softsign, (5,)),
        Entry("Identity", act.Identity, (5,)),
        Entry("Softmax", act.Softmax, (5,)),
        Entry("Relu[x=0]", act.Relu, (4,), sample=_with_zeros, probes="the kink: relu'(0) = 0"),
        Entry("LeakyRelu(0.2)[x=0]", lambda: act.LeakyRelu(0.2), (4,), sample=_with_zeros, probes="the kink: 1 at 0"),
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
            probes="tied maxima in every window: the first in row-major order takes the gradient",
        ),
        Entry("Dropout(0.3)[train]", lambda: layers.Dropout(0.3), (6,), needs_key=True),
        Entry("Dropout(0.3)[eval]", lambda: layers.Dropout(0.3), (6,), train=False),
    ]


def _sequence_entries() -> list[Entry]:
    """Entries of the sequence-model layers and loss: Embedding, PositionalEmbedding, RMSNorm, GRU and
    sequence cross-entropy (its mask included)."""
    vocab = 5

    def ids(key, shape, dtype):
        """Integer ids in [0, vocab), with the last id of each sequence a repeat of its first (a row of E
        that takes two cotangents, besides the repeats 3 · 6 draws from 5 ids make anyway)."""
        del dtype
        x = jax.random.randint(key, shape, 0, vocab)
        return x.at[..., -1].set(x[..., 0])

    def masked_labels(key, pred, dtype):
        """(labels, mask): labels in range, the mask keeping a ragged prefix of each sequence."""
        del dtype
        labels = jax.random.randint(key, pred.shape[:-1], 0, pred.shape[-1])
        lengths = jnp.arange(pred.shape[-3]) % pred.shape[-2] + 1  # sequence b keeps its first 1 + b mod T tokens
        return labels, jnp.broadcast_to(jnp.arange(pred.shape[-2])[None, :] < lengths[:, None], labels.shape)

    def fully_masked_row(key, pred, dtype):
        """(labels, mask) with sequence 0 masked out entirely (its rows of the gradient are 0) and with
        out-of-range labels (−1, PyTorch's padding habit) on the masked tokens."""
        labels, mask = masked_labels(key, pred, dtype)
        mask = mask.at[..., 0, :].set(False)
        return jnp.where(mask, labels, -1), mask

    return [
        Entry("Embedding(5,3)", lambda: layers.Embedding(vocab, 3), (6,), sample=ids, atomics=True),
        Entry("PositionalEmbedding(6)[T=4]", lambda: layers.PositionalEmbedding(6), (4, 3), batch=2),
        Entry("RMSNorm", layers.RMSNorm, (5,)),
        Entry("RMSNorm[(B,T,d)]", layers.RMSNorm, (3, 4), batch=2),
        Entry("GRU(3)[last]", lambda: layers.GRU(3), (5, 2), batch=2),
        Entry("GRU(3)[sequences]", lambda: layers.GRU(3, return_sequences=True), (4, 2), batch=2),
        Entry("sequence_cross_entropy", lambda: losses.sequence_cross_entropy, (4, 5), batch=2, target=_labels),
        Entry(
            "sequence_cross_entropy[mask]", lambda: losses.sequence_cross_entropy, (4, 5), batch=3, target=masked_labels
        ),
        Entry(
            "sequence_cross_entropy[fully masked row]",
            lambda: losses.sequence_cross_entropy,
            (4, 5),
            batch=3,
            target=fully_masked_row,
        ),
    ]


def _with_mask(layer: Layer, mask: list[list[bool]]) -> Layer:
    """``layer`` with a fixed key-padding mask (B, T) closed over: the Entry has no mask field, so a masked
    entry checks this Layer, whose forward calls ``layer.forward(..., mask=mask)`` and whose backward is
    ``layer``'s own rule (the cache carries the mask)."""
    fixed = np.asarray(mask, bool)

    def forward(params, x, *, key=None, train=True):
        return layer.forward(params, x, key=key, train=train, mask=jnp.asarray(fixed))

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        return layer.jvp(params, x, dparams, dx, key=key, train=train, mask=jnp.asarray(fixed))

    return layer._replace(forward=forward, jvp=None if layer.jvp is None else jvp, name=f"{layer.label}[mask]")


def _without_key_bias(tree: Any) -> Any:
    """``tree`` (params or grads) with every attention key bias ``"bk"`` taken out."""
    if isinstance(tree, dict):
        return {k: _without_key_bias(v) for k, v in tree.items() if k != "bk"}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_without_key_bias(v) for v in tree)
    return tree


def _with_key_bias(tree: Any) -> Any:
    """The inverse: ``"bk" = 0`` put back beside every ``"Wk"``."""
    if isinstance(tree, dict):
        out = {k: _with_key_bias(v) for k, v in tree.items()}
        if "Wk" in tree and "bq" in tree:
            out["bk"] = jnp.zeros(tree["Wk"].shape[:1], tree["Wk"].dtype)
        return out
    if isinstance(tree, (tuple, list)):
        return type(tree)(_with_key_bias(v) for v in tree)
    return tree


def _key_bias_frozen(layer: Layer) -> Layer:
    """``layer`` with its attention key biases held at 0 and left out of the checked params.

    The gradient of a key bias is identically zero (adding q_i · bk to every score of row i leaves its
    softmax unchanged), so autodiff returns rounding noise for it and the rule exact zeros (see
    :func:`fnnet.layers.attention.MultiHeadAttention`); a relative error per leaf between the two is
    meaningless (≈ 1). The tests check that leaf against 0 with an absolute bar; here every other leaf is
    checked three ways.
    """

    def init(key, in_shape, dtype=jnp.float32):
        shape, params = layer.init(key, in_shape, dtype)
        return shape, _without_key_bias(params)

    def forward(params, x, *, key=None, train=True, **mask):
        return layer.forward(_with_key_bias(params), x, key=key, train=train, **mask)

    def backward(params, cache, dy):
        grads, dx = layer.backward(_with_key_bias(params), cache, dy)
        return _without_key_bias(grads), dx

    def jvp(params, x, dparams, dx, *, key=None, train=True, **mask):
        return layer.jvp(_with_key_bias(params), x, _with_key_bias(dparams), dx, key=key, train=train, **mask)

    jvp = None if layer.jvp is None else jvp
    return Layer(init, forward, backward, jvp=jvp, name=f"{layer.label}[bk frozen]")


def _attention_entries() -> list[Entry]:
    """MultiHeadAttention (dense and blocked, causal, with a padding mask and fully masked rows, a T the tile
    does not divide), a transformer block (Pre-LN and Post-LN) and a tiny GPT with tied weights. Each holds its
    key biases at 0 (:func:`_key_bias_frozen`: their gradient is identically 0); masked ones close over a
    fixed mask (:func:`_with_mask`)."""
    pad = [[True, True, False, True, True], [True, True, True, False, False]]
    # sequence 0 left-padded (with causal attention its first two query rows see no key), sequence 1 all padding
    empty = [[False, False, True, True, True], [False] * 5]
    vocab = 5

    def ids(key, shape, dtype):
        del dtype
        return jax.random.randint(key, shape, 0, vocab)

    def mha(*a, **kw):
        return _key_bias_frozen(layers.MultiHeadAttention(*a, **kw))

    def frozen(make):
        return lambda: _key_bias_frozen(make())

    return [
        Entry("MultiHeadAttention(2)[dense]", lambda: mha(2), (5, 4), batch=2),
        Entry("MultiHeadAttention(2,causal)", lambda: mha(2, causal=True), (5, 4), batch=2),
        Entry(
            "MultiHeadAttention(2)[blocked,T=7,tile=3]",
            lambda: mha(2, block_size=3),
            (7, 4),
            batch=2,
        ),
        Entry(
            "MultiHeadAttention(2,causal)[padding mask]", lambda: _with_mask(mha(2, causal=True), pad), (5, 4), batch=2
        ),
        Entry(
            "MultiHeadAttention(2,causal)[blocked,tile=2,padding mask]",
            lambda: _with_mask(mha(2, causal=True, block_size=2), pad),
            (5, 4),
            batch=2,
        ),
        Entry(
            "MultiHeadAttention(2,causal)[fully masked rows]",
            lambda: _with_mask(mha(2, causal=True), empty),
            (5, 4),
            batch=2,
        ),
        Entry(
            "MultiHeadAttention(2)[blocked,fully masked rows]",
            lambda: _with_mask(mha(2, block_size=2), empty),
            (5, 4),
            batch=2,
        ),
        Entry(
            "transformer_block(8,2)[pre-LN]",
            frozen(lambda: layers.transformer_block(8, 2, mlp_ratio=2)),
            (4, 8),
            batch=2,
        ),
        Entry(
            "transformer_block(4,2)[post-LN]",
            frozen(lambda: layers.transformer_block(4, 2, mlp_ratio=2, prenorm=False)),
            (4, 4),
            batch=2,
        ),
        Entry(
            "gpt(V=5,d=4,1 layer,tied)",
            frozen(lambda: layers.gpt(vocab, 6, 4, 2, 1, mlp_ratio=2, tie_weights=True)),
            (4,),
            batch=2,
            sample=ids,
        ),
    ]


def entries() -> tuple[Entry, ...]:
    """Every catalog entry, in a stable order."""
    return tuple(
        _activation_entries()
        + _core_layer_entries()
        + _family_entries()
        + _sequence_entries()
        + _attention_entries()
        + _loss_entries()
    )


_every_entry = entries  # for check_all, whose ``entries`` argument hides the function


def is_loss(entry: Entry) -> bool:
    return entry.target is not None


def has_forward_rule(entry: Entry) -> bool:
    """True when the entry's layer or loss has a hand-written forward-mode rule (``jvp``)."""
    return entry.make().jvp is not None


def check_entry(
    entry: Entry,
    dtype: Any = jnp.float32,
    transform: str = "jit",
    seed: int = 0,
    modes: Sequence[str] = ("rev",),
    order: int = 1,
) -> GradcheckReport:
    """Run the three-way check of one entry in ``dtype`` under ``transform`` ("none", "jit", "vmap").

    Under "vmap" the inputs carry a leading axis of 2 independent batches. ``modes=("rev", "fwd")`` also
    checks the forward-mode rule three ways (:func:`fnnet.checking.check_layer`), for an entry that has one
    (:func:`has_forward_rule`); one without is checked in reverse mode only (``report.forward`` is None).
    ``order=2`` also checks the rule's own derivative (``report.second``). The rule is run twice (determinism,
    within :func:`nondet_tol`) and, for a layer, at the zero cotangent.
    """
    return _check_at(entry, draw_point(entry, dtype, transform, seed), dtype, transform, modes, order)


def _check_at(entry: Entry, point: Point, dtype: Any, transform: str, modes: Sequence[str], order: int) -> Any:
    """:func:`check_entry` at a drawn ``point`` (in ``dtype``)."""
    if "fwd" in modes and not has_forward_rule(entry):
        modes = tuple(m for m in modes if m != "fwd")
    dtype = jnp.dtype(dtype)
    with jax.enable_x64(dtype == jnp.float64):
        if is_loss(entry):
            return check_loss(
                point.thing,
                point.x,
                point.other,
                transform=transform,
                rng=point.rng,
                finite_differences=entry.fd,
                modes=modes,
                order=order,
                nondet_tol=nondet_tol(entry, dtype),
            )
        return check_layer(
            point.thing,
            point.other,
            point.x,
            key=point.key,
            train=entry.train,
            transform=transform,
            rng=point.rng,
            finite_differences=entry.fd,
            modes=modes,
            order=order,
            nondet_tol=nondet_tol(entry, dtype),
        )


class Point(NamedTuple):
    """Where :func:`check_entry` checks an entry: the built layer or loss, its input, its params (a layer) or
    target (a loss), the forward's PRNG key (None unless ``needs_key``) and the key of the check's noise."""

    thing: Layer | Loss
    x: Any
    other: Any
    key: Any
    rng: Any


def draw_point(entry: Entry, dtype: Any = jnp.float32, transform: str = "jit", seed: int = 0) -> Point:
    """The point :func:`check_entry` checks ``entry`` at, in ``dtype`` (arrays of the matching x64 setting).

    The point is drawn in float64 where the backend has it and rounded to ``dtype``: the float32 and float64
    rows check the same inputs and parameters up to rounding, and share one compiled draw. Under "vmap" the
    input carries a leading axis of 2 independent batches.
    """
    return _rounded_point(_drawn(entry, transform, seed, _draw_dtype(dtype)), dtype)


class _Drawn(NamedTuple):
    """A point as drawn, before rounding to a row's dtype: :func:`draw_point` less the rounding."""

    thing: Layer | Loss
    drawn: tuple[Any, Any]  # (x, params or target), in float64 where the backend has it
    key: Any
    rng: Any


def _draw_dtype(dtype: Any) -> Any:
    """The dtype a row in ``dtype`` is drawn in: float64 where the backend has it, else ``dtype`` itself."""
    return jnp.dtype(jnp.float64) if x64_available() else jnp.dtype(dtype)


def _drawn(entry: Entry, transform: str, seed: int, draw_dtype: Any) -> _Drawn:
    lead = (2, entry.batch) if transform == "vmap" else (entry.batch,)
    sample = entry.sample or _normal
    thing = entry.make()
    in_shape = tuple(entry.in_shape)
    with jax.enable_x64(draw_dtype == jnp.float64):
        k_init, k_x, k_t, k_fwd, k_rng = jax.random.split(jax.random.key(seed), 5)

        def draw_x(k):
            return sample(k, lead + in_shape, draw_dtype)

        if is_loss(entry):
            drawn = _draws(draw_x, lambda k, x: entry.target(k, x, draw_dtype), k_x, k_t)
        else:
            drawn = _draws(draw_x, lambda k, x: thing.init(k, in_shape, draw_dtype)[1], k_x, k_init)
    key = k_fwd if entry.needs_key and not is_loss(entry) else None
    return _Drawn(thing, drawn, key, k_rng)


def _rounded_point(d: _Drawn, dtype: Any) -> Point:
    dtype = jnp.dtype(dtype)
    with jax.enable_x64(dtype == jnp.float64):
        x, other = _rounded(d.drawn, dtype)
    return Point(d.thing, x, other, d.key, d.rng)


_UNTRACEABLE = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
)


def _draws(draw_x: Callable[..., Any], draw_other: Callable[..., Any], k_x: Any, k_other: Any) -> tuple[Any, Any]:
    """``x = draw_x(k_x)`` and ``draw_other(k_other, x)`` (the params or the target), as one compiled program
    where both trace, else each on its own (:func:`_compiled_or_eager`)."""
    try:
        return run_compiled(lambda kx, ko: (lambda x: (x, draw_other(ko, x)))(draw_x(kx)), _x64(), k_x, k_other)
    except _UNTRACEABLE:
        x = _compiled_or_eager(draw_x, k_x)
        return x, _compiled_or_eager(draw_other, k_other, x)


def _rounded(tree: Any, dtype: Any) -> Any:
    """``tree``'s float64 leaves rounded to ``dtype`` and its integer leaves in the current default integer
    type, as arrays of the current x64 setting (on the host: no compilation)."""

    def cast(a):
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating):
            return jnp.asarray(a.astype(dtype))
        if np.issubdtype(a.dtype, np.integer):
            return jnp.asarray(a.astype(jax.dtypes.canonicalize_dtype(np.int64)))
        return jnp.asarray(a)

    return jax.tree_util.tree_map(cast, tree)


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)


def _compiled_or_eager(draw: Callable[..., Any], *operands: Any) -> Any:
    """``draw(*operands)`` as one compiled program (an initializer or sampler is many small ops, each its own
    compilation when run eagerly); eagerly where it is not traceable (a sampler shaping its draws with NumPy)."""
    try:
        return run_compiled(draw, _x64(), *operands)
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
    forward: dict | None = None  # the forward-mode rule's errors (ForwardReport fields); None: not checked
    second: dict | None = None  # the rule's own derivative (SecondOrderReport fields); None: order 1
    kink: str | None = None  # FD probes crossed a kink at the drawn point and were re-probed (KinkReport); None: no


def check_all(
    entries: Any = None,
    dtypes: tuple[str, ...] = ("float32", "float64"),
    transforms: tuple[str, ...] = ("jit",),
    on_row: Callable[[CheckRow], None] | None = None,
    seed: int = 0,
    on_report: Callable[[CheckRow, GradcheckReport], None] | None = None,
    workers: int | None = None,
    modes: Sequence[str] = ("rev", "fwd"),
    order: int = 1,
) -> list[CheckRow]:
    """Run :func:`check_entry` for every entry (default: all of :func:`entries`), dtype and transform.

    ``on_row(row)`` is called as each row finishes, in order (for progress output), ``on_report(row,
    report)`` too, with the row's full :class:`~fnnet.checking.GradcheckReport` (per-leaf errors, worst
    indices, hints); ``seed`` draws the inputs and probes. Returns the rows in order: entry, then dtype,
    then transform. ``fnnet check`` and the ``gradient_checks`` experiment both run this one loop.

    ``modes``: ``("rev", "fwd")`` (the default) checks every hand-written rule, the forward-mode one too
    where the entry has it; ``("rev",)`` the reverse rules only.

    ``workers`` threads check rows side by side (default: the CPU count, at most 4; 1: one after another).
    A check's cost is compiling its program, which XLA does without Python's lock, so on two cores two
    threads overlap one row's compilation with the next one's tracing. The results do not depend on it.
    """
    jobs = list(_every_entry() if entries is None else entries)
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    if workers < 1:
        raise ValueError(f"check_all(workers={workers}): need at least 1 worker")

    def run(entry: Entry) -> list[tuple[CheckRow, GradcheckReport]]:
        """An entry's rows, its point drawn once per transform (the dtypes' rows round the same draw)."""
        drawn: dict = {}

        def point(dtype: str, transform: str) -> Point:
            at = (transform, _draw_dtype(dtype))
            if at not in drawn:
                drawn[at] = _drawn(entry, transform, seed, at[1])
            return _rounded_point(drawn[at], dtype)

        return [row(entry, dtype, t, point(dtype, t)) for dtype in dtypes for t in transforms]

    def row(entry: Entry, dtype: str, transform: str, point: Point) -> tuple[CheckRow, GradcheckReport]:
        r = _check_at(entry, point, jnp.dtype(dtype), transform, modes, order)
        f, s = r.forward, r.second
        fwd = None if f is None else {"autodiff": f.rel_autodiff, "fd": f.rel_fd, "adjoint": f.adjoint, "ok": f.ok}
        sec = None
        if s is not None:
            sec = {"autodiff": s.rel_autodiff, "fd": s.rel_fd, "symmetry": s.symmetry, "hvp": s.rel_hvp, "ok": s.ok}
        row = CheckRow(
            entry=entry.name,
            dtype=str(dtype),
            transform=transform,
            rel_autodiff=r.rel_autodiff,
            rel_fd=None if r.fd_dtype == "skipped" else r.rel_fd,
            adjoint=r.dot_error,
            ok=r.ok,
            failures=r.wrong,
            forward=fwd,
            second=sec,
            kink=None if r.kink is None else str(r.kink),
        )
        return row, r

    rows = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for entry_rows in pool.map(run, jobs) if workers > 1 else map(run, jobs):
            for done, r in entry_rows:
                rows.append(done)
                if on_row is not None:
                    on_row(done)
                if on_report is not None:
                    on_report(done, r)
    return rows
