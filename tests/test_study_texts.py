"""The texts study: each experiment's pieces against exact answers, and its tiny preset run for real.

Every experiment runs its ``tiny`` preset into a temporary folder (under the strict rank promotion of
conftest.py) and must keep the experiments' contract (:func:`_helpers.assert_keeps_the_contract`);
the claims that are mathematical facts must hold, and the claims where the texts' own numbers do not
reproduce are pinned as failing, with the values measured. The dynamics experiments (rnn_bptt,
dead_relu, loss_landscape) are compile-bound (~10-25 s of CPU each on 2 cores): their runs carry the
``slow`` marker.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_keeps_the_contract
from jax.flatten_util import ravel_pytree

import experiments
import fnnet as fn
from experiments import STUDIES
from experiments._common import CLAIM_KINDS, Result, spearman, to_jsonable
from experiments.texts import dead_relu, loss_landscape, rnn_bptt
from fnnet._io import dumps

NAMES = STUDIES["texts"]
SLOW = ("rnn_bptt", "dead_relu", "loss_landscape")  # compile-bound tiny runs


def _holding(result: Result, fragment: str) -> bool:
    hits = [c for c in result.claims if fragment in c.claim]
    assert hits, f"no claim mentions {fragment!r}"
    return all(c.holds for c in hits)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES])
def test_tiny_preset_keeps_the_contract(name, tiny):
    assert_keeps_the_contract(*tiny(name))
    for c in tiny(name)[1].claims:  # the claims standard: kind, seeds and the basis of the tolerance
        assert c.kind in CLAIM_KINDS and c.seeds >= 1, c
        assert c.tolerance_basis.split(":")[0] in ("source", "seed spread", "rounding"), c
        if c.tolerance_basis.startswith("seed spread"):
            assert c.seeds >= 5, c


def _kind(result: Result, fragment: str) -> str:
    (c,) = [c for c in result.claims if fragment in c.claim]
    return c.kind


def test_activations_every_derivative_matches(tiny):
    _, result, _ = tiny("activations")
    failing = [c.claim for c in result.claims if not c.holds]
    assert len(failing) == 1 and "bell-shaped" in failing[0], failing  # the text's one error, flagged
    m = result.metrics
    assert m["max_derivative"]["sigmoid"] == pytest.approx(0.25, abs=1e-12)
    assert m["derivative_at_zero"]["ReLU"] == {"manual": 0.0, "autodiff": 0.0}
    # GELU' rises above 1: its max is Φ(√2) + √2 φ(√2) ≈ 1.1289, not a bell around 0
    assert m["max_derivative"]["GELU (exact)"] == pytest.approx(1.12886, abs=1e-3)
    assert _kind(result, "GELU' peaks above 1") == "fnnet" and _kind(result, "bell-shaped") == "source"
    assert _kind(result, "softplus: hand-written") == "fnnet"  # no text mentions softplus


def test_worked_example_numbers(tiny):
    _, result, _ = tiny("worked_example")
    man, auto = result.metrics["manual"], result.metrics["autodiff"]
    # the forward and most of the backward pass reproduce the text at its rounding
    assert man["h1"] == pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-12)
    assert round(man["y_hat"], 4) == -0.5225 and round(man["L"], 4) == 0.1365
    assert round(man["sigma_prime_z1"], 4) == 0.2350 and round(man["delta1"], 4) == 0.1228
    assert round(man["w2_new"], 4) == -0.8374 and round(man["w1_new"], 4) == 0.4386
    for key in man:
        assert man[key] == pytest.approx(auto[key], abs=1e-12), key
    for fragment in ("z1 = w1·x + b1", "h1 = σ(z1)", "L = ½(ŷ − y)²", "δ1 = w2·δ2·σ'(z1)", "b1 ← b1"):
        assert _holding(result, fragment), fragment
    assert _holding(result, "manual rules and jax.grad agree")
    # the text's numbers that do not follow from its own set-up; the post-step forward pass is one claim
    for fragment in ("∂L/∂w2 = δ2·h1", "b2 ← b2", "after the step, the forward pass again"):
        assert not _holding(result, fragment), fragment
    assert len([c for c in result.claims if "recomputed" in c.claim]) == 1
    assert man["y_hat_after"] == pytest.approx(-0.13552, abs=1e-5)
    assert man["loss_ratio"] == pytest.approx(14.86, abs=0.01)


def test_backprop_cases(tiny):
    _, result, _ = tiny("backprop_cases")
    failing = [c.claim for c in result.claims if not c.holds]
    assert len(failing) == 1 and "index as printed" in failing[0]
    assert result.metrics["listing"]["rel_err_corrected"] < 1e-12
    # "E falls at every step" is fnnet's expectation, with its premise η·λ_max < 2 measured
    assert _kind(result, "E falls at every one") == "fnnet"
    lam = result.metrics["five_step"]["eta_lambda_max"]
    assert len(lam) == result.metrics["five_step"]["n_decreases"] and 0 < max(lam) < 2


def test_perceptron_xor(tiny):
    _, result, _ = tiny("perceptron_xor")
    assert _holding(result, "never exceeds Novikoff's bound")
    assert _holding(result, "converges (100% training accuracy)")
    assert _holding(result, "on XOR the perceptron never classifies all four points")
    assert _kind(result, "on XOR the perceptron never") == "sanity"  # no line separates XOR: by construction
    assert _kind(result, "a 2-layer MLP solves XOR") == "source"  # the text: solvable, not from every init
    assert _kind(result, "from every one of") == "fnnet"
    assert result.metrics["xor_perceptron"]["best_accuracy"] <= 0.75
    assert result.metrics["novikoff"]["ratio_updates_over_bound"]["max"] <= 1.0


def test_universal_approximation_step_floor(tiny):
    _, result, _ = tiny("universal_approximation")
    assert _holding(result, "no continuous net gets within ½ of a unit jump")
    assert _kind(result, "no continuous net gets within ½") == "sanity"
    for per_width in result.metrics["errors"].values():
        for e in per_width["step"]:
            assert e["sup"] >= 0.5
            assert 0 < e["l1"] <= e["rms"] <= e["sup"]  # L¹ ≤ L² ≤ sup on one grid (Jensen)
    # the step is claimed in L¹ (not in the sup norm of the theorem, which covers continuous targets)
    assert not [c for c in result.claims if "the step in sup norm" in c.claim]
    assert _kind(result, "in the mean (L¹ error") == "source"
    assert all(c.kind == "fnnet" for c in result.claims if "lower at width" in c.claim)


def test_conv_toy(tiny):
    _, result, _ = tiny("conv_toy")
    assert all(c.holds for c in result.claims), [c.claim for c in result.claims if not c.holds]
    y = result.metrics["closed_form"]["y"]
    assert to_jsonable(y) == [[9.5, 12.0], [17.0, 19.5]]


def test_metrics_are_identical_between_runs(tmp_path):
    module = experiments.load("worked_example")
    a, b = (module.run(module.PRESETS["tiny"], tmp_path / d) for d in "ab")
    assert dumps(a.metrics) == dumps(b.metrics)


# ----------------------------------------------------------------------------------------------
# the dynamics experiments: rnn_bptt, dead_relu, loss_landscape


def _claims(result, fragment: str):
    hits = [c for c in result.claims if fragment in c.claim]
    assert hits, f"no claim mentions {fragment!r}"
    return hits


# ----------------------------------------------------------------------------------------------
# dead_relu


def test_rectifier_is_relu_and_leaky_relu_with_a_frozen_slope(key):
    x = jax.random.normal(key, (64, 7))
    layer = dead_relu.Rectifier()
    dy = jax.random.normal(jax.random.fold_in(key, 1), x.shape)
    for alpha, ref in ((0.0, fn.Relu()), (0.01, fn.LeakyRelu(0.01))):
        p = {"alpha": jnp.asarray(alpha, jnp.float32)}
        y, cache = layer.forward(p, x)
        y_ref, cache_ref = ref.forward((), x)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
        dp, dx = layer.backward(p, cache, dy)
        np.testing.assert_array_equal(np.asarray(dx), np.asarray(ref.backward((), cache_ref, dy)[1]))
        assert float(dp["alpha"]) == 0.0  # the slope never moves


def test_a_unit_dead_on_every_input_gets_exactly_zero_gradient(key):
    net = dead_relu.mlp((8, 8))
    _, params = net.init(key, (5,))
    params = (
        {**params[0], "b": params[0]["b"].at[3].set(-1e3)},  # unit 3 of layer 1: pre-activation < 0 everywhere
        params[1],
        *params[2:],
    )
    x = jax.random.normal(jax.random.fold_in(key, 1), (32, 5))
    y = jax.random.randint(jax.random.fold_in(key, 2), (32,), 0, 10)
    _, g = jax.jit(fn.value_and_grad(net, fn.softmax_cross_entropy))(params, x, y)
    assert float(jnp.abs(g[0]["W"][:, 3]).max()) == 0.0 and float(g[0]["b"][3]) == 0.0
    alive = dead_relu.alive_fn(net, 2, x)(jax.tree_util.tree_map(lambda a: a[None], params))
    assert not bool(alive[0][0, 3]) and bool(alive[0][0].sum() >= 1)


def test_unit_stats_counts_deaths_and_revivals():
    # 2 epochs + init, 1 lr × 1 seed, 3 units: unit 0 never dies, unit 1 dies at epoch 1 for good,
    # unit 2 dies at epoch 1 and comes back at epoch 2
    alive = np.array([[[1, 1, 1]], [[1, 0, 0]], [[1, 0, 1]]], np.int8)
    (s,) = dead_relu.unit_stats(alive, few=1, seeds=1, widths=(3,))
    np.testing.assert_allclose(s["dead_fraction"], [0.0, 2 / 3, 1 / 3])
    assert s["dead_at_few_count"] == 2 and s["revived_of_dead_at_few"] == 0.5
    assert s["ever_dead"] == 2 and s["ever_revived"] == 1


def test_born_dead_formula_and_z_score():
    assert dead_relu.born_theory(1, np.array(1)) == 0.5
    np.testing.assert_allclose(dead_relu.born_theory(2, np.arange(1, 4)), 1 - 0.75 ** np.arange(1, 4))
    # continuity correction: one net in 10⁴ alive where the formula expects 6e-6 is not a 4σ event
    assert dead_relu._z(np.array(0.9999), np.array(1 - 6e-6), 10_000)[()] < 4


# ----------------------------------------------------------------------------------------------
# loss_landscape


def test_padded_net_is_exactly_the_narrow_net(key):
    """The width-h_max net with the extra units at zero: same loss, gradient and Hessian spectrum as width h."""
    h, h_max = 2, 4
    x = jax.random.normal(key, (16, 2))
    y = jax.random.normal(jax.random.fold_in(key, 1), (16, 1))
    with jax.enable_x64(True):
        x, y = x.astype(jnp.float64), y.astype(jnp.float64)
        small, big = loss_landscape.student(h), loss_landscape.student(h_max)
        _, ps = small.init(jax.random.fold_in(key, 2), (2,), jnp.float64)
        _, pb = big.init(jax.random.fold_in(key, 3), (2,), jnp.float64)
        pb = ({"W": pb[0]["W"].at[:, :h].set(ps[0]["W"]), "b": pb[0]["b"].at[:h].set(ps[0]["b"])}, (),
              {"W": pb[2]["W"].at[:h].set(ps[2]["W"]), "b": ps[2]["b"]})  # fmt: skip
        m = loss_landscape.live_mask(h, h_max)
        tb, unravel_b = ravel_pytree(pb)
        tb = tb * m  # padding units to zero
        ts, unravel_s = ravel_pytree(ps)
        vgs, vgb = fn.value_and_grad(small, fn.mse), fn.value_and_grad(big, fn.mse)
        assert float(vgs(ps, x, y)[0]) == pytest.approx(float(vgb(unravel_b(tb), x, y)[0]), rel=1e-14)
        grad_b = jax.jit(lambda t: ravel_pytree(vgb(unravel_b(t), x, y)[1])[0] * m)
        grad_s = jax.jit(lambda t: ravel_pytree(vgs(unravel_s(t), x, y)[1])[0])
        np.testing.assert_allclose(np.sort(np.asarray(grad_b(tb))[np.asarray(m) == 1]),
                                   np.sort(np.asarray(grad_s(ts))), rtol=1e-12, atol=1e-14)  # fmt: skip
        Hb = jax.jit(jax.jacfwd(grad_b))(tb) * m[None, :]
        Hs = jax.jit(jax.jacfwd(grad_s))(ts)
        eb = np.sort(np.linalg.eigvalsh(np.asarray(Hb)))
        es = np.linalg.eigvalsh(np.asarray(Hs))
        pad = int((1 - m).sum())
        eb = np.delete(eb, np.argsort(np.abs(eb))[:pad])  # drop the padding's exact zeros
        np.testing.assert_allclose(np.sort(eb), np.sort(es), atol=1e-12)


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [0.5, 1.0, 1.0]) == pytest.approx(np.sqrt(3) / 2)  # ties get average ranks
    assert np.isnan(spearman([1, 2, 3], [1, 1, 1]))


# ----------------------------------------------------------------------------------------------
# rnn_bptt


def test_adding_task_has_one_marker_per_half_and_sums_them(key):
    ds = rnn_bptt.adding_task(key, 50, 20)
    x, y = np.asarray(ds.x), np.asarray(ds.y)
    assert x.shape == (50, 20, 2) and y.shape == (50, 1)
    assert np.all(x[:, :10, 1].sum(1) == 1) and np.all(x[:, 10:, 1].sum(1) == 1)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * x[..., 1]).sum(1), rtol=1e-6)


def test_delta_carry_reproduces_the_rnn_layer_backward(key):
    """δ_{k−1} = (φ'(a_k) ⊙ δ_k) Uᵀ, the recursion the experiment plots, gives the RNN layer's own dx_k."""
    with jax.enable_x64(True):
        rnn = fn.RNN(6, "sigmoid")
        _, p = rnn.init(key, (9, 3), jnp.float64)
        x = jax.random.normal(jax.random.fold_in(key, 1), (4, 9, 3), jnp.float64)
        delta_T = jax.random.normal(jax.random.fold_in(key, 2), (4, 6), jnp.float64)
        _, cache = rnn.forward(p, x)
        _, dx = rnn.backward(p, cache, delta_T)

        def step(delta, act_t):
            da = fn.activations.sigmoid_backward(act_t, delta)
            return jnp.matmul(da, p["U"].T), jnp.matmul(da, p["W"].T)

        _, dxs = jax.lax.scan(step, delta_T, cache["act"], reverse=True)
        np.testing.assert_allclose(np.asarray(jnp.swapaxes(dxs, 0, 1)), np.asarray(dx), rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_dead_relu_tiny_born_dead_matches_the_formula(tiny):
    _, result, _ = tiny("dead_relu")
    for c in _claims(result, "born"):
        assert c.holds, c
    for dist in ("normal", "uniform"):
        for v in result.metrics["born_dead"][dist].values():
            at_x, dom = np.asarray(v["p_at_x"]), np.asarray(v["p_on_domain"])
            assert np.all(np.diff(at_x) >= 0)  # dead stays dead
            assert np.all(dom <= at_x)  # zero on a whole sample is rarer than at one input


@pytest.mark.slow
def test_loss_landscape_tiny_hessian_and_critical_points(tiny):
    _, result, _ = tiny("loss_landscape")
    (h,) = _claims(result, "jax.hessian")
    assert h.holds and h.measured < 1e-12
    assert _claims(result, "non-convex")[0].holds  # width 1 already has saddles
    starts = loss_landscape.PRESETS["tiny"].starts
    for row in result.metrics["by_width"]:
        assert row["converged"] == row["saddles"] + row["minima"]
        assert row["converged"] + row["stalled_from_trajectory"] + row["stalled_from_init"] == starts
        # the census counts every search: none is dropped
        assert row["saddles"] + row["minima"] + row["stalled_near_minimum"] + row["stalled_elsewhere"] == starts
    pca = result.metrics["slice"]["top2_share_vs_random_walk"]
    assert len(pca["sgd"]) == loss_landscape.PRESETS["tiny"].path_seeds >= 5


@pytest.mark.slow
def test_rnn_bptt_tiny_bounds_hold(tiny):
    _, result, _ = tiny("rnn_bptt")
    (clip,) = _claims(result, "‖clip(g)‖")
    assert clip.holds and clip.kind == "sanity"  # the clip bounds the norm by definition
    assert _claims(result, "(‖U‖₂/4)")[0].holds  # Pascanu et al.'s sigmoid bound is a theorem
    curves = result.metrics["gradient_over_time"]
    assert curves["tanh/3"]["rel"][-1] > curves["tanh/1"]["rel"][-1]  # a larger scale, a larger gradient far back


def test_census_counts_every_search():
    """Stalled searches are counted: near a minimum when their loss is ≤ 1.1× the best certified minimum so far."""
    config = loss_landscape.Config(widths=(1, 2), starts=4, gtol=1e-8)
    cp = {
        "grad_norm": np.array([[1e-9, 1e-9, 1e-3, 1e-3], [1e-9, 1e-3, 1e-3, 1e-3]]),
        "loss": np.array([[0.5, 0.1, 0.105, 0.3], [0.4, 0.05, 0.2, 0.11]]),
        "index": np.array([[1, 0, 0, 2], [2, 1, 1, 0]]),
        "from_trajectory": np.array([[False, False, True, True]] * 2),
        "grad_norm_after_gd": np.full((2, 4), 1.0),
    }
    rows = loss_landscape.summarize(config, cp)
    loss_landscape.census(config, rows, cp)
    assert [(r["saddles"], r["minima"], r["stalled_near_minimum"], r["stalled_elsewhere"]) for r in rows] == [
        (1, 1, 1, 1),  # 0.105 ≤ 1.1 × 0.1; 0.3 is not
        (1, 0, 2, 1),  # width 2 inherits width 1's minimum 0.1: 0.05 and 0.11 are near it, 0.2 is not
    ]
    assert rows[1]["saddle_share_of_searches"] == 0.25


def test_top2_share_of_a_line_is_one_and_of_a_random_walk_is_not(key):
    line = np.outer(np.arange(30.0), np.ones(8))
    assert loss_landscape.top2_share(line) == pytest.approx(1.0)
    steps = np.asarray(jax.random.normal(key, (400, 50)), np.float64)
    walk = np.concatenate([np.zeros((1, 50)), np.cumsum(steps, axis=0)])
    assert 0.6 < loss_landscape.top2_share(walk) < 0.99  # most variance, yet not all: the rival of the PCA claim
