"""Training checkpoints: a :class:`fnnet.training.TrainResult` saved atomically to one ``.npz``.

The file holds the whole :class:`~fnnet.training.TrainState` (params, optimizer state, PRNG key as raw
key data, step, divergence flags), the histories so far and a fingerprint of the configuration.
``train(..., resume=load(...))`` then continues exactly where the run stopped, so a run killed and
rerun ends with the same numbers as one never interrupted. Written with a temporary file and
``os.replace`` (mode 0o666 less the umask, as ``open`` creates files); read with
``allow_pickle=False``.

A damaged file is never an error: :func:`load` and :func:`info` return None for anything they
cannot read back whole (a truncated file, a CRC mismatch, a missing or extra member, arrays of the
wrong shape, dtype or kind, a pickled object), so a rerun starts over instead of crashing.

    save(path, result, fingerprint)                 # e.g. in train(..., callback=...)
    load(path, params, optimizer, key, fingerprint) -> TrainResult | None
    info(path) -> CheckpointInfo(fingerprint, epochs) | None
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from fnnet._io import atomic_write
from fnnet.training import TrainResult, TrainState, init_state

__all__ = ["CheckpointInfo", "info", "load", "save"]


class CheckpointInfo(NamedTuple):
    """What a checkpoint says about its run, read without building a model."""

    fingerprint: str  # the configuration's fingerprint given to save()
    epochs: int  # epochs trained so far (the length of the loss history)


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


def _read(f: Any, name: str) -> np.ndarray:
    a = f[name]
    if a.dtype == object or a.dtype.kind not in "biuf":  # numbers and flags only; allow_pickle=False already
        raise ValueError(f"{name} holds {a.dtype} data")
    return a


def _meta(f: Any) -> tuple[str, dict[str, np.ndarray], dict[str, np.ndarray], int, float]:
    """(fingerprint, history, step history, steps per epoch, wall time); ValueError if malformed."""
    fp = f["meta_fingerprint"]
    if fp.shape != () or fp.dtype.kind != "U":
        raise ValueError("meta_fingerprint is not one string")
    history = {k[len("history_") :]: _read(f, k) for k in f.files if k.startswith("history_")}
    steps = {k[len("steps_") :]: _read(f, k) for k in f.files if k.startswith("steps_")}
    per_epoch, wall = _read(f, "meta_steps_per_epoch"), _read(f, "meta_wall_time")
    if per_epoch.shape != () or wall.shape != () or "loss" not in history:
        raise ValueError("malformed metadata")
    epochs = np.shape(history["loss"])[:1]
    if not epochs or any(np.shape(v)[:1] != epochs for v in history.values()):
        raise ValueError("histories of unequal length")
    if any(np.ndim(v) < 1 for v in steps.values()) or len({np.shape(v)[0] for v in steps.values()}) > 1:
        raise ValueError("step histories of unequal length")
    return str(fp), history, steps, int(per_epoch), float(wall)


def info(path: str | os.PathLike) -> CheckpointInfo | None:
    """The fingerprint and epoch count of the checkpoint at ``path``, or None if it is missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as f:
            fp, history, _, _, _ = _meta(f)
            for k in f.files:  # read every member: a damaged one (CRC, truncation) shows only when read
                f[k]
    except Exception:  # a damaged file raises almost anything (BadZipFile, zlib.error, EOFError, ...)
        return None
    return CheckpointInfo(fp, int(np.shape(history["loss"])[0]))


def load(
    path: str | os.PathLike, params: Any, optimizer: optax.GradientTransformation, key: Any, fingerprint: str = ""
) -> TrainResult | None:
    """The saved result, or None when the file is missing or damaged, from another configuration, or mismatched.

    ``params``, ``optimizer`` and ``key`` are those of a fresh run: they give the pytree structure,
    shapes and dtypes the saved leaves must fit. Never raises for a bad file (see the module docstring).
    """
    template = _raw(init_state(params, optimizer, key))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    try:
        with np.load(path, allow_pickle=False) as f:
            fp, history, steps, per_epoch, wall = _meta(f)
            if fp != fingerprint or f"state_{len(leaves)}" in f.files:
                return None
            saved = [_read(f, f"state_{i}") for i in range(len(leaves))]
    except Exception:  # a damaged file raises almost anything (BadZipFile, zlib.error, EOFError, ...)
        return None
    for a, b in zip(saved, leaves):
        if a.shape != np.shape(b) or a.dtype != np.asarray(b).dtype:
            return None
    state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in saved])
    state = state._replace(key=jax.random.wrap_key_data(state.key))
    return TrainResult(state.params, state, history, steps, per_epoch, wall)
