"""A measured candidate that fnnet does not use: causal attention with its query tiles paired.

Causal query tile i attends key tiles 0, ..., i, so tiles p and n − 1 − p together attend n + 1 key
tiles whatever p is. A ``lax.scan`` over the n/2 pairs then has steps of one shape, computes
(n + 1)/(2n) of the rectangle's score products (what PyTorch's flash kernel skips by its causal
blocks), and holds about the scan's memory. This script implements the forward and the backward that
way. It checks them against fnnet's dense form in float64, and times the manual train step of
``serial(MultiHeadAttention(4, causal=True))`` under ``mse`` (B = 1, d = 64, the bench's attention
entry) with the pairing against fnnet's scan, interleaved in one process. The results on the project's
2-core CPU are in ``benchmarks/results/attention_pairing-<machine>.md``. There the pairing was slower
at T = 1024 and 2048 and even at 4096, which is why fnnet keeps the scan (the attention page of the
docs).

    python benchmarks/attention_pairing.py [--T 1024 2048 4096] [--rounds 15] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

import fnnet as fn
from fnnet._io import atomic_write, dumps
from fnnet.bench import timing
from fnnet.core import Array
from fnnet.layers import attention
from fnnet.layers.attention import _accumulator, _fill, _normalize


def _pair_plan(T: int, block: int) -> tuple[int, Array, Array]:
    """The causal sweep as a ``lax.scan`` of equal steps: query tiles paired as (p, n − 1 − p).

    With n query (and key) tiles, causal query tile i attends key tiles 0, ..., i: i + 1 of them. Tiles
    p and n − 1 − p together attend (p + 1) + (n − p) = n + 1 key tiles whatever p is, so step p of a
    scan over the n/2 pairs computes n + 1 tile products of one shape: *slot* s = 0, ..., n pairs query
    tile p with key tile s for s ≤ p, and query tile n − 1 − p with key tile s − p − 1 after. The whole
    sweep is then (n + 1)/(2n) of the rectangle's score products (the triangle of :func:`_causal_tiles`),
    with the scan's memory: one step holds (n + 1) tiles of scores where the rectangle's held n. An odd
    tile count is padded by one tile of queries past T (computed and dropped) and masked keys.

    Returns ``(n, key_tile, side)``: the padded tile count and, per pair and slot, (n/2, n + 1) int32
    tables of the key tile and of the query tile's side (0: tile p, 1: tile n − 1 − p).
    """
    n = -(-T // block)
    n += n % 2
    slot = jnp.arange(n + 1)[None, :]
    p = jnp.arange(n // 2)[:, None]
    side = (slot > p).astype(jnp.int32)
    return n, jnp.where(side == 0, slot, slot - p - 1).astype(jnp.int32), side


def _pair_valid(T: int, block: int, n: int, p: Array, key_tile: Array, side: Array, km: Array | None):
    """Pair ``p``'s query tile per slot, (n + 1,), and may its rows attend the slot's keys?
    (B or 1, 1, n + 1, block, block): in range, causal, unmasked (``km``: (B, n, block) tiles of the mask)."""
    q_tile = jnp.where(side == 0, p, n - 1 - p)
    offsets = jnp.arange(block)
    q_pos = q_tile[:, None] * block + offsets[None, :]
    k_pos = key_tile[:, None] * block + offsets[None, :]
    ok = ((k_pos < T)[:, None, :] & (k_pos[:, None, :] <= q_pos[:, :, None]))[None, None]
    if km is not None:
        ok = ok & km[:, None, key_tile, None, :]
    return q_tile, ok


def _blocks(a: Array, block: int, n: int) -> Array:
    """(B, H, T, ...) -> (B, H, n, block, ...), zero-padded at the end of T."""
    pad = [(0, 0)] * a.ndim
    pad[2] = (0, n * block - a.shape[2])
    a = jnp.pad(a, pad)
    return jnp.reshape(a, a.shape[:2] + (n, block) + a.shape[3:])


def _mask_blocks(key_mask: Array, block: int, n: int) -> Array:
    """(B, T) -> (B, n, block) tiles of the key mask, padded with False."""
    padded = jnp.pad(key_mask, ((0, 0), (0, n * block - key_mask.shape[1])), constant_values=False)
    return jnp.reshape(padded, (-1, n, block))


def _by_side(side: Array, x: Array, reduce=jnp.sum, fill: Any = 0) -> Array:
    """(B, H, 2, ...) from per-slot ``x`` (B, H, n + 1, ...): ``reduce`` over the slots of side 0, of side 1."""
    side = jnp.reshape(side, (1, 1, -1) + (1,) * (x.ndim - 3))
    return jnp.stack([reduce(jnp.where(side == j, x, fill), axis=2) for j in (0, 1)], axis=2)


def _pair_tiles(x: Array, T: int) -> Array:
    """(n/2, B, H, 2, block, ...) per pair and side -> (B, H, T, ...): side 0 is tile p, side 1 tile n − 1 − p."""
    tiles = jnp.concatenate([x[:, :, :, 0], x[::-1, :, :, 1]], axis=0)  # (n, B, H, block, ...)
    tiles = jnp.moveaxis(tiles, 0, 2)
    return jnp.reshape(tiles, tiles.shape[:2] + (-1,) + tiles.shape[4:])[:, :, :T]


def paired_forward(qs: Array, k: Array, v: Array, key_mask: Array | None, block: int, fill: Array):
    """(m, l, a) of the causal sweep by pairs of query tiles (:func:`_pair_plan`), for scaled queries ``qs``.

    A step holds all of its query tiles' keys, so their softmax needs no online rescaling: m is the row
    maximum over the side's slots, p = [attended] e^{S − m}, l = Σ p and a = Σ p V over them.
    """
    T = qs.shape[2]
    n, key_tiles, sides = _pair_plan(T, block)
    q_t, k_t, v_t = (_blocks(a.astype(qs.dtype), block, n) for a in (qs, k, v))
    km = None if key_mask is None else _mask_blocks(key_mask, block, n)

    def step(_, plan):
        p, key_tile, side = plan
        q_tile, ok = _pair_valid(T, block, n, p, key_tile, side, km)
        s = jnp.where(ok, jnp.einsum("bhsqd,bhskd->bhsqk", q_t[:, :, q_tile], k_t[:, :, key_tile]), fill)
        m = _by_side(side, jnp.max(s, axis=-1), jnp.max, fill)
        e = jnp.where(ok, jnp.exp(s - m[:, :, side][..., None]), 0)
        l = _by_side(side, jnp.sum(e, axis=-1))
        a = _by_side(side, jnp.einsum("bhsqk,bhskd->bhsqd", e, v_t[:, :, key_tile]))
        return None, (m, l, a)

    _, (m, l, a) = lax.scan(step, None, (jnp.arange(n // 2), key_tiles, sides))
    return _pair_tiles(m, T), _pair_tiles(l, T), _pair_tiles(a, T)


def paired_backward(q: Array, k: Array, v: Array, do: Array, lse: Array, D: Array, key_mask, block, fill, scale):
    """(dQ, dK, dV) of the causal sweep by pairs of query tiles, as :func:`attention_backward` computes
    them per tile: dQ per query tile from its slots, dK and dV summed into their key tiles.

    The step's scores are laid out transposed, Sᵀ (keys, queries), so that every product contracts its
    left operand over that operand's minor axis, the form XLA's CPU backend sends to its fast matmul
    kernels (contracted over the query rows of S, dK and dV ran as XLA's own dot at several times the
    time); dQ is then computed transposed too, with only the small (keys, d) tiles of K transposed.
    """
    B, H, T, d = q.shape
    n, key_tiles, sides = _pair_plan(T, block)
    q_t, k_t, v_t, do_t, lse_t, D_t = (_blocks(a, block, n) for a in (q, k, v, do, lse, D))
    km = None if key_mask is None else _mask_blocks(key_mask, block, n)
    onto_tiles = (jnp.arange(n)[None, :, None] == key_tiles[:, None, :]).astype(q.dtype)  # slot s adds to tile j

    def step(carry, plan):
        dk, dv = carry
        p, key_tile, side, onto = plan
        q_tile, ok = _pair_valid(T, block, n, p, key_tile, side, km)
        ok = jnp.swapaxes(ok, -1, -2)
        q_s, do_s = q_t[:, :, q_tile], do_t[:, :, q_tile]
        k_s, v_s = k_t[:, :, key_tile], v_t[:, :, key_tile]
        s = jnp.einsum("bhskd,bhsqd->bhskq", k_s, q_s * scale)
        pr = jnp.where(ok, jnp.exp(jnp.where(ok, s, fill) - lse_t[:, :, q_tile][..., None, :]), 0)
        ds = pr * (jnp.einsum("bhskd,bhsqd->bhskq", v_s, do_s) - D_t[:, :, q_tile][..., None, :])
        dq = jnp.einsum("bhsdk,bhskq->bhsdq", jnp.swapaxes(k_s, -1, -2), ds)
        dq = _by_side(side, jnp.swapaxes(dq, -1, -2)) * scale
        dk = dk + jnp.einsum("ns,bhskd->bhnkd", onto, jnp.einsum("bhskq,bhsqd->bhskd", ds, q_s)) * scale
        dv = dv + jnp.einsum("ns,bhskd->bhnkd", onto, jnp.einsum("bhskq,bhsqd->bhskd", pr, do_s))
        return (dk, dv), dq

    zeros = jnp.zeros((B, H, n, block, d), q.dtype)
    (dk, dv), dq = lax.scan(step, (zeros, zeros), (jnp.arange(n // 2), key_tiles, sides, onto_tiles))
    flat = lambda a: jnp.reshape(a, (B, H, n * block, d))[:, :, :T]  # noqa: E731
    return _pair_tiles(dq, T), flat(dk), flat(dv)


def attention_forward(q, k, v, *, key_mask=None, causal=False, block=None):
    """fnnet's :func:`fnnet.layers.attention.attention_forward`, with a blocked causal sweep paired."""
    T = q.shape[2]
    block = T if block is None else min(int(block), T)
    if not (causal and block < T):
        return _FORWARD(q, k, v, key_mask=key_mask, causal=causal, block=block)
    acc = _accumulator(q.dtype)
    qs = q.astype(acc) * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), acc)
    m, l, a = paired_forward(qs, k, v, key_mask, block, _fill(acc))
    o, lse, _ = _normalize(m, l, a)
    return o, lse


def attention_backward(q, k, v, o, lse, do, *, key_mask=None, causal=False, block=None):
    """fnnet's :func:`fnnet.layers.attention.attention_backward`, with a blocked causal sweep paired."""
    T = q.shape[2]
    block = T if block is None else min(int(block), T)
    if not (causal and block < T):
        return _BACKWARD(q, k, v, o, lse, do, key_mask=key_mask, causal=causal, block=block)
    acc = _accumulator(q.dtype)
    scale = jnp.asarray(1.0 / math.sqrt(q.shape[-1]), acc)
    do = do.astype(acc)
    D = jnp.sum(do * o.astype(acc), axis=-1)
    grads = paired_backward(
        q.astype(acc), k.astype(acc), v.astype(acc), do, lse.astype(acc), D, key_mask, block, _fill(acc), scale
    )
    return tuple(g.astype(q.dtype) for g in grads)


_FORWARD, _BACKWARD = attention.attention_forward, attention.attention_backward


@contextlib.contextmanager
def paired():
    """Within the block, fnnet's attention layer (traced there) sweeps long causal sequences by pairs."""
    attention.attention_forward, attention.attention_backward = attention_forward, attention_backward
    try:
        yield
    finally:
        attention.attention_forward, attention.attention_backward = _FORWARD, _BACKWARD


def check(key: Array, T: int, block: int) -> float:
    """The largest relative difference of (O, lse, dQ, dK, dV) from fnnet's dense form, float64, with a key
    mask (batch 0's first three queries see only masked keys) and a padded last tile."""
    with jax.enable_x64(True):
        q, k, v, do = (jax.random.normal(kk, (2, 2, T, 4), jnp.float64) for kk in jax.random.split(key, 4))
        mask = jnp.ones((2, T), bool).at[0, :3].set(False).at[1, 5::7].set(False)
        dense = _FORWARD(q, k, v, key_mask=mask, causal=True)
        pair = attention_forward(q, k, v, key_mask=mask, causal=True, block=block)
        dense += _BACKWARD(q, k, v, *dense, do, key_mask=mask, causal=True)
        pair += attention_backward(q, k, v, *pair, do, key_mask=mask, causal=True, block=block)
        rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-300))  # noqa: E731
        return max(rel(a, b) for a, b in zip(pair, dense))


def _step(T: int, use_pairs: bool):
    net = fn.serial(fn.MultiHeadAttention(4, causal=True))
    _, params = net.init(jax.random.key(2), (T, 64))
    x = jax.random.normal(jax.random.key(0), (1, T, 64))
    y = jax.random.normal(jax.random.key(1), (1, T, 64))
    with paired() if use_pairs else contextlib.nullcontext():
        exe = jax.jit(fn.value_and_grad(net, fn.mse)).lower(params, x, y).compile()
    temp = exe.memory_analysis().temp_size_in_bytes
    return (lambda: exe(params, x, y)), temp


def measure(T: int, rounds: int) -> dict:
    """The scan's and the pairing's step times (medians) and their median per-round ratio, interleaved."""
    calls, temps = {}, {}
    for name, use in (("scan", False), ("paired", True)):
        calls[name], temps[name] = _step(T, use)
        for _ in range(3):
            jax.block_until_ready(calls[name]())
    samples: dict[str, list[float]] = {n: [] for n in calls}
    for r in range(rounds):
        for n in list(calls) if r % 2 == 0 else list(calls)[::-1]:
            samples[n].append(timing.seconds_per_call(calls[n], 1))
    ratio = statistics.median(p / s for p, s in zip(samples["paired"], samples["scan"]))
    ms = {n: 1e3 * statistics.median(v) for n, v in samples.items()}
    return {
        "T": T,
        "scan_ms": ms["scan"],
        "paired_ms": ms["paired"],
        "paired_over_scan": ratio,
        "temp_mib": {n: t / 2**20 for n, t in temps.items()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--machine", default="cpu-amd-epyc-2core")
    a = p.parse_args(argv)
    err = max(check(jax.random.key(0), T, b) for T, b in ((264, 64), (300, 100), (512, 128)))
    rows = [measure(T, a.rounds) for T in a.T]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# Causal attention with paired query tiles, against fnnet's scan — {a.machine}",
        "",
        f"jax {jax.__version__}, {when}; load average {[round(v, 2) for v in os.getloadavg()]} at the end. "
        "Manual train step of serial(MultiHeadAttention(4, causal=True)) under mse, B = 1, d = 64, tiles of "
        f"256 keys; medians of {a.rounds} interleaved samples, ratio = median of per-round ratios. The paired "
        f"rule agrees with the dense form to {err:.1e} (largest relative difference of O, lse, dQ, dK, dV, "
        "float64).",
        "",
        "| T | scan ms | paired ms | paired ÷ scan | temp MiB scan / paired |",
        "|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['T']} | {r['scan_ms']:.2f} | {r['paired_ms']:.2f} | {r['paired_over_scan']:.3f} | "
            f"{r['temp_mib']['scan']:.1f} / {r['temp_mib']['paired']:.1f} |"
        )
    md = "\n".join(lines) + "\n"
    print(md)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write(a.out / f"attention_pairing-{a.machine}.md", md.encode())
    result = {"machine": a.machine, "when": when, "max_rel_error_float64": err, "rows": rows}
    atomic_write(a.out / f"attention_pairing-{a.machine}.json", (dumps(result, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
