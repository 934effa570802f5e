"""The dynamics experiments (rnn_bptt, dead_relu, loss_landscape): their pieces against exact answers,
and tiny-preset smoke runs that must say real things (the mathematical claims hold).

The tiny presets are compile-bound (each experiment builds several XLA programs: ~10-25 s of CPU on
a 2-core machine), so their tests carry the ``slow`` marker.
"""

from __future__ import annotations

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import fnnet as fn
from experiments import module_path
from experiments._common import spearman, to_jsonable
from experiments.texts import dead_relu, loss_landscape, rnn_bptt

NAMES = ("rnn_bptt", "dead_relu", "loss_landscape")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Each experiment's tiny preset, run once per module: name -> (result, out_dir)."""
    done = {}

    def get(name: str):
        if name not in done:
            module = importlib.import_module(module_path(name))
            out = tmp_path_factory.mktemp(name)
            done[name] = (module.run(module.PRESETS["tiny"], out), out)
        return done[name]

    return get


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


# ----------------------------------------------------------------------------------------------
# smoke runs of the tiny presets


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_tiny_preset_writes_figures_and_complete_claims(name, tiny):
    module = importlib.import_module(module_path(name))
    result, out = tiny(name)
    assert module.NAME == name and module.TITLE and set(module.PRESETS) == {"tiny", "quick", "full"}
    for preset in module.PRESETS.values():
        hash(preset)
    assert result.figures
    for fig in result.figures:
        assert (out / fig.file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert fig.caption and fig.caption.count("\n") <= 1
    for c in result.claims:
        assert c.claim and c.source and c.expected is not None and c.measured is not None, c
        assert isinstance(c.holds, bool) and c.tolerance is not None, c
    json.dumps(to_jsonable(result.metrics))
    json.dumps(to_jsonable(result.claims))


@pytest.mark.slow
def test_dead_relu_tiny_born_dead_matches_the_formula(tiny):
    result, _ = tiny("dead_relu")
    for c in _claims(result, "born"):
        assert c.holds, c
    for dist in ("normal", "uniform"):
        for v in result.metrics["born_dead"][dist].values():
            at_x, dom = np.asarray(v["p_at_x"]), np.asarray(v["p_on_domain"])
            assert np.all(np.diff(at_x) >= 0)  # dead stays dead
            assert np.all(dom <= at_x)  # zero on a whole sample is rarer than at one input


@pytest.mark.slow
def test_loss_landscape_tiny_hessian_and_critical_points(tiny):
    result, _ = tiny("loss_landscape")
    (h,) = _claims(result, "jax.hessian")
    assert h.holds and h.measured < 1e-12
    assert _claims(result, "non-convex")[0].holds  # width 1 already has saddles
    for row in result.metrics["by_width"]:
        assert row["converged"] == row["saddles"] + row["minima"]
        assert row["converged"] + row["stalled_from_trajectory"] + row["stalled_from_init"] == 4


@pytest.mark.slow
def test_rnn_bptt_tiny_bounds_hold(tiny):
    result, _ = tiny("rnn_bptt")
    assert _claims(result, "‖clip(g)‖")[0].holds
    assert _claims(result, "(‖U‖₂/4)")[0].holds  # Pascanu et al.'s sigmoid bound is a theorem
    curves = result.metrics["gradient_over_time"]
    assert curves["tanh/3"]["rel"][-1] > curves["tanh/1"]["rel"][-1]  # a larger scale, a larger gradient far back
