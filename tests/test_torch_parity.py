"""Float64 parity with PyTorch: fnnet's forwards and hand-written rules against ``torch.autograd``.

For every layer family of the catalog (``fnnet/catalog.py``) that PyTorch has, the layer is run in
float64 at random params, input and cotangent dy, and its output and its hand-written ``layer.backward``
(``loss.backward`` for a loss; never ``jax.grad``) are compared with PyTorch's own op or module on the
same numbers, differentiated by ``torch.autograd``: output, every leaf of dparams, and dx.

The layout mapping is written once per family, inside the torch graph: the torch side takes leaf tensors
in fnnet's layout and permutes them there (NHWC → NCHW, HWIO → OIHW, Dense's (in, out) → torch's
(out, in), LSTM's [i, f, g, o] columns → rows, which is PyTorch's gate order too), so autograd returns
the gradients in fnnet's layout and the two pytrees are compared leaf by leaf. Modules are built on the
meta device and run with ``torch.func.functional_call``: every number comes from fnnet's params, and
PyTorch's random initialization is never drawn. Params are redrawn at random rather than taken from
``init`` (ones, zeros, forget bias 1), so that a misplaced scale, bias or running statistic shows.

Where the definitions differ, torch's definition is matched through its arguments, or the difference is
asserted as it is:

* ``mse`` is ½ Σ (ŷ − y)² / B: torch's ``mse_loss(reduction="sum") / (2B)``; ``binary_cross_entropy`` is a
  sum over features, a mean over the batch: ``binary_cross_entropy_with_logits(reduction="sum") / B``.
* ``AvgPool`` divides by the real pixels of a window: ``count_include_pad=False``; TensorFlow's 'SAME'
  split with the odd pixel after is torch's ``ceil_mode=True`` window (the cases here are those where it
  is; an even window at stride 1 has no torch op that pads only after and counts real pixels).
* ``MaxPool`` 'SAME' with an odd pixel after: ``F.pad`` with −∞ first (torch pads symmetrically only).
* ``BatchNorm`` in evaluation: ``F.batch_norm`` does not differentiate its running statistics, so d mean
  and d var are checked against autograd of the evaluation formula, which is checked to be
  ``F.batch_norm``'s own output and gradients.
* leaky_relu′(0): fnnet's is 1 (as ``jax.nn``), torch's the negative slope.
* ``sequence_cross_entropy`` with no token kept: fnnet's loss and gradient are 0, torch's mean over no
  token is NaN.
* An attention key bias has gradient identically 0: fnnet's rule returns exact zeros, autograd rounding
  noise, so that leaf is checked against 0 with an absolute bar.
* ``Softplus`` against torch's default ``threshold=20`` (x itself above it): the inputs here stay below.

Families left out, and why:

* RMSNorm: ``tests/test_rmsnorm.py`` checks it against ``torch.nn.functional.rms_norm``.
* GRU: ``tests/test_gru.py`` checks it against ``torch.nn.GRU``.
* MultiHeadAttention on its own: ``tests/test_attention.py`` checks its core against
  ``scaled_dot_product_attention``; here it runs, projections included, inside the transformer block.
* Dropout: its mask comes from JAX's PRNG and torch's from its own, so no input gives both the same
  numbers; in evaluation it is the identity.
* RNN with activations other than tanh and relu (gelu, swish, softplus, ...): ``torch.nn.RNN`` has only
  those two.
* ``sequence_cross_entropy`` with real-valued (not boolean) mask weights: torch's ``cross_entropy`` has
  class weights and ``ignore_index``, no per-token weights.
* Conv1D and ELU: fnnet has neither.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet import layers

torch = pytest.importorskip("torch")
F = torch.nn.functional
functional_call = torch.func.functional_call

#: The catalog's float64 bar against autodiff: both sides round at ~1e-16 and sum in other orders; a wrong
#: formula or layout is off by O(1).
REL = 1e-10

EPS = 1e-5  # fnnet's BatchNorm and LayerNorm ε, which is torch's default


def rel(a: Any, b: Any) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖, tiny), after checking that the shapes agree."""
    a = np.asarray(a.detach().numpy() if isinstance(a, torch.Tensor) else a, np.float64)
    b = np.asarray(b.detach().numpy() if isinstance(b, torch.Tensor) else b, np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    scale = max(np.linalg.norm(a), np.linalg.norm(b), np.finfo(np.float64).tiny)
    return float(np.linalg.norm(a - b) / scale)


def tensor(a: Any, grad: bool = False) -> Any:
    """A torch copy of ``a`` (float64 stays float64, integers become int64), a leaf for autograd if ``grad``."""
    host = np.array(a)
    t = torch.from_numpy(host.astype(np.int64) if np.issubdtype(host.dtype, np.integer) else host)
    return t.requires_grad_() if grad else t


def normal(key, shape, scale: float = 1.0):
    return scale * jax.random.normal(key, shape, jnp.float64)


def away_from_zero(key, shape):
    """Normal draws pushed at least 0.1 off the kink at 0."""
    x = normal(key, shape)
    return x + jnp.where(x >= 0, 0.1, -0.1)


def randomized(params: Any, key) -> Any:
    """``params`` with every leaf redrawn: N(0, 0.5²), and U(0.5, 2) for a running variance ``"var"``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for (path, leaf), k in zip(leaves, keys):
        if getattr(path[-1], "key", None) == "var":
            out.append(jax.random.uniform(k, leaf.shape, jnp.float64, 0.5, 2.0))
        else:
            out.append(normal(k, leaf.shape, 0.5))
    return jax.tree_util.tree_unflatten(treedef, out)


class Run(NamedTuple):
    """One layer checked against torch: fnnet's point and results, and the torch leaves after backward."""

    params: Any
    x: Any
    y: Any
    cache: Any
    dy: Any
    grads: Any
    dx: Any
    tparams: Any


def check_layer(
    layer: fn.Layer,
    in_shape: tuple[int, ...],
    torch_forward: Callable,
    *,
    batch: int = 2,
    sample: Callable | None = None,
    train: bool = True,
    seed: int = 0,
    zero_leaves: tuple[str, ...] = (),
) -> Run:
    """fnnet's forward and ``layer.backward`` against torch autograd of ``torch_forward(tparams, tx)``.

    ``tparams`` mirrors fnnet's params with torch leaves in fnnet's layout. A torch leaf the function never
    reads gets no gradient: fnnet's must then be exactly 0. Leaves named in ``zero_leaves`` have gradient
    identically 0 by the math: fnnet's must be exactly 0, torch's within ``REL`` of the largest leaf's.
    """
    with jax.enable_x64(True):
        k_init, k_p, k_x, k_dy = jax.random.split(jax.random.key(seed), 4)
        _, params = layer.init(k_init, in_shape, jnp.float64)
        params = randomized(params, k_p)
        x = (sample or normal)(k_x, (batch, *in_shape))
        y, cache = layer.forward(params, x, train=train)
        dy = normal(k_dy, y.shape)
        grads, dx = layer.backward(params, cache, dy)
    is_float = jnp.issubdtype(x.dtype, jnp.floating)
    tparams = jax.tree_util.tree_map(lambda a: tensor(a, grad=True), params)
    tx = tensor(x, grad=is_float)
    ty = torch_forward(tparams, tx)
    ty.backward(tensor(dy))
    assert rel(y, ty) < REL, f"forward: rel {rel(y, ty):.2e}"
    assert_grads(grads, tparams, zero_leaves)
    if is_float:
        assert rel(dx, tx.grad) < REL, f"dx: rel {rel(dx, tx.grad):.2e}"
    else:
        assert dx is None
    return Run(params, x, y, cache, dy, grads, dx, tparams)


def assert_grads(grads: Any, tparams: Any, zero_leaves: tuple[str, ...] = ()) -> None:
    """fnnet's dparams against the ``.grad`` of torch's leaves, leaf by leaf (see :func:`check_layer`)."""
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(tparams)  # tensors are leaves
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    theirs = jax.tree_util.tree_leaves(tparams)
    norms = [float(np.linalg.norm(t.grad.numpy())) for t in theirs if t.grad is not None]
    largest = max(norms, default=0.0)
    for (path, g), t in zip(flat, theirs):
        name = jax.tree_util.keystr(path)
        g = np.asarray(g)
        if t.grad is None:
            np.testing.assert_array_equal(g, 0.0, err_msg=f"{name}: torch never reads it")
        elif getattr(path[-1], "key", None) in zero_leaves:
            np.testing.assert_array_equal(g, 0.0, err_msg=name)
            assert float(np.linalg.norm(t.grad.numpy())) <= REL * largest, name
        else:
            assert rel(g, t.grad) < REL, f"{name}: rel {rel(g, t.grad):.2e}"


# ----------------------------------------------------------------------------------------------
# activations


ACTIVATIONS = [
    ("Sigmoid", fn.Sigmoid, torch.sigmoid),
    ("Tanh", fn.Tanh, torch.tanh),
    ("Relu", fn.Relu, F.relu),
    ("LeakyRelu(0.2)", lambda: fn.LeakyRelu(0.2), lambda x: F.leaky_relu(x, 0.2)),
    ("Gelu(exact)", fn.Gelu, F.gelu),
    ("Gelu(tanh)", lambda: fn.Gelu(approximate=True), lambda x: F.gelu(x, approximate="tanh")),
    ("Swish", fn.Swish, F.silu),
    ("Softplus", fn.Softplus, F.softplus),
    ("Softsign", fn.Softsign, F.softsign),
    ("Identity", fn.Identity, torch.nn.Identity()),
    ("Softmax", fn.Softmax, lambda x: torch.softmax(x, -1)),
]


def wide(k, shape):
    """Normal draws of scale 2, at least 0.2 off the kinks at 0."""
    return 2.0 * away_from_zero(k, shape)


@pytest.mark.parametrize("make, torch_fn", [a[1:] for a in ACTIVATIONS], ids=[a[0] for a in ACTIVATIONS])
def test_activation(make, torch_fn):
    """Inputs of scale 2, off the kinks by at least 0.2, and far below torch's softplus threshold 20."""
    check_layer(make(), (3, 5), lambda p, x: torch_fn(x), batch=3, sample=wide)


def test_softmax_over_a_middle_axis():
    check_layer(fn.Softmax(axis=1), (3, 4), lambda p, x: torch.softmax(x, 1), batch=2)


def with_zeros(k, shape):
    """Normal draws with every other feature exactly 0: on the kink, on purpose."""
    return normal(k, shape).at[:, ::2].set(0.0)


def test_relu_kink_is_torchs():
    """relu′(0) = 0 in both."""
    check_layer(fn.Relu(), (6,), lambda p, x: F.relu(x), batch=3, sample=with_zeros)


def test_leaky_relu_kink_differs_from_torch():
    """At x = 0 fnnet's leaky_relu′ is 1 (x ≥ 0 is the linear side, as ``jax.nn``), torch's the slope α;
    everywhere else they agree."""
    alpha = 0.2
    layer = fn.LeakyRelu(alpha)
    with jax.enable_x64(True):
        x = with_zeros(jax.random.key(3), (3, 6))
        dy = normal(jax.random.key(4), x.shape)
        y, cache = layer.forward((), x)
        _, dx = layer.backward((), cache, dy)
    tx = tensor(x, grad=True)
    ty = F.leaky_relu(tx, alpha)
    ty.backward(tensor(dy))
    at_zero = np.asarray(x) == 0
    assert rel(y, ty) < REL
    np.testing.assert_array_equal(np.asarray(dx)[at_zero], np.asarray(dy)[at_zero])
    np.testing.assert_allclose(tx.grad.numpy()[at_zero], alpha * np.asarray(dy)[at_zero], rtol=1e-15)
    assert rel(np.asarray(dx)[~at_zero], tx.grad.numpy()[~at_zero]) < REL


# ----------------------------------------------------------------------------------------------
# Dense, Flatten, combinators


def linear(p: dict, x: Any) -> Any:
    """fnnet's Dense, y = x W + b with W (in, out), as torch's ``F.linear`` with weight Wᵀ (out, in)."""
    return F.linear(x, p["W"].T, p.get("b"))


@pytest.mark.parametrize(
    "layer, in_shape",
    [(layers.Dense(4), (6,)), (layers.Dense(3, use_bias=False), (5,)), (layers.Dense(4), (2, 6))],
    ids=["Dense(4)", "Dense(3)[no bias]", "Dense(4)[(B,T,d)]"],
)
def test_dense(layer, in_shape):
    check_layer(layer, in_shape, linear, batch=3)


def test_flatten():
    check_layer(layers.Flatten(), (2, 3, 2), lambda p, x: torch.flatten(x, 1), batch=3)


def test_serial():
    net = layers.serial(layers.Dense(5), fn.Tanh(), layers.Dense(3))
    check_layer(net, (4,), lambda p, x: linear(p[2], torch.tanh(linear(p[0], x))), batch=3)


def test_residual():
    net = layers.residual(layers.serial(layers.Dense(4), fn.Tanh()))
    check_layer(net, (4,), lambda p, x: x + torch.tanh(linear(p[0], x)), batch=3)


# ----------------------------------------------------------------------------------------------
# Conv2D, MaxPool, AvgPool


def same_pads(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's 'SAME' (docs/conventions.md): out = ⌈n/s⌉, the odd pixel of padding after."""
    total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def nchw(x: Any) -> Any:
    return x.permute(0, 3, 1, 2)


def nhwc(x: Any) -> Any:
    return x.permute(0, 2, 3, 1)


CONVS = [
    # (label, kernel, stride, padding, dilation, use_bias, in_shape (H, W, C_in))
    ("3x3,VALID,s1", (3, 3), (1, 1), "VALID", (1, 1), True, (6, 5, 2)),
    ("3x3,VALID,s2", (3, 3), (2, 2), "VALID", (1, 1), True, (7, 6, 2)),
    ("3x3,SAME,s1", (3, 3), (1, 1), "SAME", (1, 1), True, (5, 6, 2)),
    ("3x3,SAME,s2,odd pad after", (3, 3), (2, 2), "SAME", (1, 1), True, (6, 5, 2)),
    ("2x2,SAME,s1,odd pad after", (2, 2), (1, 1), "SAME", (1, 1), True, (5, 4, 2)),
    ("2x3,s(2,1),pad1,dil2", (2, 3), (2, 1), 1, (2, 2), True, (6, 7, 1)),
    ("3x3,VALID,no bias", (3, 3), (1, 1), "VALID", (1, 1), False, (5, 5, 3)),
]


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, use_bias, in_shape", [c[1:] for c in CONVS], ids=[c[0] for c in CONVS]
)
def test_conv2d(kernel, stride, padding, dilation, use_bias, in_shape):
    """NHWC × HWIO against ``F.conv2d`` on NCHW × OIHW (W.permute(3, 2, 0, 1)); 'SAME' padded as TensorFlow:
    with torch's symmetric ``padding`` where the split is even, with ``F.pad`` first where it is not."""
    if padding == "SAME":
        pads = [same_pads(n, k, s, d) for n, k, s, d in zip(in_shape[:2], kernel, stride, dilation)]
    elif padding == "VALID":
        pads = [(0, 0), (0, 0)]
    else:
        pads = [(padding, padding), (padding, padding)]

    def conv(p, x):
        x = nchw(x)
        if all(lo == hi for lo, hi in pads):
            padding_arg = (pads[0][0], pads[1][0])
        else:
            (h_lo, h_hi), (w_lo, w_hi) = pads
            x, padding_arg = F.pad(x, (w_lo, w_hi, h_lo, h_hi)), 0
        W = p["W"].permute(3, 2, 0, 1)
        return nhwc(F.conv2d(x, W, p.get("b"), stride=stride, padding=padding_arg, dilation=dilation))

    layer = layers.Conv2D(3, kernel, stride, padding, dilation, use_bias=use_bias)
    check_layer(layer, in_shape, conv)


POOLS = [
    # (label, window, stride, padding, in_shape (H, W, C))
    ("2x2,s2,VALID", 2, 2, "VALID", (4, 6, 2)),
    ("3x3,s1,VALID,overlapping", 3, 1, "VALID", (5, 5, 2)),
    ("3x3,s2,SAME,even split", 3, 2, "SAME", (5, 5, 1)),
    ("3x3,s2,SAME,odd pad after", 3, 2, "SAME", (6, 6, 1)),
]


@pytest.mark.parametrize("window, stride, padding, in_shape", [c[1:] for c in POOLS], ids=[c[0] for c in POOLS])
def test_maxpool(window, stride, padding, in_shape):
    """Against ``F.max_pool2d``; the inputs are continuous draws, so no window has a tie (ties: below).
    'SAME' pads with −∞: torch's own ``padding`` where the split is even, ``F.pad(value=−∞)`` where not."""
    pads = [same_pads(n, window, stride) if padding == "SAME" else (0, 0) for n in in_shape[:2]]

    def pool(p, x):
        x = nchw(x)
        if all(lo == hi for lo, hi in pads):
            return nhwc(F.max_pool2d(x, window, stride, padding=(pads[0][0], pads[1][0])))
        (h_lo, h_hi), (w_lo, w_hi) = pads
        return nhwc(F.max_pool2d(F.pad(x, (w_lo, w_hi, h_lo, h_hi), value=-math.inf), window, stride))

    check_layer(layers.MaxPool(window, stride, padding), in_shape, pool)


def test_maxpool_ties_go_to_the_first_max_as_in_torch():
    """Rows 2i and 2i + 1 equal, so every 2 × 2 window holds its maximum twice: fnnet gives the whole
    gradient to the first in row-major order, and so does torch's CPU kernel (it keeps a later pixel only
    if strictly larger)."""

    def tied_rows(k, shape):
        return jnp.repeat(normal(k, shape)[:, ::2], 2, axis=1)

    check_layer(layers.MaxPool(2), (4, 4, 1), lambda p, x: nhwc(F.max_pool2d(nchw(x), 2)), sample=tied_rows)


@pytest.mark.parametrize("window, stride, padding, in_shape", [c[1:] for c in POOLS], ids=[c[0] for c in POOLS])
def test_avgpool(window, stride, padding, in_shape):
    """Against ``F.avg_pool2d(count_include_pad=False)``: fnnet divides by the real pixels of a window. The
    odd pixel of 'SAME' padding after is torch's ``ceil_mode`` window that runs past the input's end."""
    pads = [same_pads(n, window, stride) if padding == "SAME" else (0, 0) for n in in_shape[:2]]
    odd = any(hi == lo + 1 for lo, hi in pads)

    def pool(p, x):
        y = F.avg_pool2d(
            nchw(x), window, stride, padding=(pads[0][0], pads[1][0]), ceil_mode=odd, count_include_pad=False
        )
        return nhwc(y)

    check_layer(layers.AvgPool(window, stride, padding), in_shape, pool)


# ----------------------------------------------------------------------------------------------
# BatchNorm, LayerNorm


def features_second(x: Any) -> Any:
    """(B, ..., C) -> (B, C, ...): torch's normalization layout."""
    return torch.movedim(x, -1, 1)


def features_last(x: Any) -> Any:
    return torch.movedim(x, 1, -1)


def constant_first_feature(k, shape):
    """A feature with batch variance exactly 0 (the catalog's edge entry)."""
    return normal(k, shape).at[..., 0].set(0.75)


@pytest.mark.parametrize(
    "in_shape, batch, sample",
    [((4,), 5, None), ((3, 2, 2), 2, None), ((3,), 4, constant_first_feature)],
    ids=["(B,C)", "NHWC", "constant feature"],
)
def test_batchnorm_train(in_shape, batch, sample):
    """Batch statistics, against ``F.batch_norm(training=True)``; the running buffers get gradient 0 (torch
    never differentiates them), and ``update_state`` gives torch's running mean and unbiased variance
    (fnnet's momentum 0.9 on the old value is torch's momentum 0.1 on the batch)."""
    running = {}

    def bn(p, x):
        running["mean"] = p["state"]["mean"].detach().clone()
        running["var"] = p["state"]["var"].detach().clone()
        y = F.batch_norm(features_second(x), running["mean"], running["var"], p["gamma"], p["beta"], True, 0.1, EPS)
        return features_last(y)

    layer = layers.BatchNorm()
    run = check_layer(layer, in_shape, bn, batch=batch, sample=sample)
    with jax.enable_x64(True):
        new = layer.update_state(run.params, run.cache)["state"]
    for k in ("mean", "var"):
        assert rel(new[k], running[k]) < REL, k


def test_batchnorm_eval():
    """Running statistics. ``F.batch_norm(training=False)`` refuses to differentiate them, so d mean and
    d var are checked against autograd of the evaluation formula (x − mean)/√(var + ε) γ + β; the output,
    dx, dγ and dβ against ``F.batch_norm`` itself too."""

    def formula(p, x):
        s = p["state"]
        return (x - s["mean"]) / torch.sqrt(s["var"] + EPS) * p["gamma"] + p["beta"]

    run = check_layer(layers.BatchNorm(), (4,), formula, batch=5, train=False)

    p = jax.tree_util.tree_map(lambda a: tensor(a, grad=True), run.params)
    x = tensor(run.x, grad=True)
    y = F.batch_norm(x, p["state"]["mean"].detach(), p["state"]["var"].detach(), p["gamma"], p["beta"], False, 0.1, EPS)
    y.backward(tensor(run.dy))
    assert rel(run.y, y) < REL
    assert rel(run.dx, x.grad) < REL
    for k in ("gamma", "beta"):
        assert rel(run.grads[k], p[k].grad) < REL, k


def constant_first_row(k, shape):
    """An example whose features are all equal: variance exactly 0 (the catalog's edge entry)."""
    return normal(k, shape).at[0, ...].set(0.75)


@pytest.mark.parametrize(
    "in_shape, affine, sample",
    [((5,), True, None), ((2, 4), True, None), ((4,), True, constant_first_row), ((5,), False, None)],
    ids=["(B,d)", "(B,T,d)", "constant row", "no affine"],
)
def test_layernorm(in_shape, affine, sample):
    def ln(p, x):
        return F.layer_norm(x, (x.shape[-1],), p["gamma"] if affine else None, p["beta"] if affine else None, EPS)

    check_layer(layers.LayerNorm(use_affine=affine), in_shape, ln, batch=3, sample=sample)


# ----------------------------------------------------------------------------------------------
# Embedding, PositionalEmbedding


def ids_with_repeats(vocab: int) -> Callable:
    """Ids in [0, vocab) whose last is a repeat of the first: rows of E that take several cotangents."""

    def sample(k, shape):
        ids = jax.random.randint(k, shape, 0, vocab)
        return ids.at[:, -1].set(ids[:, 0])

    return sample


def test_embedding():
    check_layer(layers.Embedding(5, 3), (6,), lambda p, x: F.embedding(x, p["E"]), batch=3, sample=ids_with_repeats(5))


def test_positional_embedding():
    """x + P[:T]; the rows of P past T get gradient 0 in both."""
    check_layer(layers.PositionalEmbedding(6), (4, 3), lambda p, x: x + p["P"][: x.shape[1]])


# ----------------------------------------------------------------------------------------------
# RNN, LSTM


def recurrent(kind: str, d_in: int, hidden: int, return_sequences: bool, nonlinearity: str = "tanh") -> Callable:
    """``torch.nn.RNN`` or ``LSTM`` (batch first) on fnnet's W (d_in, G·H), U (H, G·H), b (G·H,): torch's
    weight_ih = Wᵀ, weight_hh = Uᵀ, bias_ih = b and bias_hh = 0 (fnnet has one bias; torch adds two).
    fnnet's LSTM columns are ordered [i, f, g, o], torch's rows too, so the transpose is the whole map."""
    extra = {"nonlinearity": nonlinearity} if kind == "RNN" else {}
    module = getattr(torch.nn, kind)(d_in, hidden, batch_first=True, dtype=torch.float64, device="meta", **extra)

    def forward(p, x):
        weights = {
            "weight_ih_l0": p["W"].T,
            "weight_hh_l0": p["U"].T,
            "bias_ih_l0": p["b"],
            "bias_hh_l0": torch.zeros_like(p["b"]),
        }
        out, state = functional_call(module, weights, (x,))
        h_n = state[0] if kind == "LSTM" else state
        return out if return_sequences else h_n[0]

    return forward


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_rnn(activation, return_sequences):
    layer = layers.RNN(4, activation=activation, return_sequences=return_sequences)
    check_layer(layer, (5, 3), recurrent("RNN", 3, 4, return_sequences, activation))


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_lstm(return_sequences):
    layer = layers.LSTM(3, return_sequences=return_sequences)
    check_layer(layer, (4, 2), recurrent("LSTM", 2, 3, return_sequences))


# ----------------------------------------------------------------------------------------------
# transformer block, GPT


def encoder_layer_weights(p: Any, prenorm: bool) -> dict:
    """fnnet's block params as ``torch.nn.TransformerEncoderLayer``'s: in_proj_weight stacks Wqᵀ, Wkᵀ, Wvᵀ.

    Pre-LN params are ((LN₁, MHA), (LN₂, Dense₁, Gelu, Dense₂)); Post-LN (MHA, LN₁, (Dense₁, Gelu, Dense₂),
    LN₂); torch's norm1/norm2 are LN₁/LN₂ in both (its ``norm_first`` picks where they act)."""
    if prenorm:
        (ln1, mha), (ln2, d1, _, d2) = p
    else:
        mha, ln1, (d1, _, d2), ln2 = p
    return {
        "self_attn.in_proj_weight": torch.cat([mha["Wq"].T, mha["Wk"].T, mha["Wv"].T]),
        "self_attn.in_proj_bias": torch.cat([mha["bq"], mha["bk"], mha["bv"]]),
        "self_attn.out_proj.weight": mha["Wo"].T,
        "self_attn.out_proj.bias": mha["bo"],
        "linear1.weight": d1["W"].T,
        "linear1.bias": d1["b"],
        "linear2.weight": d2["W"].T,
        "linear2.bias": d2["b"],
        "norm1.weight": ln1["gamma"],
        "norm1.bias": ln1["beta"],
        "norm2.weight": ln2["gamma"],
        "norm2.bias": ln2["beta"],
    }


def encoder_layer(d: int, heads: int, ratio: int, prenorm: bool) -> Callable:
    """A causal ``TransformerEncoderLayer`` (exact GELU, ε = 1e-5, no dropout) on fnnet's block params."""
    module = torch.nn.TransformerEncoderLayer(
        d,
        heads,
        dim_feedforward=ratio * d,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=prenorm,
        dtype=torch.float64,
        device="meta",
    )

    def forward(p, x):
        mask = torch.nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=torch.float64)
        return functional_call(module, encoder_layer_weights(p, prenorm), (x,), {"src_mask": mask, "is_causal": True})

    return forward


@pytest.mark.parametrize("prenorm", [True, False], ids=["pre-LN", "post-LN"])
def test_transformer_block(prenorm):
    """Against ``torch.nn.TransformerEncoderLayer(norm_first=prenorm)`` with a causal mask. The key bias
    bk has gradient identically 0 (it adds a constant to each softmax row)."""
    block = layers.transformer_block(4, 2, mlp_ratio=2, prenorm=prenorm)
    check_layer(block, (5, 4), encoder_layer(4, 2, 2, prenorm), zero_leaves=("bk",))


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_gpt(tied):
    """Embedding, positions, one causal Pre-LN block, LayerNorm and the head (h Eᵀ when tied: the head's
    gradient is added into the embedding table's) against the same composition in torch."""
    block = encoder_layer(4, 2, 2, True)

    def gpt(p, ids):
        h = F.embedding(ids, p[0]["E"]) + p[1]["P"][: ids.shape[1]]
        h = F.layer_norm(block(p[2], h), (4,), p[3]["gamma"], p[3]["beta"], EPS)
        return h @ p[0]["E"].T if tied else linear(p[4], h)

    net = layers.gpt(5, 6, 4, 2, 1, mlp_ratio=2, tie_weights=tied)
    check_layer(net, (4,), gpt, sample=ids_with_repeats(5), zero_leaves=("bk",))


# ----------------------------------------------------------------------------------------------
# losses


def check_loss(loss: fn.Loss, pred: Any, target: Any, torch_loss: Callable, torch_target: Any) -> None:
    """fnnet's loss value and ``loss.backward`` against torch autograd of ``torch_loss(tpred, torch_target)``."""
    with jax.enable_x64(True):
        value, cache = loss.forward(pred, target)
        grad = loss.backward(cache)
    tpred = tensor(pred, grad=True)
    tvalue = torch_loss(tpred, torch_target)
    tvalue.backward()
    assert rel(value, tvalue) < REL, f"value: {float(value)} vs {tvalue.item()}"
    assert rel(grad, tpred.grad) < REL, f"grad: rel {rel(grad, tpred.grad):.2e}"


def draws(seed: int, *shapes: tuple[int, ...]) -> list:
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(seed), len(shapes))
        return [normal(k, s) for k, s in zip(keys, shapes)]


def test_mse():
    """½ Σ (ŷ − y)² / B = torch's ``mse_loss(reduction="sum") / (2B)``."""
    pred, target = draws(10, (3, 4), (3, 4))
    check_loss(fn.mse, pred, target, lambda p, t: F.mse_loss(p, t, reduction="sum") / (2 * p.shape[0]), tensor(target))


def test_softmax_cross_entropy_labels():
    (pred,) = draws(11, (4, 5))
    labels = jnp.asarray([0, 3, 4, 3])
    check_loss(fn.softmax_cross_entropy, pred, labels, F.cross_entropy, tensor(labels))


def target_rows(kind: str) -> Any:
    """Soft targets: probability rows, or rows that are no distribution (multi-hot, unnormalized positive,
    negative and all-zero: the catalog's edge entry)."""
    with jax.enable_x64(True):
        g = normal(jax.random.key(12), (4, 5))
        if kind == "probabilities":
            return jax.nn.softmax(g, axis=-1)
        multi = jnp.zeros((5,)).at[jnp.asarray([0, 2])].set(1.0)
        return jnp.stack([multi, jnp.exp(g[1]), g[2], jnp.zeros((5,))])


@pytest.mark.parametrize("kind", ["probabilities", "any rows"])
def test_softmax_cross_entropy_soft_targets(kind):
    """Torch's class-probability targets, −Σ_c y_c log softmax(z)_c averaged over the batch, for any real
    rows, as fnnet's: its rule (s · softmax(z) − y)/B with s = Σ_c y_c is the gradient for rows of any sum."""
    (pred,) = draws(13, (4, 5))
    target = target_rows(kind)
    check_loss(fn.softmax_cross_entropy, pred, target, F.cross_entropy, tensor(target))


def bce(p: Any, t: Any) -> Any:
    """fnnet's binary cross-entropy: a sum over features, a mean over the batch."""
    return F.binary_cross_entropy_with_logits(p, t, reduction="sum") / p.shape[0]


def test_binary_cross_entropy_bits():
    (pred,) = draws(14, (3, 4))
    with jax.enable_x64(True):
        target = jax.random.bernoulli(jax.random.key(15), 0.5, (3, 4)).astype(jnp.float64)
    check_loss(fn.binary_cross_entropy, pred, target, bce, tensor(target))


def test_binary_cross_entropy_soft_targets_at_zero_logits():
    """Targets in [−0.5, 1.5] (soft ones and ones outside [0, 1]) and every other logit exactly 0."""
    (pred,) = draws(16, (3, 4))
    with jax.enable_x64(True):
        pred = pred.at[:, ::2].set(0.0)
        target = jax.random.uniform(jax.random.key(17), (3, 4), jnp.float64, -0.5, 1.5)
    check_loss(fn.binary_cross_entropy, pred, target, bce, tensor(target))


def token_ce(p: Any, labels: Any) -> Any:
    """Torch's cross-entropy over the flattened tokens, the mean over the tokens not labelled −100."""
    return F.cross_entropy(p.reshape(-1, p.shape[-1]), labels.reshape(-1), ignore_index=-100)


def masked(labels: Any, mask: Any) -> Any:
    """Torch's labels for fnnet's (labels, mask): −100 (``ignore_index``) where the mask drops the token."""
    return tensor(np.where(np.asarray(mask), np.asarray(labels), -100))


@pytest.mark.parametrize("case", ["no mask", "ragged mask", "fully masked row"])
def test_sequence_cross_entropy(case):
    """The mean over the kept tokens of the batch, as torch's ``cross_entropy`` with ``ignore_index``."""
    (pred,) = draws(18, (3, 4, 5))
    with jax.enable_x64(True):
        labels = jax.random.randint(jax.random.key(19), (3, 4), 0, 5)
        mask = jnp.arange(4)[None, :] < jnp.asarray([1, 3, 4])[:, None]
        if case == "fully masked row":
            mask = mask.at[0].set(False)
    if case == "no mask":
        check_loss(fn.sequence_cross_entropy, pred, labels, token_ce, tensor(labels))
    else:
        check_loss(fn.sequence_cross_entropy, pred, (labels, mask), token_ce, masked(labels, mask))


def test_sequence_cross_entropy_with_no_token_kept_differs_from_torch():
    """With every token masked fnnet's loss and gradient are 0; torch's mean over no token is 0/0 = NaN."""
    (pred,) = draws(20, (2, 3, 5))
    with jax.enable_x64(True):
        labels = jax.random.randint(jax.random.key(21), (2, 3), 0, 5)
        mask = jnp.zeros((2, 3), bool)
        value, cache = fn.sequence_cross_entropy.forward(pred, (labels, mask))
        grad = fn.sequence_cross_entropy.backward(cache)
    assert float(value) == 0.0
    np.testing.assert_array_equal(np.asarray(grad), 0.0)
    assert math.isnan(float(token_ce(tensor(pred), masked(labels, mask))))
