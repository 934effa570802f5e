"""fnnet: the mathematics of neural-network training as pure JAX functions with hand-written backward rules.

import fnnet as fn
net = fn.serial(fn.Dense(64), fn.Relu(), fn.Dense(10))
_, params = net.init(jax.random.key(0), (40,))
loss, grads = fn.value_and_grad(net, fn.softmax_cross_entropy)(params, x, labels)
"""

from fnnet import activations, data, initializers, losses, optim, parallel
from fnnet.activations import (
    Gelu,
    Identity,
    LeakyRelu,
    Relu,
    Sigmoid,
    Silu,
    Softmax,
    Softplus,
    Softsign,
    Swish,
    Tanh,
)
from fnnet.checking import GradcheckReport, check_layer, check_loss, gradcheck
from fnnet.core import DTypeError, Layer, Loss, ShapeError
from fnnet.grad import (
    autodiff_value_and_grad,
    custom_vjp,
    custom_vjp_loss,
    custom_vjp_value_and_grad,
    value_and_grad,
)
from fnnet.layers import (
    GRU,
    LSTM,
    RNN,
    AvgPool,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    MaxPool,
    MultiHeadAttention,
    PositionalEmbedding,
    RMSNorm,
    gpt,
    residual,
    serial,
    summary,
    transformer_block,
)
from fnnet.losses import binary_cross_entropy, mse, sequence_cross_entropy, softmax_cross_entropy
from fnnet.sweeps import init_params, pick, stack, sweep
from fnnet.training import TrainResult, TrainState, evaluate, make_step, train

__version__ = "0.1.0"

__all__ = [
    "AvgPool",
    "BatchNorm",
    "Conv2D",
    "DTypeError",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GRU",
    "Gelu",
    "Identity",
    "LSTM",
    "Layer",
    "LayerNorm",
    "LeakyRelu",
    "Loss",
    "MaxPool",
    "MultiHeadAttention",
    "PositionalEmbedding",
    "RMSNorm",
    "RNN",
    "Relu",
    "ShapeError",
    "Sigmoid",
    "Silu",
    "Softmax",
    "Softplus",
    "Softsign",
    "Swish",
    "Tanh",
    "TrainResult",
    "TrainState",
    "activations",
    "autodiff_value_and_grad",
    "binary_cross_entropy",
    "check_layer",
    "check_loss",
    "gpt",
    "gradcheck",
    "GradcheckReport",
    "custom_vjp",
    "custom_vjp_loss",
    "custom_vjp_value_and_grad",
    "data",
    "evaluate",
    "init_params",
    "initializers",
    "losses",
    "make_step",
    "mse",
    "optim",
    "parallel",
    "pick",
    "residual",
    "sequence_cross_entropy",
    "serial",
    "softmax_cross_entropy",
    "stack",
    "summary",
    "sweep",
    "train",
    "transformer_block",
    "value_and_grad",
]
