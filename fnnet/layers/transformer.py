"""The transformer block and a GPT, composed from fnnet's layers (every rule hand-written below them).

``transformer_block`` is a :func:`~fnnet.layers.combinators.serial` of residual branches, so its
backward is the chain rule through the children's rules; ``gpt`` stacks blocks between an embedding
and a vocabulary head. With ``tie_weights=True`` the head reuses the embedding table, and its gradient
is added into that table's (the one rule written here, with its forward-mode twin). The forward-mode
rules (``jvp``) are the combinators' composition of the children's, so they exist when every child's does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fnnet.activations import Gelu
from fnnet.core import Array, Layer, ShapeError, is_int, mark_takes_mask, shape_str, takes_mask
from fnnet.layers.attention import MultiHeadAttention
from fnnet.layers.combinators import parts, residual, serial
from fnnet.layers.dense import Dense, weight_gradient
from fnnet.layers.embedding import Embedding, PositionalEmbedding
from fnnet.layers.normalization import LayerNorm

__all__ = ["gpt", "transformer_block"]


def _positive(owner: str, arg: str, value: Any) -> int:
    if not is_int(value) or value <= 0:
        raise ValueError(f"{owner} needs a positive integer {arg}, got {value!r}")
    return int(value)


def _named(layer: Layer, name: str, check_shape=None) -> Layer:
    """``layer`` under another name, its init optionally checking the input shape first; same children."""

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        if check_shape is not None:
            check_shape(tuple(in_shape))
        return layer.init(key, in_shape, dtype)

    if parts(layer) is not None:
        init.parts = parts(layer)
    return layer._replace(init=init, name=name)


def transformer_block(
    d_model: int, num_heads: int, *, causal: bool = True, mlp_ratio: int = 4, prenorm: bool = True
) -> Layer:
    """One transformer block on x (B, T, d_model) -> (B, T, d_model).

    Pre-LN (``prenorm=True``, GPT-2's; Xiong et al. 2020, "On Layer Normalization in the Transformer
    Architecture", Fig. 1(b))::

        h = x + MHA(LN₁(x)),    y = h + W₂ GELU(W₁ LN₂(h) + b₁) + b₂

    Post-LN (``prenorm=False``, the original of Vaswani et al. 2017, §3.1; Xiong et al. Fig. 1(a))::

        h = LN₁(x + MHA(x)),    y = LN₂(h + W₂ GELU(W₁ h + b₁) + b₂)

    W₁: (d_model, mlp_ratio·d_model), W₂: (mlp_ratio·d_model, d_model); GELU is the exact form.
    Built as ``serial(residual(serial(LayerNorm, MultiHeadAttention)), residual(serial(LayerNorm,
    Dense, Gelu, Dense)))`` (Post-LN: ``serial(residual(MHA), LayerNorm, residual(MLP), LayerNorm)``), so
    params are that serial's tuple and the backward is the chain rule through each child's rule:
    for a residual, dx = dy + dx_F. The block takes ``mask=`` and hands it to its attention.

    Forward mode (JVP): the same composition of the children's rules, for a residual dy = dx + dF.
    """
    d = _positive("transformer_block", "d_model", d_model)
    h = _positive("transformer_block", "num_heads", num_heads)
    r = _positive("transformer_block", "mlp_ratio", mlp_ratio)
    if d % h:
        raise ValueError(f"transformer_block needs d_model divisible by num_heads, got {d} and {h}")
    attn = MultiHeadAttention(h, causal=causal)
    mlp = [Dense(r * d), Gelu(), Dense(d)]
    if prenorm:
        body = serial(residual(serial(LayerNorm(), attn)), residual(serial(LayerNorm(), *mlp)))
    else:
        body = serial(residual(attn), LayerNorm(), residual(serial(*mlp)), LayerNorm())

    def check_shape(in_shape: tuple[int, ...]) -> None:
        if len(in_shape) != 2 or in_shape[-1] != d:
            raise ShapeError(
                f"transformer_block(d_model={d}) needs inputs (T, {d}) per example, got {shape_str(in_shape)}"
            )

    kind = "" if prenorm else ", post-LN"
    return _named(body, f"transformer_block({d}, {h}{', causal' if causal else ''}{kind})", check_shape)


def gpt(
    vocab_size: int,
    max_len: int,
    d_model: int,
    num_heads: int,
    num_layers: int,
    *,
    mlp_ratio: int = 4,
    tie_weights: bool = False,
) -> Layer:
    """A GPT: integer ids (B, T) -> logits (B, T, vocab_size), T ≤ max_len (Radford et al. 2019, §2.3).

    ``serial(Embedding(V, d), PositionalEmbedding(max_len), transformer_block(d, heads, causal=True)
    × num_layers, LayerNorm(), Dense(V))``: the blocks are causal Pre-LN blocks; train it with
    :func:`fnnet.sequence_cross_entropy` (logits through log-sum-exp). The network takes ``mask=``
    (a key-padding mask, passed to every attention layer).

    ``tie_weights=True`` makes the vocabulary head the transposed embedding table, as GPT-2 does
    (Press & Wolf 2017, "Using the Output Embedding to Improve Language Models"), with no head bias:
    logits = h Eᵀ for the final normalized features h (B, T, d). Its rule adds the head's gradient
    into E's: with dZ the upstream gradient of the logits,

        dE = dE_embedding + dZᵀ h (rows over B·T),   dh = dZ E,

    where dE_embedding is the embedding's own scatter-add, from the body's backward of dh. Params are
    then the body's tuple ``(embedding, positions, block₁, ..., block_N, final LayerNorm)`` — there is
    no head entry; untied, the tuple ends with the head's ``{"W", "b"}``.

    Forward mode (JVP)::

        (h, dh) = body.jvp(params, ids, dparams),   logits = h Eᵀ,   dlogits = dh Eᵀ + h dEᵀ

    with dE = dparams[0]["E"] the tangent of the shared table (untied: the serial's composition).
    ``jvp`` is None while any child's is.
    """
    V = _positive("gpt", "vocab_size", vocab_size)
    L = _positive("gpt", "max_len", max_len)
    d = _positive("gpt", "d_model", d_model)
    n = _positive("gpt", "num_layers", num_layers)
    blocks = [transformer_block(d, num_heads, causal=True, mlp_ratio=mlp_ratio) for _ in range(n)]
    stem = [Embedding(V, d), PositionalEmbedding(L), *blocks, LayerNorm()]
    name = f"gpt(V={V}, T≤{L}, d={d}, heads={num_heads}, layers={n}{', tied' if tie_weights else ''})"
    if not tie_weights:
        return _named(serial(*stem, Dense(V)), name)
    body = serial(*stem)

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        shape, params = body.init(key, in_shape, dtype)
        return tuple(shape[:-1]) + (V,), params

    def forward(params, ids: Array, *, key=None, train=True, mask=None):
        kw = {} if mask is None else {"mask": mask}
        h, cache = body.forward(params, ids, key=key, train=train, **kw)
        E = params[0]["E"]
        return jnp.matmul(h, E.T), (h, cache)

    def backward(params, cache, dz: Array):
        h, body_cache = cache
        E = params[0]["E"]
        dh = jnp.matmul(dz, E)
        grads, dx = body.backward(params, body_cache, dh)
        d_head = weight_gradient(jnp.reshape(dz, (-1, V)), jnp.reshape(h, (-1, d)))  # (V, d) = dZᵀ h
        grads = (jax.tree_util.tree_map(jnp.add, grads[0], {"E": d_head}),) + tuple(grads[1:])
        return grads, dx

    jvp = None
    if body.jvp is not None:

        def jvp(params, ids: Array, dparams, dids: Array | None = None, *, key=None, train=True, mask=None):
            kw = {} if mask is None else {"mask": mask}
            h, dh = body.jvp(params, ids, dparams, dids, key=key, train=train, **kw)
            E, dE = params[0]["E"], dparams[0]["E"]
            return jnp.matmul(h, E.T), jnp.matmul(dh, E.T) + jnp.matmul(h, dE.T)

    init.parts = ("serial", tuple(stem))
    if takes_mask(body):
        forward = mark_takes_mask(forward)
    return Layer(init, forward, backward, jvp=jvp, name=name)
