"""Every catalog entry, checked three ways in float32 and float64 under jit and vmap: the reverse-mode rule,
and the forward-mode rule (jvp) along a random tangent (vs jax.jvp, vs FD, and the adjoint identity between
the two hand-written rules)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet import catalog
from fnnet.checking import TOLERANCES

ENTRIES = catalog.entries()
#: The entries drawn at a kink or a tie: their FD probes cross it, and the check re-probes at a shifted point.
AT_A_KINK = {"Relu[x=0]", "LeakyRelu(0.2)[x=0]", "MaxPool(2)[ties]"}


@pytest.mark.parametrize("transform", ["jit", "vmap"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_entry_three_ways(entry, dtype, transform):
    report = catalog.check_entry(entry, jnp.dtype(dtype), transform, modes=("rev", "fwd"))
    bars = TOLERANCES[dtype]
    assert report.dtype == dtype
    assert report.rel_autodiff <= bars.autodiff, str(report)
    assert report.rel_fd <= bars.fd, str(report)
    assert report.dot_error is not None and report.dot_error <= bars.autodiff, str(report)
    f = report.forward
    assert f is not None, f"{entry.name} has no forward-mode rule (jvp)"
    assert f.rel_autodiff <= bars.autodiff and f.adjoint <= bars.adjoint_bar, str(report)
    assert f.rel_fd <= bars.fd, str(report)
    # the rule run twice is bit-equal (on CPU), and the zero cotangent (tangent) gives exactly zero
    assert report.nondeterminism == 0.0 and f.zero == 0.0, str(report)
    assert report.zero == (None if catalog.is_loss(entry) else 0.0), str(report)
    # only the entries drawn at a kink cross one: no smooth rule is mistaken for a kinked one
    assert (report.kink is not None) == (entry.name in AT_A_KINK), str(report)
    assert report.kinks == 0 and (report.kink is None or report.kink.ok), str(report)
    assert report.ok, str(report)


def test_every_entry_has_a_forward_rule():
    missing = [e.name for e in ENTRIES if not catalog.has_forward_rule(e)]
    assert not missing, f"no hand-written jvp: {missing}"


def test_float64_bars_are_the_issue_bars():
    assert TOLERANCES["float64"].autodiff <= 1e-10
    assert TOLERANCES["float64"].fd <= 1e-6
    assert TOLERANCES["float32"].autodiff <= 1e-4


def test_names_are_unique():
    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names))


def test_edge_entries_probe_each_fused_rule_at_its_boundary():
    """Each fused or simplified rule has an entry at the edge of its assumptions, saying what it probes; none
    turns finite differences off, not even at a kink or a tie (the check re-probes there)."""
    edges = {e.name: e for e in ENTRIES if e.probes}
    assert set(edges) == {
        "softmax_cross_entropy[any rows]",
        "binary_cross_entropy[soft,z=0]",
        "Relu[x=0]",
        "LeakyRelu(0.2)[x=0]",
        "BatchNorm[train,constant feature]",
        "LayerNorm[constant row]",
        "MaxPool(2)[ties]",
    }
    assert AT_A_KINK <= set(edges)
    assert all(e.fd for e in ENTRIES)
    rows = catalog._rows_not_distributions(jax.random.key(0), jnp.zeros((4, 5)), jnp.float32)
    np.testing.assert_allclose(np.asarray(rows.sum(-1))[[0, 3]], [2.0, 0.0])  # multi-hot and all-zero rows
    assert float(rows.sum(-1)[1]) != pytest.approx(1.0) and float(rows[2].min()) < 0  # unnormalized, negative
    x = catalog._tied_rows(jax.random.key(0), (1, 4, 4, 1), jnp.float32)
    np.testing.assert_array_equal(x[:, ::2], x[:, 1::2])  # every 2×2 window has a tied maximum


def test_a_kink_is_re_probed_and_finite_differences_can_still_be_skipped():
    x = jnp.array([0.0, 1.3, 0.0, -0.7])

    def loss(v):
        return jnp.sum(fn.activations.relu(v))

    def rule(v):
        return fn.activations.derivative("relu", v)

    with_fd = fn.gradcheck(loss, rule, x)  # central differences at 0 read ½, the rule pins 0: a crossing
    assert with_fd.ok and with_fd.kink is not None and with_fd.kink.crossings == ("args[0]: 2 of 4 probes",)
    assert "kink crossed, re-probed" in str(with_fd)
    without = fn.gradcheck(loss, rule, x, finite_differences=False)
    assert without.ok and without.fd_dtype == "skipped"
    assert [leaf.fd_probes for leaf in without.leaves] == [0] and "FD skipped" in str(without)
