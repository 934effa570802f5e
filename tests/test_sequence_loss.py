"""sequence_cross_entropy: the token mean through log-sum-exp, the optional mask, the fused rule, the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import DTypeError, ShapeError

sce = fn.sequence_cross_entropy


def _data(key, B=3, T=4, V=5, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (B, T, V), dtype) * 2.0, jax.random.randint(k2, (B, T), 0, V)


def _reference(logits: np.ndarray, labels: np.ndarray, w: np.ndarray) -> float:
    """Σ w ℓ / Σ w in float64 NumPy, ℓ = log Σ e^z − z_y, with dropped tokens never read."""
    z = logits.astype(np.float64)
    total = 0.0
    for b, t in zip(*np.nonzero(w)):
        row = z[b, t]
        total += w[b, t] * (np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[labels[b, t]])
    return total / w.sum() if w.sum() else 0.0


def test_without_mask_it_is_the_token_mean_of_softmax_cross_entropy(key):
    logits, labels = _data(key)
    loss, _ = sce.forward(logits, labels)
    flat, _ = fn.softmax_cross_entropy.forward(logits.reshape(-1, 5), labels.reshape(-1))
    np.testing.assert_allclose(loss, flat, rtol=1e-6)
    np.testing.assert_allclose(loss, _reference(np.asarray(logits), np.asarray(labels), np.ones((3, 4))), rtol=1e-6)


def test_with_a_mask_it_is_the_mean_over_kept_tokens(key):
    logits, labels = _data(key)
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], bool)
    loss, _ = sce.forward(logits, (labels, mask))
    np.testing.assert_allclose(
        loss, _reference(np.asarray(logits), np.asarray(labels), np.asarray(mask, float)), rtol=1e-6
    )
    weights = jnp.array([[0.5, 2.0, 1.0, 0.0], [1.0, 0.0, 0.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    wloss, _ = sce.forward(logits, (labels, weights))
    np.testing.assert_allclose(
        wloss, _reference(np.asarray(logits), np.asarray(labels), np.asarray(weights)), rtol=1e-6
    )


@pytest.mark.parametrize("masked", [False, True])
def test_the_fused_rule_is_the_gradient_of_the_forward(key, masked):
    with jax.enable_x64(True):
        logits, labels = _data(key, dtype=jnp.float64)
        target = (labels, jax.random.bernoulli(jax.random.key(3), 0.6, labels.shape)) if masked else labels
        value, cache = sce.forward(logits, target)
        auto_value, auto = jax.value_and_grad(lambda z: sce.forward(z, target)[0])(logits)
        np.testing.assert_allclose(value, auto_value, rtol=1e-14)
        np.testing.assert_allclose(sce.backward(cache), auto, rtol=1e-12, atol=1e-15)


def test_a_mask_with_no_kept_token_gives_loss_0_and_gradient_0(key):
    logits, labels = _data(key)
    mask = jnp.zeros(labels.shape, bool)
    value, cache = sce.forward(logits, (labels, mask))
    grad = sce.backward(cache)
    assert float(value) == 0.0 and np.all(np.asarray(grad) == 0.0)
    auto = jax.grad(lambda z: sce.forward(z, (labels, mask))[0])(logits)
    assert np.all(np.asarray(auto) == 0.0)


def test_dropped_tokens_are_never_read(key):
    """Padding labels (−100, PyTorch's ignore_index habit) raise nothing, and NaN or inf logits there leak nowhere."""
    logits, labels = _data(key)
    mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    padded = jnp.where(mask, labels, -100)
    poisoned = logits.at[0, 2].set(jnp.nan).at[2, 3, 1].set(jnp.inf)
    value, cache = sce.forward(poisoned, (padded, mask))
    clean, _ = sce.forward(logits, (labels, mask))
    np.testing.assert_allclose(value, clean, rtol=1e-6)
    grad = np.asarray(sce.backward(cache))
    assert np.all(np.isfinite(grad)) and np.all(grad[~np.asarray(mask)] == 0.0)


def test_large_logits_go_through_log_sum_exp(key):
    logits, labels = _data(key)
    value, cache = sce.forward(logits * 1e4, labels)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(sce.backward(cache))))


def test_out_of_range_labels_raise_eagerly_and_poison_under_jit(key):
    logits, labels = _data(key)
    bad = labels.at[1, 2].set(5)
    with pytest.raises(ValueError, match=r"label 5, out of range for a vocabulary of 5 .*or be masked out"):
        sce.forward(logits, bad)
    value = jax.jit(lambda z, y: sce.forward(z, y)[0])(logits, bad)
    assert np.isnan(float(value))
    grad = np.asarray(jax.jit(lambda z, y: sce.backward(sce.forward(z, y)[1]))(logits, bad))
    assert np.all(np.isnan(grad[1, 2])) and np.all(np.isfinite(np.delete(grad.reshape(12, 5), 6, axis=0)))


def test_bad_inputs_name_the_problem(key):
    logits, labels = _data(key)
    with pytest.raises(DTypeError, match="needs integer labels"):
        sce.forward(logits, labels.astype(jnp.float32))
    with pytest.raises(ShapeError, match=r"labels must have shape \(3, 4\)"):
        sce.forward(logits, labels[:, :3])
    with pytest.raises(ShapeError, match=r"expects logits \(batch, time, vocabulary\), got \(12, 5\)"):
        sce.forward(logits.reshape(12, 5), labels.reshape(12))
    with pytest.raises(ShapeError, match=r"the mask must have the labels' shape \(3, 4\)"):
        sce.forward(logits, (labels, jnp.ones((3, 5), bool)))
    with pytest.raises(ValueError, match=r"labels or \(labels, mask\), got a sequence of 3"):
        sce.forward(logits, (labels, labels, labels))
    with pytest.raises(DTypeError, match="floating-point logits"):
        sce.forward(labels[..., None], labels)


def test_jit_and_vmap_agree_with_eager(key):
    logits = jax.random.normal(key, (2, 3, 4, 5))
    labels = jax.random.randint(jax.random.key(5), (2, 3, 4), 0, 5)
    mask = jax.random.bernoulli(jax.random.key(6), 0.7, (2, 3, 4))

    def both(z, y, m):
        value, cache = sce.forward(z, (y, m))
        return value, sce.backward(cache)

    values, grads = jax.jit(jax.vmap(both))(logits, labels, mask)
    for k in range(2):
        v, g = both(logits[k], labels[k], mask[k])
        np.testing.assert_allclose(values[k], v, rtol=1e-6)
        np.testing.assert_allclose(grads[k], g, rtol=1e-6, atol=1e-8)


def test_half_precision_logits_give_a_loss_of_their_dtype(key):
    logits, labels = _data(key)
    value, cache = sce.forward(logits.astype(jnp.bfloat16), labels)
    assert value.dtype == jnp.bfloat16 and sce.backward(cache).dtype == jnp.bfloat16
    np.testing.assert_allclose(float(value), float(sce.forward(logits, labels)[0]), rtol=2e-2)


def test_value_and_grad_takes_the_mask_as_part_of_the_target(key):
    net = fn.serial(fn.Embedding(5, 3), fn.Dense(5))
    _, params = net.init(key, (4,))
    ids = jax.random.randint(jax.random.key(7), (2, 4), 0, 5)
    labels = jax.random.randint(jax.random.key(8), (2, 4), 0, 5)
    mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    loss, grads = fn.value_and_grad(net, sce)(params, ids, (labels, mask))
    auto_loss, auto = fn.autodiff_value_and_grad(net, sce)(params, ids, (labels, mask))
    np.testing.assert_allclose(loss, auto_loss, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(auto)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_help_shows_the_formulas():
    import pydoc

    doc = pydoc.render_doc(sce, renderer=pydoc.plaintext)
    assert "Forward:" in doc and "Backward:" in doc and "(w_bt / N) (softmax(z_bt) − onehot(y_bt))" in doc
