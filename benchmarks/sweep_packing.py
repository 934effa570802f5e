"""How to lay out K small models' products so a sweep uses the hardware: each candidate, measured.

The bench sweep (``fnnet bench --only sweep``) trains K = 64 MLPs 40-100-100-10 (ReLU, softmax CE,
plain SGD, B = 100) on MNIST-1D. One model's step is 8.2 MFLOP in products of at most 100 x 100 x 100,
far below the shapes that reach the matmul peak. This script times S train steps of all K models
(fnnet's Dense and ReLU rules and their hand-written backward, :func:`fnnet.value_and_grad`) laid out
six ways:

* ``loop``: one model's jitted ``lax.scan`` of S steps, called K times (the bench's loop of jitted runs);
* ``vmap, K batch orders``: the scan ``jax.vmap``-ed over the models, each with its own batches (the
  products become batched GEMMs, (K, 100, 100) @ (K, 100, 100));
* ``vmap, one batch order``: the same with the batch indices shared (unbatched in the vmap): the first
  layer's x W_k and x̂ᵀ δ_k become one GEMM (100, 40) @ (40, K·100), what :func:`fnnet.sweep` does when
  the runs share one key;
* ``block-diagonal, g per block``: g models packed into one wide MLP 40-(g·100)-(g·100)-(g·10) whose
  hidden and output weights are block diagonal (the gradient is masked to the blocks, so they stay so),
  vmapped over K/g blocks with one batch order: larger GEMMs, g times the FLOPs in the packed layers.

and the products alone, (K, 100, 100) @ (K, 100, 100), in three layouts plus one 6400 x 100 x 100 GEMM of
the same FLOPs (the ceiling for this work). For the loop's program and the two vmaps it lists, from the
optimized HLO, every dot inside the scan: its shapes, its batch dimension and the kernel XLA runs it
on (a YNNPACK fusion, or XLA's own dot). Rates count useful FLOPs only (a block-diagonal zero block is
not useful). Every candidate trains: its final loss is printed next to the loop's.

    python benchmarks/sweep_packing.py [--models 64] [--rounds 5] [--out DIR]

Writes ``sweep_packing-<machine>.{md,json}`` to ``--out`` (default benchmarks/results), atomically.
Timings interleave the candidates (A B C ..., rotated each round); ratios are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from fnnet import training
from fnnet._io import atomic_write, dumps
from fnnet.bench import report, timing
from fnnet.bench.models import dense_macs, step_flops

DIMS = (40, 100, 100, 10)
BATCH, LR = 100, 0.1
N_TRAIN = 4000  # MNIST-1D's training set
LOOP = "loop of jitted runs"
GEMM = "one GEMM (K·B, 100) @ (100, 100), same FLOPs"


def _mlp(width: int) -> fn.Layer:
    d = DIMS
    return fn.serial(fn.Dense(width * d[1]), fn.Relu(), fn.Dense(width * d[2]), fn.Relu(), fn.Dense(width * d[3]))


def _block_masks(params: Any, g: int) -> Any:
    """1 on the g diagonal blocks of every weight after the first, 1 everywhere else (first W, biases)."""

    def mask(path, leaf):
        if leaf.ndim != 2 or path[0].idx == 0:  # the first Dense reads the shared x: dense, no waste
            return jnp.ones_like(leaf)
        r, c = leaf.shape[0] // g, leaf.shape[1] // g
        return jnp.kron(jnp.eye(g, dtype=leaf.dtype), jnp.ones((r, c), leaf.dtype))

    return jax.tree_util.tree_map_with_path(mask, params)


def pack(params: Any, g: int) -> Any:
    """K stacked models -> K/g packed ones: the first W side by side (g·100 outputs of the shared x), every
    later W block diagonal, the biases concatenated; model j of block i is model i·g + j."""

    def one(path, leaf):
        blocks = jnp.reshape(leaf, (-1, g) + leaf.shape[1:])  # (K/g, g, ...)
        if leaf.ndim == 2:  # a bias (K, n) -> (K/g, g·n)
            return jnp.reshape(blocks, (blocks.shape[0], -1))
        if path[0].idx == 0:  # (K, d, n) -> (K/g, d, g·n)
            return jnp.reshape(jnp.moveaxis(blocks, 1, 2), (blocks.shape[0], leaf.shape[1], -1))
        eye = jnp.eye(g, dtype=leaf.dtype)  # (K, m, n) -> (K/g, g·m, g·n), zero off the diagonal blocks
        diag = jnp.einsum("bgmn,gh->bgmhn", blocks, eye)
        return jnp.reshape(diag, (blocks.shape[0], g * leaf.shape[1], g * leaf.shape[2]))

    return jax.tree_util.tree_map_with_path(one, params)


def _sgd_scan(net: fn.Layer, x: jax.Array, y: jax.Array, g: int = 1, masks: Any = None) -> Callable:
    """``run(params, idx) -> (params, mean loss)``: S manual SGD steps over batches ``idx`` (S, B)."""
    vg = fn.value_and_grad(_Packed(net, g) if g > 1 else net, fn.softmax_cross_entropy)

    def step(params, i):
        xb, yb = x[i], y[i]
        if g > 1:  # g models' logits side by side; each model's mean CE, summed over the g models
            loss, grads = vg(params, xb, jnp.repeat(yb, g))
            grads = jax.tree_util.tree_map(lambda t, m: t * g * m, grads, masks)  # CE is averaged over B·g rows
        else:
            loss, grads = vg(params, xb, yb)
        return jax.tree_util.tree_map(lambda p, d: p - LR * d, params, grads), loss

    def run(params, idx):
        params, losses = jax.lax.scan(step, params, idx)
        return params, jnp.mean(losses)

    return run


def _Packed(net: fn.Layer, g: int) -> fn.Layer:
    """``net`` followed by a reshape of its (B, g·10) logits to (B·g, 10): g models' rows, one loss."""

    def forward(params, x, *, key=None, train=True):
        out, cache = net.forward(params, x, key=key, train=train)
        return jnp.reshape(out, (-1, DIMS[-1])), cache

    def backward(params, cache, dy):
        return net.backward(params, cache, jnp.reshape(dy, (-1, g * DIMS[-1])))

    return fn.Layer(net.init, forward, backward, name=f"packed({g})")


def _setup(models: int, steps: int, key: jax.Array):
    train, _ = fn.data.mnist1d()
    x, y = jnp.asarray(train.x), jnp.asarray(train.y)
    k_init, k_idx = jax.random.split(key)
    inits = jax.random.split(k_init, models)
    net = _mlp(1)
    params = fn.init_params(net, (DIMS[0],), inits)
    per_model = jax.random.randint(k_idx, (models, steps, BATCH), 0, x.shape[0])
    return train, x, y, k_idx, net, params, per_model


def programs(setup: tuple) -> dict[str, tuple[Callable, tuple]]:
    """The loop's one-model program and the two vmaps, from :func:`_setup`'s values: name -> (jitted
    function, its arguments)."""
    _, x, y, _, net, params, per_model = setup
    run = _sgd_scan(net, x, y)
    return {
        LOOP: (jax.jit(run), (fn.pick(params, 0), per_model[0])),
        "vmap, K batch orders": (jax.jit(jax.vmap(run)), (params, per_model)),
        "vmap, one batch order": (jax.jit(jax.vmap(run, in_axes=(0, None))), (params, per_model[0])),
    }


def _peer_evidence():
    """``benchmarks/peer_evidence.py`` (its HLO reader), loaded by path: the benchmarks are scripts."""
    spec = importlib.util.spec_from_file_location("peer_evidence", Path(__file__).parent / "peer_evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernels(models: int, steps: int, key: jax.Array) -> dict[str, list[dict]]:
    """name -> the dots inside each program's scan (its while loop), from the optimized HLO: shapes, trips,
    and the kernel: the fusion that runs the dot ("__ynn_fusion": YNNPACK), or "XLA dot"."""
    summary = _peer_evidence().hlo_summary
    out = {}
    for name, (f, args) in programs(_setup(models, steps, key)).items():
        mm = summary(f.lower(*args).compile().as_text())["matmuls"]
        out[name] = [
            {k: m[k] for k in ("lhs", "rhs", "out", "trips", "flops")} | {"kernel": m["fusion"] or "XLA dot"}
            for m in mm
            if m["scope"] != "entry"
        ]
    return out


def candidates(models: int, steps: int, key: jax.Array) -> dict[str, Callable[[], Any]]:
    """name -> call; each call runs S steps of all K models and returns their losses."""
    setup = _setup(models, steps, key)
    train, x, y, k_idx, net, params, per_model = setup
    shared = per_model[0]
    (one, _), (vm, _), (vs, _) = programs(setup).values()
    out: dict[str, Callable[[], Any]] = {}
    out[LOOP] = lambda: [one(fn.pick(params, k), per_model[k]) for k in range(models)]
    out["vmap, K batch orders"] = lambda: vm(params, per_model)
    out["vmap, one batch order"] = lambda: vs(params, shared)
    # fnnet.sweep's own compiled epoch (permutation, divergence guard, accuracy): K keys, then one key
    opt = fn.optim.sgd(LR)
    spec, data, _ = training.setup(
        net,
        fn.softmax_cross_entropy,
        opt,
        params,
        train,
        None,
        batch_size=BATCH,
        epochs=1,
        grad="manual",
        record="epoch",
        per_layer_grad_norms=False,
        accuracy="auto",
        eval_train=False,
        eval_batch_size=None,
        resume=None,
        stacked=True,
    )
    for label, keys, one_key in (("K keys", jax.random.split(k_idx, models), False), ("one key", None, True)):
        keys = jnp.stack([k_idx] * models) if keys is None else keys
        state = jax.vmap(lambda p, k: training.init_state(p, opt, k))(params, keys)
        epoch = functools.partial(training.jit_sweep_epoch, spec, None, one_key, state, data, None, None)
        out[f"fnnet.sweep epoch, {label}"] = lambda epoch=epoch: epoch()[1]["loss"]
    for g in (2, 4):
        if models % g:
            continue
        wide = _mlp(g)
        packed = pack(params, g)
        masks = _block_masks(fn.pick(packed, 0), g)
        pb = jax.jit(jax.vmap(_sgd_scan(wide, x, y, g, masks), in_axes=(0, None)))
        out[f"block-diagonal, {g} per block"] = lambda pb=pb, packed=packed: pb(packed, shared)
    return out


def products(models: int, key: jax.Array) -> dict[str, Callable[[], Any]]:
    """The K hidden-layer products (K, B, 100) @ (K, 100, 100), in three layouts, and one GEMM of equal FLOPs."""
    h = DIMS[1]
    a = jax.random.normal(key, (models, BATCH, h))
    w = jax.random.normal(key, (models, h, h))
    at = jnp.swapaxes(a, 0, 1)
    kbh = jax.jit(lambda a, w: jnp.einsum("kbh,kho->kbo", a, w))
    bkh = jax.jit(lambda a, w: jnp.einsum("bkh,kho->bko", a, w))
    wgrad = jax.jit(lambda a, g: jnp.einsum("kbh,kbo->kho", a, g))
    gemm = jax.jit(lambda a, w: jnp.reshape(a, (-1, h)) @ w[0])
    return {
        "batched, models first: kbh,kho->kbo": lambda: kbh(a, w),
        "batched, models second: bkh,kho->bko": lambda: bkh(at, w),
        "batched weight gradient: kbh,kbo->kho": lambda: wgrad(a, a),
        GEMM: lambda: gemm(a, w),
    }


def _interleaved(calls: dict[str, Callable[[], Any]], rounds: int, inner: int) -> dict[str, list[float]]:
    for c in calls.values():  # compile and warm up
        timing._block(c())
    names = list(calls)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            samples[n].append(timing.seconds_per_call(calls[n], inner))
    return samples


def measure(models: int = 64, rounds: int = 5, seed: int = 0) -> dict:
    key = jax.random.key(seed)
    steps = N_TRAIN // BATCH  # one epoch, as fnnet.sweep's compiled epoch runs
    cands = candidates(models, steps, key)
    useful = models * steps * step_flops(dense_macs(BATCH, list(DIMS)))
    s = _interleaved(cands, rounds, 1)
    base = s[LOOP]
    rows = []
    for n, call in cands.items():
        t = statistics.median(s[n])
        res = call()
        losses = [r[1] for r in res] if isinstance(res, list) else res[1] if isinstance(res, tuple) else res
        loss = float(np.mean(np.asarray(losses)))
        rows.append(
            dict(
                candidate=n,
                seconds=t,
                useful_gflops=useful / t / 1e9,
                speedup_vs_loop=statistics.median(b / a for a, b in zip(s[n], base)),
                mean_loss=loss,
            )
        )
    prod = products(models, key)
    ps = _interleaved(prod, rounds, 20)
    pflops = 2 * models * BATCH * DIMS[1] * DIMS[2]
    prow = [
        dict(layout=n, ms=statistics.median(v) * 1e3, gflops=pflops / statistics.median(v) / 1e9) for n, v in ps.items()
    ]
    peak = timing.matmul_peak((1024,), 3)
    # the bound: the hidden and output layers' products are K independent GEMMs in any layout that wastes
    # no FLOPs, so they run at best at the batched rate; only the first layer's (shared x) can be one GEMM
    macs = dense_macs(BATCH, list(DIMS))
    shared_flops = models * steps * step_flops(macs[:1])
    batched_flops = models * steps * step_flops(macs[1:])
    rate = {p["layout"]: p["gflops"] * 1e9 for p in prow}
    batched_rate = max(v for n, v in rate.items() if n.startswith("batched") and "second" not in n)
    bound_s = batched_flops / batched_rate + shared_flops / rate[GEMM]
    loop_s = next(r["seconds"] for r in rows if r["candidate"] == LOOP)
    return dict(
        models=models,
        steps=steps,
        batch=BATCH,
        model="MLP " + "-".join(map(str, DIMS)) + " ReLU, softmax CE, SGD lr 0.1, fnnet manual backward",
        useful_flops=useful,
        matmul_peak_gflops=peak["gflops"],
        rows=rows,
        products=prow,
        bound=dict(
            batched_share=batched_flops / useful,
            batched_gflops=batched_rate / 1e9,
            gemm_gflops=rate[GEMM] / 1e9,
            seconds=bound_s,
            speedup_vs_loop=loop_s / bound_s,
        ),
        kernels=kernels(models, steps, key),
        machine=report.machine_info(),
        jax=jax.__version__,
        load_average=report.load_average(),
    )


def markdown(r: dict) -> str:
    lines = [
        f"# Sweep layouts — {r['models']} × {r['model']}, B = {r['batch']}, {r['steps']} steps",
        "",
        f"jax {r['jax']}; load average {[round(v, 2) for v in r['load_average']]} at the end; measured matmul "
        f"peak {r['matmul_peak_gflops']:.1f} GFLOP/s. Useful work: {r['useful_flops'] / 1e9:.2f} GFLOP "
        "per call. Candidates interleaved, medians; speed-ups are medians of per-round ratios.",
        "",
        "| candidate | seconds | useful GFLOP/s | % peak | × loop | mean loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        pct = 100 * row["useful_gflops"] / r["matmul_peak_gflops"]
        lines.append(
            f"| {row['candidate']} | {row['seconds']:.3f} | {row['useful_gflops']:.1f} | {pct:.0f}% | "
            f"{row['speedup_vs_loop']:.2f} | {row['mean_loss']:.4f} |"
        )
    lines += ["", "The hidden layer's products alone:", "", "| layout | ms | GFLOP/s |", "|---|---:|---:|"]
    lines += [f"| {p['layout']} | {p['ms']:.3f} | {p['gflops']:.1f} |" for p in r["products"]]
    b = r["bound"]
    lines += [
        "",
        f"**The bound.** {100 * b['batched_share']:.0f} % of the useful FLOPs are the second and third layers' "
        "products, which are K independent GEMMs in any layout that wastes no FLOPs; at the best batched rate "
        f"measured above ({b['batched_gflops']:.1f} GFLOP/s) and the first layer at the one-GEMM rate "
        f"({b['gemm_gflops']:.1f} GFLOP/s), with every other operation free, S steps of all K models take at "
        f"least {b['seconds']:.3f} s: at most {b['speedup_vs_loop']:.2f}× the loop of jitted runs.",
    ]
    lines += [
        "",
        "**The kernels**: every dot inside the scan of S steps, from the compiled HLO (trips: the scan's length; "
        '`__ynn_fusion` is YNNPACK, "XLA dot" XLA\'s own kernel).',
        "",
        "| program | lhs | rhs | out | trips | MFLOP per trip | kernel |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for name, dots in r["kernels"].items():
        for d in dots:
            dims = ["×".join(map(str, d[k])) for k in ("lhs", "rhs", "out")]
            lines.append(f"| {name} | {' | '.join(dims)} | {d['trips']} | {d['flops'] / 1e6:.2f} | {d['kernel']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--machine", default="cpu-amd-epyc-2core")
    a = p.parse_args(argv)
    r = measure(a.models, a.rounds)
    md = markdown(r)
    print(md)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write(a.out / f"sweep_packing-{a.machine}.md", md.encode())
    atomic_write(a.out / f"sweep_packing-{a.machine}.json", (dumps(r, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
