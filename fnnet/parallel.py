"""Data-parallel training on JAX's own SPMD: a device mesh, sharded batches, replicated params.

    mesh = fn.parallel.data_mesh()                      # all devices on one axis called "data"
    result = fn.train(net, loss, params, data, ..., mesh=mesh)

Inside each compiled step the minibatch is constrained to ``NamedSharding(mesh, P("data"))`` — each
device holds B / n_devices rows — and params, optimizer state and the dataset are replicated
(``P()``). The forward and the hand-written backward run on the local rows; where a rule sums over
the batch (Dense: dW = xᵀ dy, db = Σ_batch dy) XLA's SPMD partitioner inserts the all-reduce, exactly
as it does for ``jax.grad``. Nothing here is a home-made collective, and the result equals
single-device training up to the order of the floating-point sums.

Multi-host: call ``jax.distributed.initialize()`` first on every host (with coordinator address,
process count and id, or from the cluster's environment); ``jax.devices()`` then lists every device
of every host and :func:`data_mesh` spans them all. Each host runs the same program.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["batch_sharding", "data_mesh", "replicate", "shard_batch"]


def data_mesh(devices: Any = None, axis: str = "data") -> Mesh:
    """A 1-D ``Mesh`` over ``devices`` (default: all of ``jax.devices()``) with one axis, ``axis``."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    return Mesh(np.array(devices), (axis,))


def batch_sharding(mesh: Mesh, batch_size: int | None = None, axis: str = "data") -> NamedSharding:
    """``NamedSharding(mesh, P(axis))``: the batch axis split across devices.

    With ``batch_size`` it checks that the batch divides evenly over the devices.
    """
    n_dev = mesh.shape[axis]
    if batch_size is not None and batch_size % n_dev:
        raise ValueError(
            f"batch_size {batch_size} does not divide over the {n_dev} devices of the mesh; use a multiple of {n_dev}"
        )
    return NamedSharding(mesh, P(axis))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf of ``tree`` on every device of ``mesh`` (``P()``)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(tree: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Split the leading (batch) axis of every leaf of ``tree`` over ``mesh``'s ``axis``."""
    return jax.device_put(tree, batch_sharding(mesh, None, axis))
