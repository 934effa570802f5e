"""The initialization study: tiny presets run and say real things; theory checked against Monte Carlo.

The smoke tests run each experiment's ``tiny`` preset (under the strict rank promotion of
conftest.py); each must keep the experiments' contract (:func:`_helpers.assert_keeps_the_contract`)
and the claims that must hold even at tiny size do.
The statistical tests compare the study's Gauss–Hermite theory with Monte Carlo estimates and
random-net measurements at a fixed key, a stated sample count and a stated tolerance.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_keeps_the_contract

import fnnet as fn
from experiments import STUDIES
from experiments._common import Result
from experiments.initialization import _init_nets as N
from experiments.initialization import _init_util as U
from experiments.initialization import critical_depth as CD
from experiments.initialization import dropout_criticality as DC
from experiments.initialization import mean_field as MF

NAMES = STUDIES["initialization"]


def _claims(result: Result, fragment: str):
    hits = [c for c in result.claims if fragment in c.claim]
    assert hits, f"no claim mentions {fragment!r}"
    return hits


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_tiny_preset_keeps_the_contract(name, tiny):
    assert_keeps_the_contract(*tiny(name))


@pytest.mark.slow
def test_signal_propagation_tiny(tiny):
    _, result, _ = tiny("signal_propagation")
    assert all(c.holds for c in _claims(result, "all-zeros init"))
    rows = result.metrics["rows"]
    he = rows["relu|he_normal|random"]
    assert he["factor_theory"] == pytest.approx(1.0, abs=1e-9)  # σ_w² E[relu²]/q = 2 · 1/2
    assert rows["relu|xavier_normal|random"]["factor_theory"] == pytest.approx(0.5, abs=1e-9)


@pytest.mark.slow
def test_gradient_propagation_tiny(tiny):
    _, result, _ = tiny("gradient_propagation")
    assert all(c.holds for c in _claims(result, "same weight gradients as jax.grad"))
    # the bars of the stochastic claims are the seed spread, with >= 5 seeds
    spread = [c for c in result.claims if c.tolerance_basis.startswith("seed spread:")]
    assert spread and all(c.seeds >= 5 for c in spread)
    g = result.metrics["glorot"]["fig67"]
    # standard init shrinks the back-propagated gradient toward the input, Xavier much less
    s = np.median(np.asarray(g["standard"]["var_ds"]), 0)
    x = np.median(np.asarray(g["xavier_uniform"]["var_ds"]), 0)
    assert s[0] / s[-1] < 0.1 < x[0] / x[-1]


@pytest.mark.slow
def test_symmetry_tiny(tiny):
    _, result, _ = tiny("symmetry")
    for c in _claims(result, "never breaks symmetry"):
        assert c.holds
        # Equal in exact arithmetic; a CPU matmul kernel may round the edge columns of a tile differently,
        # so the float32 columns agree to rounding level (1e-8 seen), not always bit for bit.
        assert c.measured["max_unit_column_difference"] < 1e-6
    assert all(c.holds for c in _claims(result, "breaks symmetry: W₁ has full rank"))


@pytest.mark.slow
def test_trainability_tiny(tiny):
    _, result, _ = tiny("trainability_depth")
    d = result.metrics["depths"]["4"]
    assert set(d) == {"he_normal", "xavier_normal"}
    assert all(len(v["final_test_accuracy"]) == 5 for v in d.values())


@pytest.mark.slow
def test_mean_field_tiny(tiny):
    _, result, _ = tiny("mean_field")
    assert result.metrics["sw2_critical"] == pytest.approx(1.761, abs=2e-3)
    assert all(c.holds for c in _claims(result, "equals jax.jacrev"))
    assert all(c.holds for c in _claims(result, "order-to-chaos line"))
    # one claim per σ_w², its bar from a bootstrap over the seeds
    xi = _claims(result, "correlation depth scale matches")
    assert len(xi) == len(MF.PRESETS["tiny"].sw2_measure)
    assert all("bootstrap" in c.tolerance_basis for c in xi)


@pytest.mark.slow
def test_residual_depth_tiny(tiny):
    _, result, _ = tiny("residual_depth")
    assert all(c.holds for c in _claims(result, "same ∂L/∂W₁ as jax.grad"))
    assert len(_claims(result, "identity path")) == 2
    assert [c.kind for c in _claims(result, "vanishes with depth")] == ["sanity"]


@pytest.mark.slow
def test_new_headline_results_tiny(tiny):
    """Poole's expressivity, dropout, Glorot's training comparison, Pennington's speed: tiny runs keep the standard."""
    for name in ("expressivity", "dropout_criticality", "glorot_training", "isometry_training", "critical_depth"):
        _, result, _ = tiny(name)
        assert result.claims and all(c.seeds >= 1 and c.kind and c.tolerance_basis for c in result.claims)
    _, result, _ = tiny("expressivity")
    for c in result.claims:  # tiny nets already grow or shrink the circle by about √χ₁ per layer
        assert c.measured == pytest.approx(c.expected, rel=0.1)
    _, result, _ = tiny("glorot_training")
    sat = np.asarray(result.metrics["rows"]["tanh|standard"]["saturation"])
    assert sat.shape == (5, 3) and np.all((0 <= sat) & (sat <= 1))


# ------------------------------------------------------------------------------------------------
# theory against Monte Carlo: fixed key, stated sample count and tolerance

MC_SAMPLES = 400_000


@pytest.mark.parametrize(
    "act, power, deriv, q",
    [
        ("tanh", 2, False, 0.7),
        ("sigmoid", 2, False, 3.0),
        ("gelu", 2, False, 1.5),
        ("tanh", 2, True, 128.0),  # large q: the trapezoid branch of gauss_mean
        ("sigmoid", 2, True, 0.3),
        ("leaky_relu(0.2)", 2, True, 5.0),
    ],
)
def test_gauss_mean_matches_monte_carlo(act, power, deriv, q):
    """E_{z~N(0,q)} f(z) by quadrature vs the mean of 4e5 samples: within 4 standard errors."""
    z = np.asarray(jax.random.normal(jax.random.key(7), (MC_SAMPLES,)), np.float64) * math.sqrt(q)
    f = (lambda u: U.np_dphi(act, u) ** power) if deriv else (lambda u: U.np_phi(act, u) ** power)
    v = f(z)
    se = v.std() / math.sqrt(MC_SAMPLES)
    assert abs(U.gauss_mean(f, q) - v.mean()) <= 4 * se + 1e-12


def test_gauss_mean_closed_forms():
    assert U.gauss_mean(lambda u: np.maximum(u, 0) ** 2, 3.0) == pytest.approx(1.5, rel=1e-12)
    assert U.gauss_mean(lambda u: U.np_dphi("relu", u) ** 2, 2.0) == pytest.approx(0.5, rel=1e-12)
    assert U.gauss_mean(lambda u: U.np_phi("leaky_relu(0.2)", u) ** 2, 1.0) == pytest.approx(0.52, rel=1e-12)


def test_forward_recursion_matches_a_wide_random_net():
    """tanh, σ_w² = 1.5: q_l of one 1024-wide net (fnnet Dense + Tanh), 10 layers, within 5% of the recursion."""
    n, depth, sw2 = 1024, 10, 1.5
    net = N.mlp(n, depth, "tanh", fn.initializers.normal(math.sqrt(sw2 / n)))
    _, params = net.init(jax.random.key(3), (n,))
    first, stack = N.mlp_layers(params)
    x = jax.random.normal(jax.random.key(4), (256, n))
    _, stats, _ = N.trace_forward("tanh", first, stack, x)
    qz, _ = U.forward_theory("tanh", sw2, float(jnp.mean(x * x)), sw2, depth)
    np.testing.assert_allclose(np.asarray(stats["qz"]), qz, rtol=0.05)


def test_chi1_matches_measured_gradient_decay():
    """tanh at its fixed point, σ_w² = 1.0, σ_b² = 0.05: per-layer E(∂L/∂z)² factor within 3% of χ₁ (width 1024)."""
    n, depth, sw2, sb2 = 1024, 12, 1.0, 0.05
    mf = U.mean_field("tanh", sw2, sb2)
    w, b = fn.initializers.normal(math.sqrt(sw2 / n)), fn.initializers.normal(math.sqrt(sb2))
    net = N.mlp(n, depth, "tanh", w, b)
    _, params = net.init(jax.random.key(5), (n,))
    first, stack = N.mlp_layers(params)
    x = jax.random.normal(jax.random.key(6), (128, n)) * math.sqrt((mf["q_star"] - sb2) / sw2)
    h, _, caches = N.trace_forward("tanh", first, stack, x, keep=True)
    _, s = N.trace_backward("tanh", first, stack, caches, jax.random.normal(jax.random.key(8), h.shape))
    qdz = np.asarray(s["qdz"], np.float64)
    assert (qdz[0] / qdz[-1]) ** (1 / (depth - 1)) == pytest.approx(mf["chi1"], rel=0.03)


def test_critical_point_of_tanh():
    assert U.critical_sw2("tanh", 0.05) == pytest.approx(1.7610, abs=1e-3)
    sw2, sb2 = MF.critical_point(1 / 64)
    assert U.chi("tanh", U.q_star("tanh", sw2, sb2), sw2) == pytest.approx(1.0, abs=1e-6)


def test_jacobian_spectrum_orthogonal_tanh_is_isometric():
    """q* = 1/64, orthogonal, width 64, depth 8, 2 seeds: Var[λ]/E[λ]² within 30% + 0.005 of L(μ₂/μ₁² − 1)."""
    cfg = MF.JacobianConfig(width=64, depths=(8,), seeds=2)
    res = MF.run_jacobian(cfg, jax.random.key(0))
    assert res["autodiff_rel_error"] < 1e-4
    for name, case in res["cases"].items():
        r = case["rows"][0]
        assert r["norm_var_median"] == pytest.approx(
            r["theory_norm_var"], rel=0.3, abs=0.005 if "orth" in name else 2.0
        )
    orth = [c for n, c in res["cases"].items() if "0.0156, orthogonal" in n][0]
    assert orth["rows"][0]["norm_var_median"] < 0.05


def test_repeat_backward_matches_autodiff(key):
    """The scanned stack's hand-written backward (Dense, BatchNorm, residual) against jax.grad."""
    block = fn.residual(fn.serial(fn.Dense(6), fn.BatchNorm(), fn.Tanh()))
    net = fn.serial(N.repeat(block, 3), fn.Dense(2))
    _, params = net.init(key, (6,))
    x = jax.random.normal(jax.random.key(1), (5, 6))
    y = jax.random.normal(jax.random.key(2), (5, 2))
    (_, g_man), (_, g_ad) = (f(net, fn.mse)(params, x, y) for f in (fn.value_and_grad, fn.autodiff_value_and_grad))
    for a, b in zip(jax.tree_util.tree_leaves(g_man), jax.tree_util.tree_leaves(g_ad)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_safe_norm_does_not_underflow():
    g = jnp.full((3, 4), 1e-30, jnp.float32)
    assert float(N.safe_norm(g, (0, 1))) == pytest.approx(math.sqrt(12) * 1e-30, rel=1e-5)
    assert float(N.safe_norm(jnp.zeros((2, 2)), (0, 1))) == 0.0


# ------------------------------------------------------------------------------------------------
# trainable depth: the theory against its trivial rival, on made-up verdicts (no training)


def _acc(cfg, trains):
    """Accuracies per depth and (σ_w², seed) that give the verdicts ``trains[i][j]`` (σ_w² i, depth j)."""
    return {
        str(d): [[0.5 if trains[i][j] else 0.1] * cfg.seeds for i in range(len(cfg.sw2))]
        for j, d in enumerate(cfg.depths)
    }


def test_critical_depth_scores_the_theory_against_the_fitted_depth_only_rule():
    cfg = CD.Config(sw2=(0.3, 1.76, 8.0), depths=(4, 8, 64), seeds=5)
    xi = {"0.3": 1.0, "1.76": 100.0, "8.0": 5.0}  # 6ξ: 6, 600, 30
    # measured exactly as the theory says: trains at (0.3, 4), every depth at 1.76, depths 4 and 8 at 8.0
    trains = [[True, False, False], [True, True, True], [True, True, False]]
    v = CD.verdicts(cfg, _acc(cfg, trains), xi)
    assert v["theory_right"] == 9 and v["trains"] == trains
    assert v["rival_D0"] == 8 and v["rival_right"] == 7  # its best: depth <= 8 misses (0.3, 8) and (1.76, 64)
    assert v["disputed"] == 2 and v["theory_right_disputed"] == 2
    assert v["max_trained_depth"] == [4, 64, 8]
    claims = CD._claims(cfg, v, xi, 1.761)
    assert claims[0].holds and claims[1].holds
    assert claims[1].kind == "inconclusive" and "full" in claims[1].note  # depth 64 < the divergence depth
    # a depth-only world: the rival wins, and the claim fails
    flat = [[True, True, False]] * 3
    v = CD.verdicts(cfg, _acc(cfg, flat), xi)
    assert v["rival_right"] == 9 and not CD._claims(cfg, v, xi, 1.761)[0].holds


def test_dropout_maps_have_no_critical_point():
    """ρ = 1 gives the plain maps (c* = 1 at the critical point); ρ < 1 gives c* < 1 and a finite ξ_c."""
    sw_c = U.critical_sw2("tanh", 0.05)
    plain = DC.theory(sw_c, 0.05, 1.0)
    mf = U.mean_field("tanh", sw_c, 0.05)
    assert plain["q_star"] == pytest.approx(mf["q_star"], rel=1e-9)
    assert plain["c_star"] > 0.999 and plain["xi_c"] > 1e3
    for rho in (0.95, 0.8):
        t = DC.theory(sw_c, 0.05, rho)
        assert t["c_star"] < 0.6 and t["chi_c"] < 0.9 and t["xi_c"] < 10
        # q* solves the dropout variance map q = (σ_w²/ρ) E[tanh²] + σ_b²
        e = float(U.gauss_mean(lambda u: np.tanh(u) ** 2, t["q_star"]))
        assert t["q_star"] == pytest.approx(sw_c / rho * e + 0.05, rel=1e-10)


def test_seed_claims_take_their_bar_from_the_spread():
    ok = U.seed_close("c", "s", 1.0, [0.99, 1.01, 1.0, 1.02, 0.98])
    assert ok.holds and ok.seeds == 5 and ok.tolerance_basis.startswith("seed spread: 5 seeds")
    assert not U.seed_close("c", "s", 1.1, [0.99, 1.01, 1.0, 1.02, 0.98]).holds
    assert U.seed_greater("c", "s", [2.0, 2.1, 1.9, 2.0, 2.05], [1.0, 1.1, 0.9, 1.0, 1.0], names=("a", "b")).holds
    assert not U.seed_greater("c", "s", [1.0, 1.2, 0.8, 1.1, 0.9], [1.0, 1.1, 0.9, 1.0, 1.0], names=("a", "b")).holds
