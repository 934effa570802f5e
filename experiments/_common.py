"""What every experiment shares: claims, results, atomic writes, figures, run metadata.

An experiment is a module ``experiments/<name>.py`` with::

    NAME = "worked_example"            # its folder under results/
    TITLE = "A worked 2-layer example"  # its heading in REPORT.md
    @dataclass(frozen=True)
    class Config: ...                  # every knob, with a seed
    PRESETS = {"tiny": Config(...), "quick": Config(...), "full": Config(...)}
    def run(config: Config, out_dir: Path) -> Result

``run`` writes its figures with :func:`save_figure` and returns a :class:`Result`; the runner
(``python -m experiments``) writes ``metrics.json`` (with config, seed, backend and versions),
``claims.json`` and ``timing.json``. Wall-clock numbers go in ``Result.timings`` only, so that
``metrics.json`` is bit-identical between identical runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fnnet._io import atomic_write


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement from the literature, checked: where it comes from, what was expected and measured."""

    claim: str
    source: str  # text or paper, with section / equation / figure
    expected: Any
    measured: Any
    tolerance: Any
    holds: bool
    note: str = ""  # where a small-scale result departs from the source, and why


@dataclasses.dataclass(frozen=True)
class Figure:
    file: str  # PNG file name inside the experiment's folder
    caption: str  # two lines at most: what is plotted, and what to see


@dataclasses.dataclass
class Result:
    metrics: dict[str, Any]
    claims: list[Claim]
    figures: list[Figure] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


def close(
    claim: str,
    source: str,
    expected: float,
    measured: float,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    note: str = "",
) -> Claim:
    """A numeric claim that holds when |measured − expected| ≤ atol + rtol·|expected|."""
    rtol_, atol_ = rtol or 0.0, atol or 0.0
    ok = bool(np.isfinite(measured) and abs(measured - expected) <= atol_ + rtol_ * abs(expected))
    tol = " + ".join(s for s in [f"atol {atol}" if atol else "", f"rtol {rtol}" if rtol else ""] if s) or "exact"
    return Claim(claim, source, _num(expected), _num(measured), tol, ok, note)


def _num(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if hasattr(x, "shape") and getattr(x, "shape", None) == ():
        return float(x)
    return x


def to_jsonable(obj: Any) -> Any:
    """Numbers, arrays, dataclasses and NaN/Inf into plain JSON (NaN/Inf as strings)."""
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
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    return obj


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    atomic_write(path, data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=1, sort_keys=False) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """Load ``path`` if a previous (possibly interrupted) run finished it; else compute and save atomically.

    Experiments with long sweeps use this per sweep point, so a killed run resumes where it stopped.
    """
    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    value = to_jsonable(compute())
    atomic_write_json(path, value)
    return value


def save_figure(fig: Any, out_dir: Path, name: str, caption: str) -> Figure:
    """Save a matplotlib figure as ``out_dir/name.png`` atomically, close it, return its Figure."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    file = f"{name}.png"
    atomic_write_bytes(Path(out_dir) / file, buf.getvalue())
    return Figure(file, caption)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (experiments run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_metadata(config: Any, seed: int | None = None) -> dict[str, Any]:
    """Config, seed, backend and versions: stamped into every metrics.json."""
    import jax
    import optax

    import fnnet

    return {
        "config": to_jsonable(config),
        "seed": seed if seed is not None else getattr(config, "seed", None),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "versions": {
            "fnnet": fnnet.__version__,
            "jax": jax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
