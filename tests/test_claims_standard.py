"""The claims standard, machine-checked: check_claim finds each way a claim breaks it, the runner refuses such
claims naming the experiment and the claim, the checks study meets it, and every study has a quick budget."""

import dataclasses
import json
import types

import pytest

import experiments
import experiments.__main__ as runner
from experiments._common import (
    CLAIM_KINDS,
    Claim,
    ClaimStandardError,
    Result,
    check_claim,
    check_claims,
    check_experiment,
    close,
)

GOOD = Claim(
    "a claim",
    'Someone 2020, "A title", Sec. 1',
    1.0,
    1.0,
    "atol 0.1",
    True,
    "",
    "source",
    5,
    "seed spread: 5 seeds, twice the sample std",
)


def test_a_claim_that_fills_the_standard_passes_as_a_claim_and_as_its_json_row():
    assert check_claim(GOOD) == []
    assert check_claim(json.loads(json.dumps(dataclasses.asdict(GOOD)))) == []
    for kind in CLAIM_KINDS:
        note = "the full preset answers it" if kind == "inconclusive" else ""
        assert check_claim(dataclasses.replace(GOOD, kind=kind, note=note)) == [], kind
    exact = close(
        "x", "fnnet's own contract", 1.0, 1.0, atol=1e-12, kind="fnnet", seeds=1, tolerance_basis="rounding: exact"
    )
    assert check_claim(exact) == [] and exact.holds


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"kind": ""}, "kind must be one of source, fnnet, sanity, inconclusive, got ''"),
        ({"kind": "paper"}, "kind must be one of"),
        ({"seeds": 0}, "seeds must be an integer >= 1"),
        ({"seeds": 2.0}, "seeds must be an integer >= 1"),
        ({"seeds": True}, "seeds must be an integer >= 1"),
        ({"seeds": 2}, "a tolerance from the seed spread needs >= 5 seeds, got seeds=2"),
        ({"tolerance_basis": ""}, "tolerance_basis must start with 'source:', 'seed spread:', 'rounding:'"),
        ({"tolerance_basis": "the value measured"}, "tolerance_basis must start with"),
        ({"tolerance_basis": "source:  "}, "must say more after 'source:'"),
        ({"source": ""}, "source must be non-empty text"),
        ({"claim": " "}, "claim must be non-empty text"),
        ({"holds": 1}, "holds must be True or False"),
        ({"kind": "inconclusive", "note": "too small here"}, "an inconclusive claim's note must name the full setting"),
        ({"kind": "inconclusive", "note": "fully answered elsewhere"}, "must name the full setting"),
    ],
)
def test_each_way_of_breaking_the_standard_is_named(change, phrase):
    bad = check_claim(dataclasses.replace(GOOD, **change))
    assert len(bad) == 1 and phrase in bad[0], bad


def test_a_row_without_the_new_fields_is_named_by_what_it_lacks():
    row = {k: v for k, v in dataclasses.asdict(GOOD).items() if k not in ("kind", "seeds")}
    assert check_claim(row) == ["lacks the field(s) kind, seeds"]


def test_check_claims_names_the_experiment_and_each_bad_claim():
    claims = [GOOD, dataclasses.replace(GOOD, claim="the second", kind=""), dataclasses.replace(GOOD, seeds=0)]
    with pytest.raises(ClaimStandardError) as e:
        check_claims("my_experiment", claims)
    text = str(e.value)
    assert text.startswith("experiment my_experiment has 2 of 3 claims that break the claims standard")
    assert "claim 2 'the second': kind must be one of" in text and "claim 3 'a claim': seeds must be" in text
    assert "claim 1" not in text
    check_claims("my_experiment", [GOOD])  # no error


@dataclasses.dataclass(frozen=True)
class _Cfg:
    seed: int = 0


def _module(name, claims):
    mod = types.ModuleType(f"experiments.{name}")
    mod.NAME, mod.TITLE = name, f"fake {name}"
    mod.PRESETS = dict.fromkeys(("tiny", "quick", "full"), _Cfg())
    mod.run = lambda config, out_dir: Result({"x": 1}, list(claims))
    return mod


def test_the_runner_refuses_a_claim_that_breaks_the_standard_and_writes_nothing(tmp_path, monkeypatch, capsys):
    mods = {"fine": _module("fine", [GOOD]), "sloppy": _module("sloppy", [dataclasses.replace(GOOD, kind="")])}
    monkeypatch.setattr(runner, "EXPERIMENTS", tuple(mods))
    monkeypatch.setattr(runner, "load", lambda name: check_experiment(mods[name], name))
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "sloppy ... FAILED: ClaimStandardError: experiment sloppy has 1 of 1 claims" in out
    assert "'a claim': kind must be one of" in out
    assert not (tmp_path / "sloppy" / "claims.json").exists() and not (tmp_path / "sloppy" / "done.json").exists()
    assert (tmp_path / "fine" / "done.json").exists()


def test_the_report_counts_claims_by_kind_and_keeps_sanity_checks_apart(tmp_path, monkeypatch):
    claims = [
        GOOD,
        dataclasses.replace(GOOD, claim="fnnet's, failing", kind="fnnet", holds=False, note="off by 3 %"),
        dataclasses.replace(GOOD, claim="too small", kind="inconclusive", holds=False, note="the full preset"),
        dataclasses.replace(
            GOOD, claim="a definitional check", kind="sanity", seeds=1, tolerance_basis="rounding: exact"
        ),
    ]
    mods = {"mixed": _module("mixed", claims)}
    monkeypatch.setattr(runner, "EXPERIMENTS", tuple(mods))
    monkeypatch.setattr(runner, "load", lambda name: check_experiment(mods[name], name))
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "**3 claims: 1 hold, 1 fail, 1 inconclusive at this scale** across 1 experiments" in report
    assert "1 from the cited works (1 hold), 1 from fnnet's own expectations (0 hold)" in report
    assert "**1 sanity checks** (1 hold)" in report
    claims_part, rest = report.split("## Claims that fail, with the reason")
    failing, rest = rest.split("## Inconclusive at this scale")
    inconclusive, sanity = rest.split("## Sanity checks (not counted as claims)")
    assert "definitional" not in claims_part and "| mixed | sanity | a definitional check |" in sanity
    assert "- `mixed`: fnnet's, failing — measured 1. off by 3 %" in failing
    assert "- `mixed`: too small — the full preset" in inconclusive
    line = next(x for x in claims_part.splitlines() if "| a claim |" in x)
    assert "| mixed | source | a claim |" in line and "(seed spread: 5 seeds, twice the sample std) | 5 | yes |" in line
    assert runner.main(["--preset", "tiny", "--out", str(tmp_path), "--strict"]) == 1  # a failing claim


def test_every_study_has_a_quick_budget_and_they_fit_the_quick_run():
    budgets = experiments.STUDY_BUDGET_SECONDS
    assert set(budgets) == set(experiments.STUDIES), "every study states its quick budget, and only studies do"
    assert all(isinstance(s, int) and s > 0 for s in budgets.values())
    assert sum(budgets.values()) <= 20 * 60  # the whole quick run: 20 minutes on an idle 2-core CPU


def test_the_results_page_is_what_the_generator_makes_from_the_committed_snapshot():
    from experiments import docs_tables

    entries, claims = docs_tables.read_snapshot(docs_tables.SNAPSHOT)
    assert entries, "the docs carry a snapshot"
    for name, rows in claims.items():
        check_claims(name, rows)  # the snapshot's claims meet the standard too
    page = docs_tables.PAGE.read_text(encoding="utf-8")
    assert page == docs_tables.page_from(docs_tables.SNAPSHOT), "docs/results.md: run python -m experiments.docs_tables"


def test_the_snapshot_copies_claims_verbatim_keeps_other_runs_and_a_hand_edit_fails_the_check(tmp_path, monkeypatch):
    from experiments import docs_tables

    mods = {"one": _module("one", [GOOD]), "two": _module("two", [dataclasses.replace(GOOD, holds=False, note="why")])}
    monkeypatch.setattr(runner, "EXPERIMENTS", tuple(mods))
    monkeypatch.setattr(runner, "load", lambda name: check_experiment(mods[name], name))
    monkeypatch.setattr(docs_tables, "EXPERIMENTS", tuple(mods))
    monkeypatch.setattr(docs_tables, "STUDY_OF", dict.fromkeys(mods, "fakes"))
    first, second, snap, page = tmp_path / "r1", tmp_path / "r2", tmp_path / "snap", tmp_path / "results.md"
    assert runner.main(["--preset", "tiny", "--out", str(first)]) == 0
    assert runner.main(["--preset", "quick", "--out", str(second), "--only", "two"]) == 0
    args = ["--snapshot", str(snap), "--page", str(page)]
    assert docs_tables.main(["--results", str(first), "--machine", "a test box", *args]) == 0
    assert docs_tables.main(["--results", str(second), "--machine", "another box", *args]) == 0
    entries, claims = docs_tables.read_snapshot(snap)
    assert (entries["one"]["preset"], entries["one"]["machine"]) == ("tiny", "a test box")  # kept
    assert (entries["two"]["preset"], entries["two"]["machine"]) == ("quick", "another box")  # replaced
    assert (snap / "claims" / "two.json").read_bytes() == (second / "two" / "claims.json").read_bytes()
    text = page.read_text()
    assert "| fakes | `one` | tiny |" in text and "| fakes | `two` | quick |" in text
    assert "**2 claims: 1 hold, 1 fail, 0 inconclusive at this scale**" in text
    assert "- `two`: a claim; measured 1. why" in text and "## The `fakes` study" in text
    assert docs_tables.main(["--check", *args]) == 0
    page.write_text(text.replace("| yes |", "| **no** |"))  # a hand edit
    assert docs_tables.main(["--check", *args]) == 1


def test_the_experiments_page_states_the_budgets_of_the_registry():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text(encoding="utf-8")
    for study, seconds in experiments.STUDY_BUDGET_SECONDS.items():
        assert f"| `{study}` | {seconds} |" in page, study
