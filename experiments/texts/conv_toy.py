"""The texts' convnet toy case: a 3×3 input, one 2×2 filter, no padding, stride 1.

Gulli, Kapoor & Pal 2019, "Deep Learning with TensorFlow 2 and Keras", ch. "The Math Behind Deep
Learning", sec. "Thinking about backpropagation and convnets" (Figure 15), computes the forward pass
and leaves the backward pass as an exercise, noting that every filter weight touches every output
pixel.
Here the exercise is done three ways, in float64:

* closed form, element by element: y[i,j] = Σ_{p,q} X[i+p, j+q] W[p,q];
  dW[p,q] = Σ_{i,j} dY[i,j] X[i+p, j+q] (the correlation of X with dY);
  dX[m,n] = Σ_{i,j} dY[i,j] W[m−i, n−j] (terms with m−i, n−j outside the filter are zero), which is
  also the "full" correlation of the zero-padded dY with the filter rotated by 180°;
* fnnet's ``Conv2D`` and its hand-written backward rule;
* ``jax.vjp`` of the same forward.

The generalization the text leaves open (strides, padding, dilation, channels; Dumoulin & Visin 2016,
"A guide to convolution arithmetic for deep learning", sec. 2-5) is checked the same way, rule against
autodiff, on a few random settings.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from experiments import _sources as src
from experiments._common import Claim, Result, close, pyplot, save_figure
from fnnet.checking import relative_error

NAME = "conv_toy"
TITLE = "The convnet toy case: a 3×3 input and a 2×2 filter, backward by hand"

SRC = src.GULLI_2019.cite('sec. "Thinking about backpropagation and convnets" (Figure 15)')
SRC_EX = SRC + ": the backward pass, left as an exercise, done in closed form by fnnet"
SRC_GEN = (
    "fnnet's own contract (rule = jax.vjp) on "
    + SRC
    + ": the generalization left as an exercise; "
    + src.DUMOULIN_VISIN_2016.cite("sec. 2-5")
)
FNNET = "fnnet's own contract (every hand-written rule equals jax.vjp of the same forward)"
RND = "rounding: float64 sums of at most a few dozen small integers and halves; 1e-12 absolute"

X = ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (7.0, 8.0, 9.0))
W = ((1.0, -1.0), (2.0, 0.5))
DY = ((0.5, -1.0), (2.0, 1.5))  # the back-propagated signal the layer receives

#: (kernel, stride, padding, dilation, in_ch, out_ch, input size) of the generalized checks
GENERAL = (
    (3, 2, "SAME", 1, 2, 3, 7),
    (2, 1, 1, 2, 3, 2, 6),
    (3, (2, 1), "VALID", 1, 1, 2, 8),
)


@dataclasses.dataclass(frozen=True)
class Config:
    general: int = 3  # how many of the generalized settings to check
    seed: int = 0


PRESETS = {"tiny": Config(general=1), "quick": Config(), "full": Config()}


def closed_form(x: np.ndarray, w: np.ndarray, dy: np.ndarray) -> dict[str, np.ndarray]:
    """Forward, dW and dX of a single-channel valid correlation, one scalar at a time."""
    H, K = x.shape[0], w.shape[0]
    O = H - K + 1
    y = np.zeros((O, O))
    dW = np.zeros_like(w)
    dX = np.zeros_like(x)
    for i in range(O):
        for j in range(O):
            for p in range(K):
                for q in range(K):
                    y[i, j] += x[i + p, j + q] * w[p, q]
                    dW[p, q] += dy[i, j] * x[i + p, j + q]
    for m in range(H):
        for n in range(H):
            for i in range(O):
                for j in range(O):
                    if 0 <= m - i < K and 0 <= n - j < K:
                        dX[m, n] += dy[i, j] * w[m - i, n - j]
    # the same dX as the full correlation of the zero-padded dY with the 180°-rotated filter
    padded, rot = np.pad(dy, K - 1), w[::-1, ::-1]
    dX_full = np.array([[np.sum(padded[m : m + K, n : n + K] * rot) for n in range(H)] for m in range(H)])
    return {"y": y, "dW": dW, "dX": dX, "dX_full": dX_full}


@jax.jit
def _fnnet_side(x, w, dy):
    """fnnet's forward and hand-written backward; jax.vjp of the same forward; the per-pixel sensitivities."""
    layer = fn.Conv2D(1, kernel_size=w.shape[0], use_bias=False)
    params = {"W": w[:, :, None, None]}
    xb, dyb = x[None, :, :, None], dy[None, :, :, None]
    y, cache = layer.forward(params, xb)
    dparams, dx = layer.backward(params, cache, dyb)
    _, vjp = jax.vjp(lambda p, xx: layer.forward(p, xx)[0], params, xb)
    a_dparams, a_dx = vjp(dyb)
    # ∂y[i,j]/∂W[p,q] from the rule: backward with a one-hot dy for each output pixel
    O = y.shape[1]
    onehots = jnp.eye(O * O, dtype=x.dtype).reshape(O * O, 1, O, O, 1)
    sens_w = jax.vmap(lambda e: layer.backward(params, cache, e)[0]["W"][:, :, 0, 0])(onehots)
    sens_x = jax.vmap(lambda e: layer.backward(params, cache, e)[1][0, :, :, 0])(onehots)
    return {
        "y": y[0, :, :, 0], "dW": dparams["W"][:, :, 0, 0], "dX": dx[0, :, :, 0],
        "dW_autodiff": a_dparams["W"][:, :, 0, 0], "dX_autodiff": a_dx[0, :, :, 0],
        "sens_w": sens_w.reshape(O * O, -1), "sens_x": sens_x.reshape(O * O, -1),
    }  # fmt: skip


@functools.partial(jax.jit, static_argnums=0)
def _general(setting: tuple, params: dict, x: jax.Array, dy: jax.Array):
    k, s, pad, d, cin, cout, n = setting
    layer = fn.Conv2D(cout, kernel_size=k, stride=s, padding=pad, dilation=d)
    _, cache = layer.forward(params, x)
    dparams, dx = layer.backward(params, cache, dy)
    _, vjp = jax.vjp(lambda p, xx: layer.forward(p, xx)[0], params, x)
    a_dparams, a_dx = vjp(dy)
    return dparams, dx, a_dparams, a_dx


def general_check(setting: tuple, rng: np.random.Generator) -> float:
    """Max relative error of the rule's (dW, db, dx) against jax.vjp on one random generalized setting.

    The random inputs, weights and dY are drawn on the host (a seeded NumPy generator): the check
    does not depend on how weights are initialized, and no PRNG program has to be compiled.
    """
    k, s, pad, d, cin, cout, n = setting
    layer = fn.Conv2D(cout, kernel_size=k, stride=s, padding=pad, dilation=d)
    params = {"W": jnp.asarray(rng.normal(size=(k, k, cin, cout))), "b": jnp.asarray(rng.normal(size=(cout,)))}
    x = jnp.asarray(rng.normal(size=(2, n, n, cin)))
    y_shape = jax.eval_shape(lambda p, xx: layer.forward(p, xx)[0], params, x).shape
    dy = jnp.asarray(rng.normal(size=y_shape))
    dparams, dx, a_dparams, a_dx = jax.device_get(_general(setting, params, x, dy))
    return max(
        relative_error(dparams["W"], a_dparams["W"]),
        relative_error(dparams["b"], a_dparams["b"]),
        relative_error(dx, a_dx),
    )


def run(config: Config, out_dir: Path) -> Result:
    x, w, dy = (np.array(a, np.float64) for a in (X, W, DY))
    cf = closed_form(x, w, dy)
    with jax.enable_x64(True):
        r = jax.device_get(_fnnet_side(jnp.asarray(x), jnp.asarray(w), jnp.asarray(dy)))
        rng = np.random.default_rng(config.seed)
        general = [general_check(st, rng) for st in GENERAL[: config.general]]
    err = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    sens_w, sens_x = np.asarray(r["sens_w"]), np.asarray(r["sens_x"])
    # ∂y[i,j]/∂W[p,q] must be X[i+p, j+q]: compare with the closed form
    expect_sens = np.array([[x[i + p, j + q] for p in range(2) for q in range(2)] for i in range(2) for j in range(2)])
    n_touch = int(np.sum(sens_w != 0))
    claims = [
        close("forward: fnnet's Conv2D = the closed form y[i,j] = Σ X[i+p,j+q] W[p,q] (max |diff|)", SRC, 0.0,
              err(r["y"], cf["y"]), atol=1e-12, kind="source", seeds=1, tolerance_basis=RND),
        close("dW: the hand-written rule = the closed form Σ_ij dY[i,j] X[i+p,j+q] (max |diff|)", SRC_EX, 0.0,
              err(r["dW"], cf["dW"]), atol=1e-12, kind="source", seeds=1, tolerance_basis=RND),
        close("dW: the hand-written rule = jax.vjp (max |diff|)", FNNET, 0.0, err(r["dW"], r["dW_autodiff"]),
              atol=1e-12, kind="fnnet", seeds=1, tolerance_basis=RND),
        close("dX: the hand-written rule = the closed form Σ_ij dY[i,j] W[m−i,n−j] (max |diff|)", SRC_EX, 0.0,
              err(r["dX"], cf["dX"]), atol=1e-12, kind="source", seeds=1, tolerance_basis=RND),
        close("dX: the hand-written rule = jax.vjp (max |diff|)", FNNET, 0.0, err(r["dX"], r["dX_autodiff"]),
              atol=1e-12, kind="fnnet", seeds=1, tolerance_basis=RND),
        close("dX = full correlation of the zero-padded dY with the filter rotated by 180° (max |diff|)",
              SRC_EX + "; the same sum as the closed form, re-indexed (m − i → K − 1 − p'): equal by construction", 0.0,
              err(cf["dX_full"], cf["dX"]), atol=1e-12, kind="sanity", seeds=1, tolerance_basis=RND),
        Claim("each filter weight affects every output pixel: nonzero ∂y[i,j]/∂W[p,q] (from the rule, one-hot dY)",
              SRC, "16 of 16", f"{n_touch} of {sens_w.size}", "exact", n_touch == sens_w.size,
              kind="source", seeds=1, tolerance_basis="rounding: a count of exact zeros",
              note=f"∂y[i,j]/∂W[p,q] = X[i+p,j+q]: max |diff| {err(sens_w, expect_sens):.1e}; with an input that has "
              "zeros some entries would vanish, so 'every' holds for inputs without zeros in the windows"),
    ]  # fmt: skip
    if general:
        claims.append(close(f"the generalization (stride, padding, dilation, channels; {len(general)} random "
                            "settings): the rule = jax.vjp (max relative error of dW, db, dX)", SRC_GEN, 0.0,
                            max(general), atol=1e-12, kind="fnnet", seeds=1,
                            tolerance_basis=RND))  # fmt: skip
    input_reach = (sens_x != 0).sum(axis=0).reshape(3, 3)
    figures = [_plot(x, w, dy, r, sens_w, input_reach, out_dir)]
    metrics = {
        "X": x, "W": w, "dY": dy, "closed_form": cf,
        "fnnet": {k: r[k] for k in ("y", "dW", "dX", "dW_autodiff", "dX_autodiff")},
        "dy_dW": sens_w, "outputs_reached_per_input_pixel": input_reach,
        "general_settings": [list(map(str, st)) for st in GENERAL[: config.general]], "general_rel_err": general,
    }  # fmt: skip
    return Result(metrics=metrics, claims=claims, figures=figures)


def _heat(ax, a: np.ndarray, title: str, fmt: str = "{:g}") -> None:
    a = np.asarray(a)
    lim = max(float(np.max(np.abs(a))), 1e-12)
    ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for (i, j), v in np.ndenumerate(a):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=9, color="w" if abs(v) > 0.6 * lim else "k")
    ax.set_xticks(range(a.shape[1]))
    ax.set_yticks(range(a.shape[0]))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column", fontsize=8)
    ax.set_ylabel("row", fontsize=8)


def _plot(x, w, dy, r, sens_w, input_reach, out_dir: Path):
    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.4))
    _heat(axes[0, 0], x, "input X (3×3)")
    _heat(axes[0, 1], w, "filter W (2×2)")
    _heat(axes[0, 2], r["y"], "output Y = X ⋆ W (fnnet)")
    _heat(axes[0, 3], dy, "upstream signal dY")
    _heat(axes[1, 0], r["dW"], "dW = X ⋆ dY (rule)")
    _heat(axes[1, 1], r["dX"], "dX = pad(dY) ⋆ rot180(W) (rule)")
    ax = axes[1, 2]
    _heat(ax, sens_w, "∂y[i,j]/∂W[p,q] = X[i+p, j+q]")
    ax.set_xticks(range(4), ["W00", "W01", "W10", "W11"], fontsize=8)
    ax.set_yticks(range(4), ["y00", "y01", "y10", "y11"], fontsize=8)
    ax.set_xlabel("filter weight", fontsize=8)
    ax.set_ylabel("output pixel", fontsize=8)
    _heat(axes[1, 3], input_reach, "output pixels each input pixel reaches", "{:.0f}")
    fig.tight_layout()
    return save_figure(
        fig,
        out_dir,
        "conv_toy",
        "The 3×3 ⋆ 2×2 toy case: forward, the upstream dY, and the rule's dW and dX (equal to the closed forms and "
        "jax.vjp). Every filter weight reaches all 4 outputs; a corner input pixel reaches only one.",
    )
