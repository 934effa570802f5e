"""State and inspection: the Layer contract's fields and names, buffers recognizable from params alone,
weight decay sparing them, checkpoint layout versions, params files, and custom_vjp handing back the cache."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet as fn
from fnnet import checkpoint, optim
from fnnet.training import TrainResult, init_state, make_step


def _bn_net():
    return fn.serial(fn.Dense(4), fn.BatchNorm(), fn.Tanh(), fn.Dense(2))


def _batch(key, n=6):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, 3)) * 2 + 1, jax.random.normal(ky, (n, 2))


# ----------------------------------------------------------------------------------------------
# the Layer contract


def test_layer_has_the_final_fields_and_positional_construction_still_works(key):
    assert fn.Layer._fields == ("init", "forward", "backward", "update_state", "jvp", "name")
    dense = fn.Dense(3)
    old_style = fn.Layer(dense.init, dense.forward, dense.backward, None)  # positional, as before
    assert old_style.update_state is None and old_style.jvp is None and old_style.name is None
    _, p = old_style.init(key, (2,))
    np.testing.assert_array_equal(old_style.forward(p, jnp.ones((1, 2)))[0], dense.forward(p, jnp.ones((1, 2)))[0])


def test_layer_names_and_repr_read_well():
    net = fn.serial(fn.Dense(64), fn.Flatten(), fn.residual(fn.Dense(64)), fn.BatchNorm(), fn.Dense(10))
    assert net.name == "serial(Dense(64), Flatten, residual(Dense(64)), BatchNorm, Dense(10))"
    assert repr(fn.Dense(64)) == "Layer(Dense(64))" and "0x" not in repr(net)
    names = [
        fn.Conv2D(8, 3).name,
        fn.MaxPool(2).name,
        fn.AvgPool(2).name,
        fn.Dropout(0.1).name,
        fn.RNN(5).name,
        fn.LSTM(5).name,
        fn.LayerNorm().name,
    ]
    assert names == ["Conv2D(8)", "MaxPool(2)", "AvgPool(2)", "Dropout(0.1)", "RNN(5)", "LSTM(5)", "LayerNorm"]


def _module_level_init(key, in_shape, dtype=jnp.float32):
    return tuple(in_shape), ()


def test_a_hand_made_layer_without_a_name_shows_the_function_that_built_it():
    def Doubler():
        def init(key, in_shape, dtype=jnp.float32):
            return tuple(in_shape), ()

        return fn.Layer(init, lambda p, x, **kw: (2 * x, ()), lambda p, c, dy: ((), 2 * dy))

    assert repr(Doubler()) == "Layer(Doubler)"
    assert fn.Layer(_module_level_init, None, None).label == "Layer"  # no enclosing function to name it by
    assert repr(fn.Layer(*Doubler()[:3], name="x2")) == "Layer(x2)"


def test_layers_stay_hashable_and_equal_by_fields_for_jit_static_args(key):
    dense = fn.Dense(3)
    same = fn.Layer(*dense)
    assert same == dense and hash(same) == hash(dense)
    assert dense._replace(name="other") != dense

    calls = []

    def apply(layer, p, x):
        calls.append(1)
        return layer.forward(p, x)[0]

    f = jax.jit(apply, static_argnums=0)
    _, p = dense.init(key, (2,))
    f(dense, p, jnp.ones((1, 2)))
    f(same, p, jnp.ones((1, 2)))  # an equal Layer hits the cache: traced once
    assert len(calls) == 1


def test_every_public_layer_constructor_documents_forward_and_backward():
    for ctor in (fn.Dense, fn.Flatten, fn.Conv2D, fn.MaxPool, fn.AvgPool, fn.Dropout, fn.BatchNorm, fn.LayerNorm):
        doc = ctor.__doc__
        assert "Backward" in doc and ("=" in doc or "->" in doc), ctor.__name__
    for ctor in (fn.RNN, fn.LSTM, fn.serial, fn.residual):
        assert "Backward" in ctor.__doc__ or "backward" in ctor.__doc__.lower(), ctor.__name__


# ----------------------------------------------------------------------------------------------
# buffers recognizable from params alone


def test_trainable_mask_needs_no_layer_and_marks_only_buffers(key):
    _, params = _bn_net().init(key, (3,))
    mask = optim.trainable_mask(params)
    assert mask[1] == {"gamma": True, "beta": True, "state": {"mean": False, "var": False}}
    assert mask[0] == {"W": True, "b": True} and mask[2] == ()
    shapes = jax.eval_shape(lambda k: _bn_net().init(k, (3,))[1], key)
    assert optim.trainable_mask(shapes) == mask  # works on ShapeDtypeStructs too


@pytest.mark.parametrize("penalty", [optim.add_weight_decay, optim.add_l1_penalty])
def test_fnnet_penalties_spare_buffers_by_default_and_an_explicit_mask_overrides(key, penalty):
    _, params = _bn_net().init(key, (3,))
    params = jax.tree_util.tree_map(lambda a: a + 0.5, params)  # no zero leaves: sign(θ) = 1 everywhere
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    tx = penalty(0.1)
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(out[1]["state"]["mean"], 0)
    np.testing.assert_array_equal(out[1]["state"]["var"], 0)
    assert np.all(np.asarray(out[1]["gamma"]) != 0) and np.all(np.asarray(out[0]["W"]) != 0)
    everything = penalty(0.1, mask=lambda p: jax.tree_util.tree_map(lambda _: True, p))
    out, _ = everything.update(grads, everything.init(params), params)
    assert np.all(np.asarray(out[1]["state"]["var"]) != 0)


def test_trainable_mask_as_optax_mask_keeps_adamw_off_the_buffers(key):
    net = _bn_net()
    _, params = net.init(key, (3,))
    x, y = _batch(key)
    tx = optax.adamw(1e-2, weight_decay=0.5, mask=optim.trainable_mask)
    state = init_state(params, tx, key)
    new, _ = jax.jit(make_step(net, fn.mse, tx))(state, (x, y), None)
    # the statistics moved only by update_state: exactly what it gives on the old params' cache
    _, cache = net.forward(params, x, train=True)
    expected = net.update_state(params, cache)[1]["state"]
    for k in ("mean", "var"):
        np.testing.assert_allclose(new.params[1]["state"][k], expected[k], rtol=1e-6)
    unmasked = optax.adamw(1e-2, weight_decay=0.5)
    bad, _ = jax.jit(make_step(net, fn.mse, unmasked))(init_state(params, unmasked, key), (x, y), None)
    assert not np.allclose(bad.params[1]["state"]["var"], expected["var"], rtol=1e-6)  # decayed before update


# ----------------------------------------------------------------------------------------------
# checkpoints carry a layout version


def _result(key):
    net = _bn_net()
    _, params = net.init(key, (3,))
    opt = optim.sgd(0.1, momentum=0.9)
    res = TrainResult(params, init_state(params, opt, key), {"loss": np.zeros(2)}, {}, 1, 0.5)
    return res, params, opt


def test_checkpoint_records_its_layout_version(tmp_path, key):
    res, params, opt = _result(key)
    path = tmp_path / "c.npz"
    checkpoint.save(path, res, "fp")
    assert checkpoint.info(path) == checkpoint.CheckpointInfo("fp", 2, checkpoint.LAYOUT_VERSION)
    assert checkpoint.load(path, params, opt, key, "fp") is not None


@pytest.mark.parametrize("version", [None, 1, 3])
def test_a_checkpoint_of_another_layout_version_is_refused_in_one_line(tmp_path, key, version):
    """An unversioned (older) file has the very same leaf shapes for BatchNorm's flat layout: it would
    load wrongly, so it is refused, not loaded and not treated as damaged."""
    res, params, opt = _result(key)
    path = tmp_path / "c.npz"
    checkpoint.save(path, res, "fp")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "meta_layout_version"}
    if version is not None:
        arrays["meta_layout_version"] = np.asarray(version)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    written = 1 if version is None else version
    assert checkpoint.info(path).version == written  # info still reads it, and says which
    with pytest.raises(checkpoint.CheckpointVersionError) as e:
        checkpoint.load(path, params, opt, key, "fp")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (
        f"checkpoint {path} was written by fnnet's params layout version {written}; this fnnet reads version "
        f"{checkpoint.LAYOUT_VERSION} — retrain or convert"
    )


# ----------------------------------------------------------------------------------------------
# params files


def test_params_round_trip_with_structure_and_dtypes(tmp_path, key):
    net = fn.serial(fn.Dense(4), fn.BatchNorm(), fn.Tanh(), fn.residual(fn.Dense(4)))
    init_out = net.init(key, (3,))
    path = tmp_path / "p.npz"
    checkpoint.save_params(path, init_out[1])
    for like in (None, init_out[1], init_out, jax.eval_shape(lambda k: net.init(k, (3,))[1], key)):
        back = checkpoint.load_params(path, like=like)
        assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(init_out[1])
        for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(init_out[1])):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    with np.load(path, allow_pickle=False) as f:  # readable without pickle
        assert int(f["meta_layout_version"]) == checkpoint.LAYOUT_VERSION
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_load_params_names_the_first_leaf_that_does_not_fit(tmp_path, key):
    path = tmp_path / "p.npz"
    checkpoint.save_params(path, _bn_net().init(key, (3,))[1])
    wider = fn.serial(fn.Dense(5), fn.BatchNorm(), fn.Tanh(), fn.Dense(2)).init(key, (3,))
    with pytest.raises(fn.ShapeError, match=r"params\[0\]\['W'\] has shape \(3, 4\), expected \(3, 5\)"):
        checkpoint.load_params(path, like=wider)
    with jax.enable_x64(True):
        f64 = _bn_net().init(key, (3,), jnp.float64)[1]
        with pytest.raises(fn.DTypeError, match=r"params\[0\]\['W'\] is float32, expected float64"):
            checkpoint.load_params(path, like=f64)
    no_bn = fn.serial(fn.Dense(4), fn.LayerNorm(), fn.Tanh(), fn.Dense(2)).init(key, (3,))[1]
    with pytest.raises(ValueError, match=r"has params\[1\]\['state'\]\['mean'\], which the expected params lack"):
        checkpoint.load_params(path, like=no_bn)
    with pytest.raises(ValueError, match=r"has no params\[4\]"):
        checkpoint.load_params(path, like=_bn_net().init(key, (3,))[1] + ({"W": jnp.ones(1)},))


def test_load_params_refuses_damage_and_other_versions(tmp_path, key):
    path = tmp_path / "p.npz"
    checkpoint.save_params(path, fn.Dense(2).init(key, (3,))[1])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a whole params file"):
        checkpoint.load_params(path)
    old = tmp_path / "old.npz"
    np.savez(old, leaf_0=np.ones(2), meta_tree=np.asarray('{"dict": {"b": 0}}'))
    with pytest.raises(checkpoint.CheckpointVersionError, match="params file .* layout version 1; this fnnet reads"):
        checkpoint.load_params(old)
    with pytest.raises(TypeError, match="dicts, tuples, lists and arrays, got a str"):
        checkpoint.save_params(tmp_path / "bad.npz", {"W": "not an array"})


# ----------------------------------------------------------------------------------------------
# custom_vjp hands back the cache


def test_custom_vjp_with_aux_updates_batch_norm_statistics_as_the_manual_path(key):
    net = _bn_net()
    _, params = net.init(key, (3,))
    x, y = _batch(key)
    opt = optim.sgd(0.1)
    manual, _ = jax.jit(make_step(net, fn.mse, opt))(init_state(params, opt, key), (x, y), None)

    f = fn.custom_vjp(net, has_aux=True)
    loss = fn.custom_vjp_loss(fn.mse)

    def objective(p):
        pred, cache = f(p, x)
        return loss(pred, y), cache

    (_, cache), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    stepped = net.update_state(optax.apply_updates(params, updates), cache)
    for a, b in zip(jax.tree_util.tree_leaves(stepped), jax.tree_util.tree_leaves(manual.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(stepped[1]["state"]["var"], params[1]["state"]["var"])  # the statistics moved

    via_source, _ = jax.jit(make_step(net, fn.mse, opt, grad="custom_vjp"))(init_state(params, opt, key), (x, y), None)
    for a, b in zip(jax.tree_util.tree_leaves(via_source.params), jax.tree_util.tree_leaves(manual.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_custom_vjp_aux_cache_takes_integer_leaves_and_no_gradient(key):
    """MaxPool's cache holds integer arg-max indices; the aux output must not break differentiation."""
    net = fn.serial(fn.Conv2D(2, 3), fn.MaxPool(2), fn.Flatten(), fn.Dense(1))
    _, params = net.init(key, (6, 6, 1))
    x = jax.random.normal(key, (2, 6, 6, 1))
    f = fn.custom_vjp(net, has_aux=True)
    g = jax.grad(lambda p: jnp.sum(f(p, x)[0]))(params)
    manual = net.backward(params, net.forward(params, x)[1], jnp.ones((2, 1)))[0]
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(manual)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    y, cache = f(params, x)
    assert cache[1][0].dtype == jnp.int32 and y.shape == (2, 1)
