"""The checks study: gradient_checks, the catalog's three-way checks recorded as an experiment."""

from __future__ import annotations

import pytest
from _helpers import assert_keeps_the_contract

import experiments
from experiments import STUDIES
from experiments._common import CLAIM_KINDS, check_claims
from fnnet import catalog

NAMES = STUDIES["checks"]


@pytest.mark.parametrize("name", NAMES)
def test_tiny_preset_keeps_the_contract(name, tiny):
    assert_keeps_the_contract(*tiny(name))


def test_gradient_checks_records_catalog_check_all_row_for_row(tiny):
    module, result, _ = tiny("gradient_checks")
    config = module.PRESETS["tiny"]
    rows = result.metrics["rows"]
    entries = [e for e in catalog.entries() if e.name in config.only]
    assert [r["entry"] for r in rows] == [e.name for e in entries]  # one dtype, one transform in the tiny preset
    assert all(r["ok"] for r in rows) and all(c.holds for c in result.claims)
    again = catalog.check_all(entries, config.dtypes, config.transforms, seed=config.seed)
    assert rows == [{k: v for k, v in r._asdict().items() if k != "failures"} for r in again]


def test_mnist1d_baselines_are_the_papers_architectures():
    import jax

    from experiments.checks import mnist1d_baselines as M

    def size(name):
        net, in_shape = M.model(name)
        out_shape, params = net.init(jax.random.key(0), in_shape)
        assert tuple(out_shape) == (10,), name
        return sum(x.size for x in jax.tree_util.tree_leaves(params))

    # logistic 40·10+10; MLP 40-100, 100-100 (residual), 100-10; CNN 1·5·25+25, 2 × (25·3·25+25), 125·10+10
    assert (size("logistic"), size("mlp"), size("cnn")) == (410, 15210, 5210)


def test_mnist1d_baselines_trains_above_chance_at_tiny_and_judges_a_spread(tiny):
    import dataclasses

    import numpy as np

    from experiments.checks import mnist1d_baselines as M

    _, result, _ = tiny("mnist1d_baselines")
    finals = result.metrics["final_test_accuracy"]
    assert set(finals) == {"logistic", "mlp"} and all(np.mean(v) > 2 * M.CHANCE for v in finals.values())
    cfg = dataclasses.replace(M.PRESETS["quick"], seeds=5)
    near = [[0.0, 31.0], [0.0, 32.0], [0.0, 33.0], [0.0, 31.5], [0.0, 32.5]]  # mean 32, sample std 0.79
    far = [[0.0, 35.0 + d] for d in (-1, 0, 1, -0.5, 0.5)]  # mean 35, std 0.79: 3 > 2·0.79 + 0.5 away
    assert M._accuracy_claim("logistic", near, M.PAPER_STEPS, cfg).holds
    off = M._accuracy_claim("logistic", far, M.PAPER_STEPS, cfg)
    assert not off.holds and off.kind == "source" and "mean 35.0 %" in off.note
    short = M._accuracy_claim("logistic", near, 400, cfg)
    assert short.kind == "inconclusive" and "quick and full presets" in short.note


def test_the_checks_study_meets_the_standard(tiny):
    for name in experiments.STUDIES["checks"]:
        _, result, _ = tiny(name)
        check_claims(name, result.claims)  # raises, naming the claim, if one breaks the standard
        kinds = {c.kind for c in result.claims}
        assert kinds <= set(CLAIM_KINDS) and "" not in kinds


def test_mnist1d_baselines_says_which_setting_answers_what_tiny_cannot(tiny):
    _, result, _ = tiny("mnist1d_baselines")
    by_kind = {k: [c for c in result.claims if c.kind == k] for k in CLAIM_KINDS}
    assert len(by_kind["sanity"]) == 1 and by_kind["sanity"][0].holds  # the data are the paper's default split
    assert len(by_kind["inconclusive"]) == 5  # three accuracies and two orderings: tiny trains 80 steps, no CNN
    cnn = next(c for c in result.claims if c.claim.startswith("CNN"))
    assert "the full preset" in cnn.note and cnn.measured == "not trained at this preset"
    assert all(c.seeds == 5 for c in result.claims if c.kind != "sanity")
