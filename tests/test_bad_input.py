"""Property-based bad input: every call works or raises the documented error, naming the argument.

Never an XLA TypeError from deep inside a trace.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fnnet as fn
from fnnet.checking import GradcheckError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from([jnp.float32, jnp.float16, jnp.bfloat16, jnp.int32, jnp.bool_])
DENSE = fn.Dense(3)
_, DENSE_PARAMS = DENSE.init(jax.random.key(0), (4,))


@SETTINGS
@given(shape=shapes, dtype=dtypes)
def test_dense_forward(shape, dtype):
    x = jnp.ones(shape, dtype)
    ok = len(shape) >= 2 and shape[-1] == 4 and dtype == jnp.float32
    if ok:
        y, _ = DENSE.forward(DENSE_PARAMS, x)
        assert y.shape == shape[:-1] + (3,)
        return
    with pytest.raises((fn.ShapeError, fn.DTypeError), match=r"Dense\(3\)"):
        DENSE.forward(DENSE_PARAMS, x)


@SETTINGS
@given(p_shape=shapes, t_shape=shapes, values=st.sampled_from([0.0, 1e-30, 1e4, -1e4, 3.5]))
def test_mse_and_bce(p_shape, t_shape, values):
    pred = jnp.full(p_shape, values, jnp.float32)
    target = jnp.zeros(t_shape, jnp.float32)
    for loss, name in [(fn.mse, "mse"), (fn.binary_cross_entropy, "binary_cross_entropy")]:
        if len(p_shape) >= 1 and p_shape == t_shape:
            value, cache = loss.forward(pred, target)
            if p_shape[0] > 0:
                assert np.isfinite(value) and np.all(np.isfinite(loss.backward(cache)))
        else:
            with pytest.raises(fn.ShapeError, match=name):
                loss.forward(pred, target)


@SETTINGS
@given(
    batch=st.integers(1, 4),
    classes=st.integers(1, 5),
    label=st.integers(-3, 8),
    scale=st.sampled_from([1.0, 1e4, -1e4]),
)
def test_softmax_cross_entropy_labels(batch, classes, label, scale):
    logits = scale * jax.random.normal(jax.random.key(batch), (batch, classes))
    labels = jnp.full((batch,), label, jnp.int32)
    if 0 <= label < classes:
        value, cache = fn.softmax_cross_entropy.forward(logits, labels)
        assert np.isfinite(value) and np.all(np.isfinite(fn.softmax_cross_entropy.backward(cache)))
    else:
        with pytest.raises(ValueError, match=f"label {label}, out of range for {classes} classes"):
            fn.softmax_cross_entropy.forward(logits, labels)


def test_float16_mix_is_refused():
    with pytest.raises(fn.DTypeError, match=r"Dense\(3\) got float16 inputs but its parameters are float32"):
        DENSE.forward(DENSE_PARAMS, jnp.ones((2, 4), jnp.float16))


@SETTINGS
@given(drop=st.sampled_from(["a", "b", "both"]))
def test_gradcheck_mismatched_pytrees(drop):
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    loss = lambda p: jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2)
    grads = {"a": 2 * params["a"], "b": 2 * params["b"]}
    bad = {"a": grads["a"]} if drop == "b" else {"b": grads["b"]} if drop == "a" else [grads["a"], grads["b"]]
    with pytest.raises(GradcheckError, match="structure"):
        fn.gradcheck(loss, lambda p: bad, params)


def test_gradcheck_argnums_out_of_range():
    with pytest.raises(GradcheckError, match="argnums=3 but gradcheck got only 1 argument"):
        fn.gradcheck(lambda w: jnp.sum(w), lambda w: jnp.ones(2), jnp.ones(2), argnums=3)
