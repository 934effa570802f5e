"""The Hessian-at-init experiment: its tiny preset keeps the contract; its numerics are checked on known answers.

The block Lanczos helper is compared with ``numpy.linalg.eigvalsh`` on small symmetric matrices (a full
Krylov space, a cluster of equal eigenvalues that single-vector Lanczos cannot resolve, a low-rank matrix
whose Krylov space closes early); the outlier count on synthetic spectra whose answer is known.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_keeps_the_contract

from experiments.initialization import hessian_at_init as H


def _symmetric(key, eigenvalues):
    """Q diag(eigenvalues) Qᵀ for a random orthogonal Q drawn from ``key`` (float64)."""
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.asarray(jax.random.normal(key, (n, n), jnp.float32), np.float64))
    return (q * np.asarray(eigenvalues, np.float64)) @ q.T


def _run(a, key, block, steps):
    with jax.enable_x64(True):
        aj = jnp.asarray(a, jnp.float64)
        return H.block_lanczos(lambda v: v @ aj, a.shape[0], key=key, block=block, steps=steps)


def test_block_lanczos_with_a_full_krylov_space_gives_every_eigenvalue(key):
    k_a, k_run = jax.random.split(key)
    a = np.asarray(jax.random.normal(k_a, (40, 40), jnp.float32), np.float64)
    a = (a + a.T) / 2
    theta, res = _run(a, k_run, block=6, steps=7)  # 42 ≥ 40: the last block is cut to the 4 rows left
    exact = np.linalg.eigvalsh(a)[::-1]
    assert theta.shape == (40,)
    np.testing.assert_allclose(theta, exact, atol=1e-12 * np.abs(exact).max())
    assert res.max() < 1e-10 * np.abs(exact).max()


def test_block_lanczos_resolves_a_cluster_of_equal_top_eigenvalues(key):
    # nine equal outliers at 5 over a bulk in [-1, 1]: a block of 12 sees all nine at once
    k_a, k_bulk, k_run = jax.random.split(key, 3)
    bulk = np.asarray(jax.random.uniform(k_bulk, (191,), jnp.float32, -1.0, 1.0), np.float64)
    a = _symmetric(k_a, np.concatenate([np.full(9, 5.0), bulk]))
    theta, res = _run(a, k_run, block=12, steps=8)
    np.testing.assert_allclose(theta[:9], 5.0, rtol=1e-8)
    assert theta[9] < 1.0 + 1e-9  # the tenth is the top of the bulk (Ritz values never exceed λ_max)
    assert res[:9].max() < 1e-4  # the eigenvalues are good to ~res², far better


def test_block_lanczos_on_a_low_rank_matrix_closes_and_continues(key):
    # rank 3: the Krylov space is invariant after 2 blocks of 2; fresh vectors carry on to every eigenvalue
    k_a, k_run = jax.random.split(key)
    low = np.asarray(jax.random.normal(k_a, (30, 3), jnp.float32), np.float64)
    a = low @ low.T
    theta, _ = _run(a, k_run, block=2, steps=15)
    np.testing.assert_allclose(theta, np.linalg.eigvalsh(a)[::-1], atol=1e-11 * np.abs(a).max())


def test_outlier_count_finds_the_gap_of_a_synthetic_spectrum():
    # 10 outliers, decaying from 50 to 20, over a bulk decaying slowly from 2: the gap is after the 10th
    outliers = np.geomspace(50.0, 20.0, 10)
    bulk = np.geomspace(2.0, 1.0, 30)
    got = H.outlier_count(np.concatenate([outliers, bulk]), 30)
    assert got["k"] == 10
    assert got["gap_ratio"] == pytest.approx(10.0)
    assert got["next_ratio"] == pytest.approx((50.0 / 20.0) ** (1 / 9))
    # nine outliers (C − 1): the gap moves with them; the statistic does not assume C
    got9 = H.outlier_count(np.concatenate([outliers[:9], bulk]), 30)
    assert got9["k"] == 9
    # no outliers: a geometric spectrum has equal ratios except where one is larger
    flat = np.geomspace(10.0, 1.0, 30)
    flat[5:] /= 1.5
    assert H.outlier_count(flat, 30)["k"] == 5


def test_outlier_count_uses_only_positive_eigenvalues():
    got = H.outlier_count(np.array([4.0, 2.0, 1.5, 0.0, -3.0]), 30)
    assert got["k"] == 1 and got["gap_ratio"] == pytest.approx(2.0)
    assert H.outlier_count(np.array([1.0, -1.0]), 30)["k"] == 0


@pytest.mark.slow
def test_tiny_preset_keeps_the_contract_and_its_checks_hold(tiny):
    module, result, out = tiny("hessian_at_init")
    assert_keeps_the_contract(module, result, out)
    sanity = [c for c in result.claims if c.kind == "sanity"]
    assert len(sanity) == 2 and all(c.holds for c in sanity), [c.measured for c in sanity]
    rows = result.metrics["rows"]
    cfg = module.PRESETS["tiny"]
    assert len(rows) == len(cfg.acts) * len(H.INITS) * len(cfg.depths)
    for r in rows.values():
        assert len(r["lmax"]) == cfg.seeds and len(r["top"]) == 3 * H.C
        assert np.all(np.diff(r["top"]) <= 0)  # descending
        assert 0.0 <= r["bulk_mass"] <= 1.0 + 1e-9
