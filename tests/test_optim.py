"""The hand-written optimizers against optax, step for step, and their validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnet import optim


def _tree(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"W": jax.random.normal(k1, (5, 3)), "b": jax.random.normal(k2, (3,)), "c": (jax.random.normal(k3, (2,)),)}


def _run(opt, params, grad_keys):
    state = opt.init(params)
    out = []
    for k in grad_keys:
        # gradients depend on the params so that the trajectories would drift apart on any mismatch
        g = jax.tree_util.tree_map(lambda p, n: jnp.sin(p) + n, params, _tree(k))
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.5, "nesterov": True},
        {"momentum": 0.9, "nesterov": True},
    ],
)
def test_sgd_matches_optax_step_for_step(key, kwargs):
    params = _tree(key)
    keys = jax.random.split(jax.random.fold_in(key, 1), 20)
    ours = _run(optim.sgd(0.05, **kwargs), params, keys)
    ref_kwargs = dict(kwargs)
    theirs = _run(optax.sgd(0.05, **ref_kwargs), params, keys)
    for a, b in zip(ours, theirs):
        jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)


def test_sgd_schedule_matches_optax(key):
    sched = optax.exponential_decay(0.1, transition_steps=3, decay_rate=0.5)
    params = _tree(key)
    keys = jax.random.split(jax.random.fold_in(key, 2), 12)
    ours = _run(optim.sgd(sched, momentum=0.9), params, keys)
    theirs = _run(optax.sgd(sched, momentum=0.9), params, keys)
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(x, y), ours[-1], theirs[-1])


def test_sgd_accepts_a_traced_learning_rate(key):
    params = _tree(key)
    g = _tree(jax.random.fold_in(key, 3))

    def step(lr):
        opt = optim.sgd(lr, momentum=0.9)
        u, _ = opt.update(g, opt.init(params), params)
        return u["W"]

    lrs = jnp.array([0.1, 0.2, 0.4])
    batched = jax.jit(jax.vmap(step))(lrs)
    for i, lr in enumerate([0.1, 0.2, 0.4]):
        np.testing.assert_allclose(batched[i], step(lr), rtol=1e-6)


def test_clip_by_global_norm_matches_optax(key):
    g = jax.tree_util.tree_map(lambda x: 10 * x, _tree(key))
    for c in (0.5, 1e6):
        ours, _ = optim.clip_by_global_norm(c).update(g, optax.EmptyState())
        theirs, _ = optax.clip_by_global_norm(c).update(g, optax.EmptyState())
        jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), ours, theirs)
    clipped, _ = optim.clip_by_global_norm(0.5).update(g, optax.EmptyState())
    np.testing.assert_allclose(optim.global_norm(clipped), 0.5, rtol=1e-6)
    same, _ = optim.clip_by_global_norm(float("inf")).update(g, optax.EmptyState())  # inf: clipping off
    jax.tree_util.tree_map(np.testing.assert_array_equal, same, g)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="clip_by_global_norm needs a max_norm > 0"):
            optim.clip_by_global_norm(bad)


def test_weight_decay_and_l1_are_gradients_of_their_penalties(key):
    params = _tree(key)
    g = _tree(jax.random.fold_in(key, 4))
    lam = 0.3
    l2, _ = optim.add_weight_decay(lam).update(g, optax.EmptyState(), params)
    want = jax.grad(lambda p: 0.5 * lam * sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(p)))(params)
    jax.tree_util.tree_map(lambda a, b, c: np.testing.assert_allclose(a, b + c, rtol=1e-6), l2, g, want)
    l1, _ = optim.add_l1_penalty(lam).update(g, optax.EmptyState(), params)
    jax.tree_util.tree_map(
        lambda a, b, p: np.testing.assert_allclose(a, b + lam * jnp.sign(p), rtol=1e-6), l1, g, params
    )
    # sign(0) = 0: a zero weight gets no push
    z, _ = optim.add_l1_penalty(lam).update({"w": jnp.ones(2)}, None, {"w": jnp.zeros(2)})
    np.testing.assert_array_equal(z["w"], jnp.ones(2))


def test_weight_decay_mask_and_chain_with_optax(key):
    params = _tree(key)
    g = _tree(jax.random.fold_in(key, 5))
    opt = optax.chain(
        optim.add_weight_decay(0.1, mask=lambda p: {"W": True, "b": False, "c": (False,)}),
        optim.sgd(0.5),
    )
    u, _ = opt.update(g, opt.init(params), params)
    np.testing.assert_allclose(u["W"], -0.5 * (g["W"] + 0.1 * params["W"]), rtol=1e-6)
    np.testing.assert_allclose(u["b"], -0.5 * g["b"], rtol=1e-6)


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_non_positive_learning_rate_is_rejected(lr):
    with pytest.raises(ValueError, match="learning_rate"):
        optim.sgd(lr)
    with pytest.raises(ValueError, match="learning_rate"):
        optim.get("adam", lr)


def test_bad_momentum_and_names():
    with pytest.raises(ValueError, match="momentum"):
        optim.sgd(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="momentum"):
        optim.sgd(0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="nesterov"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        optim.get("rmsprop", 0.1)
    with pytest.raises(ValueError, match="params"):
        optim.add_weight_decay(0.1).update({"w": jnp.ones(2)}, None)
