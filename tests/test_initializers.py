"""Initializers: variances stated in the docstrings, measured with a fixed key and a stated tolerance;
what layers accept as an initializer (a function, not a name or an uncalled factory).

Each statistical check draws 256 × 512 = 131072 samples; the sample variance of that many draws has
relative standard error ≈ √(2/131072) ≈ 0.4% (normal) and less for the uniform, so 3% is > 7 σ.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet import initializers as I

SHAPE = (256, 512)  # fan_in 256, fan_out 512
FAN_IN, FAN_OUT = 256, 512
CASES = [
    ("glorot_uniform", {}, 2 / (FAN_IN + FAN_OUT)),
    ("glorot_normal", {}, 2 / (FAN_IN + FAN_OUT)),
    ("he_uniform", {}, 2 / FAN_IN),
    ("he_normal", {}, 2 / FAN_IN),
    ("lecun_uniform", {}, 1 / FAN_IN),
    ("lecun_normal", {}, 1 / FAN_IN),
    ("leaky_he_normal", {"alpha": 0.2}, 2 / ((1 + 0.04) * FAN_IN)),
    ("standard_uniform", {}, 1 / (3 * FAN_IN)),
    ("orthogonal", {}, 1 / FAN_OUT),
    ("normal", {"stddev": 0.1}, 0.01),
]


@pytest.mark.parametrize("name,kwargs,variance", CASES, ids=[c[0] for c in CASES])
def test_variance(name, kwargs, variance, key):
    w = I.get(name, **kwargs)(key, SHAPE, jnp.float32)
    assert w.shape == SHAPE and w.dtype == jnp.float32
    assert float(jnp.var(w)) == pytest.approx(variance, rel=0.03)
    assert abs(float(jnp.mean(w))) < 4 * np.sqrt(variance / w.size)


@pytest.mark.parametrize(
    "name", ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal", "lecun_uniform"]
)
def test_matches_jax_nn_initializers(name, key):
    mine = I.get(name)(key, (3, 3, 16, 32), jnp.float32)  # conv kernel: receptive field 9
    theirs = getattr(jax.nn.initializers, name)()(key, (3, 3, 16, 32), jnp.float32)
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_conv_fans_use_the_receptive_field():
    assert I.compute_fans((3, 3, 16, 32)) == (144.0, 288.0)
    w = I.he_normal()(jax.random.key(0), (5, 5, 64, 64))
    assert float(jnp.var(w)) == pytest.approx(2 / (25 * 64), rel=0.03)


def test_truncated_normal_is_truncated_at_two_std(key):
    w = I.he_normal()(key, SHAPE)
    std = np.sqrt(2 / FAN_IN) / 0.87962566103423978
    assert float(jnp.abs(w).max()) <= 2 * std * (1 + 1e-6)


def test_orthogonal_is_orthogonal(key):
    w = I.orthogonal(scale=2.0)(key, (64, 32))
    np.testing.assert_allclose(w.T @ w, 4.0 * jnp.eye(32), atol=1e-4)
    w = I.orthogonal()(key, (32, 64))
    np.testing.assert_allclose(w @ w.T, jnp.eye(32), atol=1e-5)


def test_zeros_and_dtype_follow_request(key):
    assert not np.any(I.zeros()(key, (3, 4)))
    with jax.enable_x64(True):
        assert I.he_normal()(key, (3, 4), jnp.float64).dtype == jnp.float64


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mode must be"):
        I.variance_scaling(1.0, "fan_sum", "normal")
    with pytest.raises(ValueError, match="unknown initializer 'xavier'"):
        I.get("xavier")
    with pytest.raises(ValueError, match="rank >= 2"):
        I.he_normal()(jax.random.key(0), (5,))


# ----------------------------------------------------------------------------------------------
# initializers given to layers: a name, an uncalled factory or a non-callable is refused at construction

CTOR_ARGS = [
    (fn.Dense, 3, "w_init"), (fn.Dense, 3, "b_init"), (fn.Conv2D, 2, "w_init"), (fn.Conv2D, 2, "b_init"),
    (fn.RNN, 4, "w_init"), (fn.RNN, 4, "u_init"), (fn.RNN, 4, "b_init"), (fn.LSTM, 4, "w_init"),
    (fn.LSTM, 4, "u_init"),
]  # fmt: skip
IDS = [f"{c.__name__}-{a}" for c, _, a in CTOR_ARGS]


@pytest.mark.parametrize("ctor, width, arg", CTOR_ARGS, ids=IDS)
def test_a_name_as_initializer_is_refused_with_the_call_to_use(ctor, width, arg):
    label = rf"{ctor.__name__}\({width}\)"
    with pytest.raises(
        TypeError,
        match=label + rf" needs {arg} to be an initializer function .* not the string "
        r"'he_normal'; pass fn\.initializers\.get\('he_normal'\) or fn\.initializers\.he_normal\(\)",
    ):
        ctor(width, **{arg: "he_normal"})  # fmt: skip
    with pytest.raises(TypeError, match=label + rf" needs {arg} .* 'xavier' names none of glorot_uniform, "):
        ctor(width, **{arg: "xavier"})
    with pytest.raises(
        TypeError,
        match=label + rf" got {arg}=fn\.initializers\.he_normal, which makes an "
        rf"initializer; call it: {arg}=fn\.initializers\.he_normal\(\)",
    ):
        ctor(width, **{arg: I.he_normal})  # fmt: skip
    with pytest.raises(TypeError, match=rf"call it: {arg}=jax\.nn\.initializers\.glorot_normal\(\)"):
        ctor(width, **{arg: jax.nn.initializers.glorot_normal})
    with pytest.raises(TypeError, match=rf"call it: {arg}=fn\.initializers\.constant\(\.\.\.\)"):
        ctor(width, **{arg: I.constant})
    for value in (0.1, 3, ["he_normal"], True):
        with pytest.raises(TypeError, match=label + rf" needs {arg} to be an initializer function .* got "):
            ctor(width, **{arg: value})


def test_initializers_that_are_functions_work_and_their_draws_are_checked(key):
    # jax's own initializers (zeros is an initializer, not a factory) and called factories are fine
    shapes = jax.eval_shape(lambda k: fn.Dense(3, w_init=jax.nn.initializers.zeros).init(k, (2,))[1], key)
    assert shapes["W"].shape == (2, 3)
    fn.Dense(3, w_init=jax.nn.initializers.he_normal(), b_init=I.constant(0.1))
    # a fan-based initializer given a bias shape: its error carries the layer and the argument
    with pytest.raises(ValueError, match=r"^Dense\(3\) b_init \(drawing shape \(3,\)\): fans need a kernel of rank"):
        fn.Dense(3, b_init=I.he_normal()).init(key, (2,))
    with pytest.raises(
        fn.ShapeError, match=r"Dense\(3\) w_init returned an array of shape \(3, 2\), expected \(2, 3\)"
    ):
        fn.Dense(3, w_init=lambda k, s, d: jnp.zeros(s[::-1], d)).init(key, (2,))
    with pytest.raises(fn.DTypeError, match=r"Conv2D\(2\) w_init returned float16, expected float32"):
        fn.Conv2D(2, w_init=lambda k, s, d: jnp.zeros(s, jnp.float16)).init(key, (4, 4, 1))
    with pytest.raises(TypeError, match=r"RNN\(4\) u_init returned list, not an array of shape \(4, 4\)"):
        fn.RNN(4, u_init=lambda k, s, d: [0.0]).init(key, (2, 3))
