"""Compiled temporary memory of attention's gradient: the hand-written rule against autodiff.

For ``value_and_grad`` of ``serial(MultiHeadAttention(4, causal=True))`` under ``mse``, B = 1,
d_model = 64, float32, it prints XLA's ``temp_size_in_bytes`` (the scratch memory of the compiled
program, from ``jax.jit(f).lower(...).compile().memory_analysis()``) for the manual path and for
``jax.value_and_grad`` of the same forward, and their ratio, at each sequence length. Nothing is run,
only compiled, so the numbers do not depend on the load of the machine.

    python benchmarks/attention_memory.py                 # T = 256, 1024, 4096, the default layer
    python benchmarks/attention_memory.py --T 1024 --block 128
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

import fnnet as fn
from fnnet.layers.attention import choose_block

TARGETS = {1024: 1 / 3, 4096: 1 / 10}


def temp_bytes(T: int, source: str, block: int | None = None, d_model: int = 64, heads: int = 4) -> int | None:
    """temp_size_in_bytes of the compiled ``(loss, grads)`` of one gradient source at length ``T``."""
    net = fn.serial(fn.MultiHeadAttention(heads, causal=True, block_size=block))
    _, params = net.init(jax.random.key(0), (T, d_model))
    x = jax.ShapeDtypeStruct((1, T, d_model), jnp.float32)
    f = fn.grad.GRAD_SOURCES[source](net, fn.mse)
    m = jax.jit(f).lower(params, x, x).compile().memory_analysis()
    return None if m is None else int(m.temp_size_in_bytes)


def table(lengths: list[int], block: int | None = None) -> list[dict]:
    rows = []
    for T in lengths:
        man, auto = temp_bytes(T, "manual", block), temp_bytes(T, "autodiff", block)
        rows.append(
            {
                "T": T,
                "block": choose_block(T, block, causal=True),
                "manual_bytes": man,
                "autodiff_bytes": auto,
                "ratio": None if not (man is not None and auto) else man / auto,
                "target": TARGETS.get(T),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=[256, 1024, 4096], help="sequence lengths")
    p.add_argument("--block", type=int, default=None, help="key-tile size (default: the layer's choice)")
    args = p.parse_args(argv)
    print(f"jax {jax.__version__}, {jax.default_backend()}; MultiHeadAttention(4, causal=True), B=1, d=64, float32")
    print(f"{'T':>6} {'tile':>6} {'manual MiB':>11} {'autodiff MiB':>13} {'ratio':>7} {'target':>7}")
    for r in table(args.T, args.block):
        mib = lambda b: "-" if b is None else f"{b / 2**20:.2f}"  # noqa: E731
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        target = "" if r["target"] is None else f"<= {r['target']:.3f}"
        man, auto = mib(r["manual_bytes"]), mib(r["autodiff_bytes"])
        print(f"{r['T']:>6} {r['block']:>6} {man:>11} {auto:>13} {ratio:>7} {target:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
