"""Layers, one module per family; each a :class:`fnnet.Layer` triple with hand-written backward."""

from fnnet.layers.attention import MultiHeadAttention
from fnnet.layers.combinators import residual, serial
from fnnet.layers.conv import Conv2D
from fnnet.layers.dense import Dense, Flatten
from fnnet.layers.dropout import Dropout
from fnnet.layers.embedding import Embedding, PositionalEmbedding
from fnnet.layers.normalization import BatchNorm, LayerNorm, RMSNorm
from fnnet.layers.pooling import AvgPool, MaxPool
from fnnet.layers.recurrent import GRU, LSTM, RNN, hidden_jacobian_norms
from fnnet.layers.summarizing import summary
from fnnet.layers.transformer import gpt, transformer_block

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "AvgPool",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "LayerNorm",
    "MaxPool",
    "MultiHeadAttention",
    "PositionalEmbedding",
    "RMSNorm",
    "gpt",
    "hidden_jacobian_norms",
    "residual",
    "serial",
    "summary",
    "transformer_block",
]
