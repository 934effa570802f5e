"""Every catalog entry, checked three ways in float32 and float64 under jit and vmap."""

import jax.numpy as jnp
import pytest

from fnnet import catalog
from fnnet.gradcheck import TOLERANCES

ENTRIES = catalog.entries()


@pytest.mark.parametrize("transform", ["jit", "vmap"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_entry_three_ways(entry, dtype, transform):
    report = catalog.check_entry(entry, jnp.dtype(dtype), transform)
    bars = TOLERANCES[dtype]
    assert report.dtype == dtype
    assert report.rel_autodiff <= bars.autodiff, str(report)
    assert report.rel_fd <= bars.fd, str(report)
    assert report.dot_error is not None and report.dot_error <= bars.autodiff, str(report)
    assert report.ok, str(report)


def test_float64_bars_are_the_issue_bars():
    assert TOLERANCES["float64"].autodiff <= 1e-10
    assert TOLERANCES["float64"].fd <= 1e-6
    assert TOLERANCES["float32"].autodiff <= 1e-4


def test_names_are_unique():
    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names))
