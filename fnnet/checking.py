"""Check a gradient function against ``jax.grad`` and central finite differences, leaf by leaf.

:func:`gradcheck` works on any function, the user's own included::

    report = fn.gradcheck(loss_fn, grad_fn, params, x, y)   # grad_fn(*args) -> d loss_fn / d args[0]
    assert report.ok, report

Three references, all per pytree leaf of the differentiated argument(s):

* **autodiff**: ``jax.grad(loss_fn)`` in the arguments' own dtype;
* **finite differences**: central differences (f(θ + εv) − f(θ − εv)) / 2ε, taken in float64 where
  the backend allows (everywhere but TPU), along every basis vector of a leaf with at most
  ``max_fd_elements`` entries (an elementwise check) and along ``n_directions`` random unit
  directions otherwise, compared with ⟨g, v⟩;
* for layers, :func:`check_layer` adds the adjoint identity ⟨J t, c⟩ = ⟨t, Jᵀ c⟩, with J t from
  ``jax.jvp`` and Jᵀ c from the hand-written rule.

Where central differences are not the derivative (inputs exactly at a kink, or at a tie of a max),
``finite_differences=False`` leaves that reference out and the other two decide.

The relative error of two arrays a, b is ‖a − b‖ / max(‖a‖, ‖b‖, tiny). The bars sit in
:data:`TOLERANCES`, one row per dtype of the gradient under test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.core import Layer, Loss


class Tolerance(NamedTuple):
    """Pass bars for one dtype: relative error vs autodiff, vs finite differences, and the FD step."""

    autodiff: float  # manual vs jax.grad, same dtype
    fd: float  # manual vs central finite differences (float64 where available)
    fd_eps: float  # the central-difference step, in the FD dtype


#: The one table of tolerances. float64 bars are the contract of every catalog entry; float32 is
#: bounded by its own rounding (eps ≈ 1.2e-7 amplified through a few ops); half precisions are loose.
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(autodiff=1e-10, fd=1e-6, fd_eps=1e-6),
    "float32": Tolerance(autodiff=1e-4, fd=1e-3, fd_eps=1e-6),
    "bfloat16": Tolerance(autodiff=5e-2, fd=1e-1, fd_eps=1e-6),
    "float16": Tolerance(autodiff=1e-2, fd=5e-2, fd_eps=1e-6),
}
#: Used for finite differences when float64 is unavailable (TPU): step and bar in float32.
FD_FLOAT32 = Tolerance(autodiff=1e-4, fd=2e-2, fd_eps=1e-3)


class GradcheckError(ValueError):
    """The gradient function and the loss disagree in structure (not in value)."""


def x64_available() -> bool:
    """float64 works on CPU and GPU; TPUs have no float64."""
    return jax.default_backend() != "tpu"


def relative_error(a: Any, b: Any) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖, tiny), in float64 on the host."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = max(np.linalg.norm(a), np.linalg.norm(b), np.finfo(np.float64).tiny)
    return float(np.linalg.norm(a - b) / denom)


@dataclasses.dataclass(frozen=True)
class LeafReport:
    """Errors of one pytree leaf of the gradient."""

    path: str
    shape: tuple[int, ...]
    abs_autodiff: float  # max |manual − autodiff|
    rel_autodiff: float
    abs_fd: float  # max |FD − ⟨manual, v⟩| over the probed directions
    rel_fd: float
    fd_probes: int  # directions probed (= leaf size when elementwise)
    ok: bool


@dataclasses.dataclass(frozen=True)
class GradcheckReport:
    """The per-leaf result of :func:`gradcheck`; ``ok`` when every leaf passes every bar."""

    leaves: tuple[LeafReport, ...]
    dtype: str
    fd_dtype: str
    tolerance: Tolerance
    dot_error: float | None = None  # |⟨Jt, c⟩ − ⟨t, Jᵀc⟩| / max(...), layers only

    @property
    def ok(self) -> bool:
        dot_ok = self.dot_error is None or self.dot_error <= self.tolerance.autodiff
        return dot_ok and all(leaf.ok for leaf in self.leaves)

    @property
    def rel_autodiff(self) -> float:
        return max((leaf.rel_autodiff for leaf in self.leaves), default=0.0)

    @property
    def rel_fd(self) -> float:
        return max((leaf.rel_fd for leaf in self.leaves), default=0.0)

    @property
    def failures(self) -> list[str]:
        return [leaf.path for leaf in self.leaves if not leaf.ok]

    def __str__(self) -> str:
        t = self.tolerance
        fd = "FD skipped" if self.fd_dtype == "skipped" else f"FD in {self.fd_dtype}"
        head = (
            f"gradcheck ({self.dtype}; {fd}): {'PASS' if self.ok else 'FAIL'}  "
            f"bars: rel vs autodiff <= {t.autodiff:.0e}, rel vs FD <= {t.fd:.0e}"
        )
        rows = [f"{'leaf':<28} {'shape':<16} {'rel autodiff':>12} {'rel FD':>10} {'probes':>6}  ok"]
        for leaf in self.leaves:
            rows.append(
                f"{leaf.path:<28} {str(leaf.shape):<16} {leaf.rel_autodiff:>12.2e} "
                f"{leaf.rel_fd:>10.2e} {leaf.fd_probes:>6}  {'yes' if leaf.ok else 'NO'}"
            )
        if self.dot_error is not None:
            rows.append(f"adjoint identity <Jt,c> = <t,J^T c>: rel error {self.dot_error:.2e}")
        if not self.ok:
            rows.append("wrong: " + ", ".join(self.failures or ["adjoint identity"]))
        return "\n".join([head, *rows])


def _dtype_name(tree: Any) -> str:
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    if not leaves:
        raise GradcheckError("gradcheck needs at least one floating-point array to differentiate")
    return str(jnp.result_type(*leaves))


def _to(tree: Any, dtype: Any) -> Any:
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree_util.tree_map(cast, tree)


def _paths(primal: tuple, names: Sequence[str]) -> list[str]:
    """Leaf names such as ``params[0]['W']``: the argument's name, then the path inside it."""
    flat, _ = jax.tree_util.tree_flatten_with_path(primal)
    return [names[p[0].idx] + jax.tree_util.keystr(p[1:]) for p, _ in flat]


def _fd_directions(key: Any, size: int, max_elements: int, n_directions: int) -> np.ndarray:
    if size <= max_elements:
        return np.eye(size)
    v = np.asarray(jax.random.normal(key, (n_directions, size), jnp.float32), np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def gradcheck(
    loss_fn: Callable[..., Any],
    grad_fn: Callable[..., Any],
    *args: Any,
    argnums: int | Sequence[int] = 0,
    tolerance: Tolerance | None = None,
    max_fd_elements: int = 64,
    n_directions: int = 8,
    key: Any = None,
    arg_names: Sequence[str] | None = None,
    finite_differences: bool = True,
) -> GradcheckReport:
    """Compare ``grad_fn(*args)`` with ``jax.grad(loss_fn, argnums)(*args)`` and finite differences.

    Args:
      loss_fn: a scalar function of ``args`` written in ``jax.numpy``.
      grad_fn: the gradient under test; returns the gradient w.r.t. ``args[argnums]`` (a tuple of
        them when ``argnums`` is a sequence), with the same pytree structure.
      argnums: which argument(s) to differentiate, as in ``jax.grad``.
      tolerance: the bars; by default the row of :data:`TOLERANCES` for the arguments' dtype.
      max_fd_elements: leaves up to this size are checked element by element; larger ones along
        ``n_directions`` random unit directions drawn from ``key``.
      arg_names: names of the arguments for the report (default ``args[0]``, ``args[1]``, ...).
      finite_differences: ``False`` skips the finite-difference reference, for inputs where central
        differences are not the derivative (they straddle a kink, e.g. relu at exactly 0, or a tie of a
        max); each leaf then reports ``fd_probes=0`` and ``rel_fd=0``, ``fd_dtype`` reads ``"skipped"``,
        and only autodiff (and, for layers and losses, the adjoint identity) check the rule.

    Returns:
      A :class:`GradcheckReport`. Raises :class:`GradcheckError` if the structures differ.
    """
    key = jax.random.key(0) if key is None else key
    multi = not isinstance(argnums, int)
    nums = tuple(argnums) if multi else (argnums,)
    for n in nums:
        if not -len(args) <= n < len(args):
            raise GradcheckError(f"argnums={argnums} but gradcheck got only {len(args)} argument(s)")
    primal = tuple(args[n] for n in nums)
    names = [arg_names[n] if arg_names else f"args[{n}]" for n in nums]
    dtype = _dtype_name(primal)
    tol = tolerance or TOLERANCES.get(dtype, TOLERANCES["float32"])

    manual = grad_fn(*args)
    manual = manual if multi else (manual,)
    auto = jax.grad(loss_fn, argnums=nums)(*args)
    s_primal, s_manual = jax.tree_util.tree_structure(primal), jax.tree_util.tree_structure(manual)
    if s_primal != s_manual:
        raise GradcheckError(
            f"grad_fn returned a pytree of structure {s_manual}, but the differentiated argument(s) "
            f"have structure {s_primal}; return one gradient leaf per parameter leaf"
        )
    for path, g, p in zip(_paths(primal, names), jax.tree_util.tree_leaves(manual), jax.tree_util.tree_leaves(primal)):
        if jnp.shape(g) != jnp.shape(p):
            raise GradcheckError(f"gradient leaf {path} has shape {jnp.shape(g)}, its parameter {jnp.shape(p)}")

    use64 = x64_available()
    fd_tol = tol if use64 else FD_FLOAT32
    eps = fd_tol.fd_eps
    leaves_p, treedef = jax.tree_util.tree_flatten(primal)
    m_leaves = [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(manual)]
    a_leaves = [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(auto)]
    paths = _paths(primal, names)
    keys = jax.random.split(key, max(len(leaves_p), 1))

    reports = []
    with jax.enable_x64(use64):
        fd_dtype = jnp.float64 if use64 else jnp.float32
        base_args = list(_to(args, fd_dtype))
        base_leaves = jax.tree_util.tree_leaves(_to(primal, fd_dtype))

        def f_of_leaf(i, leaf_value):
            new = list(base_leaves)
            new[i] = leaf_value
            tree = jax.tree_util.tree_unflatten(treedef, new)
            call = list(base_args)
            for n, sub in zip(nums, tree):
                call[n] = sub
            return loss_fn(*call)

        for i, (path, p) in enumerate(zip(paths, base_leaves)):
            if not jnp.issubdtype(p.dtype, jnp.floating):
                continue
            abs_ad = float(np.max(np.abs(m_leaves[i] - a_leaves[i]), initial=0.0))
            rel_ad = relative_error(m_leaves[i], a_leaves[i])
            if not finite_differences:
                reports.append(LeafReport(path, tuple(p.shape), abs_ad, rel_ad, 0.0, 0.0, 0, rel_ad <= tol.autodiff))
                continue
            dirs = _fd_directions(keys[i], p.size, max_fd_elements, n_directions)
            v = jnp.asarray(dirs.reshape((-1,) + p.shape), fd_dtype)
            central = jax.jit(
                jax.vmap(lambda d, i=i, p=p: (f_of_leaf(i, p + eps * d) - f_of_leaf(i, p - eps * d)) / (2 * eps))
            )
            fd = np.asarray(central(v), np.float64)
            proj = dirs @ m_leaves[i].ravel()
            rel_fd = relative_error(fd, proj)
            ok = bool(rel_ad <= tol.autodiff and rel_fd <= fd_tol.fd)
            reports.append(
                LeafReport(
                    path,
                    tuple(p.shape),
                    abs_ad,
                    rel_ad,
                    float(np.max(np.abs(fd - proj), initial=0.0)),
                    rel_fd,
                    len(dirs),
                    ok,
                )
            )
    fd_name = ("float64" if use64 else "float32") if finite_differences else "skipped"
    return GradcheckReport(tuple(reports), dtype, fd_name, fd_tol)


# ----------------------------------------------------------------------------------------------
# Layers and losses: the three-way check of a hand-written rule


def _vdot(a: Any, b: Any) -> float:
    total = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        if jnp.issubdtype(jnp.result_type(x), jnp.floating):
            total += float(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)))
    return total


def _scalar_error(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), np.finfo(np.float64).tiny)


def check_layer(
    layer: Layer,
    params: Any,
    x: Any,
    *,
    key: Any = None,
    train: bool = True,
    transform: str = "jit",
    rng: Any = None,
    tolerance: Tolerance | None = None,
    finite_differences: bool = True,
) -> GradcheckReport:
    """Check ``layer.backward`` three ways at (params, x).

    With a random cotangent c, the scalar ⟨c, f(θ, x)⟩ has gradient Jᵀc, so :func:`gradcheck`
    compares the rule with ``jax.vjp`` (through ``jax.grad``) and with finite differences; then the
    adjoint identity ⟨J t, c⟩ = ⟨t, Jᵀ c⟩ is checked with a random tangent t and ``jax.jvp``.

    ``transform``: ``"none"``, ``"jit"`` (rule and references jitted), or ``"vmap"``: ``x`` carries
    a leading axis of independent problems, each with its own batch; the rule is vmapped over it and
    its parameter gradients summed, as the gradient of Σ_k ⟨c_k, f(θ, x_k)⟩ requires.

    ``finite_differences=False`` skips that reference where it is undefined (see :func:`gradcheck`).
    """
    rng = jax.random.key(1) if rng is None else rng
    k_c, k_t, k_fd = jax.random.split(rng, 3)

    def apply(p, xx):
        if transform == "vmap":
            return jax.vmap(lambda xi: layer.forward(p, xi, key=key, train=train)[0])(xx)
        return layer.forward(p, xx, key=key, train=train)[0]

    y = apply(params, x)
    c = jax.random.normal(k_c, y.shape, y.dtype)

    def loss_fn(p, xx):
        out = apply(p, xx)
        return jnp.sum(c.astype(out.dtype) * out)

    def manual(p, xx):
        if transform == "vmap":

            def one(xi, ci):
                _, cache = layer.forward(p, xi, key=key, train=train)
                return layer.backward(p, cache, ci)

            dps, dx = jax.vmap(one)(xx, c)
            return jax.tree_util.tree_map(lambda g: jnp.sum(g, axis=0), dps), dx
        _, cache = layer.forward(p, xx, key=key, train=train)
        return layer.backward(p, cache, c.astype(y.dtype))

    grad_fn = jax.jit(manual) if transform in ("jit", "vmap") else manual
    ref_fn = jax.jit(loss_fn) if transform in ("jit", "vmap") else loss_fn
    report = gradcheck(
        ref_fn,
        grad_fn,
        params,
        x,
        argnums=(0, 1),
        tolerance=tolerance,
        key=k_fd,
        arg_names=("params", "x"),
        finite_differences=finite_differences,
    )

    t = jax.tree_util.tree_map(lambda a: jax.random.normal(k_t, jnp.shape(a), jnp.result_type(a)), (params, x))
    _, jt = jax.jvp(apply, (params, x), t)
    lhs = _vdot(jt, c)
    rhs = _vdot(t, grad_fn(params, x))
    return dataclasses.replace(report, dot_error=_scalar_error(lhs, rhs))


def check_loss(
    loss: Loss,
    pred: Any,
    target: Any,
    *,
    transform: str = "jit",
    rng: Any = None,
    tolerance: Tolerance | None = None,
    finite_differences: bool = True,
) -> GradcheckReport:
    """Check ``loss.backward`` against ``jax.grad``, finite differences and the adjoint identity.

    ``transform="vmap"`` vmaps forward and rule over a leading axis of independent batches;
    ``finite_differences=False`` skips that reference (see :func:`gradcheck`).
    """
    rng = jax.random.key(1) if rng is None else rng
    k_t, k_fd = jax.random.split(rng)

    def value(p):
        if transform == "vmap":
            return jnp.sum(jax.vmap(lambda pi, ti: loss.forward(pi, ti)[0])(p, target))
        return loss.forward(p, target)[0]

    def manual(p):
        if transform == "vmap":
            return jax.vmap(lambda pi, ti: loss.backward(loss.forward(pi, ti)[1]))(p, target)
        return loss.backward(loss.forward(p, target)[1])

    grad_fn = jax.jit(manual) if transform in ("jit", "vmap") else manual
    report = gradcheck(
        value, grad_fn, pred, tolerance=tolerance, key=k_fd, arg_names=("pred",), finite_differences=finite_differences
    )
    t = jax.random.normal(k_t, jnp.shape(pred), jnp.result_type(pred))
    _, jt = jax.jvp(value, (pred,), (t,))
    return dataclasses.replace(report, dot_error=_scalar_error(float(jt), _vdot(t, grad_fn(pred))))
