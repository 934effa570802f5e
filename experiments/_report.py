"""REPORT.md: the claims counted by kind, one table of every claim, the failures with their reasons, the
inconclusive claims with the setting that answers them, the sanity checks apart, each figure with its
caption, and the works cited.

Also the one reader of an experiment's results files (:func:`read_finished`), which the runner uses
to decide whether an experiment is finished: a results file that does not parse, or does not fit
the others, is damaged, and that experiment is not finished.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from experiments import STUDY_BUDGET_SECONDS, STUDY_OF
from experiments._common import CLAIM_KINDS, atomic_write_text, config_hash
from experiments._sources import cited_in

DONE = "done.json"
_CLAIM_KEYS = ("claim", "source", "expected", "measured", "tolerance", "holds")


class ReportSummary(NamedTuple):
    """What REPORT.md counts. Claims are the source's, fnnet's and the inconclusive ones; sanity checks are apart."""

    n_claims: int  # claims of kind source, fnnet or inconclusive (sanity checks not counted)
    n_hold: int  # source and fnnet claims that hold
    experiments: int
    left_out: tuple[str, ...] = ()  # one line per experiment whose results files are damaged
    n_fail: int = 0  # source and fnnet claims that do not hold
    n_inconclusive: int = 0  # claims that this scale cannot answer
    n_sanity: int = 0  # sanity checks (hold by definition or construction), not counted as claims
    n_sanity_fail: int = 0  # sanity checks that do not hold: a bug, never evidence
    n_unclassified: int = 0  # claims written without a kind (before the claims standard)


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


def tally(claims: list[dict[str, Any]]) -> dict[str, int]:
    kinds = [c.get("kind") if c.get("kind") in CLAIM_KINDS else None for c in claims]
    judged = [bool(c["holds"]) for c, k in zip(claims, kinds) if k in ("source", "fnnet")]
    sanity = [bool(c["holds"]) for c, k in zip(claims, kinds) if k == "sanity"]
    return {
        "hold": sum(judged),
        "fail": len(judged) - sum(judged),
        "inconclusive": kinds.count("inconclusive"),
        "sanity": len(sanity),
        "sanity_fail": len(sanity) - sum(sanity),
        "unclassified": kinds.count(None),
        **{f"kind_{k}": kinds.count(k) for k in CLAIM_KINDS},
        **{f"hold_{k}": sum(bool(c["holds"]) for c, kk in zip(claims, kinds) if kk == k) for k in CLAIM_KINDS},
    }


def _verdict(c: dict[str, Any]) -> str:
    if c.get("kind") == "inconclusive":
        return "inconclusive"
    return "yes" if c["holds"] else "**no**"


def _basis(c: dict[str, Any]) -> str:
    tol, basis = _cell(c["tolerance"]), c.get("tolerance_basis") or "basis not recorded"
    return f"{tol} ({_cell(basis)})"


def _row(name: str, c: dict[str, Any]) -> str:
    cells = [name, c.get("kind") or "not recorded", c["claim"], c["source"], c["expected"], c["measured"]]
    seeds = c.get("seeds") or "not recorded"
    rest = [_basis(c), _cell(seeds), _verdict(c), _cell(c.get("note", ""))]
    return "| " + " | ".join([*(_cell(x) for x in cells), *rest]) + " |"


_TABLE_HEAD = [
    "| experiment | kind | claim | source | expected | measured | tolerance (basis) | seeds | holds | note |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def headline(t: dict[str, int], experiments: int) -> list[str]:
    """The report's header lines for the tally ``t`` (from :func:`tally` over every claim read)."""
    n_claims = t["hold"] + t["fail"] + t["inconclusive"] + t["unclassified"]
    by_kind = ", ".join(
        f"{t[f'kind_{k}']} from {what} ({t[f'hold_{k}']} hold)"
        for k, what in (("source", "the cited works"), ("fnnet", "fnnet's own expectations"))
    )
    lines = [
        f"**{n_claims} claims: {t['hold']} hold, {t['fail']} fail, {t['inconclusive']} inconclusive at this scale** "
        f"across {experiments} experiments; {by_kind}.",
        "",
        f"**{t['sanity']} sanity checks** ({t['sanity'] - t['sanity_fail']} hold) hold by definition or by "
        "construction; they are listed apart and are not counted as claims or as evidence.",
    ]
    if t["unclassified"]:
        lines += ["", f"{t['unclassified']} claims were written without a kind (before the claims standard)."]
    return lines


def write_report(out: Path, order: Sequence[str]) -> ReportSummary:
    """Collect every finished experiment under ``out`` (in ``order``) into ``out/REPORT.md``.

    The header counts the claims by kind (:data:`experiments._common.CLAIM_KINDS`): the source's and
    fnnet's claims that hold and that fail (each failure listed with the reason in its note), the
    inconclusive ones (each with the ``full`` setting that answers it), and, apart and not counted as
    claims, the sanity checks. Every claim line shows its kind, its seeds and its tolerance's basis.

    An experiment whose results files are damaged is left out, with one line on stderr and one in
    the report naming the file; the writer itself never fails on a results file.
    """
    rows, sanity_rows, failed, inconclusive, sections, times, left_out, sources = [], [], [], [], [], [], [], []
    every: list[dict[str, Any]] = []
    per_study: dict[str, list] = {}  # study -> [its presets, seconds]
    n_exp = 0
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
        study = STUDY_OF.get(name, "")
        spent = per_study.setdefault(study, [set(), 0.0])
        spent[0].add(status["preset"])
        spent[1] += status["seconds"]
        for c in claims:
            every.append(c)
            sources += [c["source"], c.get("note", "")]
            (sanity_rows if c.get("kind") == "sanity" else rows).append(_row(name, c))
            reason = _cell(c.get("note") or "") or "(no reason recorded)"
            if c.get("kind") in ("source", "fnnet") and not c["holds"]:
                failed.append(f"- `{name}`: {_cell(c['claim'])} — measured {_cell(c['measured'])}. {reason}")
            elif c.get("kind") == "inconclusive":
                inconclusive.append(f"- `{name}`: {_cell(c['claim'])} — {reason}")
        sec = [f"### {status.get('title', name)} (`{name}`)", ""]
        sec.append(f"Backend {meta.get('backend')}, preset {status['preset']}, {status['seconds']:.1f} s.")
        sec.append("")
        for fig in status.get("figures", []):
            sec += [f"![{fig['file']}]({name}/{fig['file']})", "", f"*{fig['caption']}*", ""]
        sections.append("\n".join(sec))
    t = tally(every)
    damaged = [f"Left out, their results files damaged (rerun to recompute): {'; '.join(left_out)}.", ""]
    damaged = damaged if left_out else []
    head = [
        "# fnnet experiments report",
        "",
        *headline(t, n_exp),
        "",
        "Every number below was measured by `python -m experiments` with fnnet's hand-written rules; "
        "a claim that does not hold is reported with the value measured. A claim's kind says whose "
        "statement it is (`source`: the cited work's; `fnnet`: fnnet's own expectation) or that this scale "
        "cannot answer it (`inconclusive`); its tolerance's basis is the source, the seed-to-seed spread "
        "(with the number of seeds) or floating-point rounding.",
        "",
        *damaged,
        "## Claims",
        "",
        *_TABLE_HEAD,
        *rows,
        "",
        "## Claims that fail, with the reason",
        "",
        *(failed or ["None."]),
        "",
        "## Inconclusive at this scale, with the setting that answers them",
        "",
        *(inconclusive or ["None."]),
        "",
        "## Sanity checks (not counted as claims)",
        "",
        *([*_TABLE_HEAD, *sanity_rows] if sanity_rows else ["None."]),
        "",
        "## Time per experiment",
        "",
        "| experiment | preset | seconds |",
        "|---|---|---|",
        *times,
        "",
        "Per study, against its budget at the quick preset (`experiments.STUDY_BUDGET_SECONDS`, an idle 2-core CPU):",
        "",
        "| study | preset | seconds | quick budget (seconds) |",
        "|---|---|---|---|",
        *[
            f"| {study or 'none'} | {', '.join(sorted(p))} | {secs:.1f} | {STUDY_BUDGET_SECONDS.get(study, '-')} |"
            for study, (p, secs) in per_study.items()
        ],
        "",
        "## Figures",
        "",
        *sections,
        "## References",
        "",
        *[f"- {w.entry.rstrip('.')}." for w in cited_in(sources)],
    ]
    atomic_write_text(out / "REPORT.md", "\n".join(head) + "\n")
    n_claims = t["hold"] + t["fail"] + t["inconclusive"] + t["unclassified"]
    return ReportSummary(
        n_claims,
        t["hold"],
        n_exp,
        tuple(left_out),
        t["fail"],
        t["inconclusive"],
        t["sanity"],
        t["sanity_fail"],
        t["unclassified"],
    )
