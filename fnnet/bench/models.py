"""The models of ``fnnet bench``: each entry a Layer, its input, its loss and its analytic FLOP count.

The FLOP count of a train step is counted from the matrix products only (2 FLOPs per multiply-add):
each matmul or convolution of the forward costs its forward, the weight gradient (same size) and
the input gradient (same size) — except the input gradient of the first layer, which nobody needs
and XLA removes. Elementwise work (activations, losses, the SGD update) is left out; it is O(params
+ activations), a few percent of the products for every entry here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax

import fnnet as fn
from fnnet.core import Layer, Loss

GPT_BLOCK = "gpt_block_t256_d256_h4_b8"
ATTENTION = ("attention_t1024_d64_h4_b1", "attention_t4096_d64_h4_b1")
# ``fnnet bench --only gpu``: one entry of each kind that has a PyTorch twin, and the sweep, for one command
# on a GPU host (with --no-torch-compile, whose compile times on a GPU would dominate the run)
GPU_SUBSET = (
    "mlp_784-1024-1024-10_b256",
    "cnn_28x28_b64",
    "lstm_t50_b64",
    "bn_mlp_784-512-512-10_b256",
    GPT_BLOCK,
    ATTENTION[0],
    "sweep",
)


class Entry(NamedTuple):
    """One benchmark: a model, its batch, and the analytic FLOPs of one train step."""

    name: str
    about: str  # what the model is, in one line
    build: Callable[[], Layer]
    in_shape: tuple[int, ...]  # without the batch axis
    batch: int
    loss: Loss
    classes: int  # integer labels in [0, classes)
    flops: int  # analytic FLOPs of one train step (forward + backward + update)
    target: Callable | None = None  # target(key, x) -> the loss's target; None: integer labels (batch,)
    grad_memory: bool = False  # also compile value_and_grad alone (manual, autodiff) for its temp memory


def step_flops(macs: list[tuple[int, bool]]) -> int:
    """2 FLOPs per MAC, three products (forward, dW, dx) per op, two when its dx is not needed."""
    return sum(2 * m * (3 if needs_dx else 2) for m, needs_dx in macs)


def dense_macs(batch: int, dims: list[int]) -> list[tuple[int, bool]]:
    return [(batch * a * b, i > 0) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]


def mlp(name: str, dims: list[int], batch: int, act: str = "relu") -> Entry:
    """A plain MLP dims[0]-...-dims[-1] with ``act`` between the Dense layers, softmax cross-entropy."""
    layers: list[Layer] = []
    for i, d in enumerate(dims[1:]):
        layers.append(fn.Dense(d))
        if i < len(dims) - 2:
            layers.append(fn.activations.get(act))
    about = f"MLP {'-'.join(map(str, dims))} {act}"
    return Entry(
        name,
        about,
        lambda: fn.serial(*layers),
        (dims[0],),
        batch,
        fn.softmax_cross_entropy,
        dims[-1],
        step_flops(dense_macs(batch, dims)),
    )


def batchnorm_mlp(name: str, dims: list[int], batch: int) -> Entry:
    """Dense -> BatchNorm -> ReLU blocks, then a Dense head."""
    layers: list[Layer] = []
    for d in dims[1:-1]:
        layers += [fn.Dense(d), fn.BatchNorm(), fn.Relu()]
    layers.append(fn.Dense(dims[-1]))
    about = f"MLP {'-'.join(map(str, dims))} Dense-BN-ReLU"
    flops = step_flops(dense_macs(batch, dims))
    return Entry(name, about, lambda: fn.serial(*layers), (dims[0],), batch, fn.softmax_cross_entropy, dims[-1], flops)


def residual_mlp(name: str, d_in: int, width: int, blocks: int, classes: int, batch: int) -> Entry:
    """Dense(width), then ``blocks`` pre-norm residual blocks x + Dense(ReLU(Dense(LayerNorm(x)))), a head."""

    def build() -> Layer:
        body = [
            fn.residual(fn.serial(fn.LayerNorm(), fn.Dense(width), fn.Relu(), fn.Dense(width))) for _ in range(blocks)
        ]
        return fn.serial(fn.Dense(width), *body, fn.Dense(classes))

    macs = dense_macs(batch, [d_in, width])
    macs += [(batch * width * width, True)] * (2 * blocks) + [(batch * width * classes, True)]
    about = f"residual MLP {d_in}-{width}x{blocks} blocks (LN-Dense-ReLU-Dense)-{classes}"
    return Entry(name, about, build, (d_in,), batch, fn.softmax_cross_entropy, classes, step_flops(macs))


def cnn(name: str, hw: int, channels: tuple[int, int], hidden: int, batch: int) -> Entry:
    """Conv3x3(SAME)-ReLU-MaxPool2 twice, Flatten, Dense-ReLU, Dense(10), on hw x hw x 1 images."""
    c1, c2 = channels

    def build() -> Layer:
        return fn.serial(
            fn.Conv2D(c1, 3, padding="SAME"),
            fn.Relu(),
            fn.MaxPool(2),
            fn.Conv2D(c2, 3, padding="SAME"),
            fn.Relu(),
            fn.MaxPool(2),
            fn.Flatten(),
            fn.Dense(hidden),
            fn.Relu(),
            fn.Dense(10),
        )

    h2, h4 = hw // 2, hw // 4
    macs = [(batch * hw * hw * 9 * 1 * c1, False), (batch * h2 * h2 * 9 * c1 * c2, True)]
    macs += [(batch * h4 * h4 * c2 * hidden, True), (batch * hidden * 10, True)]
    about = f"CNN {hw}x{hw}x1 conv{c1}-pool-conv{c2}-pool-{hidden}-10"
    return Entry(name, about, build, (hw, hw, 1), batch, fn.softmax_cross_entropy, 10, step_flops(macs))


def recurrent(name: str, kind: str, steps: int, d_in: int, hidden: int, batch: int) -> Entry:
    """An RNN (tanh), LSTM or GRU over ``steps`` steps, its last hidden state into Dense(10)."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]

    def build() -> Layer:
        cell = {"lstm": fn.LSTM, "gru": fn.GRU, "rnn": fn.RNN}[kind](hidden)
        return fn.serial(cell, fn.Dense(10))

    n = batch * steps
    # input projection: forward + dW (x needs no gradient); recurrence: forward, dU and dh
    macs = [(n * d_in * gates * hidden, False), (n * hidden * gates * hidden, True), (batch * hidden * 10, True)]
    about = f"{kind.upper()} {d_in}->{hidden} over {steps} steps, Dense(10) on h_T"
    return Entry(name, about, build, (steps, d_in), batch, fn.softmax_cross_entropy, 10, step_flops(macs))


def _same_shape_target(key, x):
    """A standard normal target of the shape of x (for layers that keep the shape, under mse)."""
    return jax.random.normal(key, x.shape, x.dtype)


def attention_macs(batch: int, T: int, d: int, heads: int) -> list[tuple[int, bool]]:
    """Q, K, V projections (their dx is x's: not needed when x is the input), the two T × T products per head
    (counted in full, causal or not), and Wo."""
    dh = d // heads
    proj = [(batch * T * d * d, False)] * 3
    return proj + [(batch * heads * T * T * dh, True)] * 2 + [(batch * T * d * d, True)]


def attention(name: str, T: int, d: int, heads: int, batch: int) -> Entry:
    """``serial(MultiHeadAttention(heads, causal=True))`` under mse: the layer of the memory target, timed."""
    about = f"causal MultiHeadAttention({heads}), T={T}, d={d} (tile: layer's default), mse"

    def build() -> Layer:
        return fn.serial(fn.MultiHeadAttention(heads, causal=True))

    flops = step_flops(attention_macs(batch, T, d, heads))
    return Entry(name, about, build, (T, d), batch, fn.mse, 0, flops, _same_shape_target, grad_memory=True)


def gpt_block(name: str, T: int, d: int, heads: int, batch: int, mlp_ratio: int = 4) -> Entry:
    """One Pre-LN ``transformer_block(d, heads)`` (causal) under mse."""
    about = f"Pre-LN transformer block, T={T}, d={d}, {heads} heads, MLP {mlp_ratio}x, mse"

    def build() -> Layer:
        return fn.transformer_block(d, heads, causal=True, mlp_ratio=mlp_ratio)

    macs = attention_macs(batch, T, d, heads) + [(batch * T * d * mlp_ratio * d, True)] * 2
    return Entry(name, about, build, (T, d), batch, fn.mse, 0, step_flops(macs), _same_shape_target)


def entries(quick: bool) -> list[Entry]:
    """The benchmark set; ``quick`` is a small one for smoke tests (seconds, not minutes)."""
    if quick:
        return [
            mlp("mlp_40-100-100-10_b32", [40, 100, 100, 10], 32),
            cnn("cnn_14x14_b16", 14, (4, 8), 32, 16),
            recurrent("rnn_t10_b16", "rnn", 10, 8, 16, 16),
            batchnorm_mlp("bn_mlp_40-64-64-10_b32", [40, 64, 64, 10], 32),
            residual_mlp("res_mlp_40-64x2_b32", 40, 64, 2, 10, 32),
            attention("attention_t128_d32_b2", 128, 32, 4, 2),
        ]
    return [
        mlp("mlp_40-100-100-10_b32", [40, 100, 100, 10], 32),
        mlp("mlp_40-100-100-10_b256", [40, 100, 100, 10], 256),
        mlp("mlp_784-512-512-10_b128", [784, 512, 512, 10], 128),
        mlp("mlp_784-1024-1024-10_b256", [784, 1024, 1024, 10], 256),
        mlp("mlp_784-4096-4096-10_b256", [784, 4096, 4096, 10], 256),
        mlp("mlp_sigmoid_784-512x3-10_b128", [784, 512, 512, 512, 10], 128, act="sigmoid"),
        mlp("mlp_tanh_784-512x3-10_b128", [784, 512, 512, 512, 10], 128, act="tanh"),
        mlp("mlp_gelu_784-512x3-10_b128", [784, 512, 512, 512, 10], 128, act="gelu"),
        cnn("cnn_28x28_b64", 28, (32, 64), 128, 64),
        recurrent("rnn_t50_b64", "rnn", 50, 32, 128, 64),
        recurrent("lstm_t50_b64", "lstm", 50, 32, 128, 64),
        batchnorm_mlp("bn_mlp_784-512-512-10_b256", [784, 512, 512, 10], 256),
        residual_mlp("res_mlp_784-512x4_b256", 784, 512, 4, 10, 256),
        recurrent("gru_t50_b64", "gru", 50, 32, 128, 64),
        gpt_block(GPT_BLOCK, 256, 256, 4, 8),
        attention(ATTENTION[0], 1024, 64, 4, 1),
        attention(ATTENTION[1], 4096, 64, 4, 1),
    ]
