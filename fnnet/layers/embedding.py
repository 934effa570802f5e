"""Embedding (a lookup table of token vectors) and a learned positional embedding.

``Embedding(vocab_size, dim)`` maps integer ids (B, T) to the rows of a table E (vocab_size, dim);
``PositionalEmbedding(max_len)`` adds a learned row P[t] to the feature vector at position t of
x (B, T, d). Both are linear in their parameters, so their rules are exact everywhere.

**Integer inputs.** The ids are integers, so they have no gradient: ``Embedding.backward`` returns
``dx = None``, and through :func:`fnnet.custom_vjp` JAX receives a symbolic zero for them (a
``float0`` cotangent, the type JAX gives integer inputs). Only E is differentiated.

**Out-of-range ids** (outside [0, vocab_size − 1], negative ones included: they are never wrapped
around as NumPy indexing would) raise a ``ValueError`` when the ids are concrete. Under
``jax.jit``/``jax.vmap`` they cannot be checked; the output row of each such id is NaN (a poison,
as for out-of-range labels in the losses), and it sends no gradient to E.

References: Bengio, Ducharme, Vincent & Jauvin 2003, "A Neural Probabilistic Language Model", sec. 2
(the shared table C of word feature vectors); Vaswani et al. 2017, "Attention Is All You Need",
sec. 3.4-3.5 (token embeddings, positional encodings, learned ones reported as equivalent);
Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2: learned positions).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from fnnet import initializers
from fnnet.core import (
    Array,
    DTypeError,
    Layer,
    ShapeError,
    check_dtype_match,
    check_input,
    check_param_dtype,
    check_params,
    check_tangent,
    is_concrete,
    is_int,
    shape_str,
)

__all__ = ["Embedding", "PositionalEmbedding"]


def _positive_int(owner: str, arg: str, value: Any) -> int:
    if not is_int(value) or value <= 0:
        raise ValueError(f"{owner} needs a positive integer {arg}, got {value!r}")
    return int(value)


def _check_ids(name: str, ids: Any, vocab_size: int) -> None:
    """Integer ids with a batch axis; concrete ids must lie in [0, vocab_size − 1]."""
    dtype = jnp.result_type(ids)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise DTypeError(
            f"{name} needs integer token ids, got dtype {dtype}; convert them first, e.g. ids.astype(jnp.int32)"
        )
    if jnp.ndim(ids) < 1:
        raise ShapeError(f"{name} expected ids (batch, time), got a scalar")
    if is_concrete(ids) and jnp.size(ids):
        host = np.asarray(ids)
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{name} got token id {bad}, out of range for a vocabulary of {vocab_size} "
                f"(ids must lie in [0, {vocab_size - 1}])"
            )


def Embedding(vocab_size: int, dim: int, *, e_init: initializers.Initializer | None = None) -> Layer:
    """Token embedding: integer ids (B, T) -> E[ids], (B, T, dim); any shape of ids with a batch axis works.

    Forward:
        y[b, t] = E[ids[b, t]],   E: (vocab_size, dim).

    Backward (a scatter-add: every occurrence of a token adds its cotangent to that token's row, so
    repeated ids accumulate):
        dE[v] = Σ_{(b, t): ids[b, t] = v} dy[b, t],   dx = None (the ids are integers: no gradient).

    Forward mode (JVP), for a tangent dE of the table (the ids take none: ``dx`` is ignored, ``None`` is
    accepted):
        dy[b, t] = dE[ids[b, t]], the same lookup; 0 for an out-of-range id under ``jit`` (its y row is
        the NaN poison, a constant, as ``jax.jvp`` of the forward gives, and the transpose of the
        backward, which sends nothing to E from it).

    Default init: E ~ N(0, 1), as ``torch.nn.Embedding`` (GPT-2 uses N(0, 0.02²): pass
    ``e_init=fn.initializers.normal(0.02)``). ``init(key, (T,), dtype)`` returns out shape (T, dim).

    Out-of-range ids: a ``ValueError`` when concrete; NaN output rows (and no gradient to E from
    them) under ``jit``/``vmap`` (module docstring). Float ids are a :class:`~fnnet.core.DTypeError`.

    Params: ``{"E": (vocab_size, dim)}``, floating point; anything else is refused while tracing.

    Reference: Bengio et al. 2003, sec. 2 (the table C of feature vectors).
    """
    vocab_size = _positive_int("Embedding", "vocab_size", vocab_size)
    dim = _positive_int("Embedding", "dim", dim)
    name = f"Embedding({vocab_size}, {dim})"
    e_init = initializers.resolve(name, "e_init", e_init, initializers.normal(1.0))
    spec = {"E": (vocab_size, dim)}

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        check_param_dtype(name, dtype)
        params = {"E": initializers.draw(name, "e_init", e_init, key, (vocab_size, dim), dtype)}
        return tuple(in_shape) + (dim,), params

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        _check_ids(name, x, vocab_size)
        E = params["E"]
        valid = (x >= 0) & (x < vocab_size)
        rows = jnp.take(E, jnp.clip(x, 0, vocab_size - 1), axis=0)
        y = jnp.where(valid[..., None], rows, jnp.asarray(jnp.nan, E.dtype))
        return y, {"ids": x}

    def backward(params, cache, dy: Array):
        check_params(name, params, spec)
        E, ids = params["E"], cache["ids"]
        valid = (ids >= 0) & (ids < vocab_size)
        dy = jnp.where(valid[..., None], dy, jnp.zeros((), dy.dtype))  # a poisoned row sends nothing to E
        flat = jnp.reshape(jnp.clip(ids, 0, vocab_size - 1), (-1,))
        dE = jnp.zeros_like(E).at[flat].add(jnp.reshape(dy, (-1, dim)).astype(E.dtype))
        return {"E": dE}, None

    def jvp(params, x: Array, dparams, dx: Any = None, *, key=None, train=True):
        del dx  # integer ids: no tangent
        y, _ = forward(params, x, key=key, train=train)
        check_tangent(name, "dparams", dparams, params)
        valid = (x >= 0) & (x < vocab_size)
        rows = jnp.take(dparams["E"], jnp.clip(x, 0, vocab_size - 1), axis=0)
        return y, jnp.where(valid[..., None], rows, jnp.zeros((), rows.dtype))

    return Layer(init, forward, backward, jvp=jvp, name=name)


def PositionalEmbedding(max_len: int, *, p_init: initializers.Initializer | None = None) -> Layer:
    """Learned positional embedding: x (B, T, d) -> x + P[:T], with a table P (max_len, d), T ≤ max_len.

    Forward:
        y[b, t] = x[b, t] + P[t],   t = 0, ..., T − 1.

    Backward:
        dP[t] = Σ_b dy[b, t] for t < T, dP[t] = 0 for T ≤ t < max_len,   dx = dy.

    Forward mode (JVP), for tangents dP of the table and dx of x:
        dy[b, t] = dx[b, t] + dP[t].

    Default init: P ~ N(0, 0.02²), the scale of GPT-2's initialization (``p_init`` to change it).
    ``init(key, (T, d), dtype)`` needs T ≤ max_len and returns the shape unchanged; so does every
    forward (a :class:`~fnnet.core.ShapeError` names T and max_len).

    Params: ``{"P": (max_len, d)}``, floating point; anything else is refused while tracing.

    Reference: Vaswani et al. 2017, sec. 3.5 (learned positional embeddings); Radford et al. 2019 (GPT-2).
    """
    max_len = _positive_int("PositionalEmbedding", "max_len", max_len)
    name = f"PositionalEmbedding({max_len})"
    p_init = initializers.resolve(name, "p_init", p_init, initializers.normal(0.02))
    spec = {"P": (max_len, "d")}

    def check_length(T: int) -> None:
        if T > max_len:
            raise ShapeError(f"{name} got sequences of length {T}, longer than max_len = {max_len}")

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        check_param_dtype(name, dtype)
        if len(in_shape) != 2:
            raise ShapeError(f"{name} needs input shape (time, features), got {shape_str(in_shape)}")
        check_length(int(in_shape[0]))
        d = int(in_shape[1])
        return tuple(in_shape), {"P": initializers.draw(name, "p_init", p_init, key, (max_len, d), dtype)}

    def forward(params, x: Array, *, key=None, train=True):
        del key, train
        check_params(name, params, spec)
        P = params["P"]
        check_input(name, x, (None, P.shape[1]))
        check_dtype_match(name, x, P)
        T = x.shape[1]
        check_length(T)
        return x + P[None, :T], {}

    def backward(params, cache, dy: Array):
        del cache
        check_params(name, params, spec)
        P = params["P"]
        T = dy.shape[1]
        dP = jnp.zeros_like(P).at[:T].set(jnp.sum(dy, axis=0))
        return {"P": dP}, dy

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True):
        y, _ = forward(params, x, key=key, train=train)
        check_tangent(name, "dparams", dparams, params)
        check_tangent(name, "dx", dx, x)
        return y, dx + dparams["P"][None, : x.shape[1]]

    return Layer(init, forward, backward, jvp=jvp, name=name)
