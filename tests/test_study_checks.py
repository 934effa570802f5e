"""The checks study: gradient_checks, the catalog's three-way checks recorded as an experiment."""

from __future__ import annotations

import pytest
from _helpers import assert_keeps_the_contract

from experiments import STUDIES
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
