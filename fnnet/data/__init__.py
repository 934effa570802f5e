"""Datasets: MNIST-1D (the default), small synthetic sets, MNIST/Fashion-MNIST from local files.

Every loader returns :class:`Dataset` ``(x, y)`` with a batch axis first: ``x`` float32, ``y`` int32
class labels ``(N,)`` or float32 regression targets ``(N, k)``. Nothing is downloaded at run time.

* :func:`mnist1d` — Greydanus 2020, 40-long 1-D signals of 10 digits, generated offline by the
  ``mnist1d`` package with its published arguments (4000 train / 1000 test) and cached as ``.npz``.
* :func:`xor`, :func:`linearly_separable`, :func:`two_spirals`, :func:`teacher_student`,
  :func:`target_1d` (sine, |x|, step on [−π, π]) — synthetic sets drawn from explicit keys.
  (``linearly_separable`` and ``teacher_student`` also return the ground truth.)
* :func:`mnist`, :func:`fashion_mnist` — from IDX files (optionally ``.gz``) or an ``.npz`` that the
  user downloaded; loaded with ``allow_pickle=False``. See :mod:`fnnet.data.files`.
* :func:`standardize`, :func:`one_hot`, :func:`validate`, :func:`batches`, :func:`check_label_range` — helpers.

Modules: :mod:`fnnet.data.dataset` (the type and its checks, the leaf), :mod:`fnnet.data.generated`,
:mod:`fnnet.data.files`.

The cache directory is ``$FNNET_CACHE``, else ``$XDG_CACHE_HOME/fnnet``, else ``~/.cache/fnnet``.
"""

from fnnet.data.dataset import Dataset, batches, check_label_range, one_hot, standardize, validate
from fnnet.data.files import DataFileError, data_dir, fashion_mnist, load_idx, load_npz, mnist
from fnnet.data.generated import (
    TARGETS_1D,
    cache_dir,
    linearly_separable,
    mnist1d,
    target_1d,
    teacher_student,
    two_spirals,
    xor,
)

__all__ = [
    "DataFileError",
    "Dataset",
    "TARGETS_1D",
    "batches",
    "cache_dir",
    "check_label_range",
    "data_dir",
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
