"""fnnet.curvature: GGN and Hessian products against jax.hessian of the autodiff loss, sharpness, SLQ.

Every reference is built from the very forward code: the Hessian as ``jax.hessian`` of the loss of the
flattened params, the Gauss–Newton matrix as Jᵀ H_L J from ``jax.jacobian`` of pred and ``jax.hessian`` of
the loss in pred. All in float64; products agree to rel 1e-10, eigenvalues to rel 1e-6 (sharpness) and
1e-8 of ‖H‖ (SLQ nodes).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import fnnet as fn
from fnnet import curvature
from fnnet.curvature import ggn_vp, hessian_spectrum, hvp, hvp_path, sharpness


def rel(a, b) -> float:
    a, b = np.ravel(np.asarray(a)), np.ravel(np.asarray(b))
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / scale) if scale else 0.0


# ----------------------------------------------------------------------------------------------
# tiny hand-made layers and a loss with hand-written jvp/hvp, independent of the library's own rules


def TDense(out: int) -> fn.Layer:
    """y = x W + b, with hand-written backward and jvp."""

    def init(key, in_shape, dtype=jnp.float32):
        kw, kb = jax.random.split(key)
        d = in_shape[-1]
        params = {"W": jax.random.normal(kw, (d, out), dtype), "b": jax.random.normal(kb, (out,), dtype)}
        return (out,), params

    def forward(params, x, *, key=None, train=True):
        return x @ params["W"] + params["b"][None], x

    def backward(params, x, dy):
        return {"W": x.T @ dy, "b": dy.sum(0)}, dy @ params["W"].T

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        y = forward(params, x)[0]
        return y, dx @ params["W"] + x @ dparams["W"] + dparams["b"][None]

    return fn.Layer(init, forward, backward, jvp=jvp, name=f"TDense({out})")


def TTanh() -> fn.Layer:
    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), ()

    def forward(params, x, *, key=None, train=True):
        y = jnp.tanh(x)
        return y, y

    def backward(params, y, dy):
        return (), dy * (1 - y * y)

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        y = jnp.tanh(x)
        return y, (1 - y * y) * dx

    return fn.Layer(init, forward, backward, jvp=jvp, name="TTanh")


def TScale() -> fn.Layer:
    """y = x ⊙ s (a learned per-feature scale): neither Dense nor an activation, so hvp goes forward-over-reverse."""

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), {"s": jax.random.normal(key, in_shape[-1:], dtype)}

    def forward(params, x, *, key=None, train=True):
        return x * params["s"][None], x

    def backward(params, x, dy):
        return {"s": (dy * x).sum(0)}, dy * params["s"][None]

    def jvp(params, x, dparams, dx, *, key=None, train=True):
        return forward(params, x)[0], dx * params["s"][None] + x * dparams["s"][None]

    return fn.Layer(init, forward, backward, jvp=jvp, name="TScale")


def _tmse_forward(pred, target):
    diff = pred - target
    return 0.5 * jnp.sum(diff * diff) / pred.shape[0], diff


tmse = fn.Loss(
    _tmse_forward,
    lambda diff: diff / diff.shape[0],
    jvp=lambda pred, target, dpred: (_tmse_forward(pred, target)[0], jnp.sum((pred - target) * dpred) / pred.shape[0]),
    hvp=lambda diff, v: v / diff.shape[0],
)


def _tsce_forward(logits, onehot):
    logp = jax.nn.log_softmax(logits)
    p = jnp.exp(logp)
    return -jnp.sum(onehot * logp) / logits.shape[0], (p, onehot)


def _tsce_hvp(cache, v):
    """H_L v = (p ⊙ v − p (pᵀ v)) / B per row."""
    p, _ = cache
    return (p * v - p * jnp.sum(p * v, axis=1, keepdims=True)) / p.shape[0]


tsce = fn.Loss(_tsce_forward, lambda c: (c[0] - c[1]) / c[0].shape[0], hvp=_tsce_hvp)


def _tdense_of(layer):
    return {"use_bias": True} if layer.label.startswith("TDense") else None


def _tactivation_of(layer):
    return ("tanh", {}) if layer.label == "TTanh" else None


def _tanh_second(name, x, **kw):
    assert name == "tanh"
    t = jnp.tanh(x)
    return -2 * t * (1 - t * t)


@pytest.fixture
def recognize_test_layers(monkeypatch):
    """Make curvature's MLP recognizer see TDense and TTanh (and tanh's f'') as the library's own."""
    monkeypatch.setattr(curvature, "dense_of", _tdense_of)
    monkeypatch.setattr(curvature, "activation_of", _tactivation_of)
    monkeypatch.setattr(curvature, "second_derivative", _tanh_second)


# ----------------------------------------------------------------------------------------------
# references from jax.hessian of the forward code


def problem(net, loss, key, *, classes=False, labels=False, x_shape=(4, 3)):
    """Params, x (4, 3) and a target (float, one-hot rows or integer labels) for ``net`` in float64."""
    k_init, k_x, k_t, k_v = jax.random.split(key, 4)
    out_shape, params = net.init(k_init, x_shape[1:], jnp.float64)
    x = jax.random.normal(k_x, x_shape, jnp.float64)
    if labels:
        target = jax.random.randint(k_t, (x_shape[0],), 0, out_shape[-1])
    elif classes:
        target = jax.nn.one_hot(
            jax.random.randint(k_t, x_shape[:1], 0, out_shape[-1]), out_shape[-1], dtype=jnp.float64
        )
    else:
        target = jax.random.normal(k_t, x_shape[:1] + tuple(out_shape), jnp.float64)
    flat, unravel = ravel_pytree(params)
    v = unravel(jax.random.normal(k_v, flat.shape, jnp.float64))
    return params, x, target, v


def flat_loss(net, loss, params, x, target):
    flat, unravel = ravel_pytree(params)
    return flat, lambda f: loss.forward(net.forward(unravel(f), x)[0], target)[0]


def exact_hessian(net, loss, params, x, target):
    flat, L = flat_loss(net, loss, params, x, target)
    return np.asarray(jax.hessian(L)(flat))


def exact_ggn(net, loss, params, x, target):
    flat, unravel = ravel_pytree(params)
    pred = net.forward(params, x)[0]
    J = jax.jacobian(lambda f: net.forward(unravel(f), x)[0].ravel())(flat)
    HL = jax.hessian(lambda p: loss.forward(p.reshape(pred.shape), target)[0])(pred.ravel())
    return np.asarray(J.T @ HL @ J)


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


MLP = lambda: fn.serial(TDense(3), TTanh(), TDense(2))  # noqa: E731
NOT_MLP = lambda: fn.serial(TDense(3), TTanh(), TScale(), TDense(2))  # noqa: E731


# ----------------------------------------------------------------------------------------------
# paths


def test_hvp_path_of_an_mlp_and_of_other_nets(recognize_test_layers):
    assert hvp_path(MLP()) == "r-operator"
    assert hvp_path(MLP(), tmse) == "r-operator"
    assert hvp_path(NOT_MLP()) == "forward-over-reverse"
    assert hvp_path(TDense(2)) == "forward-over-reverse"  # not a serial
    assert hvp_path(fn.residual(TDense(3))) == "forward-over-reverse"
    assert hvp_path(fn.serial(MLP(), TDense(2))) == "forward-over-reverse"  # nested
    no_hvp = fn.Loss(tmse.forward, tmse.backward)
    assert hvp_path(MLP(), no_hvp) == "forward-over-reverse"


def test_a_serial_with_softmax_is_not_an_mlp(monkeypatch):
    """Softmax is an activation but not elementwise: its Jacobian is diag(p) − p pᵀ."""
    monkeypatch.setattr(curvature, "dense_of", _tdense_of)
    monkeypatch.setattr(
        curvature, "activation_of", lambda l: ("softmax", {"axis": -1}) if "Softmax" in l.label else None
    )
    assert hvp_path(fn.serial(TDense(3), fn.Softmax(), TDense(2))) == "forward-over-reverse"


# ----------------------------------------------------------------------------------------------
# products against the exact matrices


@pytest.mark.parametrize("net_fn", [MLP, NOT_MLP], ids=["r-operator", "forward-over-reverse"])
@pytest.mark.parametrize("loss", [tmse, tsce], ids=["mse", "sce"])
def test_hvp_is_the_exact_hessian_product(recognize_test_layers, key, net_fn, loss):
    with jax.enable_x64(True):
        net = net_fn()
        params, x, target, v = problem(net, loss, key, classes=loss is tsce)
        H = exact_hessian(net, loss, params, x, target)
        hv = hvp(net, loss)(params, x, target, v)
        assert jax.tree.structure(hv) == jax.tree.structure(params)
        assert rel(flat(hv), H @ flat(v)) < 1e-10
        hv_jit = jax.jit(hvp(net, loss))(params, x, target, v)
        assert rel(flat(hv_jit), H @ flat(v)) < 1e-10


def test_both_paths_agree_on_an_mlp(recognize_test_layers, key):
    with jax.enable_x64(True):
        net = MLP()
        params, x, target, v = problem(net, tmse, key)
        r_op = hvp(net, tmse)(params, x, target, v)
        fwd_rev = hvp(net, fn.Loss(tmse.forward, tmse.backward))(params, x, target, v)  # no hvp: path (b)
        assert rel(flat(r_op), flat(fwd_rev)) < 1e-12


@pytest.mark.parametrize("net_fn", [MLP, NOT_MLP], ids=["mlp", "not-mlp"])
@pytest.mark.parametrize("loss", [tmse, tsce], ids=["mse", "sce"])
def test_ggn_vp_is_jt_hl_j(key, net_fn, loss):
    with jax.enable_x64(True):
        net = net_fn()
        params, x, target, v = problem(net, loss, key, classes=loss is tsce)
        G = exact_ggn(net, loss, params, x, target)
        gv = ggn_vp(net, loss)(params, x, target, v)
        assert rel(flat(gv), G @ flat(v)) < 1e-10
        assert rel(flat(jax.jit(ggn_vp(net, loss))(params, x, target, v)), G @ flat(v)) < 1e-10
        assert np.linalg.eigvalsh(G).min() > -1e-12 * np.abs(G).max()  # PSD: the losses are convex in pred


def test_ggn_of_mse_on_a_linear_net_is_the_hessian(key):
    """For a net linear in its params and a quadratic loss, the dropped term Σ ∂L/∂pred ∇²pred is 0."""
    with jax.enable_x64(True):
        net = TDense(2)
        params, x, target, v = problem(net, tmse, key)
        H = exact_hessian(net, tmse, params, x, target)
        assert rel(flat(ggn_vp(net, tmse)(params, x, target, v)), H @ flat(v)) < 1e-12


# ----------------------------------------------------------------------------------------------
# errors


def test_ggn_vp_names_the_missing_rule(key):
    no_jvp = TDense(2)._replace(jvp=None)
    with pytest.raises(TypeError, match=r"TDense\(2\) has jvp=None"):
        ggn_vp(no_jvp, tmse)
    with pytest.raises(TypeError, match="hvp=None"):
        ggn_vp(TDense(2), fn.Loss(tmse.forward, tmse.backward))
    with pytest.raises(TypeError, match="expected a fnnet Layer"):
        ggn_vp(lambda x: x, tmse)


@pytest.mark.parametrize("product", [ggn_vp, hvp])
def test_a_v_that_does_not_fit_params_is_a_clear_error(recognize_test_layers, key, product):
    with jax.enable_x64(True):
        net = MLP()
        params, x, target, v = problem(net, tmse, key)
        f = product(net, tmse)
        with pytest.raises(ValueError, match="needs a tangent v with the structure of params"):
            f(params, x, target, v[:2])
        with pytest.raises(ValueError, match="needs a tangent v with the structure of params"):
            f(params, x, target, (v[0], v[1], {"W": v[2]["W"]}))
        bad = (v[0], v[1], {"W": v[2]["W"], "b": jnp.zeros(5, jnp.float64)})
        with pytest.raises(fn.ShapeError, match=r"v\[2\]\['b'\] has shape \(5,\)"):
            f(params, x, target, bad)
        bad = (v[0], v[1], jax.tree.map(lambda a: a.astype(jnp.float32), v[2]))
        with pytest.raises(fn.DTypeError, match=r"the tangent v\[2\]\['W'\] is float32"):
            f(params, x, target, bad)


# ----------------------------------------------------------------------------------------------
# sharpness and the spectrum


@pytest.mark.parametrize("net_fn", [MLP, NOT_MLP], ids=["r-operator", "forward-over-reverse"])
def test_sharpness_is_the_largest_algebraic_eigenvalue(recognize_test_layers, key, net_fn):
    with jax.enable_x64(True):
        net = net_fn()
        params, x, target, _ = problem(net, tmse, key)
        eig = np.linalg.eigvalsh(exact_hessian(net, tmse, params, x, target))
        n = eig.size
        lam = sharpness(net, tmse, params, x, target, iters=n)
        assert isinstance(lam, float)
        assert abs(lam - eig[-1]) <= 1e-6 * abs(eig[-1])
        # the default: 20 steps and tol 1e-6 (n is 20 or 23 here)
        assert abs(sharpness(net, tmse, params, x, target) - eig[-1]) <= 1e-6 * abs(eig[-1])
        assert sharpness(net, tmse, params, x, target, key=jax.random.key(0)) == sharpness(net, tmse, params, x, target)


def test_sharpness_is_algebraic_not_by_magnitude():
    """A loss whose Hessian has its largest-magnitude eigenvalue negative: λ_max is the top one."""
    with jax.enable_x64(True):
        # L(w) = mean over a batch of one of ½ Σ_i c_i w_i²: H = diag(c)
        c = jnp.array([-5.0, 1.0, 2.0], jnp.float64)
        net = fn.serial(TScale())
        params = ({"s": jnp.array([0.3, -0.2, 0.5], jnp.float64)},)
        x = jnp.sqrt(jnp.abs(c))[None]
        sign = jnp.sign(c)[None]
        loss = fn.Loss(
            lambda pred, t: (0.5 * jnp.sum(t * pred * pred), pred * t),
            lambda cache: cache,
        )
        H = exact_hessian(net, loss, params, x, sign)
        np.testing.assert_allclose(np.diag(H), c, rtol=1e-12)
        assert sharpness(net, loss, params, x, sign, iters=3) == pytest.approx(2.0, rel=1e-10)


def test_slq_weights_nodes_and_density(recognize_test_layers, key):
    with jax.enable_x64(True):
        net = MLP()
        params, x, target, _ = problem(net, tmse, key)
        eig = np.linalg.eigvalsh(exact_hessian(net, tmse, params, x, target))
        n = eig.size
        spec = hessian_spectrum(net, tmse, params, x, target, key=jax.random.key(1), order=n + 5, probes=3)
        assert isinstance(spec, curvature.HessianSpectrum)
        assert spec.nodes.shape == spec.weights.shape == (3, n)  # order is capped at n
        np.testing.assert_allclose(spec.weights.sum(axis=1), 1.0, rtol=1e-12)
        assert (spec.weights >= 0).all()
        for nodes in spec.nodes:  # order >= n: the nodes are H's eigenvalues
            np.testing.assert_allclose(nodes, eig, rtol=0, atol=1e-8 * np.abs(eig).max())
        density = spec.density()
        assert density.shape == spec.grid.shape and (density >= 0).all()
        assert np.trapezoid(density, spec.grid) == pytest.approx(1.0, abs=1e-6)
        grid = np.linspace(eig.min() - 1, eig.max() + 1, 4001)
        assert np.trapezoid(spec.density(grid), grid) == pytest.approx(1.0, abs=1e-3)


def test_slq_with_few_steps_still_has_weights_that_sum_to_one(recognize_test_layers, key):
    with jax.enable_x64(True):
        net = NOT_MLP()
        params, x, target, _ = problem(net, tmse, key)
        spec = hessian_spectrum(net, tmse, params, x, target, key=jax.random.key(2), order=5, probes=2, sigma=0.1)
        assert spec.nodes.shape == (2, 5) and spec.sigma == 0.1
        np.testing.assert_allclose(spec.weights.sum(axis=1), 1.0, rtol=1e-12)
        eig = np.linalg.eigvalsh(exact_hessian(net, tmse, params, x, target))
        assert spec.nodes.max() <= eig.max() * (1 + 1e-12) and spec.nodes.min() >= eig.min() * (1 + 1e-12)
        assert np.trapezoid(spec.density(), spec.grid) == pytest.approx(1.0, abs=1e-4)


def test_spectrum_and_sharpness_refuse_bad_arguments(key):
    with jax.enable_x64(True):
        net = TDense(2)
        params, x, target, _ = problem(net, tmse, key)
        with pytest.raises(ValueError, match="positive integer order"):
            hessian_spectrum(net, tmse, params, x, target, key=key, order=0)
        with pytest.raises(ValueError, match="sigma > 0"):
            hessian_spectrum(net, tmse, params, x, target, key=key, sigma=0.0)
        with pytest.raises(ValueError, match="positive integer iters"):
            sharpness(net, tmse, params, x, target, iters=1.5)


# ----------------------------------------------------------------------------------------------
# the library's own layers and losses


def real_mlp(act=fn.Tanh, use_bias=True):
    return fn.serial(fn.Dense(3, use_bias=use_bias), act(), fn.Dense(2))


REAL_NOT_MLP = {
    "softmax": lambda: fn.serial(fn.Dense(3), fn.Softmax(), fn.Dense(2)),
    "layernorm": lambda: fn.serial(fn.Dense(3), fn.LayerNorm(), fn.Tanh(), fn.Dense(2)),
    "residual": lambda: fn.serial(fn.Dense(3), fn.residual(fn.serial(fn.Dense(3), fn.Gelu())), fn.Dense(2)),
}
REAL_LOSSES = {"mse": (fn.mse, {}), "sce": (fn.softmax_cross_entropy, {"labels": True})}


def test_hvp_path_of_the_library_layers():
    assert hvp_path(real_mlp()) == "r-operator"
    assert hvp_path(fn.serial(fn.Dense(4), fn.Relu(), fn.Dense(4), fn.LeakyRelu(0.2), fn.Dense(2))) == "r-operator"
    assert hvp_path(real_mlp(), fn.softmax_cross_entropy) == "r-operator"
    for name, make in REAL_NOT_MLP.items():
        assert hvp_path(make()) == "forward-over-reverse", name
    assert hvp_path(fn.Dense(2)) == "forward-over-reverse"  # a lone Dense is not a serial


@pytest.mark.parametrize("act", [fn.Tanh, fn.Sigmoid, fn.Gelu, fn.Swish, fn.Softplus, fn.Relu, fn.Softsign])
@pytest.mark.parametrize("loss_name", sorted(REAL_LOSSES))
def test_r_operator_on_library_mlps_is_the_exact_hessian_product(key, act, loss_name):
    loss, kw = REAL_LOSSES[loss_name]
    with jax.enable_x64(True):
        net = real_mlp(act)
        assert hvp_path(net, loss) == "r-operator"
        params, x, target, v = problem(net, loss, key, **kw)
        H = exact_hessian(net, loss, params, x, target)
        assert rel(flat(hvp(net, loss)(params, x, target, v)), H @ flat(v)) < 1e-10
        assert rel(flat(ggn_vp(net, loss)(params, x, target, v)), exact_ggn(net, loss, params, x, target) @ flat(v)) < (
            1e-10
        )


def test_r_operator_without_bias_and_with_leading_axes(key):
    """Dense(use_bias=False), and inputs (B, T, d): the leading axes are all batch-like, as in Dense."""
    with jax.enable_x64(True):
        net = real_mlp(fn.Tanh, use_bias=False)
        params, x, target, v = problem(net, fn.mse, key, x_shape=(2, 4, 3))
        assert x.shape == (2, 4, 3) and target.shape == (2, 4, 2)
        H = exact_hessian(net, fn.mse, params, x, target)
        assert rel(flat(hvp(net, fn.mse)(params, x, target, v)), H @ flat(v)) < 1e-10
        assert rel(flat(jax.jit(hvp(net, fn.mse))(params, x, target, v)), H @ flat(v)) < 1e-10


@pytest.mark.parametrize("name", sorted(REAL_NOT_MLP))
@pytest.mark.parametrize("loss_name", sorted(REAL_LOSSES))
def test_forward_over_reverse_and_ggn_on_library_nets(key, name, loss_name):
    loss, kw = REAL_LOSSES[loss_name]
    with jax.enable_x64(True):
        net = REAL_NOT_MLP[name]()
        params, x, target, v = problem(net, loss, key, **kw)
        H = exact_hessian(net, loss, params, x, target)
        assert rel(flat(hvp(net, loss)(params, x, target, v)), H @ flat(v)) < 1e-10
        G = exact_ggn(net, loss, params, x, target)
        assert rel(flat(ggn_vp(net, loss)(params, x, target, v)), G @ flat(v)) < 1e-10


def test_sharpness_and_spectrum_of_a_library_mlp(key):
    with jax.enable_x64(True):
        net = real_mlp(fn.Gelu)
        params, x, labels, _ = problem(net, fn.softmax_cross_entropy, key, labels=True)
        eig = np.linalg.eigvalsh(exact_hessian(net, fn.softmax_cross_entropy, params, x, labels))
        lam = sharpness(net, fn.softmax_cross_entropy, params, x, labels, iters=eig.size)
        assert abs(lam - eig[-1]) <= 1e-6 * abs(eig[-1])
        spec = hessian_spectrum(net, fn.softmax_cross_entropy, params, x, labels, key=key, order=eig.size, probes=2)
        for nodes in spec.nodes:
            np.testing.assert_allclose(nodes, eig, rtol=0, atol=1e-8 * np.abs(eig).max())


def test_a_mask_for_an_mlp_is_refused(key):
    with jax.enable_x64(True):
        net = real_mlp()
        params, x, target, v = problem(net, fn.mse, key)
        with pytest.raises(TypeError, match="takes no mask"):
            hvp(net, fn.mse)(params, x, target, v, mask=jnp.ones((4, 3), bool))


def test_repeated_sharpness_calls_on_one_network_reuse_its_compiled_lanczos_step():
    """Tracking λ_max every few steps of training calls sharpness with the same layer and loss at new params:
    the Lanczos step is built (and compiled) once, and the values follow the params."""
    from fnnet import curvature

    net = fn.serial(fn.Dense(6), fn.Tanh(), fn.Dense(3))
    _, params = net.init(jax.random.key(0), (4,))
    x, y = jax.random.normal(jax.random.key(1), (8, 4)), jax.random.normal(jax.random.key(2), (8, 3))
    before = curvature._cached_lanczos.cache_info()
    first = fn.sharpness(net, fn.mse, params, x, y, iters=30, tol=0)
    scaled = jax.tree_util.tree_map(lambda a: 1.1 * a, params)
    second = fn.sharpness(net, fn.mse, scaled, x, y, iters=30, tol=0)
    after = curvature._cached_lanczos.cache_info()
    assert after.misses == before.misses + 1 and after.hits == before.hits + 1
    assert second != first
