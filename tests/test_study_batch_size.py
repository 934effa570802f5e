"""The batch-size study: its estimators against exact answers, its loop's bookkeeping, its tiny presets run.

Each tiny run must keep the experiments' contract (:func:`_helpers.assert_keeps_the_contract`) and
say the things that hold even at tiny size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_keeps_the_contract

import fnnet as fn
from experiments import STUDIES
from experiments.batch_size import _batch_stats as bs
from experiments.batch_size import _batch_util as bu
from fnnet import data as fdata
from fnnet._io import dumps

NAMES = STUDIES["batch_size"]

# ----------------------------------------------------------------------------------------------
# fits and regimes on curves with known answers


def test_fits_recover_the_parameters_of_a_mccandlish_curve():
    b = 2.0 ** np.arange(0, 12)
    s = 80.0 * (1 + 100.0 / b)
    fs, fe = bs.fit_steps(b, s), bs.fit_examples(b, b * s)
    assert fs["s_min"] == pytest.approx(80.0, rel=1e-3)
    assert fs["b_noise"] == pytest.approx(100.0, rel=1e-3)
    assert fe["e_min"] == pytest.approx(8000.0, rel=1e-3)
    assert fe["e_min"] / fs["s_min"] == pytest.approx(100.0, rel=1e-3)  # B_crit = E_min / S_min = B_noise
    assert fs["r2"] > 0.9999 and fe["r2"] > 0.9999


def test_the_mccandlish_fit_beats_the_power_law_rival_only_on_a_bent_curve():
    from experiments.batch_size.steps_to_target import mcc_rms, power_fit

    b = 4.0 ** np.arange(0, 6)
    bent = 80.0 * (1 + 100.0 / b)
    assert mcc_rms(b, bent, bs.fit_steps(b, bent)) < 1e-3 < power_fit(b, bent)["rms"]
    straight = 5000.0 * b**-0.7  # no critical batch size: the rival is exact, and the comparison fails
    pw = power_fit(b, straight)
    assert pw["k"] == pytest.approx(0.7, rel=1e-6) and pw["rms"] < 1e-9
    assert mcc_rms(b, straight, bs.fit_steps(b, straight)) > 10 * pw["rms"]


def test_steps_at_reads_the_first_check_at_or_below_the_target():
    assert bu.steps_at([0, 1, 2, 4, 8], [2.3, 1.9, float("nan"), 1.4, 1.1], 1.5) == 4
    assert bu.steps_at([0, 1, 2], [2.3, 2.0, 1.9], 1.5) == bu.NOT_REACHED


def test_regimes_of_a_mccandlish_curve():
    b = 2.0 ** np.arange(0, 13)
    reg = bs.regimes(b, 80.0 * (1 + 100.0 / b))
    # local slope over [B, 2B] is log2((1 + 100/(2B)) / (1 + 100/B)): <= -0.75 up to B = 16, >= -0.15 from B = 512
    assert reg["perfect_from"] == 1.0
    assert reg["diminishing_from"] == 32.0
    assert reg["flat_from"] == 512.0
    assert -1.0 < reg["perfect_slope"] < -0.8


# ----------------------------------------------------------------------------------------------
# the gradient noise scale


def _tiny_problem(key, n=40):
    net = fn.serial(fn.Dense(6), fn.Tanh(), fn.Dense(3))
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n, 5))
    y = jax.random.randint(ky, (n,), 0, 3)
    return net, x, y, net.init(kp, (5,))[1]


def test_per_example_noise_matches_an_explicit_loop(key):
    net, x, y, params = _tiny_problem(key)
    loss = fn.softmax_cross_entropy
    got = bs.per_example_noise(net, loss, params, x, y, chunk=8)
    vg = fn.value_and_grad(net, loss)
    flat = [jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(vg(params, x[i : i + 1], y[i : i + 1])[1])])
            for i in range(x.shape[0])]  # fmt: skip
    g = np.stack([np.asarray(f, np.float64) for f in flat])
    mean = g.mean(axis=0)
    tr = np.sum((g - mean) ** 2) / (len(g) - 1)
    assert got["g2"] == pytest.approx(float(mean @ mean), rel=1e-4)
    assert got["tr_sigma"] == pytest.approx(tr, rel=1e-4)
    assert got["full_batch_rel_err"] < 1e-5
    auto = bs.per_example_noise(net, loss, params, x, y, chunk=8, grad="autodiff")
    assert auto["b_simple"] == pytest.approx(got["b_simple"], rel=1e-4)


def test_two_batch_estimator_is_unbiased(key):
    net, x, y, params = _tiny_problem(key, n=200)
    loss = fn.softmax_cross_entropy
    exact = bs.per_example_noise(net, loss, params, x, y, chunk=50)
    est = bs.two_batch_noise(net, loss, params, x, y, jax.random.key(1), b_small=2, b_big=64, draws=3000, groups=10)
    # 3000 batches per size; agreement within 4 standard errors of the estimate (and 15%)
    assert abs(est["b_simple"] - exact["b_simple"]) < max(4 * est["b_simple_se"], 0.15 * exact["b_simple"])
    assert est["g2"] == pytest.approx(exact["g2"], rel=0.15)


def test_power_iteration_finds_the_top_eigenvalue_of_least_squares(key):
    """For y = xW + b with mse, the Hessian is kron([x,1]ᵀ[x,1]/B, I): its top eigenvalue is known exactly."""
    net = fn.serial(fn.Dense(2))
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (32, 5)) * jnp.array([[3.0, 1.0, 1.0, 0.5, 0.2]])
    y = jax.random.normal(ky, (32, 2))
    params = jax.tree_util.tree_map(lambda a: a[None], net.init(kp, (5,))[1])  # K = 1 stacked model
    xa = np.concatenate([np.asarray(x, np.float64), np.ones((32, 1))], axis=1)
    want = np.linalg.eigvalsh(xa.T @ xa / 32)[-1]
    for grad in ("manual", "autodiff"):
        got = bs.top_hessian_eigenvalues(net, fn.mse, params, x, y, jax.random.key(3), iters=300, grad=grad)
        assert got["lambda_max"][0] == pytest.approx(want, rel=1e-3)


def test_window_noise_ignores_trends_and_measures_jitter():
    t = np.arange(400.0)
    assert bs.window_noise(5.0 - 0.01 * t, 32) < 1e-9
    jitter = np.random.default_rng(0).normal(0.0, 0.1, 400)
    assert bs.window_noise(5.0 - 0.01 * t + jitter, 32) == pytest.approx(0.1, rel=0.2)
    assert np.isnan(bs.window_noise([1.0, np.nan, 0.5, 0.4], 32))


# ----------------------------------------------------------------------------------------------
# the steps-to-target loop

TINY = bu.Workload(hidden=(8,), target=2.0, n_eval=200, max_steps=80, eval_ratio=1.2)


def test_run_to_target_records_the_first_check_at_target_and_flags_divergence():
    r = bu.run_to_target(TINY, 256, (0.5, 512.0), (0, 1))
    steps, div, curve, checked = np.array(r["steps"]), np.array(r["diverged"]), np.array(r["curve"]), r["checked"]
    assert div[:, 1].all() and (steps[:, 1] == -1).all()  # a huge rate diverges; the sweep goes on
    assert not div[:, 0].any() and (steps[:, 0] > 0).all()
    for s in range(2):
        i = checked.index(int(steps[s, 0]))
        assert curve[i, s, 0] <= TINY.target < curve[:i, s, 0].min()
    assert np.isnan(curve[-1, :, 1]).all()


def test_a_model_frozen_at_an_accuracy_target_keeps_the_params_that_reached_it():
    wl = bu.Workload(hidden=(8,), target_accuracy=0.3, n_eval=200, max_steps=200, eval_ratio=1.2, freeze_at_target=True)
    r = bu.run_to_target(wl, 128, (0.5, 1e-4), (0, 1), return_params=True)
    steps = np.array(r["steps"])
    assert (steps[:, 0] > 0).all() and (steps[:, 1] == bu.NOT_REACHED).all()  # the tiny rate never gets there
    train, _ = bu.load_data()
    _, acc = bu.evaluate_models(bu.mlp((8,)), r["params"], fdata.Dataset(train.x[:200], train.y[:200]))
    acc = acc.reshape(2, 2)
    assert (acc[:, 0] >= 0.3).all() and (acc[:, 1] < 0.3).all()
    assert r["stopped"] > steps[:, 0].max()  # the loop ran on past the target, yet the params stayed there


def test_looser_targets_are_read_off_the_same_runs():
    r = bu.tune_batch(TINY, 512, 0, (0,), targets=(2.2,))
    loose = r["by_target"]["2.2"]
    assert any(row[0] > 0 for row in r["steps"])
    for row_main, row_loose in zip(r["steps"], loose["steps"]):  # a looser target is met no later
        if row_main[0] > 0:
            assert 0 < row_loose[0] <= row_main[0]
    with pytest.raises(ValueError, match="looser"):
        bu.tune_batch(TINY, 512, 0, (0,), targets=(1.0,))


def test_warmup_schedule_rises_linearly_from_lr_over_k_to_lr():
    from experiments.batch_size.warmup import warmup_sgd

    opt = warmup_sgd(4, 8.0)(2.0)
    params = {"w": jnp.zeros(())}
    state = opt.init(params)
    rates = []
    for _ in range(6):
        upd, state = opt.update({"w": jnp.ones(())}, state, params)
        rates.append(-float(upd["w"]))
    assert rates == pytest.approx([0.25, 0.6875, 1.125, 1.5625, 2.0, 2.0])


def test_tune_batch_brackets_the_best_rate():
    r = bu.tune_batch(TINY, 512, 3, (0,))  # the first window 2^2..2^5 is too high: the grid must grow downwards
    assert not r["at_edge"]
    exps = r["lr_exponents"]
    assert exps[0] < r["best_exponent"] < exps[-1]
    i = exps.index(r["best_exponent"])
    for j in (i - 1, i + 1):  # both neighbours are slower or never reach the target
        assert r["steps"][j][0] == -1 or r["steps"][j][0] >= r["steps"][i][0]


# ----------------------------------------------------------------------------------------------
# tiny presets: every experiment runs, writes its figures and states claims


@pytest.mark.parametrize("name", NAMES)
def test_tiny_preset_keeps_the_contract(name, tiny):
    assert_keeps_the_contract(*tiny(name))


def test_steps_to_target_tiny(tiny, tmp_path):
    again, res, _ = tiny("steps_to_target")
    st = res.metrics["series"]["momentum_0"]
    assert res.claims[0].kind == "sanity" and res.claims[0].holds  # the best rate is inside the grid at every B
    for t in st["targets"].values():
        assert t["steps"][-1] <= t["steps"][0]  # a larger batch never needs more steps here
        assert t["e_min"] == pytest.approx(t["fit"]["s_min"] * t["b_crit"])  # E = B*S: one fit
    loose, tight = (st["targets"][k]["steps"] for k in ("1.9", "1.6"))
    assert all(a <= b for a, b in zip(loose, tight))  # the looser target is met first
    bu.tune_batch.cache_clear()  # recompute: identical numbers (metrics.json must be reproducible)
    res2 = again.run(again.PRESETS["tiny"], tmp_path / "again")
    assert dumps(res2.metrics) == dumps(res.metrics)


def test_gradient_noise_scale_tiny(tiny):
    _, res, _ = tiny("gradient_noise_scale")
    assert res.claims[0].holds and res.claims[2].holds  # per-example mean = batch gradient; autodiff agrees
    assert all(v > 0 for v in res.metrics["b_crit"].values())
    assert len(res.metrics["trajectory_loss"]) == 5  # five seeds behind the seed-spread claim


def test_gd_regimes_tiny(tiny):
    _, res, _ = tiny("gd_regimes")
    assert res.metrics["mlp"]["4000"]["updates_per_epoch"] == 1
    assert res.metrics["mlp"]["400"]["updates_per_epoch"] == 10
    assert len(res.metrics["mlp"]["400"]["up_fraction"]) == 5  # per seed


def test_lr_noise_scale_tiny(tiny):
    _, res, _ = tiny("lr_noise_scale")
    s = res.metrics["series"]["g=16"]
    assert s["lr"] == pytest.approx([16 * 256 / 4000, 16 * 1024 / 4000])  # eps = g B / N
    assert res.metrics["b_opt"]["2000"]["batch_sizes"] == [512, 1024]  # B = factor * N / 1000


def test_warmup_tiny(tiny):
    _, res, _ = tiny("warmup")
    m = res.metrics
    assert m["large_lr"] == pytest.approx(m["k"] * m["small_lr"])  # the linear scaling rule
    assert m["warmup_steps"] == 4000 // 512  # one epoch of the large batch


def test_generalization_gap_tiny(tiny):
    _, res, _ = tiny("generalization_gap")
    assert res.claims[0].kind == "sanity" and res.claims[0].holds  # every B reached the training accuracy
    assert res.claims[-1].holds  # manual-rule HVP = autodiff HVP
    for p in res.metrics["points"]:
        assert np.mean(p["train_accuracy"]) >= 0.5 - 0.05  # compared at (about) the same training accuracy
    line = np.array(res.metrics["interpolation"]["train_loss"])
    i0, i1 = res.metrics["interpolation"]["alphas"].index(0.0), res.metrics["interpolation"]["alphas"].index(1.0)
    sb, lb = res.metrics["points"][0], res.metrics["points"][-1]
    assert line[:, i0] == pytest.approx(sb["train_loss"], rel=1e-4)  # alpha = 0 is the SB solution
    assert line[:, i1] == pytest.approx(lb["train_loss"], rel=1e-4)  # alpha = 1 the LB one


def test_data_parallel_tiny(tiny):
    _, res, _ = tiny("data_parallel")
    assert res.metrics["n_devices"] == 8
    assert res.claims[0].holds and res.claims[-1].holds  # per-step equality; fnnet.train params equal
