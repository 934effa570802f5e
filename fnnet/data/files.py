"""MNIST and Fashion-MNIST from files the user downloaded: IDX (optionally gzipped) or ``.npz``.

Nothing is fetched at run time. Where the files are missing, the error names the files, where to
get them and where to put them. ``.npz`` files are read with ``allow_pickle=False``; a truncated or
corrupt file raises :class:`DataFileError` with the path, never a bare ``struct``/``zlib`` error.

Where fnnet looks: the ``root`` argument, else ``$FNNET_DATA/<name>``, else
``~/.cache/fnnet/<name>`` (``<name>`` is ``mnist`` or ``fashion_mnist``); see :func:`data_dir`.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from fnnet.data.dataset import Dataset

__all__ = ["DataFileError", "data_dir", "fashion_mnist", "load_idx", "load_npz", "mnist"]


class DataFileError(ValueError):
    """A data file is missing, truncated or not in the expected format."""


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_SOURCES = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (the files of yann.lecun.com/exdb/mnist)",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    ),
    "fashion_mnist": (
        "https://github.com/zalandoresearch/fashion-mnist (data/fashion)",
        None,
    ),
}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(f"data file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataFileError(f"{path} is not a readable (gzip) file: {e}; download it again") from None


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped if its name ends in ``.gz``.

    Layout: two zero bytes, a type code (0x08 uint8, ..., 0x0E float64), the number of axes, one
    big-endian uint32 per axis, then the data, row-major and big-endian.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path} is not an IDX file (bad magic number); download it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path} is truncated (header cut short); download it again")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != want:
        raise DataFileError(
            f"{path} is truncated or corrupt: header says {shape} ({want} bytes of data), "
            f"found {len(raw) - header}; download it again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


_NO_PICKLE = "fnnet reads data files with allow_pickle=False and never unpickles them"


def load_npz(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read the named arrays from an ``.npz`` with ``allow_pickle=False``.

    Raises :class:`DataFileError` (naming the path) for a missing, truncated or corrupt file, a file
    that is a pickle rather than an ``.npz``, an array stored as Python objects (which only pickle
    could read), or missing arrays.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"data file not found: {path}")
    if not path.is_file():
        raise DataFileError(f"{path} is not a file; give the .npz file or the folder that holds it")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataFileError(f"{path} holds a single array (.npy), not an .npz archive of named arrays")
        with f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DataFileError(f"{path} lacks the arrays {missing}; it holds {sorted(f.files)}")
            out = {}
            for k in keys:
                try:
                    out[k] = f[k]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise DataFileError(
                        f"{path} stores array {k!r} as Python objects (pickled), not numbers; {_NO_PICKLE}. "
                        f"Save plain numeric arrays, e.g. np.savez(path, {k}=np.asarray(a, np.uint8))"
                    ) from None
                if not isinstance(out[k], np.ndarray):  # NpzFile hands back raw bytes for a non-.npy member
                    raise DataFileError(f"{path} holds {k!r}, but not as a NumPy array (.npy) inside the .npz")
            return out
    except DataFileError:
        raise
    except ValueError as e:
        if "pickled" in str(e) or "allow_pickle" in str(e):
            raise DataFileError(f"{path} is a pickle, not an .npz file; {_NO_PICKLE}") from None
        raise DataFileError(f"{path} is not a readable .npz file ({e}); download it again") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:
        # NotImplementedError/RuntimeError: zipfile reading a damaged header (unknown compression or
        # version, a spurious encryption flag)
        raise DataFileError(
            f"{path} is truncated or corrupt, not a readable .npz file ({e}); download it again"
        ) from None


def data_dir(name: str) -> Path:
    """``$FNNET_DATA/<name>``, else ``~/.cache/fnnet/<name>``: where the loaders look by default."""
    base = os.environ.get("FNNET_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "fnnet")
    return Path(base).expanduser() / name


def _find(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _missing_message(name: str, root: Path) -> str:
    idx_src, npz_src = _SOURCES[name]
    files = ", ".join(f"{s}.gz" for pair in _IDX_FILES.values() for s in pair)
    msg = f"{name} not found in {root}: download {files} from {idx_src} into {root}"
    if npz_src:
        msg += f", or put {name}.npz (from {npz_src}) there"
    return msg + " (or give its folder: --data-dir in fnnet train, root= in Python; or set $FNNET_DATA)"


def _load(name: str, root: Any, split: str, flatten: bool) -> tuple[np.ndarray, np.ndarray]:
    if split not in _IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser() if root is not None else data_dir(name)
    if root.suffix == ".npz" or (root / f"{name}.npz").exists():
        path = root if root.suffix == ".npz" else root / f"{name}.npz"
        xk, yk = ("x_train", "y_train") if split == "train" else ("x_test", "y_test")
        arrays = load_npz(path, (xk, yk))
        images, labels = arrays[xk], arrays[yk]
    else:
        img_path, lbl_path = (_find(root, stem) for stem in _IDX_FILES[split])
        if img_path is None or lbl_path is None:
            raise DataFileError(_missing_message(name, root))
        images, labels = load_idx(img_path), load_idx(lbl_path)
    if images.shape[1:] != (28, 28) or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataFileError(
            f"{name} {split} files hold images {images.shape} and labels {labels.shape}; expected (N, 28, 28) and (N,)"
        )
    if images.dtype != np.uint8:
        raise DataFileError(
            f"{name} {split} images are {images.dtype}; expected uint8 pixels in [0, 255] (as both sources ship "
            f"them), since fnnet scales them by 1/255"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFileError(f"{name} {split} labels are {labels.dtype}; expected integer class labels 0-9")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataFileError(f"{name} {split} labels hold {int(bad)}; expected class labels 0-9")
    x = images.astype(np.float32) / 255.0
    x = x.reshape(x.shape[0], -1) if flatten else x[..., None]
    return x, labels.astype(np.int32)


def mnist(root: Any = None, split: str = "train", *, flatten: bool = False):
    """MNIST ``Dataset``: x float32 in [0, 1], (N, 28, 28, 1) NHWC or (N, 784) with ``flatten``; y int32.

    From IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` or ``mnist.npz`` (keras
    layout: x_train, y_train, x_test, y_test) in ``root`` (default :func:`data_dir`).

    References:
      LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document recognition".
    """
    return Dataset(*_load("mnist", root, split, flatten))


def fashion_mnist(root: Any = None, split: str = "train", *, flatten: bool = False):
    """Fashion-MNIST, same files, layout and conventions as :func:`mnist` (``fashion_mnist.npz``).

    References:
      Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST" (arXiv:1708.07747).
    """
    return Dataset(*_load("fashion_mnist", root, split, flatten))
