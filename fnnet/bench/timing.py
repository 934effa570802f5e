"""Timing for ``fnnet bench``: the measured matmul peak and the jitted train step of each gradient source.

Protocol, the same for every source and entry:

* compile: wall time of ``jax.jit(step).lower(...).compile()``; the compiled executable is then
  called directly (no second compile).
* warm-up: two calls, then a calibration call that sets ``inner``, the number of back-to-back
  calls per sample (at least ``min_time`` seconds per sample, so dispatch noise averages out).
* samples: ``repeats`` rounds of one sample per source, the sources **interleaved** and the order
  rotated by one each round (manual, autodiff, custom_vjp; autodiff, custom_vjp, manual; ...), so a
  burst of load on the machine hits all of them alike; each sample is ``inner`` calls ending in
  ``block_until_ready``. The step time is the median sample divided by ``inner``; manual ÷ autodiff
  is the median of the per-round ratios, which cancels drift between rounds (a ratio of two medians
  does not: on this project's shared 2-core machine it put one entry at 1.12 in a run whose rerun
  measured 0.94).

The train step is ``params ← params − lr · grads`` (plain SGD) after the gradient source's
``(loss, grads)``, plus ``layer.update_state`` for layers with state (BatchNorm); params are donated
so the update happens in place, as in a training loop.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.bench.models import Entry
from fnnet.grad import GRAD_SOURCES

SOURCES = tuple(GRAD_SOURCES)
LR = 1e-3


def _block(tree: Any) -> None:
    jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def seconds_per_call(call: Callable[[], Any], inner: int) -> float:
    """Wall seconds per call of ``inner`` back-to-back calls, waiting for the last result (a JAX result is
    waited for; any other, such as a PyTorch CPU tensor, is ready when the call returns)."""
    t0 = time.perf_counter()
    for _ in range(inner):
        out = call()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / inner


def matmul_peak(sizes: tuple[int, ...], repeats: int) -> dict:
    """The fp32 GFLOP/s of a jitted square matmul (n x n) @ (n x n): the best over ``sizes``."""
    rows = []
    f = jax.jit(jnp.matmul)
    for n in sizes:
        k1, k2 = jax.random.split(jax.random.key(n))
        a = jax.random.normal(k1, (n, n), jnp.float32)
        b = jax.random.normal(k2, (n, n), jnp.float32)
        call = functools.partial(f, a, b)
        _block(call())
        t1 = seconds_per_call(call, 1)
        inner = max(1, int(np.ceil(0.1 / t1)))
        times = [seconds_per_call(call, inner) for _ in range(repeats)]
        t = statistics.median(times)
        rows.append({"n": n, "seconds": t, "gflops": 2 * n**3 / t / 1e9})
    best = max(rows, key=lambda r: r["gflops"])
    return {"gflops": best["gflops"], "n": best["n"], "sizes": rows}


def make_step(layer, loss, source: str, lr: float = LR) -> Callable:
    """``step(params, x, y) -> (params, loss)``: one SGD step with the gradients of ``source``."""
    stateful = layer.update_state is not None
    value_and_grad = GRAD_SOURCES[source](layer, loss, has_aux=stateful)

    def step(params, x, y):
        out, grads = value_and_grad(params, x, y)
        value = out[0] if stateful else out
        params_new = jax.tree_util.tree_map(lambda p, g: p - jnp.asarray(lr, p.dtype) * g, params, grads)
        if stateful:
            params_new = layer.update_state(params_new, out[1][1])
        return params_new, value

    return step


def inputs(entry: Entry, seed: int = 0) -> tuple[Any, Any, Any]:
    """(params, x, target) for ``entry``, drawn from fixed keys: integer labels, or ``entry.target(key, x)``."""
    k_init, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    _, params = entry.build().init(k_init, entry.in_shape)
    x = jax.random.normal(k_x, (entry.batch,) + tuple(entry.in_shape), jnp.float32)
    if entry.target is not None:
        y = entry.target(k_y, x)
    else:
        y = jax.random.randint(k_y, (entry.batch,), 0, entry.classes, jnp.int32)
    return params, x, y


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        m = None
    if m is None:
        return {"temp_bytes": None, "argument_bytes": None, "output_bytes": None}
    get = lambda name: int(getattr(m, name)) if getattr(m, name, None) is not None else None  # noqa: E731
    return {
        "temp_bytes": get("temp_size_in_bytes"),
        "argument_bytes": get("argument_size_in_bytes"),
        "output_bytes": get("output_size_in_bytes"),
    }


def _xla_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def rel_error(a: Any, b: Any) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖, tiny) over all leaves together (a leaf whose true gradient is 0, such as
    a bias before BatchNorm, holds only rounding and would make a per-leaf ratio meaningless)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    sq = lambda xs: sum(
        float(jnp.sum(jnp.square(x.astype(jnp.float64) if jax.config.jax_enable_x64 else x))) for x in xs
    )  # noqa: E731
    diff = sq([u - v for u, v in zip(la, lb)])
    return math.sqrt(diff) / max(math.sqrt(sq(la)), math.sqrt(sq(lb)), 1e-30)


def bench_entry(
    entry: Entry, *, repeats: int, min_time: float, sources: tuple[str, ...] = SOURCES, check_grads: bool = True
) -> dict:
    """Compile, check and time the train step of ``entry`` for every source; one result row (a dict).

    Each source's ``loss`` is the one its first step returns, at the same initial params; with
    ``check_grads`` the gradients are compared with autodiff's too (three more compilations).
    """
    layer = entry.build()
    params, x, y = inputs(entry)
    row: dict[str, Any] = {
        "entry": entry.name,
        "about": entry.about,
        "batch": entry.batch,
        "params": int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params))),
        "flops": entry.flops,
        "sources": {},
    }
    if check_grads:  # the three must agree: gradients at the same params, relative to autodiff's
        grads = {s: jax.jit(GRAD_SOURCES[s](layer, entry.loss))(params, x, y)[1] for s in sources}
        for s in sources:
            row["sources"][s] = {"grad_rel_err_vs_autodiff": rel_error(grads[s], grads.get("autodiff", grads[s]))}

    if entry.grad_memory:  # the memory target's measure: value_and_grad alone, no optimizer step
        for s in ("manual", "autodiff"):
            exe = jax.jit(GRAD_SOURCES[s](layer, entry.loss)).lower(params, x, y).compile()
            row["sources"].setdefault(s, {})["grad_temp_bytes"] = _memory(exe)["temp_bytes"]
        m, a = (row["sources"][s]["grad_temp_bytes"] for s in ("manual", "autodiff"))
        if m is not None and a:
            row["grad_temp_ratio_manual_autodiff"] = m / a

    compiled, state = {}, {}
    for s in sources:
        t0 = time.perf_counter()
        exe = jax.jit(make_step(layer, entry.loss, s), donate_argnums=0).lower(params, x, y).compile()
        row["sources"].setdefault(s, {})["compile_s"] = time.perf_counter() - t0
        row["sources"][s].update(_memory(exe))
        row["sources"][s]["xla_flops"] = _xla_flops(exe)
        compiled[s] = exe
        state[s] = jax.tree_util.tree_map(jnp.copy, params)
        state[s], value = exe(state[s], x, y)  # the loss at the initial params
        row["sources"][s]["loss"] = float(value)

    def call(s):
        state[s], value = compiled[s](state[s], x, y)
        return state[s], value

    inner = {}
    for s in sources:
        for _ in range(2):
            _block(call(s))
        t1 = seconds_per_call(lambda s=s: call(s), 1)
        inner[s] = max(1, int(np.ceil(min_time / max(t1, 1e-7))))
    samples: dict[str, list[float]] = {s: [] for s in sources}
    order = list(sources)
    for i in range(repeats):
        for s in order[i % len(order) :] + order[: i % len(order)]:
            samples[s].append(seconds_per_call(lambda s=s: call(s), inner[s]))
    for s in sources:
        t = statistics.median(samples[s])
        row["sources"][s].update(
            step_s=t, step_s_min=min(samples[s]), inner=inner[s], gflops=entry.flops / t / 1e9 if t > 0 else None
        )
    if "manual" in sources and "autodiff" in sources:
        m, a = row["sources"]["manual"], row["sources"]["autodiff"]
        row["ratio_manual_autodiff"] = statistics.median(x / y for x, y in zip(samples["manual"], samples["autodiff"]))
        if m["temp_bytes"] is not None and a["temp_bytes"] is not None:
            row["temp_ratio_manual_autodiff"] = m["temp_bytes"] / max(a["temp_bytes"], 1)
    return row
