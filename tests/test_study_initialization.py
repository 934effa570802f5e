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
    assert all(c.holds for c in _claims(result, "decays by orders of magnitude"))
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
    assert all(len(v["final_test_accuracy"]) == 2 for v in d.values())


@pytest.mark.slow
def test_mean_field_tiny(tiny):
    _, result, _ = tiny("mean_field")
    assert result.metrics["sw2_critical"] == pytest.approx(1.761, abs=2e-3)
    assert all(c.holds for c in _claims(result, "equals jax.jacrev"))
    assert all(c.holds for c in _claims(result, "order-to-chaos transition"))


@pytest.mark.slow
def test_residual_depth_tiny(tiny):
    _, result, _ = tiny("residual_depth")
    assert all(c.holds for c in _claims(result, "same ∂L/∂W₁ as jax.grad"))
    assert all(c.holds for c in _claims(result, "identity path"))


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
