"""Datasets: MNIST-1D (the default), small synthetic sets, MNIST/Fashion-MNIST from local files.

Every loader returns :class:`Dataset` ``(x, y)`` with a batch axis first: ``x`` float32, ``y`` int32
class labels ``(N,)`` or float32 regression targets ``(N, k)``. Nothing is downloaded at run time.

* :func:`mnist1d` — Greydanus 2020, 40-long 1-D signals of 10 digits, generated offline by the
  ``mnist1d`` package with its published arguments (4000 train / 1000 test) and cached as ``.npz``.
* :func:`xor`, :func:`linearly_separable`, :func:`two_spirals`, :func:`teacher_student`,
  :func:`target_1d` (sine, |x|, step on [−π, π]) — synthetic sets drawn from explicit keys.
  (``linearly_separable`` and ``teacher_student`` also return the ground truth.)
* :func:`mnist`, :func:`fashion_mnist` — from IDX files (optionally ``.gz``) or an ``.npz`` that the
  user downloaded; loaded with ``allow_pickle=False``. See :mod:`fnnet.datafiles`.
* :func:`standardize`, :func:`one_hot`, :func:`validate`, :func:`batches` — helpers.

The cache directory is ``$FNNET_CACHE``, else ``$XDG_CACHE_HOME/fnnet``, else ``~/.cache/fnnet``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._io import atomic_write
from fnnet.core import Array, Layer, Params, is_concrete, is_int
from fnnet.datafiles import DataFileError, fashion_mnist, load_idx, load_npz, mnist

__all__ = [
    "DataFileError",
    "Dataset",
    "batches",
    "cache_dir",
    "fashion_mnist",
    "linearly_separable",
    "load_idx",
    "load_npz",
    "mnist",
    "mnist1d",
    "one_hot",
    "standardize",
    "target_1d",
    "teacher_student",
    "two_spirals",
    "validate",
    "xor",
]


class Dataset(NamedTuple):
    """Inputs and targets with the batch axis first."""

    x: Any  # (N, ...) float32 inputs
    y: Any  # (N,) int32 class labels, or (N, k) float32 regression targets


def validate(ds: Any, name: str = "dataset", num_classes: int | None = None) -> Dataset:
    """Check a dataset and return it as a :class:`Dataset`; raise ``ValueError`` naming the problem.

    Checks: a pair ``(x, y)``; at least one example; the same N; float inputs without NaN/Inf;
    integer labels ``(N,)`` in ``[0, num_classes)`` (when given, and never negative) or finite float
    targets. Integer (or bool) inputs are refused, not cast: every layer computes in floats, and an
    integer ``x`` is most often a mix-up (labels or raw pixels passed as inputs); convert explicitly,
    e.g. ``x.astype(np.float32) / 255``. Nested lists are read as NumPy arrays.
    """
    if not (isinstance(ds, tuple) and len(ds) == 2):
        raise ValueError(f"{name} must be a pair (x, y) such as fnnet.data.Dataset, got {type(ds).__name__}")
    arrays = []
    for what, a in (("inputs x", ds[0]), ("targets y", ds[1])):
        if not hasattr(a, "dtype"):
            try:
                a = np.asarray(a)
            except ValueError as e:
                raise ValueError(f"{name}: its {what} cannot be read as one array ({e})") from None
        if np.dtype(a.dtype).kind in "OSUVMm" and not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(f"{name} needs numeric {what}, got an array of dtype {a.dtype}")
        arrays.append(a)
    x, y = arrays
    xs, ys = np.shape(x), np.shape(y)
    if len(xs) < 1 or len(ys) < 1:
        raise ValueError(f"{name} needs a batch axis on x and y, got shapes {xs} and {ys}")
    if xs[0] == 0:
        raise ValueError(f"{name} is empty (x has shape {xs})")
    if xs[0] != ys[0]:
        raise ValueError(f"{name} has {xs[0]} inputs but {ys[0]} targets")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"{name} needs float inputs, got {jnp.result_type(x)}; e.g. x.astype(np.float32)")
    if not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name} has NaN or Inf in its inputs")
    if jnp.issubdtype(jnp.result_type(y), jnp.integer):
        if len(ys) != 1:
            raise ValueError(f"{name} needs integer labels of shape ({xs[0]},), got {ys}")
        lo, hi = int(np.min(y)), int(np.max(y))
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bound = f"[0, {num_classes - 1}]" if num_classes is not None else "[0, ...)"
            raise ValueError(f"{name} has label {lo if lo < 0 else hi}, outside {bound}")
    elif jnp.issubdtype(jnp.result_type(y), jnp.floating):
        if not bool(np.all(np.isfinite(np.asarray(y)))):
            raise ValueError(f"{name} has NaN or Inf in its targets")
    else:
        raise ValueError(f"{name} needs integer labels or float targets, got {jnp.result_type(y)}")
    return Dataset(x, y)


# ----------------------------------------------------------------------------------------------
# MNIST-1D


def cache_dir() -> Path:
    """``$FNNET_CACHE``, else ``$XDG_CACHE_HOME/fnnet``, else ``~/.cache/fnnet`` (not created here)."""
    if os.environ.get("FNNET_CACHE"):
        return Path(os.environ["FNNET_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fnnet"


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    """Run ``mnist1d.make_dataset`` with Python's and NumPy's global RNG states saved and restored."""
    from mnist1d.data import get_dataset_args, make_dataset

    obj = get_dataset_args()
    for k, v in args.items():
        setattr(obj, k, v)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(obj)  # seeds both global RNGs with args.seed
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}


def mnist1d(
    *,
    num_samples: int = 5000,
    train_split: float = 0.8,
    seed: int = 42,
    cache: str | os.PathLike | None | bool = None,
) -> tuple[Dataset, Dataset]:
    """MNIST-1D (Greydanus 2020): ``(train, test)``, x float32 (N, 40), y int32 labels 0–9.

    The defaults are the package's (and the paper's) arguments: 5000 examples, 4000 train / 1000
    test, seed 42. Generation takes a few seconds, so the arrays are cached in
    ``cache/mnist1d-<hash of the arguments>.npz`` (written atomically; ``cache=None`` means
    :func:`cache_dir`, ``False`` disables caching). No global RNG state is changed.

    References:
      Greydanus 2020, "Scaling down deep learning" (arXiv:2011.14439), table 1.
    """
    _check_count("mnist1d", "num_samples", num_samples, 2)
    if not is_int(seed):
        raise ValueError(f"mnist1d needs an integer seed, got {seed!r}")
    if isinstance(train_split, bool) or not isinstance(train_split, (int, float, np.floating)):
        raise ValueError(f"mnist1d needs train_split to be a fraction in (0, 1), got {train_split!r}")
    if not (0 < train_split < 1 and 1 <= int(num_samples * train_split) <= num_samples - 1):
        raise ValueError(
            f"mnist1d needs train_split in (0, 1) leaving at least one train and one test example, got "
            f"train_split={train_split!r} for num_samples={num_samples}"
        )
    args = {"num_samples": int(num_samples), "train_split": float(train_split), "seed": int(seed)}
    tag = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    path = None if cache is False else Path(cache or cache_dir()) / f"mnist1d-{tag}.npz"
    arrays = None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception:  # a corrupt cache is regenerated, not trusted
            arrays = None
    if arrays is None:
        arrays = _generate_mnist1d(args)
        if path is not None:
            _atomic_savez(path, **arrays)
    train = Dataset(arrays["x"].astype(np.float32), arrays["y"].astype(np.int32))
    test = Dataset(arrays["x_test"].astype(np.float32), arrays["y_test"].astype(np.int32))
    return train, test


# ----------------------------------------------------------------------------------------------
# synthetic sets


def _check_count(name: str, arg: str, value: Any, least: int = 1) -> int:
    if not is_int(value) or value < least:
        raise ValueError(f"{name} needs {arg} to be an integer >= {least}, got {value!r}")
    return int(value)


def xor(key: Array | None = None, n: int | None = None, noise: float = 0.0) -> Dataset:
    """XOR: the four corners of {0,1}² with labels x₁ ⊕ x₂ (int32).

    With a key and ``n``, ``n`` corners drawn uniformly, plus N(0, noise²) jitter on the inputs.
    For a scalar regression target (the classic 2-2-1 net with MSE) use ``y[:, None].astype(float32)``.
    """
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    if key is None:
        return Dataset(jnp.asarray(corners), jnp.array([0, 1, 1, 0], jnp.int32))
    if n is not None:
        _check_count("xor", "n", n)
    k_pick, k_noise = jax.random.split(key)
    idx = jax.random.randint(k_pick, (n or 4,), 0, 4)
    x = jnp.asarray(corners)[idx] + noise * jax.random.normal(k_noise, (n or 4, 2))
    return Dataset(x, jnp.array([0, 1, 1, 0], jnp.int32)[idx])


def linearly_separable(key: Array, n: int, dim: int = 2, margin: float = 0.1) -> tuple[Dataset, Array]:
    """Points separable through the origin with margin γ: ``(Dataset, w)``, w the unit normal.

    x is drawn from U[−1, 1]^dim and pushed γ away from the hyperplane w·x = 0 along w, so every
    |w·x| ≥ γ; y = 1 where w·x > 0, else 0 (int32; ``2y − 1`` gives the ±1 labels of the perceptron).
    The perceptron convergence theorem bounds its mistakes by (R/γ)², R = max‖x‖.

    References:
      Novikoff 1962, "On convergence proofs for perceptrons".
    """
    _check_count("linearly_separable", "n", n)
    _check_count("linearly_separable", "dim", dim)
    if not margin >= 0:
        raise ValueError(f"linearly_separable needs margin >= 0, got {margin}")
    k_w, k_x = jax.random.split(key)
    w = jax.random.normal(k_w, (dim,))
    w = w / jnp.linalg.norm(w)
    x = jax.random.uniform(k_x, (n, dim), minval=-1.0, maxval=1.0)
    s = x @ w
    side = jnp.where(s >= 0, 1.0, -1.0)
    x = x + (side * margin)[:, None] * w[None, :]
    return Dataset(x, (side > 0).astype(jnp.int32)), w


def two_spirals(key: Array, n: int, noise: float = 0.0, turns: float = 1.5) -> Dataset:
    """Two interleaved spirals in the plane, n//2 points each (labels 0 and 1), radius ≤ 1.

    Arm 0: r = t, angle 2π·turns·t for t ~ U(0, 1] (√-warped so points spread evenly along the
    arm); arm 1 is arm 0 rotated by π. N(0, noise²) jitter is added to the inputs.

    References:
      Lang & Witbrock 1988, "Learning to tell two spirals apart".
    """
    _check_count("two_spirals", "n", n, 2)
    k_t, k_noise = jax.random.split(key)
    half = n // 2
    t = jnp.sqrt(jax.random.uniform(k_t, (half,), minval=1e-3, maxval=1.0))
    angle = 2 * jnp.pi * turns * t
    arm = jnp.stack([t * jnp.cos(angle), t * jnp.sin(angle)], axis=1)
    x = jnp.concatenate([arm, -arm]) + noise * jax.random.normal(k_noise, (2 * half, 2))
    y = jnp.concatenate([jnp.zeros(half, jnp.int32), jnp.ones(half, jnp.int32)])
    return Dataset(x, y)


def teacher_student(
    key: Array, n: int, teacher: Layer, in_dim: int, noise: float = 0.0, teacher_params: Params = None
) -> tuple[Dataset, Params]:
    """Regression on a teacher network: x ~ N(0, I_d), y = teacher(x) + N(0, noise²).

    Returns ``(Dataset, teacher_params)``; the teacher's params are drawn from the key unless given.
    y is float32 ``(N, k)`` (k the teacher's output size); use it with ``fn.mse``.

    References:
      Gardner & Derrida 1989; Saad & Solla 1995, "On-line learning in soft committee machines".
    """
    _check_count("teacher_student", "n", n)
    _check_count("teacher_student", "in_dim", in_dim)
    k_init, k_x, k_noise = jax.random.split(key, 3)
    if teacher_params is None:
        _, teacher_params = teacher.init(k_init, (in_dim,))
    x = jax.random.normal(k_x, (n, in_dim))
    y, _ = teacher.forward(teacher_params, x, train=False)
    y = jnp.reshape(y, (n, -1))
    return Dataset(x, y + noise * jax.random.normal(k_noise, y.shape, y.dtype)), teacher_params


TARGETS_1D = {
    "sine": jnp.sin,
    "abs": jnp.abs,
    "step": lambda x: (x >= 0).astype(x.dtype),
}


def target_1d(name: str, n: int = 256, key: Array | None = None, noise: float = 0.0) -> Dataset:
    """A 1-D function on [−π, π] for universal approximation: ``sine``, ``abs`` (|x|) or ``step``.

    x (N, 1): an even grid, or uniform draws with a key; y (N, 1) = f(x) (+ N(0, noise²) with a key).
    The step is 1 for x ≥ 0, else 0.
    """
    if name not in TARGETS_1D:
        raise ValueError(f"unknown 1-D target {name!r}; choose one of {', '.join(TARGETS_1D)}")
    _check_count("target_1d", "n", n)
    if key is None:
        x = jnp.linspace(-jnp.pi, jnp.pi, n)[:, None]
        return Dataset(x, TARGETS_1D[name](x))
    k_x, k_noise = jax.random.split(key)
    x = jax.random.uniform(k_x, (n, 1), minval=-jnp.pi, maxval=jnp.pi)
    return Dataset(x, TARGETS_1D[name](x) + noise * jax.random.normal(k_noise, (n, 1)))


# ----------------------------------------------------------------------------------------------
# helpers


def standardize(x: Any, mean: Any = None, std: Any = None, *, eps: float = 1e-8) -> tuple[Any, Any, Any]:
    """z = (x − μ) / (σ + ε) per feature (over axis 0, kept as a leading 1): ``(z, μ, σ)``.

    Fit on the training set, then reuse its statistics: ``xtr, m, s = standardize(xtr)``;
    ``xte, _, _ = standardize(xte, m, s)``.
    """
    if mean is None:
        mean = x.mean(axis=0, keepdims=True)
    if std is None:
        std = x.std(axis=0, keepdims=True)
    return (x - mean) / (std + eps), mean, std


def one_hot(labels: Any, num_classes: int, dtype: Any = jnp.float32) -> Array:
    """(N,) integer labels -> (N, C) rows with a single 1 at the label."""
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"one_hot needs num_classes to be an integer >= 1, got {num_classes!r}")
    if is_concrete(labels):
        labels = np.asarray(labels)  # values are checked below; traced labels pass unchecked
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(f"one_hot needs integer labels, got {jnp.result_type(labels)}")
    if is_concrete(labels) and np.size(labels):
        lo, hi = int(np.min(labels)), int(np.max(labels))
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"one_hot got label {lo if lo < 0 else hi}, out of range for {num_classes} classes "
                f"(labels must lie in [0, {num_classes - 1}])"
            )
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def batches(ds: Dataset, batch_size: int, key: Array | None = None, drop_remainder: bool = True) -> Iterator[Dataset]:
    """Python iterator over minibatches (shuffled with a key), for hand-written loops.

    :func:`fnnet.train` does not use it: it batches inside its compiled epoch.
    """
    n = int(np.shape(ds.x)[0])
    if not is_int(batch_size) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an integer in [1, {n}] for {n} examples, got {batch_size!r}")
    order = np.arange(n) if key is None else np.asarray(jax.random.permutation(key, n))
    stop = n - n % batch_size if drop_remainder else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield Dataset(ds.x[idx], ds.y[idx])
