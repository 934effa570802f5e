"""Proposed changes to rules outside the benchmark owner's files, measured against the current rules.

Each proposal is applied by patching a module in this process only (nothing in ``fnnet/`` changes);
the script checks that the patched gradients still agree with ``jax.grad`` and prints step time and
temporary memory next to the current rule (``fnnet bench``'s protocol):

    python benchmarks/proposals.py            # all
    python benchmarks/proposals.py bn rnn     # some: bn, rnn, lstm, conv

* ``bn`` — **adopted**: BatchNorm/LayerNorm backward in mean form, dx = inv·(dx̂ − mean dx̂ − x̂·mean(dx̂ ⊙ x̂)),
  the same formula as (inv/m)·(m dx̂ − Σ dx̂ − x̂ Σ dx̂ ⊙ x̂). In the sum form XLA's CPU backend wrote out
  full (B, C) broadcasts of m and γ for the fused elementwise op (three 512 KiB buffers in the
  BatchNorm MLP) and manual temp memory was above autodiff's (5.55 vs 5.06 MiB; mean form 4.05 MiB).
  The "alternative" row is now the former sum form.
* ``rnn`` / ``lstm`` — BPTT with only the recurrence in the reverse scan: the scan emits da_t (dz_t),
  then dW = Xᵀ DA, dU = H_prevᵀ DA, db = Σ DA and dX = DA Wᵀ as single matmuls over all T·B rows
  (as cuDNN does), instead of T small accumulations inside the scan.
* ``conv`` — the weight gradient of a 3x3 convolution as im2col + one matmul, against the current
  convolution whose "kernel" is the 14x14 output gradient.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import fnnet as fn
import fnnet.layers.normalization as normalization
from fnnet.bench import models, timing
from fnnet.core import Layer
from fnnet.grad import GRAD_SOURCES
from fnnet.layers import recurrent
from fnnet.layers.dense import weight_gradient


def normalize_backward_sum_form(xhat, inv, dxhat, axes):
    """The former rule: dx = (inv/m)(m dx̂ − Σ dx̂ − x̂ Σ dx̂ ⊙ x̂), sums over ``axes``."""
    m = int(np.prod([xhat.shape[a] for a in axes]))
    s1 = jnp.sum(dxhat, axis=axes, keepdims=True)
    s2 = jnp.sum(dxhat * xhat, axis=axes, keepdims=True)
    return (inv / m) * (m * dxhat - s1 - xhat * s2)


def _hoisted(xs, h_prev, dz, W):
    rows = lambda a: jnp.reshape(a, (-1, a.shape[-1]))  # noqa: E731  (T, B, k) -> (T·B, k)
    X, Hp, DZ = rows(xs), rows(h_prev), rows(dz)
    return weight_gradient(X, DZ), weight_gradient(Hp, DZ), jnp.sum(DZ, axis=0), jnp.matmul(dz, W.T)


def rnn_hoisted(hidden: int) -> Layer:
    """``fn.RNN(hidden)`` (tanh, last state) with the weight gradients hoisted out of the reverse scan."""
    base = recurrent.RNN(hidden)
    _, act_bwd = recurrent._activation("RNN", "tanh")

    def backward(params, cache, dy):
        W, U = params["W"], params["U"]
        dys, delta_T = recurrent._step_cotangents(dy, cache["h"], False)

        def step(delta, inp):
            dy_t, act_t = inp
            da = act_bwd(act_t, dy_t + delta)
            return jnp.matmul(da, U.T), da

        _, da = lax.scan(step, delta_T, (dys, cache["act"]), reverse=True)
        dW, dU, db, dxs = _hoisted(cache["x"], recurrent._shift(cache["h"]), da, W)
        return {"W": dW, "U": dU, "b": db}, jnp.swapaxes(dxs, 0, 1)

    return Layer(base.init, base.forward, backward)


def lstm_hoisted(hidden: int) -> Layer:
    """``fn.LSTM(hidden)`` (last state) with the weight gradients hoisted out of the reverse scan."""
    base = recurrent.LSTM(hidden)

    def backward(params, cache, dy):
        W, U = params["W"], params["U"]
        hs, cs = cache["h"], cache["c"]
        dys, dh_T = recurrent._step_cotangents(dy, hs, False)

        def step(carry, inp):
            dh, dc = carry
            dy_t, c_prev, c_t, gates_t = inp
            dz, dh, dc = recurrent._lstm_cell_vjp(U, gates_t, c_prev, c_t, dy_t + dh, dc)
            return (dh, dc), dz

        inputs = (dys, recurrent._shift(cs), cs, cache["gates"])
        _, dz = lax.scan(step, (dh_T, jnp.zeros_like(dh_T)), inputs, reverse=True)
        dW, dU, db, dxs = _hoisted(cache["x"], recurrent._shift(hs), dz, W)
        return {"W": dW, "U": dU, "b": db}, jnp.swapaxes(dxs, 0, 1)

    return Layer(base.init, base.forward, backward)


def _compare(entry, proposed_entry=None, patch=None):
    """Time current vs proposed (a patched entry, or a module patch as (module, name, value))."""
    params, x, y = timing.inputs(entry)
    reference = jax.jit(GRAD_SOURCES["autodiff"](entry.build(), entry.loss))(params, x, y)[1]
    for label in ("current", "alternative"):
        e = entry
        saved = None
        if label == "alternative":
            if patch is not None:
                module, name, value = patch
                saved = getattr(module, name)
                setattr(module, name, value)
            e = proposed_entry or entry
        try:
            grads = jax.jit(GRAD_SOURCES["manual"](e.build(), e.loss))(params, x, y)[1]
            row = timing.bench_entry(e, repeats=7, min_time=0.2, check_grads=False)
        finally:
            if saved is not None:
                setattr(patch[0], patch[1], saved)
        m, a = row["sources"]["manual"], row["sources"]["autodiff"]
        print(
            f"{entry.name:30s} {label:11s} rel. err. vs jax.grad {timing.rel_error(grads, reference):.1e}  "
            f"manual {m['step_s'] * 1e3:8.3f} ms {m['temp_bytes'] / 2**20:6.2f} MiB   "
            f"autodiff {a['step_s'] * 1e3:8.3f} ms {a['temp_bytes'] / 2**20:6.2f} MiB   "
            f"manual/autodiff {row['ratio_manual_autodiff']:.3f}",
            flush=True,
        )


def conv_weight_gradient() -> None:
    """The 3x3 SAME conv of the CNN's second layer: dW by the current convolution vs im2col + matmul."""
    B, H, W, C, O, k = 64, 14, 14, 32, 64, 3
    x = jax.random.normal(jax.random.key(0), (B, H, W, C))
    dy = jax.random.normal(jax.random.key(1), (B, H, W, O))

    def current(x, dy):
        return lax.conv_general_dilated(x, dy, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("CHWN", "IHWO", "HWNC"))

    def im2col(x, dy):
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        cols = [xp[:, p : p + H, q : q + W, :] for p in range(k) for q in range(k)]
        patches = jnp.concatenate(cols, axis=-1).reshape(-1, k * k * C)
        return weight_gradient(patches, dy.reshape(-1, O)).reshape(k, k, C, O)

    ref = jax.jit(current)(x, dy)
    flops = 2 * B * H * W * k * k * C * O
    for f in (current, im2col):
        jf = jax.jit(f)
        err = float(jnp.max(jnp.abs(jf(x, dy) - ref)) / jnp.max(jnp.abs(ref)))
        temp = jf.lower(x, dy).compile().memory_analysis().temp_size_in_bytes
        ts = []
        for _ in range(9):
            t0 = time.perf_counter()
            jax.block_until_ready(jf(x, dy))
            ts.append(time.perf_counter() - t0)
        t = float(np.min(ts))
        print(
            f"conv dW {f.__name__:8s} {t * 1e3:7.2f} ms {flops / t / 1e9:6.1f} GFLOP/s  temp {temp / 2**20:6.2f} MiB  "
            f"max rel. diff {err:.1e}",
            flush=True,
        )


def main(which: list[str]) -> None:
    full = {e.name.split("_")[0]: e for e in models.entries(False)}
    if "bn" in which:
        for name in ("bn", "res"):
            patch = (normalization, "_normalize_backward", normalize_backward_sum_form)
            _compare(full[name], patch=patch)
    for kind, make in (("rnn", rnn_hoisted), ("lstm", lstm_hoisted)):
        if kind in which:
            e = full[kind]
            proposed = e._replace(build=lambda make=make: fn.serial(make(128), fn.Dense(10)))
            _compare(e, proposed_entry=proposed)
    if "conv" in which:
        conv_weight_gradient()


if __name__ == "__main__":
    main(sys.argv[1:] or ["bn", "rnn", "lstm", "conv"])
