"""Sweep throughput for ``fnnet bench``: K small MNIST-1D MLPs, three ways.

* ``vmapped``: :func:`fnnet.sweep` — the K runs as one vmapped, jitted program per epoch, each run with
  its own key (its own batch order); ``vmapped_one_key`` the same with one key for all (one batch order:
  the batch enters the vmap unbatched; ``benchmarks/sweep_packing.py`` measures that and other layouts);
* ``jit_loop``: a Python loop of K :func:`fnnet.train` runs (each one jitted ``lax.scan`` per epoch;
  the epoch program is compiled once and reused by every run);
* ``torch_eager``: the same K runs as a PyTorch eager loop (``nn.Sequential``, ``optim.SGD``), when
  torch is installed, on the device kind JAX uses (:func:`fnnet.bench.peers.torch_device`); run with
  every core and with one thread, the faster of the two counting. Each model is initialized from seed k
  on a fork of PyTorch's global generator, so the caller's PyTorch random state is left as it was.

All three train the same MLP (40-100-100-10, ReLU, softmax cross-entropy, plain SGD) for the same
number of steps (``epochs`` x ⌊4000/B⌋) on the MNIST-1D training set, one model per seed. The JAX
programs are compiled (warmed up with one epoch) before the clock starts; the clock covers the
whole training of all K models, data shuffling included. Each mode reports its mean final-epoch loss,
so a reader can see all three really trained.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from fnnet.bench import peers
from fnnet.bench.models import dense_macs, step_flops

DIMS = (40, 100, 100, 10)
LR = 0.1


def _net():
    return fn.serial(fn.Dense(DIMS[1]), fn.Relu(), fn.Dense(DIMS[2]), fn.Relu(), fn.Dense(DIMS[3]))


def _block(tree: Any) -> None:
    jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree)


def _jax_runs(train, models: int, epochs: int, batch: int) -> dict:
    net, loss = _net(), fn.softmax_cross_entropy
    keys = jax.random.split(jax.random.key(0), models)
    params = fn.init_params(net, (DIMS[0],), keys)
    opt = fn.optim.sgd(LR)
    common = dict(batch_size=batch, eval_train=False, progress=False)
    out: dict[str, Any] = {}

    # vmapped: warm up (compile) with one epoch, then time the whole sweep
    t0 = time.perf_counter()
    _block(fn.sweep(net, loss, params, train, keys=keys, optimizer=opt, epochs=1, **common).params)
    out["vmapped_compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = fn.sweep(net, loss, params, train, keys=keys, optimizer=opt, epochs=epochs, **common)
    _block(res.params)
    out["vmapped_s"] = time.perf_counter() - t0
    out["vmapped_final_loss"] = float(jnp.nanmean(res.history["loss"][:, -1]))

    # one key: every run sees the same batches, so the batch enters the vmap unbatched and the first
    # layer's products are one GEMM across the models (fnnet.training.jit_sweep_epoch)
    _block(fn.sweep(net, loss, params, train, keys=keys[0], optimizer=opt, epochs=1, **common).params)
    t0 = time.perf_counter()
    res = fn.sweep(net, loss, params, train, keys=keys[0], optimizer=opt, epochs=epochs, **common)
    _block(res.params)
    out["vmapped_one_key_s"] = time.perf_counter() - t0
    out["vmapped_one_key_final_loss"] = float(jnp.nanmean(res.history["loss"][:, -1]))

    # a Python loop of jitted runs: the epoch program compiles once (same spec for every run)
    one = lambda k, e: fn.train(net, loss, fn.pick(params, k), train, optimizer=opt, key=keys[k], epochs=e, **common)  # noqa: E731
    t0 = time.perf_counter()
    _block(one(0, 1).params)
    out["jit_loop_compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    finals = []
    for k in range(models):
        r = one(k, epochs)
        finals.append(r.history["loss"][-1])
    _block(finals)
    out["jit_loop_s"] = time.perf_counter() - t0
    out["jit_loop_final_loss"] = float(np.nanmean(np.asarray(finals)))
    return out


def _torch_runs(train, models: int, epochs: int, batch: int, threads: int, device: str = "cpu") -> dict:
    import torch
    from torch import nn
    from torch.nn import functional as F

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.from_numpy(np.asarray(train.x)).to(device)
        y = torch.from_numpy(np.asarray(train.y)).long().to(device)
        n = x.shape[0]
        steps = n // batch
        finals = []
        t0 = time.perf_counter()
        for k in range(models):
            with torch.random.fork_rng(devices=[]):  # nn.Linear draws from the global generator: a fork of it
                torch.manual_seed(k)
                model = nn.Sequential(
                    nn.Linear(DIMS[0], DIMS[1]),
                    nn.ReLU(),
                    nn.Linear(DIMS[1], DIMS[2]),
                    nn.ReLU(),
                    nn.Linear(DIMS[2], DIMS[3]),
                ).to(device)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            gen = torch.Generator().manual_seed(k)
            for _ in range(epochs):
                perm = torch.randperm(n, generator=gen).to(device)
                total = torch.zeros((), device=device)
                for i in range(steps):
                    idx = perm[i * batch : (i + 1) * batch]
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach()
            finals.append(float(total) / steps)  # float() waits for the device
        return {
            "threads": torch.get_num_threads(),
            "device": device,
            "seconds": time.perf_counter() - t0,
            "final_loss": float(np.mean(finals)),
        }
    finally:
        torch.set_num_threads(before)


def _torch_device() -> tuple[str | None, str | None]:
    """PyTorch's device for the eager loop (:func:`fnnet.bench.peers.torch_device`), or None and the reason."""
    if peers.torch_version() is None:
        return None, "torch is not installed (pip install 'fnnet[bench]'); PyTorch eager loop skipped"
    return peers.torch_device()


def bench_sweep(*, models: int, epochs: int, batch: int = 100, peak_gflops: float | None = None) -> dict:
    """Time K = ``models`` runs of ``epochs`` epochs three ways; speed-ups of the vmapped sweep.

    With ``peak_gflops`` (the measured matmul peak) it adds the compute bound: a vmapped sweep can at
    best do the K·steps train steps at the peak, so it can be at most ``(time per step of the other
    mode) / (FLOPs per step / peak)`` times faster than a mode that runs one model's step at a time.
    """
    train, _ = fn.data.mnist1d()
    steps = epochs * (train.x.shape[0] // batch)
    flops = step_flops(dense_macs(batch, list(DIMS)))
    row: dict[str, Any] = {
        "models": models,
        "model": "MLP " + "-".join(map(str, DIMS)) + " ReLU, softmax CE, SGD lr 0.1",
        "batch": batch,
        "epochs": epochs,
        "steps_per_model": steps,
        "flops_per_step": flops,
    }
    row.update(_jax_runs(train, models, epochs, batch))
    device, why_not = _torch_device()
    if device is None:
        row["torch_skipped"] = why_not
    else:
        import torch

        # every core (as XLA uses them) and one thread (often faster for ops this small): the faster
        # of the two is the baseline, so the comparison is with PyTorch at its best here
        threads = sorted({os.cpu_count() or 1, 1}, reverse=True)
        runs = [_torch_runs(train, models, epochs, batch, t, device) for t in threads]
        best = min(runs, key=lambda r: r["seconds"])
        row.update(
            torch_version=torch.__version__,
            torch_runs=runs,
            torch_eager_s=best["seconds"],
            torch_threads=best["threads"],
            torch_eager_final_loss=best["final_loss"],
        )
    total = models * steps
    row["vmapped_model_steps_per_s"] = total / row["vmapped_s"]
    row["vmapped_gflops"] = total * flops / row["vmapped_s"] / 1e9
    row["speedup_vs_jit_loop"] = row["jit_loop_s"] / row["vmapped_s"]
    row["speedup_one_key_vs_jit_loop"] = row["jit_loop_s"] / row["vmapped_one_key_s"]
    if "torch_eager_s" in row:
        row["speedup_vs_torch_eager"] = row["torch_eager_s"] / row["vmapped_s"]
    if peak_gflops:
        row["vmapped_peak_fraction"] = row["vmapped_gflops"] / peak_gflops
        best_step = flops / (peak_gflops * 1e9)  # seconds per model-step at the measured matmul peak
        row["bound_speedup_vs_jit_loop"] = row["jit_loop_s"] / total / best_step
        if "torch_eager_s" in row:
            row["bound_speedup_vs_torch_eager"] = row["torch_eager_s"] / total / best_step
    return row
