"""What every experiment shares: the contract, claims, results, atomic writes, figures, point caches.

An experiment is a module ``experiments/<study>/<name>.py`` that satisfies :class:`Experiment`::

    NAME = "worked_example"            # its folder under results/
    TITLE = "A worked 2-layer example"  # its heading in REPORT.md
    @dataclass(frozen=True)
    class Config: ...                  # every knob, with a seed
    PRESETS = {"tiny": Config(...), "quick": Config(...), "full": Config(...)}
    def run(config: Config, out_dir: Path) -> Result

The runner checks each module against the contract (:func:`check_experiment`) before it runs it.
``run`` writes its figures with :func:`save_figure` and returns a :class:`Result`; the runner
(``python -m experiments``) writes ``metrics.json`` (with config, seed, backend and versions),
``claims.json`` and ``timing.json``, then ``done.json`` last. Wall-clock numbers go in
``Result.timings`` only, so that ``metrics.json`` is bit-identical between identical runs.

An experiment with a long sweep caches each finished sweep point, so that a killed run resumes:
``cache = point_cache(out_dir, config)`` once in ``run``, with the very ``config`` that ``run`` was
given, then ``cache.point(name, compute)`` per point (helpers get the :class:`PointCache`, not the
folder). Points live in ``out_dir/cache/<config hash>/<name>.json`` and each file records the hash
it was made under, so a point made under one config is never read under another, whether ``run`` is
called by the runner or directly (``module.run(config, out_dir)``). A damaged point file is reported
in one line and recomputed. The runner removes the caches of other configs, and all of them under
``--force``. ``out_dir`` is the experiment's own folder: two experiments never share one.

NaN and ±Inf are written to JSON one way, fnnet's, as the strings ``"nan"``, ``"inf"`` and
``"-inf"`` (:func:`fnnet._io.to_jsonable`, re-exported here), so every file is standard JSON;
:func:`from_jsonable` reads them back as floats, and a cached point reads back equal to the value
computed. Rank correlations are computed
one way too (:func:`spearman`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from fnnet._io import atomic_write, dumps, from_jsonable, to_jsonable

PRESET_NAMES = ("tiny", "quick", "full")


class Experiment(Protocol):
    """The contract of an experiment module (see the module docstring); modules satisfy it structurally."""

    NAME: str  # the experiment's name: its folder under results/ and its key in the registry
    TITLE: str  # its heading in REPORT.md
    PRESETS: Mapping[str, Any]  # "tiny", "quick" and "full": frozen dataclass configs

    def run(self, config: Any, out_dir: Path) -> Result: ...


def check_experiment(module: Any, name: str) -> Experiment:
    """``module`` itself if it satisfies :class:`Experiment` under the registry name ``name``.

    Raises:
        TypeError: naming the module and every part of the contract it breaks.
    """
    where = getattr(module, "__name__", repr(module))
    broken = []
    if getattr(module, "NAME", None) != name:
        broken.append(f"NAME must be {name!r}, got {getattr(module, 'NAME', None)!r}")
    if not isinstance(getattr(module, "TITLE", None), str) or not module.TITLE:
        broken.append("TITLE must be a non-empty string")
    presets = getattr(module, "PRESETS", None)
    if not isinstance(presets, Mapping):
        broken.append(f"PRESETS must map {', '.join(PRESET_NAMES)} to configs")
    else:
        for p in PRESET_NAMES:
            c = presets.get(p)
            if not (dataclasses.is_dataclass(c) and not isinstance(c, type) and c.__dataclass_params__.frozen):
                broken.append(f"PRESETS[{p!r}] must be a frozen dataclass config, got {type(c).__name__}")
    if not callable(getattr(module, "run", None)):
        broken.append("run(config, out_dir) -> Result is missing")
    if broken:
        raise TypeError(f"experiment module {where} breaks the experiment contract: " + "; ".join(broken))
    return module


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement checked against a run: where it comes from, what was expected and measured, and on what basis.

    The claims standard (every claim meets it; :func:`check_claim` checks the fields, and the runner refuses
    an experiment whose claims break it):

    * ``kind`` is one of :data:`CLAIM_KINDS`: ``"source"`` (the cited work states it), ``"fnnet"`` (an
      expectation fnnet adds on its own, labelled as such), ``"sanity"`` (holds by definition or by
      construction: reported in its own section, never counted as evidence) or ``"inconclusive"`` (the
      question cannot be answered at this scale; ``note`` names the ``full`` setting that answers it).
    * ``seeds`` is the number of independent seeds behind ``measured`` (1 for a deterministic computation).
    * ``tolerance_basis`` says where the bar comes from: the source (``"source: ..."``), the measured
      seed-to-seed spread (``"seed spread: ..."``, with the number of seeds), or floating-point rounding
      for exact mathematics (``"rounding: ..."``); never the value measured.
    """

    claim: str
    source: str  # text or paper, with section / equation / figure
    expected: Any
    measured: Any
    tolerance: Any
    holds: bool
    note: str = ""  # where a small-scale result departs from the source, and why
    kind: str = ""  # one of CLAIM_KINDS
    seeds: int = 0  # independent seeds behind `measured`
    tolerance_basis: str = ""  # "source: ...", "seed spread: ...", "rounding: ..."


CLAIM_KINDS = ("source", "fnnet", "sanity", "inconclusive")

#: The three bases a tolerance may have (the start of ``Claim.tolerance_basis``, followed by the details).
TOLERANCE_BASES = ("source:", "seed spread:", "rounding:")

#: The fewest seeds a tolerance taken from the seed-to-seed spread may rest on.
MIN_SPREAD_SEEDS = 5

_CLAIM_FIELDS = tuple(f.name for f in dataclasses.fields(Claim))
_NAMES_FULL = re.compile(r"\bfull\b")


def check_claim(claim: Claim | Mapping[str, Any]) -> list[str]:
    """The ways ``claim`` breaks the claims standard (see :class:`Claim`), one phrase each; ``[]`` if it meets it.

    ``claim`` is a :class:`Claim` or its row in ``claims.json``. The standard, as far as fields can show it:

    * ``claim`` and ``source`` are non-empty text, ``holds`` is a bool;
    * ``kind`` is one of :data:`CLAIM_KINDS`;
    * ``seeds`` is an integer ≥ 1, and ≥ :data:`MIN_SPREAD_SEEDS` when the tolerance comes from the seed spread;
    * ``tolerance_basis`` starts with one of :data:`TOLERANCE_BASES` and says more after it;
    * an ``"inconclusive"`` claim's ``note`` names the ``full`` setting that answers it (the word "full").

    Whether a claim quotes its source faithfully, or can fail, no field shows: that is for a reader.
    """
    row = dataclasses.asdict(claim) if isinstance(claim, Claim) else dict(claim)
    missing = [k for k in _CLAIM_FIELDS if k not in row]
    if missing:
        return [f"lacks the field(s) {', '.join(missing)}"]
    bad = []
    for key in ("claim", "source"):
        if not isinstance(row[key], str) or not row[key].strip():
            bad.append(f"{key} must be non-empty text, got {row[key]!r}")
    if not isinstance(row["holds"], bool):
        bad.append(f"holds must be True or False, got {row['holds']!r}")
    kind = row["kind"]
    if kind not in CLAIM_KINDS:
        bad.append(f"kind must be one of {', '.join(CLAIM_KINDS)}, got {kind!r}")
    seeds, basis = row["seeds"], row["tolerance_basis"]
    seeds_ok = isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1
    if not seeds_ok:
        bad.append(f"seeds must be an integer >= 1 (1 for a deterministic computation), got {seeds!r}")
    prefix = next((p for p in TOLERANCE_BASES if isinstance(basis, str) and basis.startswith(p)), None)
    if prefix is None:
        bad.append(f"tolerance_basis must start with {', '.join(map(repr, TOLERANCE_BASES))}, got {basis!r}")
    elif not basis[len(prefix) :].strip():
        bad.append(f"tolerance_basis {basis!r} must say more after {prefix!r} (where, which seeds, or why)")
    elif prefix == "seed spread:" and seeds_ok and seeds < MIN_SPREAD_SEEDS:
        bad.append(f"a tolerance from the seed spread needs >= {MIN_SPREAD_SEEDS} seeds, got seeds={seeds}")
    note = row.get("note")
    if kind == "inconclusive" and not (isinstance(note, str) and _NAMES_FULL.search(note)):
        bad.append(f"an inconclusive claim's note must name the full setting that answers it, got note {note!r}")
    return bad


class ClaimStandardError(ValueError):
    """Claims of one experiment that break the claims standard: the message names the experiment and each claim."""


def check_claims(experiment: str, claims: Sequence[Claim | Mapping[str, Any]]) -> None:
    """Raise :class:`ClaimStandardError` if any of ``experiment``'s claims breaks the standard (:func:`check_claim`).

    The runner calls it on every :class:`Result` before it writes ``claims.json``, so no results folder
    holds a claim that breaks the standard.
    """
    lines = []
    for i, c in enumerate(claims, 1):
        bad = check_claim(c)
        if bad:
            text = c.claim if isinstance(c, Claim) else c.get("claim", "?") if isinstance(c, Mapping) else repr(c)
            lines.append(f"claim {i} {str(text)[:80]!r}: " + "; ".join(bad))
    if lines:
        raise ClaimStandardError(
            f"experiment {experiment} has {len(lines)} of {len(claims)} claims that break the claims standard "
            "(experiments._common.Claim): " + " | ".join(lines)
        )


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
    kind: str = "",
    seeds: int = 0,
    tolerance_basis: str = "",
) -> Claim:
    """A numeric claim that holds when |measured − expected| ≤ atol + rtol·|expected|."""
    rtol_, atol_ = rtol or 0.0, atol or 0.0
    ok = bool(np.isfinite(measured) and abs(measured - expected) <= atol_ + rtol_ * abs(expected))
    tol = " + ".join(s for s in [f"atol {atol}" if atol else "", f"rtol {rtol}" if rtol else ""] if s) or "exact"
    return Claim(claim, source, _num(expected), _num(measured), tol, ok, note, kind, seeds, tolerance_basis)


def _num(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if hasattr(x, "shape") and getattr(x, "shape", None) == ():
        return float(x)
    return x


def spearman(a: Any, b: Any) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks, ties given their average rank.

    NaN when there are fewer than 3 pairs or either side is constant (no ranking to correlate).
    """
    from scipy.stats import rankdata

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two 1-D sequences of one length, got shapes {a.shape} and {b.shape}")
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(a) - 1.0, rankdata(b) - 1.0)[0, 1])


def config_hash(config: Any) -> str:
    """16 hex digits of SHA-256 over the config as sorted JSON: the key of done.json and of the point caches."""
    blob = dumps(config, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    atomic_write(path, data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


CACHE = "cache"  # out_dir/cache/<config hash>/<point>.json
POINT_FORMAT = "fnnet.experiments.point/1"
_POINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*")


@dataclasses.dataclass(frozen=True)
class PointCache:
    """The finished sweep points of one experiment under one config: ``<out_dir>/cache/<config_hash>/``.

    Make it with :func:`point_cache`. Each point is a file ``<name>.json`` holding
    ``{"format", "config_hash", "point", "value"}``; a file that does not parse, or whose format, hash
    or name is not this cache's, is damaged: reported on stderr in one line and recomputed.
    """

    folder: Path
    config_hash: str

    def point(self, name: str, compute: Callable[[], Any]) -> Any:
        """The point ``name``: loaded if a previous (possibly interrupted) run finished it, else computed and saved.

        Args:
            name: a file stem unique within the experiment, e.g. ``"sweep_B256"``.
            compute: makes the point when it is not cached: numbers, arrays, lists, dicts.

        Returns:
            ``from_jsonable(to_jsonable(compute()))``: the same value whether computed now or loaded
            (tuples as lists, keys as strings, arrays as lists, NaN/Inf as floats).
        """
        if not isinstance(name, str) or not _POINT_NAME.fullmatch(name):
            raise ValueError(f"cache point name must be a plain file stem like 'sweep_B256', got {name!r}")
        path = self.folder / f"{name}.json"
        if path.exists():
            value, damage = self._load(path, name)
            if damage is None:
                return value
            print(f"experiments: damaged cache point {path} ({damage}); recomputing it", file=sys.stderr, flush=True)
        value = to_jsonable(compute())
        record = {"format": POINT_FORMAT, "config_hash": self.config_hash, "point": name, "value": value}
        atomic_write_json(path, record)
        return from_jsonable(value)

    def _load(self, path: Path, name: str) -> tuple[Any, str | None]:
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            return None, f"not readable JSON: {type(e).__name__}: {e}"
        if not isinstance(record, dict) or record.get("format") != POINT_FORMAT or "value" not in record:
            return None, f"not a cached point in the {POINT_FORMAT} format"
        if record.get("config_hash") != self.config_hash or record.get("point") != name:
            got = record.get("config_hash"), record.get("point")
            return None, f"made as point {got[1]!r} of config {got[0]!r}, not {name!r} of {self.config_hash!r}"
        return from_jsonable(record["value"]), None


def point_cache(out_dir: Path | str, config: Any) -> PointCache:
    """The :class:`PointCache` of ``config`` (the config ``run`` was given) in the experiment folder ``out_dir``."""
    digest = config_hash(config)
    return PointCache(Path(out_dir) / CACHE / digest, digest)


def prune_point_caches(out_dir: Path | str, keep: str | None) -> list[Path]:
    """Delete ``out_dir/cache/*`` except the folder of config hash ``keep`` (everything when None); return them."""
    root = Path(out_dir) / CACHE
    gone = sorted(p for p in root.iterdir() if p.name != keep) if root.is_dir() else []
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return gone


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
