"""Training checkpoints: a :class:`fnnet.train.TrainResult` saved atomically to one ``.npz``.

The file holds the whole :class:`~fnnet.train.TrainState` (params, optimizer state, PRNG key as raw
key data, step, divergence flags), the histories so far and a fingerprint of the configuration.
``train(..., resume=load(...))`` then continues exactly where the run stopped, so a run killed and
rerun ends with the same numbers as one never interrupted. Written with a temporary file and
``os.replace``; read with ``allow_pickle=False``.

    save(path, result, fingerprint)                 # e.g. in train(..., callback=...)
    load(path, params, optimizer, key, fingerprint) -> TrainResult | None
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from fnnet._io import atomic_write
from fnnet.train import TrainResult, TrainState, init_state

__all__ = ["load", "save"]


def _raw(state: TrainState) -> TrainState:
    return state._replace(key=jax.random.key_data(state.key))


def save(path: str | os.PathLike, result: TrainResult, fingerprint: str = "") -> None:
    """Write ``result`` (state, histories) to ``path`` atomically."""
    path = Path(path)
    leaves = jax.tree_util.tree_leaves(_raw(result.state))
    arrays = {f"state_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays.update({f"history_{k}": np.asarray(v) for k, v in result.history.items()})
    arrays.update({f"steps_{k}": np.asarray(v) for k, v in result.step_history.items()})
    arrays["meta_fingerprint"] = np.asarray(fingerprint)
    arrays["meta_steps_per_epoch"] = np.asarray(result.steps_per_epoch)
    arrays["meta_wall_time"] = np.asarray(result.wall_time)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(
    path: str | os.PathLike, params: Any, optimizer: optax.GradientTransformation, key: Any, fingerprint: str = ""
) -> TrainResult | None:
    """The saved result, or None when the file is unreadable, from another configuration, or mismatched.

    ``params``, ``optimizer`` and ``key`` are those of a fresh run: they give the pytree structure,
    shapes and dtypes the saved leaves must fit.
    """
    template = _raw(init_state(params, optimizer, key))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["meta_fingerprint"]) != fingerprint:
                return None
            saved = [f[f"state_{i}"] for i in range(len(leaves))]
            if f"state_{len(leaves)}" in f.files:
                return None
            history = {k[len("history_") :]: f[k] for k in f.files if k.startswith("history_")}
            steps = {k[len("steps_") :]: f[k] for k in f.files if k.startswith("steps_")}
            per_epoch, wall = int(f["meta_steps_per_epoch"]), float(f["meta_wall_time"])
    except (OSError, KeyError, ValueError, EOFError):
        return None
    for a, b in zip(saved, leaves):
        if a.shape != np.shape(b) or a.dtype != np.asarray(b).dtype:
            return None
    state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in saved])
    state = state._replace(key=jax.random.wrap_key_data(state.key))
    return TrainResult(state.params, state, history, steps, per_epoch, wall)
