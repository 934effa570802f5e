"""REPORT.md: a summary line, one table of every claim, each figure with its caption, and the works cited.

Also the one reader of an experiment's results files (:func:`read_finished`), which the runner uses
to decide whether an experiment is finished: a results file that does not parse, or does not fit
the others, is damaged, and that experiment is not finished.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from experiments._common import atomic_write_text, config_hash
from experiments._sources import cited_in

DONE = "done.json"
_CLAIM_KEYS = ("claim", "source", "expected", "measured", "tolerance", "holds")


class ReportSummary(NamedTuple):
    n_claims: int
    n_hold: int
    experiments: int
    left_out: tuple[str, ...] = ()  # one line per experiment whose results files are damaged


class Finished(NamedTuple):
    """The results of one finished experiment, read and checked against each other."""

    status: dict[str, Any]  # done.json
    claims: list[dict[str, Any]]  # claims.json
    metrics: dict[str, Any]  # metrics.json


class DamagedResults(ValueError):
    """A results file that does not parse or does not fit the experiment's other results files."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"damaged results file {path} ({reason})")
        self.path, self.reason = path, reason


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedResults(path, "missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DamagedResults(path, f"not readable JSON: {type(e).__name__}: {e}") from None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_finished(folder: Path) -> Finished | None:
    """The checked results in the experiment folder ``folder``; None if it holds no ``done.json``.

    Raises:
        DamagedResults: ``done.json``, ``claims.json`` or ``metrics.json`` is missing, does not parse,
            has the wrong structure, or disagrees with the others (claim counts, config hash).
    """
    done = Path(folder) / DONE
    if not done.exists():
        return None
    status = _load(done)
    ok = isinstance(status, dict) and isinstance(status.get("config_hash"), str) and _number(status.get("seconds"))
    ok = ok and isinstance(status.get("preset"), str) and isinstance(status.get("title", ""), str)
    ok = ok and all(isinstance(status.get(k), int) for k in ("claims", "holds"))
    figures = status.get("figures") if ok else None
    ok = ok and isinstance(figures, list)
    ok = ok and all(isinstance(f, dict) and isinstance(f.get("file"), str) and "caption" in f for f in figures)
    if not ok:
        raise DamagedResults(done, "not the status record of a finished experiment")
    path = done.parent / "claims.json"
    claims = _load(path)
    if not isinstance(claims, list) or not all(isinstance(c, dict) and set(_CLAIM_KEYS) <= c.keys() for c in claims):
        raise DamagedResults(path, f"not a list of claims with keys {', '.join(_CLAIM_KEYS)}")
    if len(claims) != status["claims"] or sum(bool(c["holds"]) for c in claims) != status["holds"]:
        raise DamagedResults(path, f"{len(claims)} claims, but {DONE} records {status['claims']}")
    path = done.parent / "metrics.json"
    metrics = _load(path)
    if not isinstance(metrics, dict) or not {"config", "metrics"} <= metrics.keys():
        raise DamagedResults(path, "not a metrics record with its config")
    if config_hash(metrics["config"]) != status["config_hash"]:
        raise DamagedResults(path, f"its config is not the one {DONE} records")
    return Finished(status, claims, metrics)


def _cell(x) -> str:
    if isinstance(x, float):
        text = f"{x:.4g}"
    elif isinstance(x, list) and len(x) > 6:
        text = json.dumps(x[:6])[:-1] + ", …]"
    else:
        text = json.dumps(x) if not isinstance(x, str) else x
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(out: Path, order: Sequence[str]) -> ReportSummary:
    """Collect every finished experiment under ``out`` (in ``order``) into ``out/REPORT.md``.

    An experiment whose results files are damaged is left out, with one line on stderr and one in
    the report naming the file; the writer itself never fails on a results file.
    """
    rows, sections, times, left_out, sources = [], [], [], [], []
    n_hold = n_claims = n_exp = 0
    for name in order:
        try:
            finished = read_finished(out / name)
        except DamagedResults as e:
            left_out.append(f"{name}: {e}")
            print(f"experiments: REPORT.md leaves out {name}: {e}", file=sys.stderr, flush=True)
            continue
        if finished is None:
            continue
        status, claims, meta = finished
        n_exp += 1
        times.append(f"| {name} | {status['preset']} | {status['seconds']:.1f} |")
        for c in claims:
            n_claims += 1
            n_hold += bool(c["holds"])
            sources += [c["source"], c.get("note", "")]
            cells = [name, c["claim"], c["source"], c["expected"], c["measured"], c["tolerance"]]
            holds = "yes" if c["holds"] else "**no**"
            rows.append("| " + " | ".join(_cell(x) for x in cells) + f" | {holds} | {_cell(c.get('note', ''))} |")
        sec = [f"### {status.get('title', name)} (`{name}`)", ""]
        sec.append(f"Backend {meta.get('backend')}, preset {status['preset']}, {status['seconds']:.1f} s.")
        sec.append("")
        for fig in status.get("figures", []):
            sec += [f"![{fig['file']}]({name}/{fig['file']})", "", f"*{fig['caption']}*", ""]
        sections.append("\n".join(sec))
    damaged = [f"Left out, their results files damaged (rerun to recompute): {'; '.join(left_out)}.", ""]
    damaged = damaged if left_out else []
    head = [
        "# fnnet experiments report",
        "",
        f"**{n_claims} claims, {n_hold} hold** across {n_exp} experiments.",
        "",
        "Every number below was measured by `python -m experiments` with fnnet's hand-written rules; "
        "a claim that does not hold is reported with the value measured.",
        "",
        *damaged,
        "## Claims",
        "",
        "| experiment | claim | source | expected | measured | tolerance | holds | note |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Time per experiment",
        "",
        "| experiment | preset | seconds |",
        "|---|---|---|",
        *times,
        "",
        "## Figures",
        "",
        *sections,
        "## References",
        "",
        *[f"- {w.entry.rstrip('.')}." for w in cited_in(sources)],
    ]
    atomic_write_text(out / "REPORT.md", "\n".join(head) + "\n")
    return ReportSummary(n_claims, n_hold, n_exp, tuple(left_out))
