"""The training loop: regimes, gradient sources, records, divergence, state updates, resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet as fn
from experiments.batch_size import _batch_util as bu
from experiments.texts._fit_util import fit_full_batch
from fnnet import optim
from fnnet.core import Layer, Loss
from fnnet.data import Dataset
from fnnet.training import evaluate, init_state, param_layers, train

NET = fn.serial(fn.Dense(16), fn.Tanh(), fn.Dense(3))


def _problem(key, n=96, d=5):
    """A 3-class problem (eager ops: JAX caches them by shape across the tests)."""
    kx, kw, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n, d))
    y = jnp.argmax(x @ jax.random.normal(kw, (d, 3)), axis=1).astype(jnp.int32)
    return NET, NET.init(kp, (d,))[1], Dataset(x, y)


def test_full_batch_is_gradient_descent(key):
    net, params, ds = _problem(key)
    res = train(
        net,
        fn.softmax_cross_entropy,
        params,
        ds,
        optimizer=optim.sgd(0.3),
        batch_size=96,
        epochs=5,
        key=key,
        progress=False,
        record="step",
    )
    assert res.steps_per_epoch == 1 and res.step_history["loss"].shape == (5,)
    vg = jax.jit(fn.value_and_grad(net, fn.softmax_cross_entropy))
    p = params
    for t in range(5):
        value, g = vg(p, ds.x, ds.y)
        np.testing.assert_allclose(res.step_history["loss"][t], value, rtol=1e-6)
        p = jax.tree_util.tree_map(lambda a, b: a - 0.3 * b, p, g)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), res.params, p)
    assert int(res.state.step) == 5


@pytest.mark.parametrize("batch_size, steps", [(1, 96), (10, 9)])
def test_sgd_and_minibatch_regimes_drop_the_remainder(key, batch_size, steps):
    net, params, ds = _problem(key)
    res = train(
        net,
        fn.softmax_cross_entropy,
        params,
        ds,
        optimizer=optim.sgd(0.05),
        batch_size=batch_size,
        epochs=2,
        key=key,
        progress=False,
        record="step",
        test_data=ds,
        per_layer_grad_norms=True,
    )
    assert res.steps_per_epoch == steps
    assert res.step_history["loss"].shape == (2 * steps,) and int(res.state.step) == 2 * steps
    for name in ("loss", "accuracy", "grad_norm", "train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert res.history[name].shape == (2,) and np.all(np.isfinite(res.history[name])), name
    np.testing.assert_allclose(res.history["train_loss"], res.history["test_loss"], rtol=1e-6)
    assert res.history["test_loss"][-1] < evaluate(net, fn.softmax_cross_entropy, params, ds)[0]
    # per-layer gradient norms: one column per Dense, and they make up the global norm
    assert param_layers(params) == [0, 2]
    per = res.step_history["layer_grad_norms"]
    assert per.shape == (2 * steps, 2) and res.history["layer_grad_norms"].shape == (2, 2)
    np.testing.assert_allclose(np.sqrt((per**2).sum(1)), res.step_history["grad_norm"], rtol=1e-5)


def test_manual_and_autodiff_give_the_same_200_step_trajectory(key):
    net, params, ds = _problem(key, n=64)
    runs = {
        g: train(
            net,
            fn.softmax_cross_entropy,
            params,
            ds,
            optimizer=optim.sgd(0.1, momentum=0.9),
            batch_size=8,
            epochs=25,
            key=key,
            grad=g,
            record="step",
            progress=False,
            eval_train=False,
        )
        for g in ("manual", "autodiff", "custom_vjp")
    }
    ref = runs["autodiff"]
    assert ref.step_history["loss"].shape == (200,)
    for g in ("manual", "custom_vjp"):
        np.testing.assert_allclose(runs[g].step_history["loss"], ref.step_history["loss"], rtol=2e-5, atol=1e-6)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), runs[g].params, ref.params
        )


def test_reshuffles_from_the_key_and_is_deterministic(key):
    net, params, ds = _problem(key)
    kw = dict(optimizer=optim.sgd(0.1), batch_size=8, epochs=2, progress=False, record="step")  # one compile
    a = train(net, fn.softmax_cross_entropy, params, ds, key=key, **kw)
    b = train(net, fn.softmax_cross_entropy, params, ds, key=key, **kw)
    c = train(net, fn.softmax_cross_entropy, params, ds, key=jax.random.fold_in(key, 1), **kw)
    np.testing.assert_array_equal(a.step_history["loss"], b.step_history["loss"])
    assert not np.allclose(a.step_history["loss"], c.step_history["loss"])
    # the two epochs see different batches: the first-step losses are not a repeat
    assert a.step_history["loss"][12] != a.step_history["loss"][0]


def test_divergence_is_recorded_never_raised(key):
    net, params, ds = _problem(key)
    res = train(
        net,
        fn.mse,
        params,
        Dataset(ds.x, jax.nn.one_hot(ds.y, 3) * 1e3),
        optimizer=optim.sgd(1e3),
        batch_size=8,
        epochs=3,
        key=key,
        progress=False,
        record="step",
    )
    assert bool(res.diverged)
    k = int(res.diverged_step)
    assert 0 <= k < 36 and int(res.state.step) == k
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(res.params))
    assert np.all(np.isnan(res.step_history["loss"][k + 1 :]))
    assert res.history["diverged"][-1] and np.isnan(res.history["train_loss"][-1])
    assert res.history["loss"].shape == (3,)


def _counting_layer() -> Layer:
    """Dense-like layer whose params hold a buffer that update_state increments (like BN stats)."""

    def init(key, in_shape, dtype=jnp.float32):
        return (2,), {"W": jax.random.normal(key, (in_shape[0], 2), dtype), "seen": jnp.zeros((), dtype)}

    def forward(params, x, *, key=None, train=True):
        return x @ params["W"], (x, jnp.asarray(x.shape[0], x.dtype))

    def backward(params, cache, dy):
        x, _ = cache
        return {"W": x.T @ dy, "seen": jnp.zeros_like(params["seen"])}, dy @ params["W"].T

    def update_state(params, cache):
        return {**params, "seen": params["seen"] + cache[1]}

    return Layer(init, forward, backward, update_state)


def test_update_state_is_applied_after_each_step(key):
    layer = _counting_layer()
    _, params = layer.init(key, (3,))
    ds = Dataset(jax.random.normal(key, (20, 3)), jax.random.normal(jax.random.fold_in(key, 1), (20, 2)))
    res = train(
        layer,
        fn.mse,
        params,
        ds,
        optimizer=optim.sgd(0.01, momentum=0.5),
        batch_size=6,
        epochs=2,
        key=key,
        progress=False,
    )
    assert float(res.params["seen"]) == 2 * 3 * 6  # 2 epochs x 3 steps x 6 examples, not touched by momentum


def test_resume_equals_an_uninterrupted_run(key):
    net, params, ds = _problem(key)
    kw = dict(optimizer=optim.sgd(0.1, momentum=0.9), batch_size=16, key=key, progress=False, record="step")
    full = train(net, fn.softmax_cross_entropy, params, ds, epochs=4, **kw)
    seen = []
    half = train(net, fn.softmax_cross_entropy, params, ds, epochs=2, callback=lambda e, r: seen.append(e), **kw)
    assert seen == [0, 1]
    rest = train(net, fn.softmax_cross_entropy, params, ds, epochs=4, resume=half, **kw)
    np.testing.assert_array_equal(rest.step_history["loss"], full.step_history["loss"])
    np.testing.assert_array_equal(rest.history["train_loss"], full.history["train_loss"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, rest.params, full.params)


def test_bad_options_raise_clear_errors(key):
    net, params, ds = _problem(key)
    kw = dict(optimizer=optim.sgd(0.1), epochs=1, key=key, progress=False)
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 96\]"):
        train(net, fn.softmax_cross_entropy, params, ds, batch_size=97, **kw)
    with pytest.raises(ValueError, match="batch_size"):
        train(net, fn.softmax_cross_entropy, params, ds, batch_size=0, **kw)
    with pytest.raises(ValueError, match="unknown gradient source 'numeric'"):
        train(net, fn.softmax_cross_entropy, params, ds, batch_size=8, grad="numeric", **kw)
    with pytest.raises(ValueError, match="record"):
        train(net, fn.softmax_cross_entropy, params, ds, batch_size=8, record="batch", **kw)
    with pytest.raises(TypeError, match="GradientTransformation"):
        train(net, fn.softmax_cross_entropy, params, ds, batch_size=8, **{**kw, "optimizer": optim.sgd})


def test_evaluate_in_chunks_equals_whole(key):
    net, params, ds = _problem(key, n=50)
    whole = evaluate(net, fn.softmax_cross_entropy, params, ds)
    chunked = evaluate(net, fn.softmax_cross_entropy, params, ds, batch_size=16)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)
    assert evaluate(net, fn.mse, params, Dataset(ds.x, jax.nn.one_hot(ds.y, 3)))[1] is None


def test_optax_optimizers_and_chains_plug_in(key):
    net, params, ds = _problem(key)
    opt = optax.chain(optim.clip_by_global_norm(1.0), optim.add_weight_decay(1e-4), optax.adam(1e-2))
    res = train(
        net, fn.softmax_cross_entropy, params, ds, optimizer=opt, batch_size=16, epochs=3, key=key, progress=False
    )
    assert res.history["train_loss"][-1] < res.history["train_loss"][0]


def test_evaluate_refuses_a_bad_chunk_size_and_labels_beyond_the_outputs(key):
    net, params, ds = _problem(key, n=50)  # 3 outputs
    for bad in (0, -4, 2.5):
        with pytest.raises(ValueError, match="evaluate: batch_size must be a positive integer"):
            evaluate(net, fn.softmax_cross_entropy, params, ds, batch_size=bad)
    with pytest.raises(ValueError, match="data has label 3, but the model has 3 outputs"):
        evaluate(net, fn.softmax_cross_entropy, params, Dataset(ds.x, ds.y.at[0].set(3)))


# ---- make_step: the one optimizer step of train, sweep and the experiments' own loops ----------------

CE = fn.softmax_cross_entropy
MOMENTUM = optax.chain(optim.sgd(0.1, momentum=0.9), optax.scale(1.0))  # a state that moves every step
BAD = {  # each breaks one thing only: (loss, optimizer) of the step that must be refused
    "loss": (Loss(lambda p, t: (CE.forward(p, t)[0] + jnp.inf, CE.forward(p, t)[1]), CE.backward), MOMENTUM),
    "gradient": (Loss(CE.forward, lambda c: CE.backward(c) * jnp.nan), MOMENTUM),
    "update": (CE, optax.chain(optim.sgd(0.1, momentum=0.9), optax.scale(jnp.inf))),
}


def _assert_trees_equal(a, b):
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("bad", list(BAD))
def test_make_step_freezes_on_a_non_finite_loss_gradient_or_update(key, bad):
    net, params, ds = _problem(key)
    batch = (ds.x[:16], ds.y[:16])
    good = jax.jit(fn.make_step(net, CE, MOMENTUM))
    state = init_state(params, MOMENTUM, key)
    for _ in range(2):
        state, _ = good(state, batch, None)
    frozen, m = jax.jit(fn.make_step(net, *BAD[bad]))(state, batch, None)
    assert np.isfinite(m["loss"]) == (bad != "loss") and np.isfinite(m["grad_norm"]) == (bad != "gradient")
    _assert_trees_equal(frozen.params, state.params)
    _assert_trees_equal(frozen.opt_state, state.opt_state)
    assert bool(frozen.diverged) and int(frozen.diverged_step) == 2 and int(frozen.step) == 2
    after, m = good(frozen, batch, None)  # a finite step changes nothing once frozen; metrics read NaN
    _assert_trees_equal(after.params, state.params)
    assert int(after.step) == 2 and int(after.diverged_step) == 2 and np.isnan(m["loss"]) and np.isnan(m["grad_norm"])


def test_make_step_refuses_an_unknown_gradient_source():
    with pytest.raises(ValueError, match="unknown gradient source 'numeric'"):
        fn.make_step(NET, CE, optim.sgd(0.1), grad="numeric")


def test_make_step_vmapped_over_a_traced_learning_rate_equals_separate_runs(key):
    net, params, ds = _problem(key)
    batch = (ds.x[:16], ds.y[:16])
    factory = lambda lr: optim.sgd(lr, momentum=0.9)  # noqa: E731
    step = fn.make_step(net, CE, factory)
    lrs = jnp.array([0.01, 0.1, 1.0])
    many = jax.vmap(lambda lr: init_state(params, factory(lr), key))(lrs)
    one = jax.jit(step)
    for _ in range(2):
        many, m_many = jax.jit(jax.vmap(step, (0, None, None, 0)))(many, batch, None, lrs)
    for k, lr in enumerate(lrs):
        s = init_state(params, factory(lr), key)
        for _ in range(2):
            s, m = one(s, batch, None, lr)
        np.testing.assert_allclose(m_many["loss"][k], m["loss"], rtol=1e-6)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), fn.pick(many.params, k), s.params
        )
        assert int(many.step[k]) == int(s.step) == 2


def test_train_is_a_scan_over_make_step(key):
    net, params, ds = _problem(key)
    opt = optim.sgd(0.1, momentum=0.9)
    res = train(net, CE, params, ds, optimizer=opt, batch_size=16, epochs=1, key=key, progress=False, record="step")
    step = fn.make_step(net, CE, opt)
    _, k_perm, k_steps = jax.random.split(key, 3)  # one epoch's draws, as train makes them
    idx = jax.random.permutation(k_perm, 96).reshape(6, 16)

    def body(state, inp):
        i, k = inp
        return step(state, (ds.x[i], ds.y[i]), k)

    epoch = jax.jit(lambda s: jax.lax.scan(body, s, (idx, jax.random.split(k_steps, 6))))
    end, per_step = epoch(init_state(params, opt, key))
    np.testing.assert_array_equal(res.step_history["loss"], per_step["loss"])
    np.testing.assert_array_equal(res.step_history["grad_norm"], per_step["grad_norm"])
    _assert_trees_equal(res.params, end.params)
    _assert_trees_equal(res.state.opt_state, end.opt_state)
    assert int(end.step) == int(res.state.step) == 6


def test_make_step_updates_batch_norm_statistics(key):
    net = fn.serial(fn.Dense(4), fn.BatchNorm(momentum=0.9), fn.Tanh(), fn.Dense(3))
    _, _, ds = _problem(key)
    params = net.init(key, (5,))[1]
    state, _ = jax.jit(fn.make_step(net, CE, optim.sgd(0.1)))(
        init_state(params, optim.sgd(0.1), key), (ds.x, ds.y), None
    )
    h = np.asarray(ds.x) @ np.asarray(params[0]["W"]) + np.asarray(params[0]["b"])  # BatchNorm's input
    bn = state.params[1]
    np.testing.assert_allclose(bn["state"]["mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn["state"]["var"], 0.9 + 0.1 * h.var(0, ddof=1), rtol=1e-5)
    assert not np.allclose(bn["gamma"], 1.0)  # the trainable ones took the gradient step


def test_fit_full_batch_freezes_a_diverging_model(key):
    x = jax.random.normal(key, (8, 2))
    y = jax.random.normal(jax.random.fold_in(key, 1), (8, 1))
    net = fn.Dense(1)
    params = fn.init_params(net, (2,), jax.random.split(key, 2))
    p, losses = fit_full_batch(net, fn.mse, params, x, y, optimizer=optim.sgd(50.0), steps=200, record_every=10)
    losses = np.asarray(losses)
    assert losses.shape == (2, 20) and np.all(np.isfinite(losses[:, 0])) and np.all(np.isnan(losses[:, -1]))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(p))


def test_run_to_target_flags_a_diverging_rate():
    wl = bu.Workload(hidden=(8,), target=2.0, n_eval=200, max_steps=40, eval_ratio=1.2)
    r = bu.run_to_target(wl, 4000, (2.0**8,), (0,))
    assert r["diverged"] == [[True]] and r["steps"] == [[bu.NOT_REACHED]]
    curve = np.array(r["curve"])[:, 0, 0]
    assert np.isfinite(curve[0]) and np.isnan(curve[-1])  # the checked loss is NaN once frozen
