"""REPORT.md: a summary line, one table of every claim, and each figure with its caption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

from experiments._common import atomic_write_text


class ReportSummary(NamedTuple):
    n_claims: int
    n_hold: int
    experiments: int


def _cell(x) -> str:
    if isinstance(x, float):
        text = f"{x:.4g}"
    elif isinstance(x, list) and len(x) > 6:
        text = json.dumps(x[:6])[:-1] + ", …]"
    else:
        text = json.dumps(x) if not isinstance(x, str) else x
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(out: Path, order: Sequence[str]) -> ReportSummary:
    """Collect every finished experiment under ``out`` (in ``order``) into ``out/REPORT.md``."""
    rows, sections, times = [], [], []
    n_hold = n_claims = n_exp = 0
    for name in order:
        done = out / name / "done.json"
        if not done.exists():
            continue
        n_exp += 1
        status = json.loads(done.read_text())
        claims = json.loads((out / name / "claims.json").read_text())
        meta = json.loads((out / name / "metrics.json").read_text())
        times.append(f"| {name} | {status['preset']} | {status['seconds']:.1f} |")
        for c in claims:
            n_claims += 1
            n_hold += bool(c["holds"])
            cells = [name, c["claim"], c["source"], c["expected"], c["measured"], c["tolerance"]]
            holds = "yes" if c["holds"] else "**no**"
            rows.append("| " + " | ".join(_cell(x) for x in cells) + f" | {holds} | {_cell(c.get('note', ''))} |")
        sec = [f"### {status.get('title', name)} (`{name}`)", ""]
        sec.append(f"Backend {meta.get('backend')}, preset {status['preset']}, {status['seconds']:.1f} s.")
        sec.append("")
        for fig in status.get("figures", []):
            sec += [f"![{fig['file']}]({name}/{fig['file']})", "", f"*{fig['caption']}*", ""]
        sections.append("\n".join(sec))
    head = [
        "# fnnet experiments report",
        "",
        f"**{n_claims} claims, {n_hold} hold** across {n_exp} experiments.",
        "",
        "Every number below was measured by `python -m experiments` with fnnet's hand-written rules; "
        "a claim that does not hold is reported with the value measured.",
        "",
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
    ]
    atomic_write_text(out / "REPORT.md", "\n".join(head) + "\n")
    return ReportSummary(n_claims, n_hold, n_exp)
