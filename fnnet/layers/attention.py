"""Multi-head self-attention with a hand-written, memory-lean backward (the FlashAttention recipe).

The layer is :func:`MultiHeadAttention`; the attention core (after the projections, before ``Wo``) is
:func:`attention_forward` / :func:`attention_backward` / :func:`attention_jvp` (forward mode), usable on
their own with ``(B, H, T, d_head)`` arrays. All three process the keys in tiles: one tile of all T keys
(the *dense* form) or tiles of ``block`` keys swept by ``lax.scan`` (the *blocked* form), which never
holds a T × T array. Up to ``DENSE_MAX_T``, causal masking sweeps the tiles as a triangle: key tile t
only with the query rows that may attend one of its keys, which skips scores that are masked anyway.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

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
    is_int,
    mark_takes_mask,
    shape_str,
)
from fnnet.layers.dense import weight_gradient

__all__ = [
    "CAUSAL_SPLIT_MIN_T",
    "DENSE_MAX_T",
    "DEFAULT_BLOCK",
    "MultiHeadAttention",
    "attention_backward",
    "attention_forward",
    "attention_jvp",
    "choose_block",
]

#: Sequences up to this length use the dense form by default (one tile of all keys); longer ones the
#: blocked form with tiles of :data:`DEFAULT_BLOCK` keys. Measured with ``benchmarks/attention_memory.py``
#: and ``fnnet bench --only attention`` (see the attention page of the docs).
DENSE_MAX_T = 256
DEFAULT_BLOCK = 256
#: Causal sequences from this length up to :data:`DENSE_MAX_T` take two key tiles instead of one, so
#: that the triangle of tiles skips the upper-right quarter of the scores (:func:`_causal_tiles`).
#: ``fnnet bench``'s causal layer, manual train step, 2-core CPU: 0.80x the dense step at T = 128 and
#: 0.78x at T = 256 (B = 8, 4 heads, d = 64 and 256).
CAUSAL_SPLIT_MIN_T = 128


def choose_block(T: int, block_size: int | None, causal: bool = False) -> int:
    """The key-tile size used for a sequence of length ``T``: ``T`` itself (dense) or a tile < T (blocked).

    ``block_size=None`` picks by length: tiles of ``DEFAULT_BLOCK`` for ``T > DENSE_MAX_T``; below,
    dense, except that a causal sequence of at least ``CAUSAL_SPLIT_MIN_T`` takes two tiles of ⌈T/2⌉.
    A given ``block_size`` is used as it is (``>= T`` means dense).
    """
    if block_size is None:
        if T > DENSE_MAX_T:
            return DEFAULT_BLOCK
        return -(-T // 2) if causal and T >= CAUSAL_SPLIT_MIN_T else T
    return min(int(block_size), T)


def _accumulator(dtype: Any) -> Any:
    """The dtype the softmax statistics, the scores and the sums are kept in: float32 for bfloat16 and
    float16 inputs (as FlashAttention keeps its row maximum, sum and log-sum-exp), else the input's dtype.

    In half precision a row lse rounded to the input dtype is off by up to |lse|·2⁻⁸ (bfloat16), so the
    recomputed P = exp(S − lse) of the backward would carry that relative error into every entry.
    """
    return jnp.promote_types(dtype, jnp.float32)


def _fill(dtype: Any) -> Array:
    """The score given to masked keys: a large finite negative number (half the dtype's lowest), never −inf."""
    return jnp.asarray(jnp.finfo(dtype).min / 2, dtype)


def _valid(T: int, start: Array | int, size: int, key_mask: Array | None, causal: bool, rows: int = 0) -> Array:
    """Boolean (B or 1, 1, T − rows, size): may query rows + i attend key start + j? (in range, unmasked, causal)."""
    j = start + jnp.arange(size)
    ok = (j < T)[None, None, None, :]
    if causal:
        ok = ok & (j[None, :] <= jnp.arange(rows, T)[:, None])[None, None]
    if key_mask is not None:
        km = lax.dynamic_slice_in_dim(key_mask, start, size, axis=1) if size != key_mask.shape[1] else key_mask
        ok = ok & km[:, None, None, :]
    return ok


def _tiles(a: Array, block: int) -> Array:
    """(B, H, T, d) -> (n_tiles, B, H, block, d), zero-padded at the end of T."""
    B, H, T, d = a.shape
    n = -(-T // block)
    a = jnp.pad(a, ((0, 0), (0, 0), (0, n * block - T), (0, 0)))
    return jnp.moveaxis(a.reshape(B, H, n, block, d), 2, 0)


def _untile(t: Array, T: int) -> Array:
    """(n_tiles, B, H, block, d) -> (B, H, T, d), dropping the padding."""
    n, B, H, block, d = t.shape
    return jnp.moveaxis(t, 0, 2).reshape(B, H, n * block, d)[:, :, :T]


def _pad_mask(key_mask: Array | None, T: int, block: int) -> Array | None:
    if key_mask is None:
        return None
    n = -(-T // block)
    return jnp.pad(key_mask, ((0, 0), (0, n * block - T)), constant_values=False)


def attention_forward(
    q: Array, k: Array, v: Array, *, key_mask: Array | None = None, causal: bool = False, block: int | None = None
) -> tuple[Array, Array]:
    """O = softmax(Q Kᵀ/√d + mask) V per batch and head, and the row log-sum-exp, by the online softmax.

    ``q, k, v``: (B, H, T, d). ``key_mask``: boolean (B, T), True = attend. Returns ``(O, lse)`` with
    O (B, H, T, d) and lse (B, H, T) = log Σ_j exp(S_ij) over the attended keys j, where
    S = Q Kᵀ/√d. A row with no attended key (fully masked) gets O = 0 and lse = 0. O, lse and every
    intermediate are at least float32 (:func:`_accumulator`): for bfloat16 or float16 inputs the scores,
    the running statistics, the sums and O are float32; the caller rounds O where it consumes it (keep
    the float32 O for the backward: its D = rowsum(dO ⊙ O) cancels against dP, and an O rounded to
    bfloat16 cost the backward's dQ up to 10 times autodiff's rounding error in the catalog's checks).

    Keys are swept in tiles of ``block`` (default: all T at once). For each tile t the running row
    maximum m, the running sum l and the running (unnormalized) output a are updated
    (Milakov & Gimelshein 2018, "Online normalizer calculation for softmax", Algorithm 3; Dao et al.
    2022, "FlashAttention", Algorithm 1):

        m' = max(m, max_j S_ij),   p_ij = [j attended] · exp(S_ij − m'),
        l' = e^{m − m'} l + Σ_j p_ij,   a' = e^{m − m'} a + p V_t,

    and at the end O = a / l, lse = m + log l. Masked scores are replaced by a large finite negative
    number (never −inf) and their p is set to exactly 0, so a fully masked row has l = 0 and gives
    O = 0 (the division uses l = 1 there) with nothing NaN.
    """
    B, H, T, d = q.shape
    block = T if block is None else min(int(block), T)
    acc = _accumulator(q.dtype)
    scale = 1.0 / math.sqrt(d)
    fill = _fill(acc)
    qs = q.astype(acc) * jnp.asarray(scale, acc)

    def step(carry, tile, km, rows=0):
        m, l, a = carry
        k_t, v_t, start = (tile[0].astype(acc), tile[1].astype(acc), tile[2])
        valid = _valid(T, start, block, km, causal, rows)
        s = jnp.where(valid, jnp.einsum("bhqd,bhkd->bhqk", qs[:, :, rows:], k_t), fill)
        m_new, p, alpha = _online_update(m, s, valid)
        l_new = alpha * l + jnp.sum(p, axis=-1)
        a_new = alpha[..., None] * a + jnp.einsum("bhqk,bhkd->bhqd", p, v_t)
        return m_new, l_new, a_new

    init = (jnp.full((B, H, T), fill, acc), jnp.zeros((B, H, T), acc), jnp.zeros(q.shape, acc))
    m, l, a = _sweep_keys(step, init, (k, v), key_mask, block, causal)
    o, lse, _ = _normalize(m, l, a)
    return o, lse


def _online_update(m: Array, s: Array, valid: Array) -> tuple[Array, Array, Array]:
    """One tile's online-softmax update: (m' = max(m, max_j S_ij), p = [valid] e^{S − m'}, α = e^{m − m'})."""
    m_new = jnp.maximum(m, jnp.max(s, axis=-1))
    return m_new, jnp.where(valid, jnp.exp(s - m_new[..., None]), 0), jnp.exp(m - m_new)


def _sweep_keys(step, init, kv: tuple[Array, ...], key_mask: Array | None, block: int, causal: bool):
    """``step(carry, (*kv tile, start), key_mask, rows) -> carry`` over the key tiles: one tile of all T keys
    (dense) when ``block >= T``, a triangle of tiles when causal (:func:`_causal_tiles`), else a
    ``lax.scan`` over tiles of ``block`` keys (padded, masked). ``rows``: the first query row the step
    computes; it gets and returns the carry's rows from there on (axis 2 of every carry array)."""
    T = kv[0].shape[2]
    if block >= T:
        return step(init, (*kv, 0), key_mask)
    km = _pad_mask(key_mask, T, block)
    if _causal_tiles(T, block, causal):
        tiles = [_tiles(a, block) for a in kv]
        carry = init
        for t, start in enumerate(range(0, T, block)):
            new = step(tuple(c[:, :, start:] for c in carry), (*(a[t] for a in tiles), start), km, start)
            carry = tuple(jnp.concatenate([c[:, :, :start], n], axis=2) for c, n in zip(carry, new))
        return carry
    starts = jnp.arange(0, -(-T // block) * block, block)
    carry, _ = lax.scan(lambda c, tile: (step(c, tile, km), None), init, (*(_tiles(a, block) for a in kv), starts))
    return carry


def _causal_tiles(T: int, block: int, causal: bool) -> bool:
    """Whether a blocked sweep runs as a triangle: key tile t (keys t·b, ..., t·b + b − 1) only with the
    query rows t·b, ..., T − 1, the rows that causal masking lets attend one of its keys.

    The rows before t·b would get p = 0 and α = e^{m − m} = 1 from the tile, so skipping them changes
    no result. With n tiles the score products shrink to (n + 1)/(2n) of the rectangle. The tiles are a
    Python loop (static row slices, since a ``lax.scan`` needs one shape for every tile), and XLA then
    keeps several tiles' scores live at once: at T = 1024 and 4096 (tiles of 256) the compiled manual
    gradient took 2x and 6x the scan's temporary memory. So the triangle is used up to
    :data:`DENSE_MAX_T`, where the dense form would hold all T × T scores anyway; longer sequences keep
    the scan over the full rectangle.
    """
    return causal and block < T <= DENSE_MAX_T


def _normalize(m: Array, l: Array, a: Array) -> tuple[Array, Array, Array]:
    """(O = a / l, lse = m + log l, l) at the end of the sweep; a row with no attended key (l = 0) gets
    O = 0, lse = 0 and l = 1, so that nothing divides by 0."""
    empty = l == 0
    l_safe = jnp.where(empty, jnp.ones_like(l), l)
    lse = jnp.where(empty, jnp.zeros_like(m), m + jnp.log(l_safe))
    return a / l_safe[..., None], lse, l_safe


def attention_backward(
    q: Array,
    k: Array,
    v: Array,
    o: Array,
    lse: Array,
    do: Array,
    *,
    key_mask: Array | None = None,
    causal: bool = False,
    block: int | None = None,
) -> tuple[Array, Array, Array]:
    """(dQ, dK, dV) of :func:`attention_forward`, recomputing P tile by tile from the saved row lse.

    With S = Q Kᵀ/√d, P = softmax_rows(S) (masked entries 0) and O = P V, for an upstream dO:

        dV = Pᵀ dO,   dP = dO Vᵀ,
        dS = P ⊙ (dP − rowsum(dP ⊙ P))            (the row-softmax Jacobian: ∂P_ij/∂S_ik = P_ij(δ_jk − P_ik)),
        dQ = dS K / √d,   dK = dSᵀ Q / √d.

    rowsum(dP ⊙ P)_i = Σ_j P_ij (dO_i · V_j) = dO_i · O_i =: D_i, so D is computed once from O and dO,
    without P (Dao et al. 2022, "FlashAttention", Appendix B.2, eq. for D_i). P itself is never
    stored between forward and backward: each key tile recomputes P_t = [attended] · exp(S_t − lse),
    then dV_t = P_tᵀ dO and dK_t = dS_tᵀ Q/√d are that tile's rows and dQ accumulates dS_t K_t/√d.
    A fully masked row has P = 0, so it sends no gradient anywhere (its O = 0 and D = 0).

    As in the forward, everything between the inputs and the returned gradients is at least float32
    (:func:`_accumulator`), ``o`` and ``lse`` as the forward returned them; dQ, dK, dV have the dtype of
    ``q``.
    """
    B, H, T, d = q.shape
    block = T if block is None else min(int(block), T)
    acc = _accumulator(q.dtype)
    scale = jnp.asarray(1.0 / math.sqrt(d), acc)
    q_acc, do, lse = q.astype(acc), do.astype(acc), lse.astype(acc)
    qs = q_acc * scale
    fill = _fill(acc)
    D = jnp.sum(do * o.astype(acc), axis=-1)  # (B, H, T)

    def grads(k_t, v_t, start, km, rows=0, keys_first=False):
        """The tile's (dQ rows from ``rows`` on, dK_t, dV_t), from the query rows ``rows``, ..., T − 1.

        ``keys_first`` lays the scores out transposed, Sᵀ (keys, queries), so that every product
        contracts its left operand over that operand's minor axis, the form XLA's CPU backend sends to
        its fast matmul kernels; dQ is then computed transposed, with only the (keys, d) tile of K
        transposed. The scan over tiles (all T query rows per tile) takes it: there dK and dV,
        contracted over the rows of S, ran as XLA's own dot, and transposed the causal layer's step
        took 0.71-0.81x the time at T = 1024-4096. The dense form and the triangle's tiles keep S:
        transposed, the GPT block's step (T = 256, 64-wide heads) took 1.03x, the layer's at T = 256
        1.06x and at T = 100 (dense) 1.05x, though the layer's at T = 128 with 16-wide heads 0.90x.
        """
        k_t, v_t = k_t.astype(acc), v_t.astype(acc)
        valid = _valid(T, start, block, km, causal, rows)
        do_r, lse_r, D_r = do[:, :, rows:], lse[:, :, rows:], D[:, :, rows:]
        if keys_first:
            valid = jnp.swapaxes(valid, -1, -2)
            s = jnp.einsum("bhkd,bhqd->bhkq", k_t, qs[:, :, rows:])
            p = jnp.where(valid, jnp.exp(jnp.where(valid, s, fill) - lse_r[..., None, :]), 0)
            ds = p * (jnp.einsum("bhkd,bhqd->bhkq", v_t, do_r) - D_r[..., None, :])
            dq_part = jnp.swapaxes(jnp.einsum("bhdk,bhkq->bhdq", jnp.swapaxes(k_t, -1, -2), ds), -1, -2)
            dk_t = jnp.einsum("bhkq,bhqd->bhkd", ds, q_acc[:, :, rows:])
            return dq_part * scale, dk_t * scale, jnp.einsum("bhkq,bhqd->bhkd", p, do_r)
        s = jnp.einsum("bhqd,bhkd->bhqk", qs[:, :, rows:], k_t)
        p = jnp.where(valid, jnp.exp(jnp.where(valid, s, fill) - lse_r[..., None]), 0)
        ds = p * (jnp.einsum("bhqd,bhkd->bhqk", do_r, v_t) - D_r[..., None])
        dq_part = jnp.einsum("bhqk,bhkd->bhqd", ds, k_t)
        dk_t = jnp.einsum("bhqk,bhqd->bhkd", ds, q_acc[:, :, rows:])
        return dq_part * scale, dk_t * scale, jnp.einsum("bhqk,bhqd->bhkd", p, do_r)

    if block >= T:
        return tuple(g.astype(q.dtype) for g in grads(k, v, 0, key_mask))
    km = _pad_mask(key_mask, T, block)
    if _causal_tiles(T, block, causal):  # the triangle of the forward: tile t with query rows t·b onwards
        k_tiles, v_tiles = _tiles(k, block), _tiles(v, block)
        dq, dks, dvs = jnp.zeros(q.shape, acc), [], []
        for t, start in enumerate(range(0, T, block)):
            dq_part, dk_t, dv_t = grads(k_tiles[t], v_tiles[t], start, km, start)
            dq = dq.at[:, :, start:].add(dq_part)
            dks.append(dk_t)
            dvs.append(dv_t)
        return (
            dq.astype(q.dtype),
            _untile(jnp.stack(dks), T).astype(q.dtype),
            _untile(jnp.stack(dvs), T).astype(q.dtype),
        )

    def step(dq, tile):
        k_t, v_t, start = tile
        dq_part, dk_t, dv_t = grads(k_t, v_t, start, km, keys_first=True)
        return dq + dq_part, (dk_t, dv_t)

    starts = jnp.arange(0, -(-T // block) * block, block)
    dq, (dk, dv) = lax.scan(step, jnp.zeros(q.shape, acc), (_tiles(k, block), _tiles(v, block), starts))
    return dq.astype(q.dtype), _untile(dk, T).astype(q.dtype), _untile(dv, T).astype(q.dtype)


def attention_jvp(
    q: Array,
    k: Array,
    v: Array,
    dq: Array,
    dk: Array,
    dv: Array,
    *,
    key_mask: Array | None = None,
    causal: bool = False,
    block: int | None = None,
) -> tuple[Array, Array, Array]:
    """(O, lse, Ȯ): :func:`attention_forward`'s outputs and the tangent of O along (Q̇, K̇, V̇), in one sweep.

    With S = Q Kᵀ/√d (masked entries excluded), P = softmax_rows(S) and O = P V::

        Ṡ = (Q̇ Kᵀ + Q K̇ᵀ)/√d,   Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ)),   Ȯ = Ṗ V + P V̇,
        so  Ȯ_i = Σ_j P_ij (Ṡ_ij V_j + V̇_j) − (Σ_j P_ij Ṡ_ij) O_i.

    The keys are swept in tiles as in the forward (online softmax, no T × T array in the blocked form).
    Besides (m, l, a) the sweep carries the unnormalized tangent pieces ȧ = Σ_j p_ij (Ṡ_ij V_j + V̇_j)
    (Σ_j p_ij Ṡ_ij V_j and Σ_j p_ij V̇_j share one accumulator: only their sum is needed) and
    ċ = Σ_j p_ij Ṡ_ij, rescaled like a when the row maximum grows::

        ȧ' = e^{m − m'} ȧ + (p ⊙ Ṡ_t) V_t + p V̇_t,   ċ' = e^{m − m'} ċ + Σ_j p_ij Ṡ_ij,

    and at the end Ȯ = (ȧ − ċ O) / l (the tangent of lse would be ċ / l). A fully masked row has p = 0,
    so ȧ = ċ = 0 and Ȯ = 0, nothing NaN. O, lse and Ȯ are at least float32 (:func:`_accumulator`), as
    in the forward; O and lse are computed as :func:`attention_forward` computes them.
    """
    B, H, T, d = q.shape
    block = T if block is None else min(int(block), T)
    acc = _accumulator(q.dtype)
    fill = _fill(acc)
    scale = jnp.asarray(1.0 / math.sqrt(d), acc)
    qs, dqs = q.astype(acc) * scale, dq.astype(acc) * scale

    def step(carry, tile, km, rows=0):
        m, l, a, da, dc = carry
        k_t, v_t, dk_t, dv_t = (t.astype(acc) for t in tile[:4])
        valid = _valid(T, tile[4], block, km, causal, rows)
        qs_r, dqs_r = qs[:, :, rows:], dqs[:, :, rows:]
        s = jnp.where(valid, jnp.einsum("bhqd,bhkd->bhqk", qs_r, k_t), fill)
        m_new, p, alpha = _online_update(m, s, valid)
        ps = p * (jnp.einsum("bhqd,bhkd->bhqk", dqs_r, k_t) + jnp.einsum("bhqd,bhkd->bhqk", qs_r, dk_t))
        l_new = alpha * l + jnp.sum(p, axis=-1)
        a_new = alpha[..., None] * a + jnp.einsum("bhqk,bhkd->bhqd", p, v_t)
        da_new = alpha[..., None] * da + jnp.einsum("bhqk,bhkd->bhqd", ps, v_t) + jnp.einsum("bhqk,bhkd->bhqd", p, dv_t)
        return m_new, l_new, a_new, da_new, alpha * dc + jnp.sum(ps, axis=-1)

    stats = (jnp.full((B, H, T), fill, acc), jnp.zeros((B, H, T), acc))
    init = (*stats, jnp.zeros(q.shape, acc), jnp.zeros(q.shape, acc), jnp.zeros((B, H, T), acc))
    m, l, a, da, dc = _sweep_keys(step, init, (k, v, dk, dv), key_mask, block, causal)
    o, lse, l_safe = _normalize(m, l, a)
    return o, lse, (da - dc[..., None] * o) / l_safe[..., None]


def _check_tangents(name: str, params: Any, dparams: Any, x: Array, dx: Any) -> None:
    """A jvp's tangents fit its point: ``dparams`` as ``params``, ``dx`` as ``x`` (:func:`fnnet.core.check_tangent`)."""
    check_tangent(name, "dparams", dparams, params)
    check_tangent(name, "dx", dx, x)


def _split_heads(a: Array, h: int) -> Array:
    """(B, T, d) -> (B, h, T, d/h): head i takes columns i·d_head:(i+1)·d_head."""
    B, T, d = a.shape
    return jnp.transpose(a.reshape(B, T, h, d // h), (0, 2, 1, 3))


def _merge_heads(a: Array) -> Array:
    """(B, h, T, d_head) -> (B, T, h·d_head), the inverse of :func:`_split_heads`."""
    B, h, T, dh = a.shape
    return jnp.transpose(a, (0, 2, 1, 3)).reshape(B, T, h * dh)


def MultiHeadAttention(
    num_heads: int,
    *,
    causal: bool = False,
    use_bias: bool = True,
    block_size: int | None = None,
    w_init: initializers.Initializer | None = None,
) -> Layer:
    """Multi-head self-attention: x (B, T, d_model) -> y (B, T, d_model) (Vaswani et al. 2017, §3.2.2).

    Forward, with d_head = d_model / num_heads and head h owning columns h·d_head:(h+1)·d_head of
    Wq, Wk, Wv and the same rows of Wo::

        Q = x Wq + bq,  K = x Wk + bk,  V = x Wv + bv             (B, T, d_model), split into heads
        O_h = softmax(Q_h K_hᵀ / √d_head + M) V_h                  (B, T, d_head) per head
        y = concat_h(O_h) Wo + bo

    M is 0 where query i may attend key j and a large finite negative number elsewhere: keys j with
    ``mask[b, j] == False`` (the key-padding mask) and, with ``causal=True``, keys j > i. A query row
    that may attend no key (e.g. a sequence whose mask is all False) gets O = 0, so y = bo there, and
    sends no gradient; nothing turns NaN.

    Backward, with O = concat_h(O_h) and dy the upstream gradient (rows over B·T)::

        dWo = Oᵀ dy,  dbo = Σ dy,  dO = dy Woᵀ
        (dQ_h, dK_h, dV_h) from :func:`attention_backward`
        dWq = xᵀ dQ, dbq = Σ dQ (likewise Wk, Wv, bv),  dx = dQ Wqᵀ + dK Wkᵀ + dV Wvᵀ,
        dbk = 0 exactly.

    The key bias has no effect on the output: it adds q_i · bk to every score of row i, and a softmax is
    unchanged by a constant added to its row. In the rule, dbk = Σ_j dK_j = Σ_i q_i/√d · Σ_j dS_ij and
    Σ_j dS_ij = Σ_j P_ij (dP_ij − D_i) = D_i − D_i = 0, so the rule returns zeros (autodiff returns
    rounding noise there). The parameter is kept for the layout that ports weights to other libraries.

    The cache keeps x, Q, K, V, O and the row log-sum-exp (B, H, T) — O(B·T·d), never the B·H·T²
    probabilities, which the backward recomputes tile by tile (Dao et al. 2022, "FlashAttention:
    Fast and Memory-Efficient Exact Attention with IO-Awareness", §3.1). In bfloat16 and float16 the
    scores, softmax statistics, O and lse are float32 (as FlashAttention keeps them); the projections
    and y are in the layer's dtype. Measured in the catalog's checks, the rule's error against the float64
    truth is then at most 3 times jax.grad's own in the same dtype (it was 13 times with them rounded).

    ``block_size``: keys per tile. ``None`` picks by sequence length (:func:`choose_block`): dense (one
    tile) for T ≤ ``DENSE_MAX_T``, else tiles of ``DEFAULT_BLOCK`` keys swept by ``lax.scan``, so
    neither pass holds a T × T array. Any T works (the last tile is padded with masked keys). With
    ``causal``, tiles are swept as a triangle, each with only the query rows that may attend its keys
    (for T ≤ ``DENSE_MAX_T``, :func:`_causal_tiles`), and T from ``CAUSAL_SPLIT_MIN_T`` to ``DENSE_MAX_T``
    takes two tiles rather than one: (n + 1)/(2n) of the score products for n tiles.

    ``forward(params, x, *, key=None, train=True, mask=None)``: ``mask`` is a boolean (B, T) array,
    True = attend (the layer takes a mask, so :func:`fnnet.serial`, :func:`fnnet.residual` and
    :func:`fnnet.value_and_grad` pass theirs to it).

    Params: ``{"Wq", "Wk", "Wv", "Wo": (d_model, d_model), "bq", "bk", "bv", "bo": (d_model,)}``
    (no biases with ``use_bias=False``); W ~ Glorot normal by default (``w_init``), biases 0. The
    layout is PyTorch's ``in_proj_weight`` split in three and transposed: ``Wq = in_proj_weight[:d].T``.

    Forward mode (JVP), for tangents (Ẇq, ..., ḃo, ẋ) and the same mask, with the forward's tiles::

        Q̇ = ẋ Wq + x Ẇq + ḃq,  K̇ = ẋ Wk + x Ẇk + ḃk,  V̇ = ẋ Wv + x Ẇv + ḃv,   split into heads
        Ȯ_h = Ṗ V_h + P V̇_h,  Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ)),  Ṡ = (Q̇_h K_hᵀ + Q_h K̇_hᵀ)/√d_head
        ẏ = concat_h(Ȯ_h) Wo + concat_h(O_h) Ẇo + ḃo

    Ȯ_h comes from :func:`attention_jvp` in the same sweep as O_h (online softmax, no T × T array when
    blocked). A fully masked row has Ȯ = 0, so ẏ = ḃo there. ḃk has no effect: it adds the row constant
    q_i · ḃk/√d_head to Ṡ, which Ṗ removes.

    Errors: ``num_heads`` not a positive int (ValueError), d_model not divisible by num_heads
    (ValueError, at init and forward), inputs not (B, T, d_model) (ShapeError), a mask not boolean
    (DTypeError) or not (B, T) (ShapeError).
    """
    if not is_int(num_heads) or num_heads <= 0:
        raise ValueError(f"MultiHeadAttention needs a positive integer num_heads, got {num_heads!r}")
    if block_size is not None and (not is_int(block_size) or block_size <= 0):
        raise ValueError(f"MultiHeadAttention needs block_size None or a positive integer, got {block_size!r}")
    h = int(num_heads)
    name = f"MultiHeadAttention({h}{', causal' if causal else ''})"
    w_init = initializers.resolve(name, "w_init", w_init, initializers.glorot_normal())
    weights = ("Wq", "Wk", "Wv", "Wo")
    biases = ("bq", "bk", "bv", "bo") if use_bias else ()
    spec = {**{w: ("d", "d") for w in weights}, **{b: ("d",) for b in biases}}

    def check_heads(d_model: int) -> None:
        if d_model % h:
            raise ValueError(
                f"{name} needs d_model divisible by num_heads, got d_model={d_model} and num_heads={h} "
                f"(d_model % num_heads = {d_model % h})"
            )

    def init(key: Array, in_shape: tuple[int, ...], dtype: Any = jnp.float32):
        if len(in_shape) != 2:
            raise ShapeError(f"{name} needs inputs (T, d_model) per example, got shape {shape_str(in_shape)}")
        check_param_dtype(name, dtype)
        d = int(in_shape[-1])
        check_heads(d)
        ks = jax.random.split(key, 4)
        params = {w: initializers.draw(name, "w_init", w_init, k, (d, d), dtype) for w, k in zip(weights, ks)}
        params.update({b: jnp.zeros((d,), dtype) for b in biases})
        return tuple(in_shape), params

    def check_mask(mask: Any, x: Array) -> None:
        if not (hasattr(mask, "shape") and hasattr(mask, "dtype")):
            raise TypeError(f"{name} needs mask as a boolean (B, T) array (True = attend), got {type(mask).__name__}")
        if jnp.dtype(mask.dtype) != jnp.bool_:
            raise DTypeError(
                f"{name} needs mask as a boolean (B, T) array (True = attend), got dtype {mask.dtype}; "
                f"e.g. mask = ids != pad_id"
            )
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ShapeError(
                f"{name} needs mask of shape (B, T) = {shape_str(x.shape[:2])} for inputs "
                f"{shape_str(x.shape)}, got {shape_str(mask.shape)}"
            )

    def project(params, x, w, b):
        y = jnp.matmul(x, params[w])
        return y + jnp.reshape(params[b], (1, 1, -1)) if use_bias else y

    def check_call(params, x: Array, mask: Any) -> None:
        check_params(name, params, spec)
        d = params["Wq"].shape[0]
        check_input(name, x, (None, d))
        check_heads(d)
        check_dtype_match(name, x, params["Wq"])
        if mask is not None:
            check_mask(mask, x)

    def forward(params, x: Array, *, key=None, train=True, mask=None):
        del key, train
        check_call(params, x, mask)
        block = choose_block(x.shape[1], block_size, causal)
        q, k, v = (_split_heads(project(params, x, w, b), h) for w, b in zip(weights[:3], ("bq", "bk", "bv")))
        o, lse = attention_forward(q, k, v, key_mask=mask, causal=causal, block=block)
        y = project(params, _merge_heads(o.astype(x.dtype)), "Wo", "bo")
        cache = {"x": x, "q": q, "k": k, "v": v, "o": o, "lse": lse}
        if mask is not None:
            cache["mask"] = mask
        return y, cache

    def backward(params, cache, dy: Array):
        check_params(name, params, spec)
        x, q, k, v, o, lse = (cache[n] for n in ("x", "q", "k", "v", "o", "lse"))
        d = x.shape[-1]
        rows = lambda a: jnp.reshape(a, (-1, d))  # noqa: E731
        o_cat = _merge_heads(o.astype(x.dtype))
        grads = {"Wo": weight_gradient(rows(o_cat), rows(dy))}
        do = _split_heads(jnp.matmul(dy, params["Wo"].T), h)
        block = choose_block(x.shape[1], block_size, causal)
        dq, dk, dv = attention_backward(q, k, v, o, lse, do, key_mask=cache.get("mask"), causal=causal, block=block)
        dx = jnp.zeros_like(x)
        for w, g in zip(weights[:3], (dq, dk, dv)):
            g = _merge_heads(g)
            grads[w] = weight_gradient(rows(x), rows(g))
            if use_bias:  # dbk = 0 exactly (see the docstring); summing dK would give rounding noise
                grads["b" + w[1]] = jnp.zeros_like(params["bk"]) if w == "Wk" else jnp.sum(rows(g), axis=0)
            dx = dx + jnp.matmul(g, params[w].T)
        if use_bias:
            grads["bo"] = jnp.sum(rows(dy), axis=0)
        return {n: grads[n] for n in spec}, dx

    def project_tangent(params, dparams, x, dx, w, b):
        dy = jnp.matmul(dx, params[w]) + jnp.matmul(x, dparams[w])
        return dy + jnp.reshape(dparams[b], (1, 1, -1)) if use_bias else dy

    def jvp(params, x: Array, dparams, dx: Array, *, key=None, train=True, mask=None):
        del key, train
        check_call(params, x, mask)
        _check_tangents(name, params, dparams, x, dx)
        block = choose_block(x.shape[1], block_size, causal)
        qkv = tuple(zip(weights[:3], ("bq", "bk", "bv")))
        q, k, v = (_split_heads(project(params, x, w, b), h) for w, b in qkv)
        dq, dk, dv = (_split_heads(project_tangent(params, dparams, x, dx, w, b), h) for w, b in qkv)
        o, _, do = attention_jvp(q, k, v, dq, dk, dv, key_mask=mask, causal=causal, block=block)
        o_cat, do_cat = _merge_heads(o.astype(x.dtype)), _merge_heads(do.astype(x.dtype))
        return project(params, o_cat, "Wo", "bo"), project_tangent(params, dparams, o_cat, do_cat, "Wo", "bo")

    return Layer(init, mark_takes_mask(forward), backward, jvp=jvp, name=name)
