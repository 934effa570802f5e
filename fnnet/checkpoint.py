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

**Layout versions.** Every file records the params layout version it was written with
(:data:`LAYOUT_VERSION`). A whole file of another version is not damaged, but its leaves may mean
something else even where their shapes agree, so :func:`load` and :func:`load_params` refuse it
with a :class:`CheckpointVersionError` (one line: "checkpoint X was written by fnnet's params
layout version N; this fnnet reads version M — retrain or convert"); it is never loaded wrongly
and never silently replaced. :func:`info` still reads it and reports its ``version``. Versions:

* 1 — files that record no version: BatchNorm's running statistics flat beside γ, β
  (``{"gamma", "beta", "mean", "var"}``);
* 2 — buffers under a ``"state"`` sub-dict (``{"gamma", "beta", "state": {"mean", "var"}}``).

    save(path, result, fingerprint)                 # e.g. in train(..., callback=...)
    load(path, params, optimizer, key, fingerprint) -> TrainResult | None
    info(path) -> CheckpointInfo(fingerprint, epochs, version) | None
    save_params(path, params);  load_params(path, like=None) -> params      # params alone
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from fnnet._io import atomic_write
from fnnet.core import DTypeError, ShapeError, is_int, shape_str
from fnnet.training import TrainResult, TrainState, init_state

__all__ = [
    "LAYOUT_VERSION",
    "CheckpointInfo",
    "CheckpointVersionError",
    "info",
    "load",
    "load_params",
    "save",
    "save_params",
]

#: The params layout this fnnet writes and reads (module docstring); 1 for files that record none.
LAYOUT_VERSION = 2
_UNVERSIONED = 1


class CheckpointVersionError(ValueError):
    """A whole checkpoint or params file written with another params layout version than this fnnet's."""


class CheckpointInfo(NamedTuple):
    """What a checkpoint says about its run, read without building a model."""

    fingerprint: str  # the configuration's fingerprint given to save()
    epochs: int  # epochs trained so far (the length of the loss history)
    version: int = LAYOUT_VERSION  # the params layout version it was written with (module docstring)


def _version(f: Any) -> int:
    """The layout version a file records (1 when it records none); ValueError if malformed."""
    if "meta_layout_version" not in f.files:
        return _UNVERSIONED
    v = _read(f, "meta_layout_version")
    if v.shape != () or v.dtype.kind not in "iu":
        raise ValueError("meta_layout_version is not one integer")
    return int(v)


def _check_version(path: Any, version: int, what: str = "checkpoint") -> None:
    if version != LAYOUT_VERSION:
        raise CheckpointVersionError(
            f"{what} {path} was written by fnnet's params layout version {version}; this fnnet reads version "
            f"{LAYOUT_VERSION} — retrain or convert"
        )


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
    arrays["meta_layout_version"] = np.asarray(LAYOUT_VERSION)
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
    """The fingerprint, epoch count and layout version of the checkpoint at ``path``; None if missing or damaged.

    A checkpoint of another layout version is read too (``version`` says which); only :func:`load`
    refuses it.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            fp, history, _, _, _ = _meta(f)
            version = _version(f)
            for k in f.files:  # read every member: a damaged one (CRC, truncation) shows only when read
                f[k]
    except Exception:  # a damaged file raises almost anything (BadZipFile, zlib.error, EOFError, ...)
        return None
    return CheckpointInfo(fp, int(np.shape(history["loss"])[0]), version)


def load(
    path: str | os.PathLike, params: Any, optimizer: optax.GradientTransformation, key: Any, fingerprint: str = ""
) -> TrainResult | None:
    """The saved result, or None when the file is missing or damaged, from another configuration, or mismatched.

    ``params``, ``optimizer`` and ``key`` are those of a fresh run: they give the pytree structure,
    shapes and dtypes the saved leaves must fit. Never raises for a bad file (see the module docstring);
    raises :class:`CheckpointVersionError` for a whole checkpoint of another params layout version.
    """
    template = _raw(init_state(params, optimizer, key))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    try:
        with np.load(path, allow_pickle=False) as f:
            fp, history, steps, per_epoch, wall = _meta(f)
            version = _version(f)
            if version == LAYOUT_VERSION:
                if fp != fingerprint or f"state_{len(leaves)}" in f.files:
                    return None
                saved = [_read(f, f"state_{i}") for i in range(len(leaves))]
    except Exception:  # a damaged file raises almost anything (BadZipFile, zlib.error, EOFError, ...)
        return None
    _check_version(path, version)
    for a, b in zip(saved, leaves):
        if a.shape != np.shape(b) or a.dtype != np.asarray(b).dtype:
            return None
    state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in saved])
    state = state._replace(key=jax.random.wrap_key_data(state.key))
    return TrainResult(state.params, state, history, steps, per_epoch, wall)


# ----------------------------------------------------------------------------------------------
# params alone


def _structure(tree: Any, leaves: list) -> Any:
    """``tree`` as JSON: dicts (string keys), tuples and lists nest; each array becomes its index in ``leaves``."""
    if isinstance(tree, Mapping):
        if not all(isinstance(k, str) for k in tree):
            raise TypeError(f"save_params needs dicts with string keys, got keys {list(tree)!r}")
        return {"dict": {k: _structure(v, leaves) for k, v in tree.items()}}
    if isinstance(tree, (tuple, list)) and not hasattr(tree, "_fields"):
        return {type(tree).__name__: [_structure(v, leaves) for v in tree]}
    if not (hasattr(tree, "shape") and hasattr(tree, "dtype")):
        raise TypeError(
            f"save_params saves params made of dicts, tuples, lists and arrays, got a {type(tree).__name__}"
        )
    leaves.append(np.asarray(tree))
    return len(leaves) - 1


def _rebuild(node: Any, arrays: list) -> Any:
    if isinstance(node, int):
        return jax.numpy.asarray(arrays[node])
    ((kind, body),) = node.items()
    if kind == "dict":
        return {k: _rebuild(v, arrays) for k, v in body.items()}
    items = [_rebuild(v, arrays) for v in body]
    return tuple(items) if kind == "tuple" else items


def save_params(path: str | os.PathLike, params: Any) -> None:
    """Write ``params`` alone (a pytree of dicts, tuples, lists and arrays) to the ``.npz`` at ``path``, atomically.

    The file holds one member per leaf, the nesting as a JSON string and the layout version
    (:data:`LAYOUT_VERSION`); it is read back with ``allow_pickle=False`` by :func:`load_params`.
    """
    leaves: list = []
    tree = json.dumps(_structure(params, leaves))
    arrays = {f"leaf_{i}": a for i, a in enumerate(leaves)}
    arrays["meta_tree"] = np.asarray(tree)
    arrays["meta_layout_version"] = np.asarray(LAYOUT_VERSION)
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def _path_str(path: tuple) -> str:
    return "params" + jax.tree_util.keystr(path)


def _check_like(path: Any, params: Any, like: Any) -> None:
    """Raise naming the first leaf of ``params`` (read from ``path``) that differs from ``like``."""
    got = jax.tree_util.tree_flatten_with_path(params)[0]
    want = jax.tree_util.tree_flatten_with_path(like)[0]
    got_paths, want_paths = [p for p, _ in got], [p for p, _ in want]
    for (gp, g), (wp, w) in zip(got, want):
        if gp != wp:
            break
        if np.shape(g) != np.shape(w):
            raise ShapeError(
                f"params file {path}: {_path_str(gp)} has shape {shape_str(np.shape(g))}, expected "
                f"{shape_str(np.shape(w))}"
            )
        want_dtype = np.dtype(getattr(w, "dtype", None) or np.result_type(w))
        if np.dtype(g.dtype) != want_dtype:
            raise DTypeError(f"params file {path}: {_path_str(gp)} is {np.dtype(g.dtype)}, expected {want_dtype}")
    if got_paths != want_paths or jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(like):
        extra = [p for p in got_paths if p not in want_paths]
        missing = [p for p in want_paths if p not in got_paths]
        if missing:
            what = f"has no {_path_str(missing[0])}"
        elif extra:
            what = f"has {_path_str(extra[0])}, which the expected params lack"
        else:
            what = f"nests its leaves differently (e.g. a list for a tuple): {jax.tree_util.tree_structure(params)}"
        raise ValueError(f"params file {path} does not fit the expected params: it {what}")


def load_params(path: str | os.PathLike, like: Any = None) -> Any:
    """The params saved by :func:`save_params` at ``path``, as JAX arrays.

    ``like`` (optional) is what they must fit: a params pytree (arrays or ``jax.ShapeDtypeStruct``s,
    e.g. ``jax.eval_shape`` of an init) or the ``(out_shape, params)`` pair ``layer.init`` returns.
    The structure, every shape and every dtype are checked; the first leaf that differs is named in
    the error (``params[1]['state']['var'] has shape (3,), expected (4,)``: a :class:`ShapeError`;
    a :class:`DTypeError` for a dtype; ``ValueError`` for a missing or extra leaf).

    A file that cannot be read back whole, or was not written by :func:`save_params`, is a
    ``ValueError`` naming it; one of another layout version a :class:`CheckpointVersionError`.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            version = _version(f)
            if version == LAYOUT_VERSION:
                tree = f["meta_tree"]
                if tree.shape != () or tree.dtype.kind != "U":
                    raise ValueError("meta_tree is not one string")
                node = json.loads(str(tree))
                n = sum(1 for k in f.files if k.startswith("leaf_"))
                arrays = [_read(f, f"leaf_{i}") for i in range(n)]
                params = _rebuild(node, arrays)
    except FileNotFoundError:
        raise
    except Exception as e:  # a damaged file raises almost anything (BadZipFile, zlib.error, EOFError, ...)
        raise ValueError(f"{path} is not a whole params file written by fnnet.checkpoint.save_params ({e})") from None
    _check_version(path, version, "params file")
    if like is not None:
        if _is_init_output(like):
            like = like[1]
        _check_like(path, params, like)
    return params


def _is_init_output(like: Any) -> bool:
    """True for ``layer.init``'s ``(out_shape, params)``: a pair whose first entry is a tuple of ints."""
    return (
        isinstance(like, tuple)
        and len(like) == 2
        and isinstance(like[0], tuple)
        and len(like[0]) > 0
        and all(is_int(d) for d in like[0])
    )
