"""Weight initializers: one :func:`variance_scaling`, and every named scheme as a case of it.

Each initializer is a function ``(key, shape, dtype=jnp.float32) -> Array``, as in
``jax.nn.initializers``, with the same semantics:

* fans: for a kernel of shape ``(..., fan_in, fan_out)`` (Dense ``(d_in, d_out)``, conv HWIO), the
  receptive field is the product of the other axes; fan_in = in · receptive field and
  fan_out = out · receptive field.
* ``"truncated_normal"`` draws from N(0, 1) truncated to [−2, 2] and divides the std by
  0.87962566103423978 (the std of that truncated normal), so the variance is the one stated.

The named schemes are *factories*: ``he_normal()`` returns the initializer. Layers take the
initializer itself (``fn.Dense(64, w_init=fn.initializers.he_normal())``); :func:`resolve` refuses a
name (``w_init="he_normal"``), an uncalled factory or anything else that is not one, naming the
argument, and :func:`draw` checks that what an initializer returns has the shape and dtype asked for.

References: Glorot & Bengio 2010, eq. 12 and 16 (Xavier); He et al. 2015, eq. 10 and 14 (He/Kaiming);
LeCun et al. 1998, "Efficient BackProp" (LeCun); Saxe et al. 2014 (orthogonal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.core import Array, DTypeError, Shape, ShapeError, annotate, shape_str

Initializer = Callable[..., Array]
Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["truncated_normal", "normal", "uniform"]

_TRUNC_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]


def compute_fans(shape: Shape, in_axis: int = -2, out_axis: int = -1) -> tuple[float, float]:
    """(fan_in, fan_out) of a kernel shape, with the receptive field of conv kernels."""
    if len(shape) < 2:
        raise ValueError(f"fans need a kernel of rank >= 2, got shape {tuple(shape)}")
    in_size, out_size = shape[in_axis], shape[out_axis]
    receptive = np.prod(shape) / (in_size * out_size)
    return float(in_size * receptive), float(out_size * receptive)


def variance_scaling(
    scale: float, mode: Mode, distribution: Distribution, in_axis: int = -2, out_axis: int = -1
) -> Initializer:
    """The initializer drawing with Var[w] = scale / n, n = fan_in, fan_out or (fan_in + fan_out)/2.

    Variance:
        Var[w] = scale / n. ``"uniform"`` samples U[−a, a] with a = √(3 scale / n); ``"normal"`` N(0, scale / n);
        ``"truncated_normal"`` N(0, 1) truncated to [−2, 2], times √(scale / n) / 0.8796 (the std of that
        truncated normal), so the variance is exactly scale / n.

    Args:
        scale: the variance's numerator, > 0.
        mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``; the fans include a conv kernel's receptive field.
        distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.
        in_axis: the kernel axis of the inputs (default −2).
        out_axis: the kernel axis of the outputs (default −1).

    Returns:
        ``init(key, shape, dtype=float32) -> Array``.

    Raises:
        ValueError: ``scale`` ≤ 0, or an unknown ``mode`` or ``distribution``.
    """
    if scale <= 0:
        raise ValueError(f"variance_scaling needs scale > 0, got {scale}")
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"variance_scaling mode must be fan_in, fan_out or fan_avg, got {mode!r}")
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise ValueError(
            f"variance_scaling distribution must be truncated_normal, normal or uniform, got {distribution!r}"
        )

    def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        shape = tuple(shape)
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / n
        if distribution == "truncated_normal":
            std = np.sqrt(variance) / _TRUNC_STD
            return (jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * std).astype(dtype)
        if distribution == "normal":
            return (jax.random.normal(key, shape, dtype) * np.sqrt(variance)).astype(dtype)
        limit = np.sqrt(3 * variance)
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


def glorot_uniform() -> Initializer:
    """Xavier/Glorot uniform (Glorot & Bengio 2010, eq. 16): ``variance_scaling(1, "fan_avg", "uniform")``.

    Variance:
        Var[w] = 2 / (fan_in + fan_out), from U[−a, a] with a = √(6 / (fan_in + fan_out)).
    """
    return variance_scaling(1.0, "fan_avg", "uniform")


def glorot_normal() -> Initializer:
    """Xavier/Glorot normal, truncated at ±2σ: ``variance_scaling(1, "fan_avg", "truncated_normal")``.

    The default weight initializer of ``Dense`` and ``Conv2D`` (as ``stax.Dense``).

    Variance:
        Var[w] = 2 / (fan_in + fan_out) (Glorot & Bengio 2010, eq. 12).
    """
    return variance_scaling(1.0, "fan_avg", "truncated_normal")


def he_uniform() -> Initializer:
    """He/Kaiming uniform (He et al. 2015, eq. 10): ``variance_scaling(2, "fan_in", "uniform")``.

    Variance:
        Var[w] = 2 / fan_in, from U[−a, a] with a = √(6 / fan_in); keeps the second moment through ReLU.
    """
    return variance_scaling(2.0, "fan_in", "uniform")


def he_normal() -> Initializer:
    """He/Kaiming normal, truncated at ±2σ (He et al. 2015, eq. 10): ``variance_scaling(2, "fan_in", ...)``.

    Variance:
        Var[w] = 2 / fan_in; keeps the second moment of the pre-activations through ReLU layers.
    """
    return variance_scaling(2.0, "fan_in", "truncated_normal")


def lecun_uniform() -> Initializer:
    """LeCun uniform (LeCun et al. 1998, "Efficient BackProp"): ``variance_scaling(1, "fan_in", "uniform")``.

    Variance:
        Var[w] = 1 / fan_in, from U[−a, a] with a = √(3 / fan_in).
    """
    return variance_scaling(1.0, "fan_in", "uniform")


def lecun_normal() -> Initializer:
    """LeCun normal, truncated at ±2σ: ``variance_scaling(1, "fan_in", "truncated_normal")``.

    Variance:
        Var[w] = 1 / fan_in.
    """
    return variance_scaling(1.0, "fan_in", "truncated_normal")


def leaky_he_normal(alpha: float = 0.01) -> Initializer:
    """He normal for a leaky ReLU of slope ``alpha`` (α), truncated at ±2σ (He et al. 2015, eq. 15).

    Variance:
        Var[w] = 2 / ((1 + α²) fan_in).
    """
    return variance_scaling(2.0 / (1.0 + alpha * alpha), "fan_in", "truncated_normal")


def standard_uniform() -> Initializer:
    """Glorot & Bengio's "standard" heuristic U[−1/√fan_in, 1/√fan_in] (Glorot & Bengio 2010, eq. 1).

    Variance:
        Var[w] = 1 / (3 fan_in).
    """
    return variance_scaling(1.0 / 3.0, "fan_in", "uniform")


xavier_uniform, xavier_normal = glorot_uniform, glorot_normal
kaiming_uniform, kaiming_normal = he_uniform, he_normal


def normal(stddev: float = 1e-2) -> Initializer:
    """N(0, stddev²) for every entry, independent of the fans.

    Variance:
        Var[w] = stddev² (default 1e-4).
    """

    def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        return (jax.random.normal(key, tuple(shape), dtype) * stddev).astype(dtype)

    return init


def constant(value: float) -> Initializer:
    """Every entry equal to ``value``; breaks no symmetry between units.

    Variance:
        Var[w] = 0 (E[w] = value).
    """

    def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        del key
        return jnp.full(tuple(shape), value, dtype)

    return init


def zeros() -> Initializer:
    """All zeros: the default bias initializer.

    Variance:
        Var[w] = 0.
    """
    return constant(0.0)


def ones() -> Initializer:
    """All ones (e.g. a normalization's scale γ).

    Variance:
        Var[w] = 0 (E[w] = 1).
    """
    return constant(1.0)


def orthogonal(scale: float = 1.0, column_axis: int = -1) -> Initializer:
    """A (semi-)orthogonal matrix times ``scale`` (Saxe et al. 2014): WᵀW = scale² I (or WWᵀ = scale² I).

    Drawn by QR of a Gaussian matrix, with the sign of diag(R) folded into Q so that the draw is
    Haar-distributed (Mezzadri 2007). Every axis but ``column_axis`` is flattened into the rows.

    Variance:
        Var[w] = scale² / max(rows, cols) per entry; every singular value equals ``scale``.
    """

    def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"orthogonal needs a shape of rank >= 2, got {shape}")
        n_cols = shape[column_axis]
        n_rows = int(np.prod(shape)) // n_cols
        # QR runs in at least float32: LAPACK (CPU) has no half-precision kernels.
        qr_dtype = jnp.promote_types(dtype, jnp.float32)
        a = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), qr_dtype)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diagonal(r))[None, :]
        if n_rows < n_cols:
            q = q.T
        q = jnp.reshape(q, (n_rows, n_cols))
        q = jnp.moveaxis(jnp.reshape(q, tuple(np.delete(shape, column_axis % len(shape))) + (n_cols,)), -1, column_axis)
        return (scale * q).astype(dtype)

    return init


INITIALIZERS: dict[str, Callable[..., Initializer]] = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_uniform": he_uniform,
    "kaiming_normal": he_normal,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
    "leaky_he_normal": leaky_he_normal,
    "standard_uniform": standard_uniform,
    "orthogonal": orthogonal,
    "normal": normal,
    "zeros": zeros,
}


def get(name: str, **kwargs) -> Initializer:
    """The initializer called ``name`` (e.g. ``get("he_normal")``, ``get("normal", stddev=1.0)``)."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose one of {', '.join(sorted(INITIALIZERS))}")
    return INITIALIZERS[name](**kwargs)


# ----------------------------------------------------------------------------------------------
# initializers given to layers

_FACTORIES: dict[Callable[..., Any], str] = {
    f: f.__name__
    for f in (
        variance_scaling,
        glorot_uniform,
        glorot_normal,
        he_uniform,
        he_normal,
        lecun_uniform,
        lecun_normal,
        leaky_he_normal,
        standard_uniform,
        normal,
        constant,
        zeros,
        ones,
        orthogonal,
    )
}
_NEED_ARGUMENTS = ("variance_scaling", "constant")
_JAX_DIRECT = ("zeros", "ones")  # jax.nn.initializers.zeros/ones are initializers, not factories


def _jax_factory(value: Any) -> str | None:
    """The name of ``value`` in ``jax.nn.initializers`` if it is one of its factories (uncalled)."""
    name = getattr(value, "__name__", None)
    if isinstance(name, str) and name not in _JAX_DIRECT and getattr(jax.nn.initializers, name, None) is value:
        return name
    return None


def resolve(owner: str, arg: str, value: Any, default: Initializer) -> Initializer:
    """The initializer a layer constructor was given as ``arg`` (``default`` for None), or ``TypeError``.

    An initializer is a function ``(key, shape, dtype) -> array``. Refused, naming ``owner`` and
    ``arg``: a string (``w_init="he_normal"``; the message suggests
    ``fn.initializers.get("he_normal")``), one of the factories uncalled (``fn.initializers.he_normal``
    or ``jax.nn.initializers.he_normal`` instead of ``he_normal()``), and anything not callable.
    """
    if value is None:
        return default
    if isinstance(value, str):
        if value in INITIALIZERS:
            hint = f"fn.initializers.get({value!r}) or fn.initializers.{value}()"
        else:
            names = ", ".join(INITIALIZERS)
            hint = f"an initializer such as fn.initializers.he_normal(); {value!r} names none of {names}"
        raise TypeError(
            f"{owner} needs {arg} to be an initializer function (key, shape, dtype) -> array, not the string "
            f"{value!r}; pass {hint}"
        )
    factory = next((n for f, n in _FACTORIES.items() if f is value), None)
    where = "fn.initializers"
    if factory is None and callable(value):
        factory, where = _jax_factory(value), "jax.nn.initializers"
    if factory is not None:
        call = f"{where}.{factory}(...)" if factory in _NEED_ARGUMENTS and where == "fn.initializers" else None
        call = call or f"{where}.{factory}()"
        raise TypeError(f"{owner} got {arg}={where}.{factory}, which makes an initializer; call it: {arg}={call}")
    if not callable(value):
        raise TypeError(
            f"{owner} needs {arg} to be an initializer function (key, shape, dtype) -> array such as "
            f"fn.initializers.he_normal(), got {value!r} ({type(value).__name__})"
        )
    return value


def draw(owner: str, arg: str, init: Initializer, key: Array, shape: Shape, dtype: Any) -> Array:
    """``init(key, shape, dtype)``, checked: an array of exactly that shape and dtype (nothing is cast).

    An error raised by the initializer itself (e.g. a fan-based initializer given a bias shape) is
    re-raised, of the same type, with ``owner`` and ``arg`` in front:
    ``Dense(10) b_init (drawing shape (10,)): fans need a kernel of rank >= 2, ...``.
    """
    shape = tuple(shape)
    try:
        w = init(key, shape, dtype)
    except (ValueError, TypeError) as e:
        raise annotate(e, f"{owner} {arg} (drawing shape {shape_str(shape)}): ") from None
    if not (hasattr(w, "shape") and hasattr(w, "dtype")):
        raise TypeError(f"{owner} {arg} returned {type(w).__name__}, not an array of shape {shape_str(shape)}")
    if tuple(w.shape) != shape:
        raise ShapeError(f"{owner} {arg} returned an array of shape {shape_str(w.shape)}, expected {shape_str(shape)}")
    if jnp.dtype(w.dtype) != jnp.dtype(dtype):
        raise DTypeError(
            f"{owner} {arg} returned {jnp.dtype(w.dtype)}, expected {jnp.dtype(dtype)}: an initializer must "
            f"draw in the dtype it is given"
        )
    return w
