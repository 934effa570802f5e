"""The edge-of-stability experiment: its statistics and its Lanczos tracker against known answers, its tiny run.

The tiny run keeps the experiments' contract (:func:`_helpers.assert_keeps_the_contract`) and says what
holds even at tiny size: the tracker agrees with ``fn.sharpness`` and GD lowers the loss at every step size.
Whether the sharpness hovers at 2/eta is the quick preset's question.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_keeps_the_contract

import fnnet as fn
from experiments.batch_size import edge_of_stability as eos

# ----------------------------------------------------------------------------------------------
# the statistics on series with known answers


def test_crossing_and_hover_ratio_of_a_synthetic_edge_of_stability_series():
    eta = 0.2  # 2/eta = 10
    at = np.arange(0, 1001, 10)
    rise = np.linspace(2.0, 10.0, 31)  # steps 0..300: progressive sharpening up to 2/eta
    hover = 10.0 * np.array([0.95, 1.05, 1.15])[np.arange(70) % 3]  # around 1.05 * 2/eta, +-0.1, in turn
    lam = np.concatenate([rise, hover])
    assert eos.crossing(at, lam, eta) == 300  # the first step with lambda * eta / 2 >= 1
    assert eos.hover_ratio(at, lam, eta, 500) == pytest.approx(1.05)  # 17 of each of the 51 values from step 500
    assert eos.crossing(at, lam * 0.5, eta) is None  # never reaches 2/eta


def test_rises_counts_only_rises_above_the_rounding_bar():
    loss = np.array([1.0, 0.9, 0.95, 0.95 * (1 + 0.5 * eos.RISE_REL), 0.5, 0.6])
    np.testing.assert_array_equal(eos.rises(loss), [False, True, False, False, True])


def test_summarize_finds_the_edge_on_a_synthetic_run():
    config = eos.Config(step_sizes=(0.2, 0.02), steps=1000, every=10)
    at = np.arange(0, 1001, 10)
    lam_edge = np.concatenate([np.linspace(2.0, 10.0, 31), np.full(70, 10.5)])
    lam_slow = np.linspace(2.0, 8.0, 101)  # 2/eta = 100: never reached
    loss_slow = np.linspace(1.0, 0.5, 1001)
    loss_edge = loss_slow.copy()
    loss_edge[600::50] *= 1.01  # 9 rises (steps 600, 650, ..., 1000) in the second half
    res = {
        "measured_at": at.tolist(),
        "sharpness": [lam_edge.tolist(), lam_slow.tolist()],
        "loss": [loss_edge.tolist(), loss_slow.tolist()],
        "diverged": [False, False],
    }
    edge, slow = eos.summarize(res, config)
    assert edge["crossing"] == 300 and edge["at_edge"] and edge["hover_ratio"] == pytest.approx(1.05)
    assert edge["up_fraction_second_half"] == pytest.approx(9 / 500)
    assert slow["crossing"] is None and not slow["at_edge"] and slow["up_fraction"] == 0
    assert slow["pre_crossing_rho"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# the tracker


def test_lanczos_top_returns_the_algebraic_top_eigenvalue(key):
    n = 12
    q, _ = jnp.linalg.qr(jax.random.normal(key, (n, n)))
    evals = jnp.array([-9.0, -3.0, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])  # |min| > max
    a = (q * evals[None, :]) @ q.T
    v0 = jax.random.normal(jax.random.fold_in(key, 1), (n,))
    top, y = jax.jit(lambda v: eos.lanczos_top(lambda u: a @ u, v, n))(v0)
    assert float(top) == pytest.approx(4.0, abs=1e-4)  # the largest algebraic eigenvalue, not 9 = the largest |.|
    np.testing.assert_allclose(np.abs(np.asarray(q[:, -1] @ y)), 1.0, atol=1e-4)  # its eigenvector


def test_gd_with_sharpness_matches_fn_sharpness_and_plain_gd(key):
    net = eos.tanh_mlp((8,))
    kx, kp, kv = jax.random.split(key, 3)
    x = jax.random.normal(kx, (32, 40))
    t = jax.nn.one_hot(jnp.arange(32) % 10, 10)
    _, params = net.init(kp, (40,))
    n = jax.flatten_util.ravel_pytree(params)[0].shape[0]
    f = eos.gd_with_sharpness(net, fn.mse, x, t, every=2, n_meas=2, m=30)
    lams, losses, diverged, _ = f(params, jnp.array([0.5]), jax.random.normal(kv, (n,)))
    assert lams.shape == (1, 3) and losses.shape == (1, 4) and not bool(diverged[0])
    ref = fn.sharpness(net, fn.mse, params, x, t, key=jax.random.fold_in(key, 7), iters=60)
    assert float(lams[0, 0]) == pytest.approx(ref, rel=1e-4)
    vg = fn.value_and_grad(net, fn.mse)  # one plain GD step by hand
    l0, g = vg(params, x, t)
    l1, _ = vg(jax.tree_util.tree_map(lambda p, d: p - 0.5 * d, params, g), x, t)
    np.testing.assert_allclose(np.asarray(losses[0, :2]), [float(l0), float(l1)], rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# the tiny run


def test_edge_of_stability_tiny(tiny):
    module, result, out = tiny("edge_of_stability")
    assert_keeps_the_contract(module, result, out)
    by_claim = {c.claim: c for c in result.claims}
    check = next(c for text, c in by_claim.items() if "fn.sharpness" in text)
    assert check.holds, check.measured
    for p in result.metrics["per_step_size"]:
        assert not p["diverged"] and p["loss_final"] < p["loss_init"], p
        assert p["sharpness_init"] > 0
