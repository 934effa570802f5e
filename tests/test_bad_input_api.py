"""Property-based bad input across the public API: layers, constructors, training, data, files.

Every call either works (with the documented output shape) or raises the documented error
(``fn.ShapeError``/``fn.DTypeError`` from a forward, ``ValueError``/``TypeError`` from a constructor,
params that do not fit the net, or a training function, ``DataFileError`` from a loader) whose
message names the layer (with its position in a ``serial``) or the argument. Never an XLA error
from deep inside a trace. Error paths raise before anything is compiled, so the training cases cost
no compilation; shapes are small so the eager forwards stay fast.
"""

import math
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fnnet as fn
from fnnet import data, optim
from fnnet.data.files import DataFileError, load_npz
from fnnet.training import check_labels, check_options

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEY = jax.random.key(0)
INTS = (jnp.int32, jnp.bool_)
dtypes = st.sampled_from([jnp.float32, jnp.float16, jnp.int32, jnp.bool_])


def shapes(min_rank=0, max_rank=5, max_side=5):
    return st.lists(st.integers(0, max_side), min_size=min_rank, max_size=max_rank).map(tuple)


def init(layer, in_shape):
    """Params of the shapes ``layer.init`` makes, filled with 0.1: shapes are traced, nothing compiles."""
    shapes = jax.eval_shape(lambda k: layer.init(k, in_shape)[1], KEY)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(np.full(s.shape, 0.1, s.dtype)), shapes)


def fails(layer_name, exc=(fn.ShapeError, fn.DTypeError)):
    return pytest.raises(exc, match=layer_name)


# ----------------------------------------------------------------------------------------------
# layer forwards: works with the right shape, or a ShapeError/DTypeError naming the layer

CONV = fn.Conv2D(2, kernel_size=3)
CONV_PARAMS = init(CONV, (5, 5, 2))


@SETTINGS
@given(shape=shapes(2, 5, 6), dtype=dtypes)
def test_conv2d_forward(shape, dtype):
    x = jnp.ones(shape, dtype)
    if len(shape) == 4 and shape[3] == 2 and min(shape[1:3]) >= 3 and dtype == jnp.float32:
        y, _ = CONV.forward(CONV_PARAMS, x)
        assert y.shape == (shape[0], shape[1] - 2, shape[2] - 2, 2)
        return
    with fails(r"Conv2D\(2\)"):
        CONV.forward(CONV_PARAMS, x)


def test_conv2d_messages_say_expected_and_got():
    with pytest.raises(fn.ShapeError, match=r"Conv2D\(2\) expected inputs \(batch, \*, \*, 2\), got \(4, 5, 5, 3\)"):
        CONV.forward(CONV_PARAMS, jnp.ones((4, 5, 5, 3)))
    with pytest.raises(fn.DTypeError, match=r"Conv2D\(2\) got float16 inputs but its parameters are float32"):
        CONV.forward(CONV_PARAMS, jnp.ones((1, 5, 5, 2), jnp.float16))
    with pytest.raises(fn.ShapeError, match=r"Conv2D\(2\) .* needs a larger input than spatial size \(2, 5\)"):
        CONV.forward(CONV_PARAMS, jnp.ones((1, 2, 5, 2)))


POOLS = [
    (fn.MaxPool(2), r"MaxPool\(2\)", lambda n: n // 2),
    (fn.AvgPool(2, padding="SAME"), r"AvgPool\(2\)", lambda n: -(-n // 2)),
]


@SETTINGS
@given(which=st.sampled_from([0, 1]), shape=shapes(2, 5, 4), dtype=dtypes)
def test_pooling_forward(which, shape, dtype):
    layer, name, out = POOLS[which]
    x = jnp.ones(shape, dtype)
    if len(shape) == 4 and min(out(shape[1]), out(shape[2])) >= 1 and dtype not in INTS:
        y, _ = layer.forward((), x)  # no params, so any float dtype works
        assert y.shape == (shape[0], out(shape[1]), out(shape[2]), shape[3]) and y.dtype == dtype
        return
    with fails(name):
        layer.forward((), x)


RECURRENT = [(fn.RNN(4), "RNN"), (fn.LSTM(4), "LSTM")]
RECURRENT_PARAMS = [init(layer, (2, 3)) for layer, _ in RECURRENT]


@SETTINGS
@given(which=st.sampled_from([0, 1]), shape=shapes(1, 4, 4), dtype=dtypes)
def test_recurrent_forward(which, shape, dtype):
    (layer, name), params = RECURRENT[which], RECURRENT_PARAMS[which]
    x = jnp.ones(shape, dtype)
    if len(shape) == 3 and shape[1] >= 1 and shape[2] == 3 and dtype == jnp.float32:
        y, _ = layer.forward(params, x)
        assert y.shape == (shape[0], 4)
        return
    with fails(rf"{name}\(4\)"):
        layer.forward(params, x)


BN, LN = fn.BatchNorm(), fn.LayerNorm()
BN_PARAMS, LN_PARAMS = init(BN, (3,)), init(LN, (3,))


@SETTINGS
@given(
    shape=shapes(0, 3, 3).map(lambda s: s + (3,)) | shapes(0, 4, 3),
    dtype=dtypes,
    train=st.booleans(),
)
def test_normalization_forward(shape, dtype, train):
    x = jnp.ones(shape, dtype)
    fits = len(shape) >= 2 and shape[-1] == 3 and dtype == jnp.float32
    if fits and (not train or math.prod(shape) // 3 >= 2):
        assert BN.forward(BN_PARAMS, x, train=train)[0].shape == shape
    else:
        with fails(r"BatchNorm\(\)"):
            BN.forward(BN_PARAMS, x, train=train)
    if fits:
        assert LN.forward(LN_PARAMS, x)[0].shape == shape
    else:
        with fails(r"LayerNorm\(\)"):
            LN.forward(LN_PARAMS, x)


ELEMENTWISE = [
    (fn.Dropout(0.5), r"Dropout\(0.5\)"),
    (fn.Relu(), r"Relu\(\)"),
    (fn.Sigmoid(), r"Sigmoid\(\)"),
    (fn.Gelu(), r"Gelu\(\)"),
    (fn.LeakyRelu(0.1), r"LeakyRelu\(0.1\)"),
    (fn.Softmax(), r"Softmax\(\)"),
]


@SETTINGS
@given(which=st.integers(0, len(ELEMENTWISE) - 1), shape=shapes(1, 3, 4), dtype=dtypes, train=st.booleans())
def test_elementwise_forward(which, shape, dtype, train):
    """Parameter-free layers take any float dtype and shape (rank >= 1), and refuse ints and bools."""
    layer, name = ELEMENTWISE[which]
    x = jnp.ones(shape, dtype)
    if name == r"Softmax\(\)" and (len(shape) < 2 or shape[-1] == 0):
        return  # softmax over the batch axis or an empty axis: see test_softmax_over_an_empty_or_batch_axis
    if dtype in INTS:
        with pytest.raises(fn.DTypeError, match=name + " needs a floating-point input"):
            layer.forward((), x, key=KEY, train=train)
        return
    y, _ = layer.forward((), x, key=KEY, train=train)
    assert y.shape == shape and y.dtype == dtype


def test_softmax_over_an_empty_or_batch_axis():
    with pytest.raises(fn.ShapeError, match=r"Softmax\(\): axis -1 of the input is empty"):
        fn.Softmax().forward((), jnp.ones((2, 0)))
    for axis, shape in [(0, (2, 3)), (2, (2, 3)), (-1, (4,))]:
        with pytest.raises(fn.ShapeError, match=rf"Softmax\(\): axis {axis} must name a non-batch axis"):
            fn.Softmax(axis).forward((), jnp.ones(shape))
    y, _ = fn.Softmax(1).forward((), jnp.zeros((2, 4, 3)))
    assert np.allclose(np.sum(y, 1), 1.0)
    with pytest.raises(TypeError, match="Softmax: axis must be an integer"):
        fn.Softmax("a")
    with pytest.raises(TypeError, match="LeakyRelu: alpha must be a real number"):
        fn.LeakyRelu("a")
    with pytest.raises(ValueError, match="LeakyRelu needs a finite slope"):
        fn.LeakyRelu(float("nan"))


NET = fn.serial(fn.Dense(4), fn.Relu(), fn.Dense(2))
NET_PARAMS = init(NET, (3,))


@SETTINGS
@given(shape=shapes(0, 4, 4), dtype=dtypes, drop=st.integers(0, 3))
def test_serial_forward(shape, dtype, drop):
    """A bad input is refused by the first layer, by name; params of the wrong length by serial."""
    x = jnp.ones(shape, dtype)
    params = NET_PARAMS[: 3 - drop] if drop < 3 else NET_PARAMS + ((),)
    if drop:
        with pytest.raises(ValueError, match=r"serial of 3 layers needs params with one entry per layer"):
            NET.forward(params, x)
        return
    if len(shape) >= 2 and shape[-1] == 3 and dtype == jnp.float32:
        assert NET.forward(params, x)[0].shape == shape[:-1] + (2,)
        return
    with fails(r"Dense\(4\)"):
        NET.forward(params, x)


def test_serial_backward_checks_params_and_caches():
    x = jnp.ones((2, 3))
    y, caches = NET.forward(NET_PARAMS, x)
    with pytest.raises(ValueError, match="serial of 3 layers needs caches"):
        NET.backward(NET_PARAMS, caches[:2], y)
    with pytest.raises(ValueError, match="serial of 3 layers needs params"):
        NET.backward(NET_PARAMS[:2], caches, y)


INNER = {w: fn.Dense(w) for w in (2, 3, 4)}
INNER_PARAMS = {w: init(layer, (3,)) for w, layer in INNER.items()}


@SETTINGS
@given(width=st.sampled_from([2, 3, 4]), shape=shapes(0, 3, 4), dtype=dtypes)
def test_residual_forward(width, shape, dtype):
    """residual(F) keeps the shape: an F that changes it is refused at init and in forward."""
    res = fn.residual(INNER[width])
    if width != 3:
        with pytest.raises(
            fn.ShapeError, match=rf"residual needs F to keep the shape, but F maps \(3,\) to \({width},\)"
        ):
            res.init(KEY, (3,))
    params = INNER_PARAMS[width]  # F's own params: forward must still refuse the shape change
    x = jnp.ones(shape, dtype)
    if len(shape) >= 2 and shape[-1] == 3 and dtype == jnp.float32:
        if width == 3:
            assert res.forward(params, x)[0].shape == shape
        else:
            with pytest.raises(fn.ShapeError, match="residual needs F to keep the shape"):
                res.forward(params, x)
        return
    with fails(rf"Dense\({width}\)"):
        res.forward(params, x)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_, "int8", "not a dtype"])
@pytest.mark.parametrize("which", ["Dense", "Conv2D", "RNN", "LSTM", "BatchNorm", "LayerNorm"])
def test_init_needs_a_float_dtype(which, dtype):
    layer, in_shape = {
        "Dense": (fn.Dense(2), (3,)),
        "Conv2D": (fn.Conv2D(2), (4, 4, 1)),
        "RNN": (fn.RNN(2), (2, 3)),
        "LSTM": (fn.LSTM(2), (2, 3)),
        "BatchNorm": (fn.BatchNorm(), (3,)),
        "LayerNorm": (fn.LayerNorm(), (3,)),
    }[which]
    with pytest.raises(fn.DTypeError, match=which + r".* init needs a floating-point dtype"):
        layer.init(KEY, in_shape, dtype)


# ----------------------------------------------------------------------------------------------
# params that do not fit a random net: an fnnet error naming the serial position and the layer,
# raised while tracing (everything runs under jax.eval_shape, so nothing compiles)

ERRORS = (fn.ShapeError, fn.DTypeError, ValueError, TypeError)
PIECES = {  # kind -> (constructor of width w, the label its messages carry)
    "dense": (lambda w: fn.Dense(w), lambda w: rf"Dense\({w}\)"),
    "layernorm": (lambda w: fn.LayerNorm(), lambda w: r"LayerNorm\(\)"),
    "batchnorm": (lambda w: fn.BatchNorm(), lambda w: r"BatchNorm\(\)"),
    "dropout": (lambda w: fn.Dropout(0.5), lambda w: r"Dropout\(0\.5\)"),
    "flatten": (lambda w: fn.Flatten(), lambda w: r"Flatten\(\)"),
    "tanh": (lambda w: fn.Tanh(), lambda w: r"Tanh\(\)"),
}
WITH_PARAMS, WITHOUT_PARAMS = ("dense", "layernorm", "batchnorm"), ("dropout", "flatten")
pieces = st.lists(st.tuples(st.sampled_from(list(PIECES)), st.integers(1, 4)), min_size=1, max_size=4)


def build(spec):
    return fn.serial(*(PIECES[kind][0](w) for kind, w in spec)), [PIECES[kind][1](w) for kind, w in spec]


def traced(net, params, d_in, where, train, good=None):
    """Trace forward (or backward, with the cache of a forward with ``good`` params); return the output shape."""
    x = jax.ShapeDtypeStruct((3, d_in), jnp.float32)
    fwd = lambda p, xx: net.forward(p, xx, key=KEY, train=train)  # noqa: E731
    if where == "forward":
        return jax.eval_shape(fwd, params, x)[0].shape
    y, cache = jax.eval_shape(fwd, params if good is None else good, x)
    return jax.eval_shape(net.backward, params, cache, y)[1].shape


def corrupt(p, how, pick):
    """One leaf (or the container) of a layer's params dict made wrong in the way ``how`` says."""
    arrays = sorted(j for j in p if not isinstance(p[j], dict))  # array leaves, not a buffer sub-dict
    k = arrays[pick % len(arrays)]
    s = p[k]
    if how == "size":
        return p | {k: jax.ShapeDtypeStruct(s.shape[:-1] + (s.shape[-1] + 1,), s.dtype)}
    if how == "rank":
        return p | {k: jax.ShapeDtypeStruct(s.shape + (1,), s.dtype)}
    if how in ("float16", "int32"):
        return p | {k: jax.ShapeDtypeStruct(s.shape, jnp.dtype(how))}
    if how == "drop a key":
        return {j: v for j, v in p.items() if j != k}
    if how == "extra key":
        return p | {"extra": s}
    return tuple(p.values())  # "tuple"


@SETTINGS
@given(
    spec=pieces,
    d_in=st.integers(1, 4),
    how=st.sampled_from(["size", "rank", "float16", "int32", "drop a key", "extra key", "tuple", "arrays"]),
    pick=st.integers(0, 7),
    where=st.sampled_from(["forward", "backward"]),
    train=st.booleans(),
)
def test_params_of_the_wrong_structure_for_a_random_net(spec, d_in, how, pick, where, train):
    """One layer's params made wrong: an fnnet error naming ``serial layer i`` and that layer's label."""
    net, labels = build(spec)
    good = jax.eval_shape(lambda k: net.init(k, (d_in,))[1], KEY)
    wanted = WITHOUT_PARAMS if how == "arrays" else WITH_PARAMS
    places = [i for i, (kind, _) in enumerate(spec) if kind in wanted]
    if not places:
        assert traced(net, good, d_in, where, train)[0] == 3  # nothing to corrupt: the net's own params work
        return
    i = places[pick % len(places)]
    bad_leaf = {"W": jax.ShapeDtypeStruct((2, 2), jnp.float32)} if how == "arrays" else corrupt(good[i], how, pick)
    bad = good[:i] + (bad_leaf,) + good[i + 1 :]
    with pytest.raises(ERRORS, match=rf"serial layer {i}, {labels[i]}") as e:
        traced(net, bad, d_in, where, train, good)
    assert type(e.value) in ERRORS  # fnnet's own types, never a JAX/XLA error type


@SETTINGS
@given(
    spec_a=pieces.map(lambda s: [p for p in s if p[0] != "tanh"] or [("dense", 2)]),
    spec_b=pieces,
    d_in=st.integers(1, 4),
)
def test_another_random_nets_params(spec_a, spec_b, d_in):
    """Params of net B given to net A (no activations in A): they work exactly when their shapes are the
    ones A's init makes, and are otherwise refused by serial or by a layer it names by position."""
    net_a, _ = build(spec_a)
    net_b, _ = build(spec_b)
    want = jax.eval_shape(lambda k: net_a.init(k, (d_in,))[1], KEY)
    try:
        given_params = jax.eval_shape(lambda k: net_b.init(k, (d_in,))[1], KEY)
    except ERRORS:  # B cannot even take this input; nothing to hand over
        return
    if jax.tree_util.tree_structure(given_params) == jax.tree_util.tree_structure(want) and all(
        (a.shape, a.dtype) == (b.shape, b.dtype)
        for a, b in zip(jax.tree_util.tree_leaves(given_params), jax.tree_util.tree_leaves(want))
    ):
        assert traced(net_a, given_params, d_in, "forward", False)[0] == 3
        return
    with pytest.raises(ERRORS, match=r"serial of \d+ layers needs params|serial layer \d+, "):
        traced(net_a, given_params, d_in, "forward", False)


# ----------------------------------------------------------------------------------------------
# constructors: ValueError/TypeError naming the argument

not_ints = st.one_of(
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 3)),
)
bad_sizes = st.integers(-3, 0) | not_ints  # for arguments that need an int >= 1 (or a pair)


@SETTINGS
@given(arg=st.sampled_from(["kernel_size", "stride", "dilation"]), value=bad_sizes)
def test_conv2d_bad_sizes(arg, value):
    with pytest.raises((ValueError, TypeError), match=arg):
        fn.Conv2D(2, **{arg: value})


@SETTINGS
@given(
    arg=st.sampled_from(["kernel_size", "stride", "dilation"]),
    value=st.integers(1, 3) | st.tuples(st.integers(1, 3), st.integers(1, 3)) | st.just(np.int64(2)),
)
def test_conv2d_good_sizes(arg, value):
    layer = fn.Conv2D(2, **{arg: value})
    out = jax.eval_shape(lambda k: layer.init(k, (9, 9, 1))[1], KEY)  # shapes only: nothing runs
    assert out["W"].shape[2:] == (1, 2)


@SETTINGS
@given(
    padding=st.text(max_size=6).filter(lambda s: s.upper() not in ("VALID", "SAME"))
    | st.sampled_from(["same ", " VALID", "FULL", "causal"])
    | st.integers(-4, -1)
    | st.tuples(st.integers(-2, -1), st.integers(0, 2))
    | st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2))
    | st.floats()
    | st.none()
)
def test_conv2d_bad_padding(padding):
    with pytest.raises((ValueError, TypeError), match="padding"):
        fn.Conv2D(2, padding=padding)


@SETTINGS
@given(
    kind=st.sampled_from([fn.MaxPool, fn.AvgPool]),
    arg=st.sampled_from(["window_shape", "stride", "padding"]),
    value=bad_sizes,
)
def test_pooling_bad_arguments(kind, arg, value):
    if arg == "stride" and value is None:
        kind(stride=None)  # None means a stride equal to the window
        return
    with pytest.raises((ValueError, TypeError), match=arg):
        kind(**{arg: value})


@SETTINGS
@given(kind=st.sampled_from([fn.MaxPool, fn.AvgPool]), padding=st.text(max_size=6) | st.integers(0, 2))
def test_pooling_padding_is_valid_or_same(kind, padding):
    if isinstance(padding, str) and padding.upper() in ("VALID", "SAME"):
        kind(2, padding=padding)
        return
    with pytest.raises(ValueError, match="padding must be 'VALID' or 'SAME'"):
        kind(2, padding=padding)


@SETTINGS
@given(rate=st.floats() | st.integers(-2, 2) | st.sampled_from([np.float32(0.25), np.float64(0.5), "0.5", None]))
def test_dropout_rate(rate):
    ok = isinstance(rate, (int, float, np.floating)) and 0 <= rate < 1
    if ok:
        fn.Dropout(rate)
        return
    with pytest.raises(ValueError, match=r"drop rate in \[0, 1\)"):
        fn.Dropout(rate)


@SETTINGS
@given(
    ctor=st.sampled_from([(fn.Dense, "out_dim"), (fn.RNN, "hidden_dim"), (fn.LSTM, "hidden_dim")]),
    value=st.integers(-3, 0) | not_ints,
)
def test_widths_must_be_positive_ints(ctor, value):
    make, arg = ctor
    with pytest.raises(ValueError, match=f"positive integer {arg}"):
        make(value)


@SETTINGS
@given(
    momentum=st.floats() | st.sampled_from([-0.1, 1.0, 1.5, 0.0, 0.9, np.float32(0.5)]),
    eps=st.floats() | st.sampled_from([0.0, -1e-5, 1e-5, np.float32(1e-3)]),
)
def test_batchnorm_and_layernorm_arguments(momentum, eps):
    eps_ok = 0 < eps < math.inf
    if not 0 <= momentum < 1:  # NaN included
        with pytest.raises(ValueError, match="BatchNorm needs 0 <= momentum < 1"):
            fn.BatchNorm(momentum=momentum, eps=1e-5)
    elif not eps_ok:
        with pytest.raises(ValueError, match=r"BatchNorm needs eps > 0"):
            fn.BatchNorm(momentum=momentum, eps=eps)
    else:
        fn.BatchNorm(momentum=momentum, eps=eps)
    if eps_ok:
        fn.LayerNorm(eps=eps)
    else:
        with pytest.raises(ValueError, match=r"LayerNorm needs eps > 0"):
            fn.LayerNorm(eps=eps)


@pytest.mark.parametrize("value", ["0.9", None, True, [0.9]])
def test_normalization_arguments_of_the_wrong_type(value):
    with pytest.raises(TypeError, match="BatchNorm needs momentum to be a real number"):
        fn.BatchNorm(momentum=value)
    with pytest.raises(TypeError, match="BatchNorm needs eps to be a real number"):
        fn.BatchNorm(eps=value)
    with pytest.raises(TypeError, match="LayerNorm needs eps to be a real number"):
        fn.LayerNorm(eps=value)
    with pytest.raises(TypeError, match="LSTM needs forget_bias to be a real number"):
        fn.LSTM(2, forget_bias=value)


INITIALIZER_ARGS = [(fn.Dense, "w_init"), (fn.Dense, "b_init"), (fn.Conv2D, "w_init"), (fn.Conv2D, "b_init"),
                    (fn.RNN, "w_init"), (fn.RNN, "u_init"), (fn.RNN, "b_init"), (fn.LSTM, "w_init"),
                    (fn.LSTM, "u_init")]  # fmt: skip
FACTORIES = [fn.initializers.he_normal, fn.initializers.glorot_uniform, fn.initializers.orthogonal,
             fn.initializers.zeros, fn.initializers.normal, jax.nn.initializers.lecun_normal]  # fmt: skip


@SETTINGS
@given(
    where=st.sampled_from(INITIALIZER_ARGS),
    value=st.sampled_from(sorted(fn.initializers.INITIALIZERS))
    | st.text(max_size=8)
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.sampled_from(FACTORIES)
    | st.lists(st.integers(), max_size=2),
)
def test_initializer_arguments_that_are_not_initializers(where, value):
    """A name, an uncalled factory or any non-callable: a TypeError at construction naming the argument."""
    ctor, arg = where
    match = rf"{ctor.__name__}\(2\) (needs|got) {arg}"
    if isinstance(value, str) and value in fn.initializers.INITIALIZERS:
        match += rf".*fn\.initializers\.get\('{value}'\)"
    elif callable(value):
        match += r".*which makes an initializer; call it"
    with pytest.raises(TypeError, match=match):
        ctor(2, **{arg: value})


# ----------------------------------------------------------------------------------------------
# training: every bad option raises a ValueError/TypeError naming it, before anything compiles

TRAIN_NET = fn.Dense(3)
TRAIN_PARAMS = init(TRAIN_NET, (2,))
X = np.random.default_rng(0).standard_normal((6, 2)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2], np.int32)
SGD = optim.sgd(0.1)


def train(data=(X, Y), loss=fn.softmax_cross_entropy, **kw):
    opts = dict(optimizer=SGD, batch_size=2, epochs=1, key=KEY, progress=False) | kw
    return fn.train(TRAIN_NET, loss, TRAIN_PARAMS, data, **opts)


def sweep(data=(X, Y), **kw):
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(np.stack([a, a])), TRAIN_PARAMS)
    opts = dict(keys=KEY, learning_rates=[0.1, 0.2], batch_size=2, epochs=1, progress=False) | kw
    return fn.sweep(TRAIN_NET, fn.softmax_cross_entropy, params, data, **opts)


sizes = st.integers(-2, 8) | st.sampled_from([2.0, "2", None, True, np.int64(3)])


@SETTINGS
@given(batch_size=sizes, epochs=sizes, eval_batch_size=sizes)
def test_batch_size_epochs_eval_batch_size(batch_size, epochs, eval_batch_size):
    is_int = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)  # noqa: E731
    kw = dict(batch_size=batch_size, epochs=epochs, eval_batch_size=eval_batch_size)
    if not (is_int(batch_size) and 1 <= batch_size <= 6):
        match = r"batch_size must be an integer in \[1, 6\]"
    elif not (is_int(epochs) and epochs >= 1):
        match = "epochs must be an integer >= 1"
    elif not (eval_batch_size is None or is_int(eval_batch_size) and eval_batch_size >= 1):
        match = "eval_batch_size must be None or an integer >= 1"
    else:  # valid: the shared check passes (training itself is covered by tests/test_training.py)
        check_options((X, Y), None, batch_size, epochs, "epoch", "manual", eval_batch_size=eval_batch_size)
        return
    for run in (train, sweep):
        with pytest.raises(ValueError, match=match):
            run(**kw)


def test_epochs_zero_is_allowed_only_when_resuming():
    """epochs is the total: a fresh run needs >= 1; a resumed run already there returns it unchanged."""
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        train(epochs=0)
    first = train(epochs=1)
    again = train(epochs=1, resume=first)
    assert len(again.history["loss"]) == 1
    np.testing.assert_array_equal(again.history["loss"], first.history["loss"])


@SETTINGS
@given(
    where=st.sampled_from(["x", "test x", "y"]),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    row=st.integers(0, 5),
)
def test_nan_or_inf_in_the_data(where, value, row):
    x, y = X.copy(), np.eye(3, dtype=np.float32)[Y]  # one-hot float targets, so y can hold NaN too
    bad = (x, y)
    if where == "y":
        y[row, row % 3] = value
    else:
        x[row, 0] = value
    name = "test_data" if where == "test x" else "data"
    what = "targets" if where == "y" else "inputs"
    kw = dict(test_data=bad, data=(X, Y)) if where == "test x" else dict(data=bad)
    with pytest.raises(ValueError, match=f"{name} has NaN or Inf in its {what}"):
        train(**kw)


@SETTINGS
@given(dtype=st.sampled_from([np.int32, np.int64, np.uint8, np.bool_]))
def test_integer_inputs_are_refused_not_cast(dtype):
    """Decision: integer (or bool) x is refused with a ValueError saying how to convert, never cast:
    every layer computes in floats and an integer x is most often a mix-up (raw pixels, labels)."""
    with pytest.raises(ValueError, match=r"data needs float inputs, got .*x\.astype\(np\.float32\)"):
        train(data=(X.astype(dtype), Y))


@SETTINGS
@given(label=st.integers(-3, 6), where=st.sampled_from(["data", "test_data"]), use_sweep=st.booleans())
def test_labels_out_of_range(label, where, use_sweep):
    """3 outputs: labels must lie in [0, 2]. Under jit the loss cannot see them, so train checks first."""
    y = Y.copy()
    y[4] = label
    kw = {"data": (X, y)} if where == "data" else {"test_data": (X, y)}
    if 0 <= label < 3:
        check_labels(TRAIN_NET, fn.softmax_cross_entropy, TRAIN_PARAMS, {where: data.Dataset(X, y)})
        return
    with pytest.raises(ValueError, match=f"{where} has label {label}"):
        (sweep if use_sweep else train)(**kw)


@SETTINGS
@given(nx=st.integers(0, 7), ny=st.integers(0, 7))
def test_lengths_and_empty_data(nx, ny):
    x, y = np.ones((nx, 2), np.float32), np.zeros(ny, np.int32)
    if nx == 0:
        match = r"data is empty \(x has shape \(0, 2\)\)"
    elif nx != ny:
        match = f"data has {nx} inputs but {ny} targets"
    else:
        assert isinstance(data.validate((x, y)), data.Dataset)
        return
    with pytest.raises(ValueError, match=match):
        train(data=(x, y), batch_size=1)


@SETTINGS
@given(
    x_shape=st.sampled_from([(6,), (6, 5), (6, 2, 2), (6, 2)]),
    y=st.sampled_from(["labels", "labels2d", "onehot", "onehot4"]),
)
def test_data_that_does_not_fit_the_model(x_shape, y):
    """A wrong layout is refused by the layer or the loss, by name, while checking (nothing compiles)."""
    ys = {
        "labels": Y,
        "labels2d": Y[:, None],
        "onehot": np.eye(3, dtype=np.float32)[Y],
        "onehot4": np.eye(4, dtype=np.float32)[Y],
    }[y]
    x = np.ones(x_shape, np.float32)
    if y == "labels2d":
        with pytest.raises(ValueError, match=r"data needs integer labels of shape \(6,\), got \(6, 1\)"):
            train(data=(x, ys))
    elif x_shape[-1] != 2:
        with pytest.raises(fn.ShapeError, match=r"Dense\(3\) expected inputs \(\.\.\., 2\)"):
            train(data=(x, ys))
    elif len(x_shape) != 2:  # Dense maps (6, 2, 2) to (6, 2, 3): logits of the wrong rank
        with pytest.raises(fn.ShapeError, match=r"softmax_cross_entropy expects logits \(batch, classes\)"):
            train(data=(x, ys))
    elif y == "onehot4":
        with pytest.raises(fn.ShapeError, match=r"softmax_cross_entropy got logits \(2, 3\) and targets \(2, 4\)"):
            train(data=(x, ys))
    else:
        check_labels(TRAIN_NET, fn.softmax_cross_entropy, TRAIN_PARAMS, {"data": data.validate((x, ys))})


learning_rates = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0, -1, 1, "0.1", None, True])


@SETTINGS
@given(name=st.sampled_from(optim.OPTIMIZERS), lr=learning_rates)
def test_learning_rates(name, lr):
    numeric = isinstance(lr, (int, float)) and not isinstance(lr, bool)
    if numeric and 0 < lr < math.inf:
        optim.get(name, lr)
        return
    exc = ValueError if numeric else TypeError
    with pytest.raises(exc, match="learning_rate"):
        optim.get(name, lr)
    if numeric:  # sweep builds every optimizer first, so a bad value is refused before compiling
        with pytest.raises(ValueError, match="learning_rate"):
            sweep(learning_rates=[0.1, lr])


@SETTINGS
@given(momentum=st.floats(allow_nan=True) | st.sampled_from(["0.9", None]))
def test_momentum(momentum):
    if isinstance(momentum, float) and 0 < momentum < 1:
        optim.get("momentum", 0.1, momentum=momentum)
        return
    if isinstance(momentum, float) and momentum == 0:
        with pytest.raises(ValueError, match="nesterov=True needs a momentum > 0"):
            optim.get("nesterov", 0.1, momentum=momentum)
        return
    with pytest.raises((ValueError, TypeError), match="momentum"):
        optim.get("momentum", 0.1, momentum=momentum)


@pytest.mark.parametrize("lrs", [[0.1, 0.2, 0.3], [[0.1, 0.2]], np.ones((2, 1))])
def test_sweep_learning_rates_one_per_model(lrs):
    with pytest.raises(ValueError, match=r"sweep needs learning_rates as one value or 2 values"):
        sweep(learning_rates=lrs)
    with pytest.raises(TypeError, match="numeric learning_rates"):
        sweep(learning_rates=["fast", "slow"])


# ----------------------------------------------------------------------------------------------
# data helpers


@SETTINGS
@given(batch_size=sizes)
def test_batches_batch_size(batch_size):
    ds = data.Dataset(X, Y)
    if isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and 1 <= batch_size <= 6:
        assert all(b.x.shape[0] == batch_size for b in data.batches(ds, batch_size))
        return
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 6\]"):
        next(data.batches(ds, batch_size))


@SETTINGS
@given(labels=st.lists(st.integers(-2, 5), min_size=1, max_size=4), classes=st.integers(-1, 4))
def test_one_hot_labels_and_classes(labels, classes):
    if classes < 1:
        with pytest.raises(ValueError, match="num_classes to be an integer >= 1"):
            data.one_hot(np.array(labels), classes)
    elif min(labels) < 0 or max(labels) >= classes:
        with pytest.raises(ValueError, match=f"out of range for {classes} classes"):
            data.one_hot(np.array(labels), classes)
    else:
        np.testing.assert_array_equal(data.one_hot(np.array(labels), classes).argmax(-1), labels)


@pytest.mark.parametrize("n", [-1, 0, 1, 2.5, "4", np.float64(3.0)])
def test_synthetic_sets_need_a_count(n):
    """Only refusals here (a valid n generates, and compiles, data: tests/test_data.py covers that)."""
    makers = {
        "xor": (lambda n: data.xor(KEY, n=n), 1),
        "two_spirals": (lambda n: data.two_spirals(KEY, n), 2),
        "linearly_separable": (lambda n: data.linearly_separable(KEY, n)[0], 1),
        "target_1d": (lambda n: data.target_1d("sine", n=n), 1),
    }
    for name, (make, least) in makers.items():
        if not (isinstance(n, int) and n >= least):
            with pytest.raises(ValueError, match=f"{name} needs n to be an integer >= {least}"):
                make(n)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_samples": 0}, "num_samples to be an integer >= 2"),
        ({"num_samples": 100.0}, "num_samples to be an integer >= 2"),
        ({"train_split": 1.0}, r"train_split in \(0, 1\)"),
        ({"train_split": 0.0}, r"train_split in \(0, 1\)"),
        ({"train_split": float("nan")}, r"train_split in \(0, 1\)"),
        ({"train_split": "0.8"}, "train_split to be a fraction"),
        ({"seed": 1.5}, "integer seed"),
    ],
)
def test_mnist1d_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        data.mnist1d(cache=False, **kw)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.array([None] * 3), np.zeros(3, np.int32), "numeric inputs x, got an array of dtype object"),
        (np.array(["a"] * 3), np.zeros(3, np.int32), "numeric inputs x"),
        (np.ones((3, 2), np.float32), np.array(["a"] * 3), "numeric targets y"),
        (np.ones((3, 2), np.complex64), np.zeros(3, np.int32), "float inputs, got complex64"),
        ([[1.0], [2.0, 3.0]], [0, 1], "inputs x cannot be read as one array"),
        (np.ones((3, 2), np.float32), np.zeros(3, bool), "integer labels or float targets, got bool"),
    ],
)
def test_validate_odd_arrays(x, y, match):
    with pytest.raises(ValueError, match=match):
        data.validate((x, y))


def test_validate_reads_nested_lists():
    ds = data.validate(([[1.0, 2.0], [3.0, 4.0]], [0, 1]))
    assert ds.x.shape == (2, 2) and ds.y.dtype.kind == "i"


# ----------------------------------------------------------------------------------------------
# files: .npz read with allow_pickle=False; anything damaged is a DataFileError naming the path

NPZ_ARRAYS = {"x": np.arange(12, dtype=np.uint8).reshape(3, 4), "y": np.arange(3, dtype=np.int32)}


@pytest.fixture(scope="module")
def npz_bytes(tmp_path_factory):
    out = {}
    for saver in (np.savez, np.savez_compressed):
        p = tmp_path_factory.mktemp("npz") / "a.npz"
        saver(p, **NPZ_ARRAYS)
        out[saver.__name__] = p.read_bytes()
    return out


@SETTINGS
@given(
    saver=st.sampled_from(["savez", "savez_compressed"]),
    cut=st.floats(0, 1, exclude_max=True),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=2),
)
def test_damaged_npz(npz_bytes, tmp_path, saver, cut, flips):
    """Truncated or with flipped bytes: the same arrays come back (an unprotected byte) or DataFileError."""
    raw = bytearray(npz_bytes[saver])
    for where, mask in flips:
        raw[int(where * len(raw))] ^= mask
    if cut > 0.02 or not flips:
        raw = raw[: int(cut * len(raw))]
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(raw))
    try:
        got = load_npz(path, ("x", "y"))
    except DataFileError as e:
        assert str(path) in str(e)
        return
    for k, v in NPZ_ARRAYS.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype


def test_npz_with_an_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2, np.int32))
    with pytest.raises(DataFileError, match=r"stores array 'x' as Python objects \(pickled\).*allow_pickle=False"):
        load_npz(path, ("x", "y"))
    assert load_npz(path, ("y",))["y"].shape == (2,)  # the numeric arrays beside it still load


def test_pickle_and_npy_files_are_refused(tmp_path):
    import pickle

    p = tmp_path / "p.npz"
    p.write_bytes(pickle.dumps({"x": np.zeros(3)}))
    with pytest.raises(DataFileError, match="is a pickle, not an .npz file"):
        load_npz(p, ("x",))
    q = tmp_path / "q.npz"
    with open(q, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataFileError, match=r"single array \(\.npy\), not an \.npz"):
        load_npz(q, ("x",))
    with pytest.raises(DataFileError, match="is not a file"):
        load_npz(tmp_path, ("x",))
    z = tmp_path / "z.npz"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("x.npy", b"not an npy")
    with pytest.raises(DataFileError, match=str(z)):
        load_npz(z, ("x",))


GOOD_MNIST = {
    "x_train": np.zeros((4, 28, 28), np.uint8),
    "y_train": np.array([0, 1, 2, 9], np.uint8),
    "x_test": np.zeros((2, 28, 28), np.uint8),
    "y_test": np.array([3, 4], np.uint8),
}


@SETTINGS
@given(
    x_shape=st.sampled_from([(4, 28, 28), (4,), (4, 784), (4, 28, 27), (3, 28, 28), (4, 28, 28, 1)]),
    y_shape=st.sampled_from([(4,), (4, 1, 1), (4, 10), ()]),
    x_dtype=st.sampled_from([np.uint8, np.float32]),
    y_kind=st.sampled_from(["ok", "float", "too big", "negative"]),
)
def test_mnist_npz_layout(tmp_path, x_shape, y_shape, x_dtype, y_kind):
    y = np.resize(np.array([0, 1, 2, 9]), y_shape)
    y = {"ok": y, "float": y.astype(np.float32), "too big": y + 10, "negative": y - 5}[y_kind]
    arrays = GOOD_MNIST | {"x_train": np.zeros(x_shape, x_dtype), "y_train": y}
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    layout_ok = x_shape[1:] == (28, 28) and len(y_shape) == 1 and x_shape[0] == y_shape[0]
    if layout_ok and x_dtype == np.uint8 and y_kind == "ok":
        ds = data.mnist(path)
        assert ds.x.shape == (4, 28, 28, 1) and ds.y.dtype == np.int32
        return
    match = (
        r"expected \(N, 28, 28\) and \(N,\)"
        if not layout_ok
        else "expected uint8 pixels"
        if x_dtype != np.uint8
        else "expected integer class labels 0-9"
        if y_kind == "float"
        else "expected class labels 0-9"
    )
    with pytest.raises(DataFileError, match=match):
        data.mnist(path)
