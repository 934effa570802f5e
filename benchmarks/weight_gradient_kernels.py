"""The evidence behind ``fnnet.layers.dense.weight_gradient``: dW = xᵀ dy, plain vs through a transposed copy.

XLA's CPU backend runs a matmul on its YNNPACK kernels only when the left operand is contracted over its
minor axis (``IsDotSupportedByYnn`` in xla/backends/cpu/ynn_support.cc rejects a non-canonical lhs);
``x.T @ dy`` contracts x over its batch axis, its major one, and falls back to another kernel. This
script times both forms for the shapes of the benchmark (min of interleaved samples, jitted):

    python benchmarks/weight_gradient_kernels.py
"""

from __future__ import annotations

import time

import jax

from fnnet.layers.dense import transpose_for_matmul

SHAPES = [
    (32, 40, 100),
    (256, 40, 100),
    (256, 100, 100),
    (128, 512, 512),
    (128, 784, 512),
    (256, 512, 512),
    (256, 784, 1024),
    (256, 1024, 1024),
    (512, 1024, 1024),
    (256, 2048, 2048),
    (256, 4096, 4096),
]


def main(repeats: int = 9) -> list[dict]:
    plain = jax.jit(lambda x, dy: x.T @ dy)
    copied = jax.jit(lambda x, dy: transpose_for_matmul(x, after=dy) @ dy)
    rows = []
    print(f"{'B':>5} {'d_in':>5} {'d_out':>5}  {'plain ms':>9} {'GF/s':>6}  {'copy ms':>9} {'GF/s':>6}  copy/plain")
    for b, d_in, d_out in SHAPES:
        x = jax.random.normal(jax.random.key(0), (b, d_in))
        dy = jax.random.normal(jax.random.key(1), (b, d_out))
        flops = 2 * b * d_in * d_out
        inner = max(1, int(2e8 // flops))
        times: dict[str, list[float]] = {"plain": [], "copy": []}
        for f in (plain, copied):
            jax.block_until_ready(f(x, dy))
        for _ in range(repeats):
            for name, f in (("plain", plain), ("copy", copied)):
                t0 = time.perf_counter()
                for _ in range(inner):
                    out = f(x, dy)
                jax.block_until_ready(out)
                times[name].append((time.perf_counter() - t0) / inner)
        tp, tc = min(times["plain"]), min(times["copy"])
        rows.append(dict(batch=b, d_in=d_in, d_out=d_out, plain_s=tp, copy_s=tc))
        print(
            f"{b:>5} {d_in:>5} {d_out:>5}  {tp * 1e3:>9.3f} {flops / tp / 1e9:>6.1f}  {tc * 1e3:>9.3f} "
            f"{flops / tc / 1e9:>6.1f}  {tc / tp:.2f}",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
