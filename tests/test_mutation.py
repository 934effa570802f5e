"""The checker's power on a fixed subset of planted bugs (``benchmarks/mutation.py`` runs all of them).

Every non-equivalent mutant must be caught in float64 by the default check (reverse and forward mode),
the source-level ones included; a mutant counts as equivalent only where it changes nothing at the checked
point, i.e. on a gradient that is exactly zero there."""

import jax.numpy as jnp
import pytest

from fnnet import catalog, mutation

ENTRIES = {e.name: e for e in catalog.entries()}
FAMILY = {
    "LSTM(3)[sequences]": "swapped gates",
    "MultiHeadAttention(2,causal)[padding mask]": "missing mask",
    "Conv2D(3)[3x3,VALID]": "off-by-one",
    "Gelu(exact)": "output cached",
}


def _check(m):
    report = catalog.check_entry(m.mutated, jnp.float64, modes=("rev", "fwd"))
    return mutation.detected(report, "float64", ENTRIES[m.entry].fd)


@pytest.mark.parametrize("name", ["Dense(4)", "mse"])
def test_the_default_check_catches_every_generic_mutant(name):
    outcomes = mutation.run([ENTRIES[name]], ("float64",))
    kinds = {o.mutant.kind for o in outcomes}
    assert {"scale 1e-3", "sign", "zero", "wrong axis", "jvp scale 1e-3", "jvp sign"} <= kinds
    assert not [o for o in outcomes if o.equivalent]
    missed = [(o.mutant.kind, o.mutant.where) for o in outcomes if not o.caught["default check"]]
    assert not missed


@pytest.mark.parametrize("name", list(FAMILY))
def test_source_level_mutants_are_caught(name):
    found = [m for m in mutation.mutants(ENTRIES[name]) if m.kind == FAMILY[name]]
    assert found, f"no {FAMILY[name]} mutant built for {name}"
    for m in found:
        caught = _check(m)
        assert caught["default check"] and caught["rev vs autodiff"], (m.kind, m.where, caught)


def test_a_mutant_of_an_exactly_zero_gradient_is_equivalent():
    """BatchNorm in training mode: its running statistics do not enter y, so their gradient is exactly 0 and
    scaling, negating or zeroing it changes nothing; every other mutant is caught."""
    outcomes = mutation.run([ENTRIES["BatchNorm[train]"]], ("float64",))
    equivalent = {(o.mutant.kind, o.mutant.where) for o in outcomes if o.equivalent}
    assert equivalent and all(where.startswith("params['state']") for _, where in equivalent)
    assert all(o.caught["default check"] for o in outcomes if not o.equivalent)


def test_check_grads_runs_on_the_same_mutants():
    by_kind = {m.kind: m for m in mutation.mutants(ENTRIES["Dense(4)"])}
    assert mutation.check_grads_catches(by_kind["sign"]) and mutation.check_grads_catches(by_kind["jvp sign"])
