"""GRU: PyTorch's equations and layout, BPTT by hand, PyTorch's init; parity with torch.nn.GRU where installed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet as fn
from fnnet.core import ShapeError


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _reference(params, x: np.ndarray) -> np.ndarray:
    """PyTorch's GRU equations, written out in float64 NumPy with the weights in PyTorch's own layout."""
    w_ih, w_hh = np.asarray(params["W"]).T, np.asarray(params["U"]).T  # (3H, d_in), (3H, H)
    b_ih, b_hh = np.asarray(params["b"]), np.asarray(params["bh"])
    H = w_hh.shape[1]
    h = np.zeros((x.shape[0], H))
    out = []
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


def _setup(key, return_sequences, dtype=jnp.float64, shape=(2, 5, 3), hidden=4):
    gru = fn.GRU(hidden, return_sequences=return_sequences)
    out_shape, params = gru.init(key, shape[1:], dtype)
    x = jax.random.normal(jax.random.key(11), shape, dtype)
    return gru, out_shape, params, x


@pytest.mark.parametrize("return_sequences", [False, True])
def test_forward_is_pytorchs_equations(key, return_sequences):
    with jax.enable_x64(True):
        gru, out_shape, params, x = _setup(key, return_sequences)
        y, _ = gru.forward(params, x)
        ref = _reference(params, np.asarray(x))
        want = ref if return_sequences else ref[:, -1]
        assert out_shape == want.shape[1:] and y.shape == want.shape
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_bptt_is_the_gradient_of_the_forward(key, return_sequences):
    with jax.enable_x64(True):
        gru, _, params, x = _setup(key, return_sequences)
        y, cache = gru.forward(params, x)
        dy = jax.random.normal(jax.random.key(12), y.shape, jnp.float64)
        grads, dx = gru.backward(params, cache, dy)
        auto_p, auto_x = jax.grad(lambda p, xx: jnp.sum(gru.forward(p, xx)[0] * dy), argnums=(0, 1))(params, x)
        assert set(grads) == {"W", "U", "b", "bh"}
        for k in grads:
            np.testing.assert_allclose(grads[k], auto_p[k], rtol=1e-11, atol=1e-13, err_msg=k)
        np.testing.assert_allclose(dx, auto_x, rtol=1e-11, atol=1e-13)


def test_the_two_biases_are_not_interchangeable(key):
    """bh_n sits inside r ⊙ (h U_n + bh_n): moving it into b_n changes the output (so both are kept)."""
    with jax.enable_x64(True):
        gru, _, params, x = _setup(key, True)
        H = 4
        moved = dict(params)
        moved["b"] = params["b"].at[2 * H :].add(params["bh"][2 * H :])
        moved["bh"] = params["bh"].at[2 * H :].set(0.0)
        y, _ = gru.forward(params, x)
        y_moved, _ = gru.forward(moved, x)
        assert float(jnp.max(jnp.abs(y - y_moved))) > 1e-3
        # whereas the r and z blocks of the two biases only ever appear summed
        summed = dict(params)
        summed["b"] = params["b"].at[: 2 * H].add(params["bh"][: 2 * H])
        summed["bh"] = params["bh"].at[: 2 * H].set(0.0)
        np.testing.assert_allclose(gru.forward(summed, x)[0], y, rtol=1e-12)


def test_default_init_is_pytorchs_uniform(key):
    """Every entry of W, U, b, bh ~ U(−1/√H, 1/√H): all within the bound, and the largest of 3·64·... draws near it."""
    H = 64
    _, params = fn.GRU(H).init(key, (3, 10))
    bound = 1 / np.sqrt(H)
    for name, leaf in params.items():
        a = np.abs(np.asarray(leaf))
        assert a.max() <= bound and a.max() > 0.9 * bound, name
    # the variance of U(−a, a) is a²/3: 12 288 draws of U, std of the estimate ≈ 1 %
    np.testing.assert_allclose(np.asarray(params["U"]).var(), bound**2 / 3, rtol=0.05)


def test_custom_vjp_runs_the_manual_rule(key):
    gru, _, params, x = _setup(key, False, jnp.float32)
    dy = jax.random.normal(jax.random.key(13), (2, 4))
    f = fn.custom_vjp(gru)
    through = jax.grad(lambda p: jnp.sum(f(p, x) * dy))(params)
    manual, _ = gru.backward(params, gru.forward(params, x)[1], dy)
    for k in manual:
        np.testing.assert_allclose(through[k], manual[k], rtol=1e-6, atol=1e-7)


def test_jit_and_vmap_agree_with_eager(key):
    gru, _, params, _ = _setup(key, True, jnp.float32)
    x = jax.random.normal(jax.random.key(14), (3, 2, 5, 3))
    dy = jax.random.normal(jax.random.key(15), (3, 2, 5, 4))

    def rule(xx, c):
        return gru.backward(params, gru.forward(params, xx)[1], c)

    eager = [rule(x[k], dy[k]) for k in range(3)]
    batched = jax.jit(jax.vmap(rule))(x, dy)
    for k in range(3):
        np.testing.assert_allclose(batched[1][k], eager[k][1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched[0]["U"][k], eager[k][0]["U"], rtol=1e-5, atol=1e-6)


def test_errors_name_the_problem(key):
    with pytest.raises(ValueError, match="GRU needs a positive integer hidden, got 0"):
        fn.GRU(0)
    gru = fn.GRU(2)
    with pytest.raises(ShapeError, match=r"needs input shape \(time, features\)"):
        gru.init(key, (3,))
    _, params = gru.init(key, (4, 3))
    with pytest.raises(ShapeError, match=r"GRU\(2\) expected inputs \(batch, time, 3\), got \(1, 4, 2\)"):
        gru.forward(params, jnp.zeros((1, 4, 2)))
    with pytest.raises(ShapeError, match="at least one time step"):
        gru.forward(params, jnp.zeros((1, 0, 3)))
    with pytest.raises(ShapeError, match=r"params\['U'\] has shape \(2, 2\), expected \(2, 6\)"):
        gru.forward({**params, "U": jnp.zeros((2, 2))}, jnp.zeros((1, 4, 3)))


@pytest.mark.parametrize("return_sequences", [False, True])
def test_matches_torch_gru_in_float64(key, return_sequences):
    torch = pytest.importorskip("torch")
    with jax.enable_x64(True):
        gru, _, params, x = _setup(key, return_sequences)
        y, cache = gru.forward(params, x)
        dy = jax.random.normal(jax.random.key(16), y.shape, jnp.float64)
        grads, dx = gru.backward(params, cache, dy)
    ref = torch.nn.GRU(3, 4, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.tensor(np.asarray(params["W"]).T))
        ref.weight_hh_l0.copy_(torch.tensor(np.asarray(params["U"]).T))
        ref.bias_ih_l0.copy_(torch.tensor(np.asarray(params["b"])))
        ref.bias_hh_l0.copy_(torch.tensor(np.asarray(params["bh"])))
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    out, h_n = ref(xt)
    yt = out if return_sequences else h_n[0]
    (yt * torch.tensor(np.asarray(dy))).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads["W"], ref.weight_ih_l0.grad.numpy().T, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads["U"], ref.weight_hh_l0.grad.numpy().T, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads["b"], ref.bias_ih_l0.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads["bh"], ref.bias_hh_l0.grad.numpy(), rtol=1e-10, atol=1e-13)
