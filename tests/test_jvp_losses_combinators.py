"""Hand-written forward mode of the losses (jvp, hvp) and of the combinators and transformer (jvp).

Each loss's ``jvp`` is checked against ``jax.jvp`` of its forward and against ⟨backward(cache), dpred⟩,
its ``hvp`` against ``jax.jvp(jax.grad(forward))``: in float64 within a relative 1e-10, in float32 within
1e-5, for integer and soft targets, masks, and batches of one and more. The combinators are checked on
small test layers written here (each with its own jvp), by ``jax.jvp`` of the forward and by the identity
⟨J t, c⟩ = ⟨t, Jᵀ c⟩ between the hand-written jvp and backward, which involves no autodiff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import DTypeError, Layer, ShapeError, check_input, check_no_params, check_params, mark_takes_mask
from fnnet.layers.combinators import parts, residual, serial
from fnnet.layers.transformer import gpt, transformer_block

F64_TOL = 1e-10
F32_TOL = 1e-5


def _rel(a, b) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖) over all leaves of two pytrees of one structure (0 when both are 0)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    diff = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)) for x, y in zip(la, lb))
    na = sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in la)
    nb = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in lb)
    scale = max(na, nb) ** 0.5
    return 0.0 if scale == 0 else diff**0.5 / scale


def _vdot(a, b) -> float:
    """⟨a, b⟩ summed over all leaves of two pytrees, in float64."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    return sum(float(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64))) for x, y in zip(la, lb))


def _normal_like(key, tree):
    """Standard normal draws with the structure, shapes and dtypes of ``tree``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)])


# ----------------------------------------------------------------------------------------------
# losses


def _loss_case(name: str, batch: int, key, dtype):
    """(loss, pred, target) for one case; targets drawn from ``key``."""
    k1, k2, k3 = jax.random.split(key, 3)
    if name == "mse":
        pred = jax.random.normal(k1, (batch, 3, 2), dtype)
        return fn.mse, pred, jax.random.normal(k2, (batch, 3, 2), dtype)
    if name.startswith("sce"):
        pred = 3 * jax.random.normal(k1, (batch, 5), dtype)
        if name == "sce_int":
            target = jax.random.randint(k2, (batch,), 0, 5)
        elif name == "sce_onehot":
            target = jax.nn.one_hot(jax.random.randint(k2, (batch,), 0, 5), 5, dtype=dtype)
        elif name == "sce_prob":
            target = jax.nn.softmax(jax.random.normal(k2, (batch, 5), dtype))
        else:  # "sce_real": rows that are not distributions (sums ≠ 1, negative entries)
            target = jax.random.normal(k2, (batch, 5), dtype)
        return fn.softmax_cross_entropy, pred, target
    if name.startswith("bce"):
        pred = 2 * jax.random.normal(k1, (batch, 4), dtype)
        if name == "bce_hard":
            target = jax.random.bernoulli(k2, 0.5, (batch, 4)).astype(dtype)
        elif name == "bce_soft":
            target = jax.random.uniform(k2, (batch, 4), dtype)
        else:  # "bce_real"
            target = jax.random.normal(k2, (batch, 4), dtype)
        return fn.binary_cross_entropy, pred, target
    pred = 2 * jax.random.normal(k1, (batch, 4, 6), dtype)
    labels = jax.random.randint(k2, (batch, 4), 0, 6)
    if name == "seq":
        return fn.sequence_cross_entropy, pred, labels
    keep = jax.random.bernoulli(k3, 0.6, (batch, 4)).at[0, 0].set(True)
    if name == "seq_mask":  # dropped tokens carry padding labels, which the forward never reads
        return fn.sequence_cross_entropy, pred, (jnp.where(keep, labels, -100), keep)
    weights = jnp.where(keep, jax.random.uniform(k3, (batch, 4), dtype, 0.5, 2.0), 0)  # "seq_weights"
    return fn.sequence_cross_entropy, pred, (labels, weights)


LOSS_CASES = [
    "mse",
    "sce_int",
    "sce_onehot",
    "sce_prob",
    "sce_real",
    "bce_hard",
    "bce_soft",
    "bce_real",
    "seq",
    "seq_mask",
    "seq_weights",
]


def _check_loss(loss, pred, target, dpred, v, tol):
    """jvp against jax.jvp and ⟨backward, dpred⟩; hvp against jax.jvp of jax.grad; values exact."""
    value, dvalue = loss.jvp(pred, target, dpred)
    ref_value, cache = loss.forward(pred, target)
    assert value.dtype == pred.dtype and dvalue.dtype == pred.dtype and dvalue.shape == ()
    assert float(value) == float(ref_value)

    def f(p):
        return loss.forward(p, target)[0]

    _, auto = jax.jvp(f, (pred,), (dpred,))
    assert _rel(dvalue, auto) < tol
    assert _rel(dvalue, _vdot(loss.backward(cache), dpred)) < tol

    hv = loss.hvp(cache, v)
    assert hv.shape == pred.shape and hv.dtype == pred.dtype
    auto_hv = jax.jvp(jax.grad(f), (pred,), (v,))[1]
    assert _rel(hv, auto_hv) < tol
    return dvalue, hv


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("case", LOSS_CASES)
def test_loss_jvp_hvp_float64(case, batch, key):
    with jax.enable_x64(True):
        loss, pred, target = _loss_case(case, batch, key, jnp.float64)
        dpred, v = _normal_like(jax.random.fold_in(key, 1), (pred, pred))
        _check_loss(loss, pred, target, dpred, v, F64_TOL)


@pytest.mark.parametrize("case", LOSS_CASES)
def test_loss_jvp_hvp_float32_and_jit(case, key):
    loss, pred, target = _loss_case(case, 3, key, jnp.float32)
    dpred, v = _normal_like(jax.random.fold_in(key, 1), (pred, pred))
    dvalue, hv = _check_loss(loss, pred, target, dpred, v, F32_TOL)
    _, jit_dvalue = jax.jit(loss.jvp)(pred, target, dpred)
    jit_hv = jax.jit(lambda p, t, v: loss.hvp(loss.forward(p, t)[1], v))(pred, target, v)
    assert _rel(jit_dvalue, dvalue) < F32_TOL and _rel(jit_hv, hv) < F32_TOL


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("case", ["mse", "sce_int", "bce_soft", "seq_mask"])
def test_loss_jvp_hvp_half_precision_dtypes(case, dtype, key):
    """Half-precision predictions: computed in float32, returned in the prediction's dtype."""
    loss, pred32, target = _loss_case(case, 3, key, jnp.float32)
    pred = pred32.astype(dtype)
    target = jax.tree_util.tree_map(lambda t: t.astype(dtype) if t.dtype == jnp.float32 else t, target)
    dpred, v = _normal_like(jax.random.fold_in(key, 1), (pred, pred))
    value, dvalue = loss.jvp(pred, target, dpred)
    hv = loss.hvp(loss.forward(pred, target)[1], v)
    assert value.dtype == dvalue.dtype == hv.dtype == dtype
    with jax.enable_x64(True):
        up = lambda a: a.astype(jnp.float64)
        target64 = jax.tree_util.tree_map(lambda t: up(t) if t.dtype == dtype else t, target)
        ref = _check_loss(loss, up(pred), target64, up(dpred), up(v), F64_TOL)
    assert _rel(dvalue, ref[0]) < 2e-2 and _rel(hv, ref[1]) < 2e-2


def test_sequence_loss_never_reads_dropped_tokens(key):
    """NaN tangents and vectors on dropped tokens change nothing, as the forward never reads those logits."""
    with jax.enable_x64(True):
        loss, pred, (labels, keep) = _loss_case("seq_mask", 4, key, jnp.float64)
        dpred, v = _normal_like(jax.random.fold_in(key, 1), (pred, pred))
        dropped = ~keep[..., None]
        clean_d, clean_v = jnp.where(dropped, 0.0, dpred), jnp.where(dropped, 0.0, v)
        _, cache = loss.forward(pred, (labels, keep))
        _, dvalue = loss.jvp(pred, (labels, keep), jnp.where(dropped, jnp.nan, dpred))
        hv = loss.hvp(cache, jnp.where(dropped, jnp.nan, v))
        assert float(dvalue) == float(loss.jvp(pred, (labels, keep), clean_d)[1])
        np.testing.assert_array_equal(hv, loss.hvp(cache, clean_v))
        assert np.all(np.asarray(hv)[np.asarray(~keep)] == 0)
        none_kept = jnp.zeros(labels.shape, bool)  # N = 0: the loss is 0, and so are dL and H v
        _, dvalue = loss.jvp(pred, (labels, none_kept), dpred)
        assert float(dvalue) == 0.0
        assert not np.any(np.asarray(loss.hvp(loss.forward(pred, (labels, none_kept))[1], v)))


def test_sce_hvp_of_masked_logits_is_zero_there(key):
    """A logit of −∞ (p = 0, y = 0) has no curvature: its row and column of H are 0, as jax.hessian says."""
    with jax.enable_x64(True):
        pred = jax.random.normal(key, (3, 5), jnp.float64).at[:, 1].set(-jnp.inf)
        labels = jnp.array([0, 2, 4])
        dpred, v = _normal_like(jax.random.fold_in(key, 1), (pred, pred))
        _, cache = fn.softmax_cross_entropy.forward(pred, labels)
        hv = fn.softmax_cross_entropy.hvp(cache, v)
        _, dvalue = fn.softmax_cross_entropy.jvp(pred, labels, dpred)
        assert np.all(np.isfinite(hv)) and np.all(np.asarray(hv)[:, 1] == 0) and np.isfinite(float(dvalue))
        finite = pred.at[:, 1].set(0.0)
        f = lambda p: fn.softmax_cross_entropy.forward(jnp.where(jnp.isinf(pred), -jnp.inf, p), labels)[0]
        assert _rel(hv, jax.jvp(jax.grad(f), (finite,), (v,))[1]) < F64_TOL


@pytest.mark.parametrize("case", ["mse", "sce_int", "bce_soft", "seq"])
def test_loss_jvp_hvp_refuse_bad_directions(case, key):
    loss, pred, target = _loss_case(case, 3, key, jnp.float32)
    _, cache = loss.forward(pred, target)
    short = pred[:-1]
    with pytest.raises(ShapeError, match="prediction's shape"):
        loss.jvp(pred, target, short)
    with pytest.raises(ShapeError, match="prediction's shape"):
        loss.hvp(cache, short)
    with pytest.raises(DTypeError, match="nothing is cast"):
        loss.jvp(pred, target, pred.astype(jnp.bfloat16))
    with pytest.raises(DTypeError, match="nothing is cast"):
        loss.hvp(cache, pred.astype(jnp.bfloat16))
    with pytest.raises(ShapeError):  # the forward's own checks run first
        loss.jvp(pred[None], target, pred[None])


def test_every_builtin_loss_has_jvp_and_hvp():
    for loss in (fn.mse, fn.softmax_cross_entropy, fn.binary_cross_entropy, fn.sequence_cross_entropy):
        assert isinstance(loss, fn.Loss) and loss.jvp is not None and loss.hvp is not None


# ----------------------------------------------------------------------------------------------
# combinators, on test layers with hand-written rules


def Affine(n: int) -> Layer:
    """y = x W + b on the last axis, with hand-written backward and jvp (dy = dx W + x dW + db)."""
    name = f"Affine({n})"
    spec = {"W": ("d_in", n), "b": (n,)}

    def init(key, in_shape, dtype=jnp.float32):
        kw, kb = jax.random.split(key)
        d = in_shape[-1]
        params = {"W": jax.random.normal(kw, (d, n), dtype) / d**0.5, "b": jax.random.normal(kb, (n,), dtype)}
        return tuple(in_shape[:-1]) + (n,), params

    def lift(b, x):  # b (n,) against x's leading axes, as rank promotion is off
        return jnp.reshape(b, (1,) * (x.ndim - 1) + (n,))

    def forward(params, x, *, key=None, train=True):
        check_params(name, params, spec)
        check_input(name, x, (params["W"].shape[0],), leading="...")
        return x @ params["W"] + lift(params["b"], x), x

    def backward(params, x, dy):
        rows = (-1, dy.shape[-1])
        dW = jnp.reshape(x, (-1, x.shape[-1])).T @ jnp.reshape(dy, rows)
        return {"W": dW, "b": jnp.sum(jnp.reshape(dy, rows), axis=0)}, dy @ params["W"].T

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        check_params(name, dparams, spec)
        y, _ = forward(params, x, key=key, train=train)
        return y, dx @ params["W"] + x @ dparams["W"] + lift(dparams["b"], x)

    return Layer(init, forward, backward, jvp=jvp, name=name)


def Tanh(with_jvp: bool = True) -> Layer:
    """y = tanh x; dy = (1 − y²) dx."""

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), ()

    def forward(params, x, *, key=None, train=True):
        check_no_params("Tanh", params)
        y = jnp.tanh(x)
        return y, y

    def backward(params, y, dy):
        return (), (1 - y * y) * dy

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        y, _ = forward(params, x)
        return y, (1 - y * y) * dx

    return Layer(init, forward, backward, jvp=jvp if with_jvp else None, name="Tanh")


def RandomScale() -> Layer:
    """y = x ⊙ u, u ~ U(0.5, 1.5) drawn from the key in training (identity in evaluation): shows key splits."""

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), ()

    def scale(x, key, train):
        if not train:
            return jnp.ones_like(x)
        if key is None:
            raise ValueError("RandomScale needs a key in training")
        return jax.random.uniform(key, x.shape, x.dtype, 0.5, 1.5)

    def forward(params, x, *, key=None, train=True):
        u = scale(x, key, train)
        return x * u, u

    def backward(params, u, dy):
        return (), dy * u

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        u = scale(x, key, train)
        return x * u, dx * u

    return Layer(init, forward, backward, jvp=jvp, name="RandomScale")


def MaskRows() -> Layer:
    """x (B, T, d) -> x ⊙ mask[..., None] (a stand-in for attention's key-padding mask); dy = dx ⊙ mask."""

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), ()

    def weights(x, mask):
        return jnp.ones(x.shape[:-1] + (1,), x.dtype) if mask is None else mask[..., None].astype(x.dtype)

    @mark_takes_mask
    def forward(params, x, *, key=None, train=True, mask=None):
        m = weights(x, mask)
        return x * m, m

    def backward(params, m, dy):
        return (), dy * m

    def jvp(params, x, dparams, dx, *, key=None, train=True, mask=None):
        m = weights(x, mask)
        return x * m, dx * m

    return Layer(init, forward, backward, jvp=jvp, name="MaskRows")


def _check_layer(layer, key, in_shape, *, train=True, mask=None, tol=F64_TOL, x=None, dx_needed=True):
    """y exact, dy against jax.jvp of the forward, and ⟨dy, c⟩ = ⟨dθ, θ̄⟩ + ⟨dx, x̄⟩, in float64 (caller's x64)."""
    k_init, k_x, k_t, k_c, k_fwd = jax.random.split(key, 5)
    out_shape, params = layer.init(k_init, in_shape, jnp.float64)
    if x is None:
        x = jax.random.normal(k_x, (2, *in_shape), jnp.float64)
    dparams = _normal_like(k_t, params)
    dx = _normal_like(jax.random.fold_in(k_t, 1), x) if dx_needed else None
    kw = {} if mask is None else {"mask": mask}
    y_ref, cache = layer.forward(params, x, key=k_fwd, train=train, **kw)
    y, dy = layer.jvp(params, x, dparams, dx, key=k_fwd, train=train, **kw)
    assert y.shape == (x.shape[0], *out_shape) and dy.shape == y.shape and dy.dtype == y.dtype
    assert _rel(y, y_ref) < 1e-14
    if dx_needed:
        f = lambda p, x: layer.forward(p, x, key=k_fwd, train=train, **kw)[0]
        auto = jax.jvp(f, (params, x), (dparams, dx))[1]
    else:
        auto = jax.jvp(lambda p: layer.forward(p, x, key=k_fwd, train=train, **kw)[0], (params,), (dparams,))[1]
    assert _rel(dy, auto) < tol
    c = jax.random.normal(k_c, y.shape, y.dtype)
    dp_bar, dx_bar = layer.backward(params, cache, c)
    lhs = _vdot(dy, c)
    rhs = _vdot(dparams, dp_bar) + (_vdot(dx, dx_bar) if dx_needed else 0.0)
    assert abs(lhs - rhs) / max(abs(lhs), abs(rhs)) < tol
    jit_y, jit_dy = jax.jit(lambda p, x, dp, dx: layer.jvp(p, x, dp, dx, key=k_fwd, train=train, **kw))(
        params, x, dparams, dx
    )
    assert _rel(jit_y, y) < 1e-12 and _rel(jit_dy, dy) < 1e-12
    return params, x, dparams, dx


COMBINATIONS = {
    "serial": lambda: serial(Affine(4), Tanh(), RandomScale(), Affine(3)),
    "residual": lambda: residual(serial(Affine(6), Tanh(), Affine(5))),
    "nested": lambda: serial(
        residual(serial(Affine(5), RandomScale())), Tanh(), residual(residual(Affine(5))), serial(Affine(2))
    ),
}


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("which", sorted(COMBINATIONS))
def test_combinator_jvp(which, train, key):
    with jax.enable_x64(True):
        _check_layer(COMBINATIONS[which](), key, (5,), train=train)


def test_serial_jvp_splits_the_key_as_forward():
    """Two keyed children get the forward's two subkeys: another key gives another y and dy."""
    layer = serial(RandomScale(), RandomScale())
    with jax.enable_x64(True):
        params, x, dparams, dx = _check_layer(layer, jax.random.key(3), (4,))
        a = layer.jvp(params, x, dparams, dx, key=jax.random.key(4))
        b = layer.jvp(params, x, dparams, dx, key=jax.random.key(5))
        assert not np.allclose(a[0], b[0]) and not np.allclose(a[1], b[1])


@pytest.mark.parametrize("which", ["serial", "residual"])
def test_combinator_jvp_hands_the_mask_on(which, key):
    layer = serial(Affine(4), MaskRows(), Tanh()) if which == "serial" else residual(serial(MaskRows(), Affine(4)))
    mask = jnp.array([[True, True, False], [True, False, False]])
    with jax.enable_x64(True):
        params, x, dparams, dx = _check_layer(layer, key, (3, 4), mask=mask)
        y, dy = layer.jvp(params, x, dparams, dx, mask=mask)
        y0, dy0 = layer.jvp(params, x, dparams, dx)
        assert not np.allclose(dy, dy0)


def test_combinator_jvp_is_none_when_a_child_has_none():
    assert serial(Affine(3), Tanh(with_jvp=False)).jvp is None
    assert residual(Tanh(with_jvp=False)).jvp is None
    assert serial(residual(Tanh(with_jvp=False)), Affine(2)).jvp is None
    assert serial(Affine(3), Tanh()).jvp is not None and residual(Tanh()).jvp is not None


def test_combinator_jvp_errors_name_the_child(key):
    layer = serial(Affine(4), Tanh(), Affine(3))
    _, params = layer.init(key, (5,))
    x = jax.random.normal(key, (2, 5))
    dparams = _normal_like(key, params)
    with pytest.raises(ValueError, match="serial of 3 layers needs dparams with one entry per layer"):
        layer.jvp(params, x, dparams[:2], x)
    with pytest.raises(TypeError, match="needs dparams as a tuple"):
        layer.jvp(params, x, dparams[0], x)
    bad = (dparams[0], dparams[1], {"W": dparams[2]["W"]})
    with pytest.raises(ValueError, match=r"serial layer 2, Affine\(3\) needs params with keys 'W', 'b'"):
        layer.jvp(params, x, bad, x)
    with pytest.raises(ShapeError, match=r"serial layer 0, Affine\(4\) expected inputs"):
        layer.jvp(params, x[:, :3], dparams, x[:, :3])
    with pytest.raises(TypeError, match="takes no mask"):
        layer.jvp(params, x, dparams, x, mask=jnp.ones((2, 5), bool))
    res = residual(Affine(5))
    _, rp = res.init(key, (5,))
    bad_res = {"W": _normal_like(key, rp)["W"]}
    with pytest.raises(ValueError, match=r"residual branch, Affine\(5\) needs params"):
        res.jvp(rp, x, bad_res, x)
    with pytest.raises(TypeError, match="takes no mask"):
        res.jvp(rp, x, rp, x, mask=jnp.ones((2, 5), bool))


# ----------------------------------------------------------------------------------------------
# transformer: composed from fnnet's own layers, whose jvps may not all exist yet


def _missing_jvp(layer: Layer) -> str | None:
    """The label of a leaf layer inside ``layer`` whose jvp is None, or None when every one has a jvp."""
    kids = parts(layer)
    if kids is None:
        return None if layer.jvp is not None else layer.label
    for child in kids[1]:
        missing = _missing_jvp(child)
        if missing is not None:
            return missing
    return None if layer.jvp is not None else layer.label


def _require_jvp(layer: Layer) -> None:
    if layer.jvp is None:
        pytest.skip(f"{layer.label} has no jvp yet: {_missing_jvp(layer)} provides none")


def test_transformer_jvp_exists_exactly_when_every_child_has_one():
    for layer in (transformer_block(8, 2), transformer_block(8, 2, prenorm=False), gpt(11, 6, 8, 2, 1)):
        assert (layer.jvp is None) == (_missing_jvp(layer) is not None)
    tied = gpt(11, 6, 8, 2, 1, tie_weights=True)
    assert (tied.jvp is None) == (_missing_jvp(serial(*parts(tied)[1])) is not None)


@pytest.mark.parametrize("prenorm", [True, False])
def test_transformer_block_jvp(prenorm, key):
    layer = transformer_block(8, 2, prenorm=prenorm)
    _require_jvp(layer)
    mask = jnp.array([[True, True, True], [True, True, False]])
    with jax.enable_x64(True):
        _check_layer(layer, key, (3, 8), tol=F64_TOL)
        _check_layer(layer, key, (3, 8), mask=mask, tol=F64_TOL)


@pytest.mark.parametrize("tie_weights", [False, True])
def test_gpt_jvp(tie_weights, key):
    layer = gpt(11, 6, 8, 2, 2, tie_weights=tie_weights)
    if tie_weights:
        body = serial(*parts(layer)[1])
        if body.jvp is None:
            pytest.skip(f"{layer.label} has no jvp yet: {_missing_jvp(body)} provides none")
    _require_jvp(layer)
    ids = jax.random.randint(key, (2, 5), 0, 11)
    mask = jnp.array([[True] * 5, [True, True, True, False, False]])
    with jax.enable_x64(True):
        for kw in ({}, {"mask": mask}):
            _check_layer(layer, key, (5,), x=ids, dx_needed=False, tol=F64_TOL, **kw)
