"""fnnet's file I/O: atomic writes, and the one JSON encoding of numbers, arrays and NaN.

Atomic writes: a hidden temporary file in the same folder, fsync, then ``os.replace``.

A reader (or a resumed run) sees the old file or the new one, never a torn one. A process killed
mid-write leaves only a ``.<name>.<random>.tmp`` file, which :func:`remove_stale_temporaries` clears.
Files are created as ``open`` creates them, mode ``0o666`` less the process umask (``0o644`` under
the usual umask 022), so a shared results folder stays readable by the group; the umask itself is
never changed.

JSON: every file and every ``--json`` output fnnet and its experiments write goes through
:func:`to_jsonable` (or :func:`dumps`), so NaN and ±Inf are written one way, as the strings
``"nan"``, ``"inf"`` and ``"-inf"``, and every file is standard JSON (``json.dumps`` alone would
write the non-standard ``NaN``); :func:`from_jsonable` reads them back as floats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

__all__ = ["atomic_write", "dumps", "from_jsonable", "probe_writable", "remove_stale_temporaries", "to_jsonable"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def _create_temporary(folder: Path, name: str) -> tuple[Path, int]:
    """A new, empty ``folder/.<name>.<random>.tmp`` opened for writing, mode 0o666 less the umask."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            return tmp, os.open(tmp, _CREATE, 0o666)
        except FileExistsError:  # O_EXCL: never reuse (or follow a link at) an existing name
            continue
    raise FileExistsError(f"could not create a temporary file for {name!r} in {folder}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable where the platform allows it (POSIX; not Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object] | bytes) -> None:
    """Write ``path`` atomically; ``write`` is the bytes, or a function that writes to a binary file.

    The parent folder is created if needed. On any error (or a KeyboardInterrupt) the temporary is
    removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_temporary(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, bytes):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def probe_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` (and its parents) if needed, then write and remove a probe file in it.

    Raises:
      OSError: the folder cannot be created or written (a path under a regular file, a read-only
        file system, no permission); ``NotADirectoryError`` when ``folder`` is itself a file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(20, "it is a file, not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_temporary(folder, "write-probe")
    try:
        os.write(fd, b"probe")
    finally:
        os.close(fd)
        os.unlink(tmp)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.*.tmp`` files a killed writer left in ``folder``; returns what was removed."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def to_jsonable(obj: Any) -> Any:
    """Numbers, arrays, dataclasses and NaN/Inf into plain JSON (NaN/Inf as ``"nan"``, ``"inf"``, ``"-inf"``).

    NamedTuples become lists, like tuples; use ``._asdict()`` first to keep their field names.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):
        return to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    return obj


_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def from_jsonable(obj: Any) -> Any:
    """The inverse of :func:`to_jsonable` on loaded JSON: ``"nan"``, ``"inf"``, ``"-inf"`` back to floats.

    Any string equal to one of those three reads back as the float (JSON written by :func:`to_jsonable`
    cannot tell them apart).
    """
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if isinstance(obj, str):
        return _NONFINITE.get(obj, obj)
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)``: standard JSON, NaN as ``"nan"``."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)
