"""Generated data: MNIST-1D (Greydanus 2020, made offline by the ``mnist1d`` package and cached) and
synthetic sets drawn from explicit keys (xor, linearly separable, two spirals, teacher-student, 1-D targets).

The cache directory is ``$FNNET_CACHE``, else ``$XDG_CACHE_HOME/fnnet``, else ``~/.cache/fnnet``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._io import atomic_write
from fnnet.core import Array, Layer, Params, is_int
from fnnet.data.dataset import Dataset

__all__ = [
    "TARGETS_1D",
    "cache_dir",
    "linearly_separable",
    "mnist1d",
    "target_1d",
    "teacher_student",
    "two_spirals",
    "xor",
]


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
