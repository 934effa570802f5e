"""Layers, one module per family; each a :class:`fnnet.Layer` triple with hand-written backward."""

from fnnet.layers.combinators import residual, serial
from fnnet.layers.conv import Conv2D
from fnnet.layers.dense import Dense, Flatten
from fnnet.layers.dropout import Dropout
from fnnet.layers.normalization import BatchNorm, LayerNorm
from fnnet.layers.pooling import AvgPool, MaxPool
from fnnet.layers.recurrent import LSTM, RNN, hidden_jacobian_norms
from fnnet.layers.summarizing import summary

__all__ = [
    "LSTM",
    "RNN",
    "AvgPool",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "LayerNorm",
    "MaxPool",
    "hidden_jacobian_norms",
    "residual",
    "serial",
    "summary",
]
