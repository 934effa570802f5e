"""fn.optim.adam / adamw against optax over 20 steps (constant rate, schedule, masks), and the schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet as fn

STEPS = 20


def _params(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "W": jax.random.normal(k1, (3, 4)),
        "b": jax.random.normal(k2, (4,)),
        "state": {"mean": jax.random.normal(k3, (4,))},  # a buffer: zero gradient, as in training
    }


def _run(opt, params, steps=STEPS):
    """``steps`` updates with fresh gradients drawn from keys (zero on the buffer); the params and state after."""
    state = opt.init(params)
    update = jax.jit(opt.update)
    for i in range(steps):
        k = jax.random.fold_in(jax.random.key(42), i)
        grads = jax.tree_util.tree_map(lambda a, k=k: jax.random.normal(k, a.shape, a.dtype), params)
        grads["state"] = jax.tree_util.tree_map(jnp.zeros_like, params["state"])
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _close(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


SCHEDULE = (fn.optim.warmup_cosine(3e-2, 5, STEPS, 1e-3), optax.warmup_cosine_decay_schedule(0.0, 3e-2, 5, STEPS, 1e-3))


@pytest.mark.parametrize("scheduled", [False, True])
def test_adam_equals_optax_adam(key, scheduled):
    ours_lr, optax_lr = SCHEDULE if scheduled else (1e-2, 1e-2)
    p0 = _params(key)
    ours, our_state = _run(fn.optim.adam(ours_lr, b1=0.8, b2=0.99, eps=1e-7), p0)
    ref, ref_state = _run(optax.adam(optax_lr, b1=0.8, b2=0.99, eps=1e-7), p0)
    _close(ours, ref)
    _close(our_state.mu, ref_state[0].mu)
    _close(our_state.nu, ref_state[0].nu)
    assert int(our_state.count) == int(ref_state[0].count) == STEPS
    assert float(jnp.max(jnp.abs(ours["W"] - p0["W"]))) > 1e-2  # the steps did move the weights
    np.testing.assert_array_equal(ours["state"]["mean"], p0["state"]["mean"])  # Adam leaves buffers alone


@pytest.mark.parametrize("scheduled", [False, True])
def test_adamw_default_equals_optax_adamw_masked_to_the_trained_leaves(key, scheduled):
    ours_lr, optax_lr = SCHEDULE if scheduled else (1e-2, 1e-2)
    p0 = _params(key)
    ours, _ = _run(fn.optim.adamw(ours_lr, weight_decay=0.1), p0)
    ref, _ = _run(optax.adamw(optax_lr, weight_decay=0.1, mask=fn.optim.trainable_mask), p0)
    _close(ours, ref)
    np.testing.assert_array_equal(ours["state"]["mean"], p0["state"]["mean"])  # mask=None spares the buffer
    decayed_everywhere, _ = _run(optax.adamw(optax_lr, weight_decay=0.1), p0)  # optax's mask=None decays it
    assert float(jnp.max(jnp.abs(decayed_everywhere["state"]["mean"] - p0["state"]["mean"]))) > 1e-4


def test_adamw_with_an_explicit_mask_equals_optax(key):
    p0 = _params(key)
    mask = {"W": True, "b": False, "state": {"mean": True}}
    ours, _ = _run(fn.optim.adamw(1e-2, weight_decay=0.5, mask=mask), p0)
    ref, _ = _run(optax.adamw(1e-2, weight_decay=0.5, mask=mask), p0)
    _close(ours, ref)
    as_function, _ = _run(fn.optim.adamw(1e-2, weight_decay=0.5, mask=lambda p: mask), p0)
    _close(as_function, ref)
    undecayed, _ = _run(fn.optim.adam(1e-2), p0)
    _close(ours["b"], undecayed["b"])  # the masked-out bias moves as under plain Adam
    assert float(jnp.max(jnp.abs(ours["W"] - undecayed["W"]))) > 1e-4


def test_adamw_decay_is_decoupled_from_the_moments(key):
    """With a zero gradient Adam's step is 0, so AdamW's update is exactly −α λ θ."""
    params = _params(key)
    opt = fn.optim.adamw(0.1, weight_decay=0.01, mask=lambda p: jax.tree_util.tree_map(lambda _: True, p))
    updates, _ = opt.update(jax.tree_util.tree_map(jnp.zeros_like, params), opt.init(params), params)
    _close(updates, jax.tree_util.tree_map(lambda p: -0.1 * 0.01 * p, params), rtol=1e-6, atol=0)


def test_adam_chains_and_takes_a_traced_learning_rate(key):
    p0 = _params(key)
    chained, _ = _run(optax.chain(fn.optim.clip_by_global_norm(1.0), fn.optim.adam(1e-2)), p0, steps=3)
    ref, _ = _run(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)), p0, steps=3)
    _close(chained, ref)
    grads = jax.tree_util.tree_map(jnp.ones_like, p0)

    def first_update(lr):
        opt = fn.optim.adam(lr)
        return opt.update(grads, opt.init(p0))[0]["W"]

    per_lr = jax.vmap(first_update)(jnp.array([1e-3, 1e-2]))
    np.testing.assert_allclose(per_lr[:, 0, 0], [-1e-3, -1e-2], rtol=1e-5)  # step 1: u = −α g/|g| (ε aside)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="adam needs a learning_rate > 0"):
        fn.optim.adam(0.0)
    with pytest.raises(ValueError, match="adam needs b1 < 1, got 1.0"):
        fn.optim.adam(1e-3, b1=1.0)
    with pytest.raises(ValueError, match="adamw needs a weight_decay >= 0"):
        fn.optim.adamw(1e-3, weight_decay=-1e-4)
    with pytest.raises(TypeError, match="adam needs a learning_rate that is a real number"):
        fn.optim.adam("1e-3")
    opt = fn.optim.adamw(1e-3)
    params = {"W": jnp.ones(2)}
    with pytest.raises(ValueError, match="adamw needs the params"):
        opt.update(params, opt.init(params))


# ----------------------------------------------------------------------------------------------


def test_warmup_cosine_equals_optax_and_has_its_shape():
    ours = fn.optim.warmup_cosine(1.0, 10, 110, end=0.1)
    ref = optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, 0.1)
    steps = jnp.arange(0, 130)
    np.testing.assert_allclose(jax.vmap(ours)(steps), jax.vmap(ref)(steps), rtol=1e-6, atol=1e-7)
    assert float(ours(0)) == 0.0 and float(ours(5)) == pytest.approx(0.5)
    assert float(ours(10)) == pytest.approx(1.0) and float(ours(60)) == pytest.approx(0.55)
    assert float(ours(110)) == pytest.approx(0.1) and float(ours(200)) == pytest.approx(0.1)
    no_warmup = fn.optim.warmup_cosine(2.0, 0, 4)
    np.testing.assert_allclose(jax.vmap(no_warmup)(jnp.arange(5)), 2.0 * 0.5 * (1 + np.cos(np.pi * np.arange(5) / 4)))


def test_linear_warmup_equals_optax_linear_schedule():
    ours = fn.optim.linear_warmup(0.3, 6, init=0.1)
    ref = optax.linear_schedule(0.1, 0.3, 6)
    steps = jnp.arange(0, 12)
    np.testing.assert_allclose(jax.vmap(ours)(steps), jax.vmap(ref)(steps), rtol=1e-6)
    assert float(fn.optim.linear_warmup(0.5, 0)(3)) == 0.5


def test_schedules_refuse_bad_steps():
    with pytest.raises(ValueError, match="total_steps > warmup_steps"):
        fn.optim.warmup_cosine(1.0, 10, 10)
    with pytest.raises(TypeError, match="warmup_steps as an integer"):
        fn.optim.warmup_cosine(1.0, 2.5, 10)
    with pytest.raises(ValueError, match="a peak >= 0"):
        fn.optim.linear_warmup(-1.0, 3)
