"""vmapped sweeps: each model equals its own run; 16 learning rates are one compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet import initializers, optim
from fnnet.core import Loss
from fnnet.data import Dataset
from fnnet.sweeps import init_params, pick, stack, sweep
from fnnet.training import init_state, shares_key, train


def _data(key):
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (64, 4))
    return Dataset(x, jnp.argmax(x @ jax.random.normal(kw, (4, 3)), axis=1).astype(jnp.int32))


NET = fn.serial(fn.Dense(8), fn.Tanh(), fn.Dense(3))


@pytest.mark.parametrize("one_key", [False, True], ids=["K keys", "one key"])
def test_each_sweep_result_equals_training_that_model_alone(key, one_key):
    """With K keys the vmap batches the key; with one (here K equal keys) it enters unbatched and the batch
    is shared. Either way model k is its own run, a diverged one included: frozen with its own key."""
    ds = _data(key)
    ds = Dataset(ds.x, jax.nn.one_hot(ds.y, 3))  # mse on one-hot rows: lr 1e4 overflows
    net = fn.serial(fn.Dense(8), fn.Relu(), fn.Dense(3))
    lrs = jnp.array([0.05, 0.2, 0.5, 1e4])  # the last one diverges; the others must not care
    keys = jax.random.split(jax.random.fold_in(key, 1), 4)
    if one_key:
        keys = jnp.stack([keys[0]] * 4)
    params = init_params(net, (4,), jax.random.split(jax.random.fold_in(key, 2), 4))
    kw = dict(batch_size=16, epochs=3, record="step", test_data=ds, progress=False)
    res = sweep(
        net, fn.mse, params, ds, keys=keys, learning_rates=lrs, optimizer=lambda lr: optim.sgd(lr, momentum=0.9), **kw
    )
    assert res.history["test_loss"].shape == (4, 3) and res.step_history["loss"].shape == (4, 12)
    assert list(res.diverged) == [False, False, False, True]
    for k in (1, 3):
        alone = train(
            net, fn.mse, pick(params, k), ds, key=keys[k], optimizer=optim.sgd(float(lrs[k]), momentum=0.9), **kw
        )
        one = pick(res, k)
        assert bool(one.diverged) == bool(alone.diverged) and int(one.diverged_step) == int(alone.diverged_step)
        np.testing.assert_array_equal(jax.random.key_data(one.state.key), jax.random.key_data(alone.state.key))
        np.testing.assert_allclose(one.step_history["loss"], alone.step_history["loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(one.history["test_loss"], alone.history["test_loss"], rtol=1e-5, atol=1e-6)
        # float32 rounding, which the sum orders of batched and unbatched products differ in, grows with
        # the diverging run's weights (1e15 here): the absolute tolerance scales with each leaf
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 + 1e-6 * np.max(np.abs(b))),
            one.params,
            alone.params,
        )


def test_sweep_over_initializers_with_a_shared_key(key):
    ds = _data(key)
    inits = [initializers.he_normal(), initializers.glorot_uniform(), initializers.normal(1.0)]
    nets = [fn.serial(fn.Dense(8, w_init=i), fn.Tanh(), fn.Dense(3, w_init=i)) for i in inits]
    params = stack([n.init(key, (4,))[1] for n in nets])
    res = sweep(
        NET,
        fn.softmax_cross_entropy,
        params,
        ds,
        keys=key,
        optimizer=optim.sgd(0.1),
        batch_size=8,
        epochs=2,
        progress=False,
    )
    assert res.history["train_loss"].shape == (3, 2)
    alone = train(
        nets[2],
        fn.softmax_cross_entropy,
        pick(params, 2),
        ds,
        key=key,
        optimizer=optim.sgd(0.1),
        batch_size=8,
        epochs=2,
        progress=False,
    )
    np.testing.assert_allclose(res.history["train_loss"][2], alone.history["train_loss"], rtol=1e-5)


def test_shares_key_looks_at_the_runs_still_training(key):
    opt = optim.sgd(0.1)
    params = init_params(NET, (4,), jax.random.split(key, 3))
    k0, k1 = jax.random.split(jax.random.fold_in(key, 1))
    state = jax.vmap(lambda p, k: init_state(p, opt, k))(params, jnp.stack([k0, k0, k1]))
    assert not shares_key(state)
    assert shares_key(state._replace(diverged=jnp.array([False, False, True])))
    assert shares_key(jax.vmap(lambda p: init_state(p, opt, k0))(params))
    assert not shares_key(state._replace(diverged=jnp.ones(3, bool)))  # nothing left to share a key


def test_sixteen_learning_rates_are_one_compiled_program(key):
    """The loss's forward runs at trace time only. A sweep of 16 traces it exactly as often as a single
    run does (once per program, not once per model), and another 16 learning rates reuse the program:
    the rates are traced values, not constants baked into 16 compilations."""
    ds = _data(key)
    traces = []

    def counting_forward(pred, target):
        traces.append(1)
        return fn.softmax_cross_entropy.forward(pred, target)

    loss = Loss(counting_forward, fn.softmax_cross_entropy.backward)
    params = init_params(NET, (4,), jax.random.split(key, 16))
    kw = dict(batch_size=16, progress=False, test_data=ds)
    res = sweep(NET, loss, params, ds, keys=key, learning_rates=jnp.logspace(-2, 0, 16), epochs=3, **kw)
    per_sweep = len(traces)
    traces.clear()
    train(NET, loss, pick(params, 0), ds, key=key, optimizer=optim.sgd(0.1), epochs=1, **kw)
    assert per_sweep == len(traces) > 0
    traces.clear()
    again = sweep(NET, loss, params, ds, keys=key, learning_rates=jnp.logspace(-3, -1, 16), epochs=2, **kw)
    assert len(traces) == 0
    assert res.history["train_loss"].shape == (16, 3) and again.history["train_loss"].shape == (16, 2)
    assert not np.allclose(res.history["train_loss"][:, :2], again.history["train_loss"])


def test_sweep_validates(key):
    ds = _data(key)
    params = init_params(NET, (4,), jax.random.split(key, 3))
    with pytest.raises(ValueError, match="learning_rate"):
        sweep(
            NET,
            fn.softmax_cross_entropy,
            params,
            ds,
            keys=key,
            learning_rates=jnp.array([0.1, -1.0, 0.2]),
            batch_size=8,
            epochs=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="stacked over models"):
        sweep(
            NET,
            fn.softmax_cross_entropy,
            NET.init(key, (4,))[1],
            ds,
            keys=key,
            optimizer=optim.sgd(0.1),
            batch_size=8,
            epochs=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="3 keys"):
        sweep(
            NET,
            fn.softmax_cross_entropy,
            params,
            ds,
            keys=jax.random.split(key, 2),
            optimizer=optim.sgd(0.1),
            batch_size=8,
            epochs=1,
            progress=False,
        )
