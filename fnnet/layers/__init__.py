"""Layers, one module per family; each a :class:`fnnet.Layer` triple with hand-written backward."""

from fnnet.layers.combinators import residual, serial
from fnnet.layers.dense import Dense, Flatten

__all__ = ["Dense", "Flatten", "residual", "serial"]
