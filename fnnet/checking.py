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

import collections
import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.core import Layer, Loss


class Tolerance(NamedTuple):
    """Pass bars for one dtype: relative error vs autodiff, vs finite differences, the FD step, the adjoint bar."""

    autodiff: float  # manual vs jax.grad, same dtype
    fd: float  # manual vs central finite differences (float64 where available)
    fd_eps: float  # the central-difference step, in the FD dtype
    adjoint: float | None = None  # |<Jt,c> - <t,J^T c>| / max(|.|, |.|); None: the autodiff bar

    @property
    def adjoint_bar(self) -> float:
        """The bar of the adjoint identity: ``adjoint``, or the autodiff bar where it is unset."""
        return self.autodiff if self.adjoint is None else self.adjoint


#: The one table of tolerances. float64 bars are the contract of every catalog entry; float32 is
#: bounded by its own rounding (eps ≈ 1.2e-7 amplified through a few ops); half precisions are loose.
#:
#: The adjoint bar: both sides of ⟨J t, c⟩ = ⟨t, Jᵀ c⟩ are sums of n products of values each computed in the
#: dtype with a relative rounding of a few u (u = eps/2, through the few ops of a rule), summed in float64. With
#: random t and c the sums cancel: |Σ| ≈ Σ|terms| / √n, so the relative error is ≈ k·u·√n. For the catalog's
#: sizes (n ≤ 10³, k ≤ 30) that is ≤ 6e-5 in float32 and ≤ 1e-13 in float64; the bars (1e-4, 1e-10) sit above
#: with the same margin as the autodiff bars, and a wrong rule (a factor, a sign, a lost term) is off by O(1).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(autodiff=1e-10, fd=1e-6, fd_eps=1e-6, adjoint=1e-10),
    "float32": Tolerance(autodiff=1e-4, fd=1e-3, fd_eps=1e-6, adjoint=1e-4),
    "bfloat16": Tolerance(autodiff=5e-2, fd=1e-1, fd_eps=1e-6, adjoint=5e-2),
    "float16": Tolerance(autodiff=1e-2, fd=5e-2, fd_eps=1e-6, adjoint=1e-2),
}
#: Used for finite differences when float64 is unavailable (TPU): step and bar in float32.
FD_FLOAT32 = Tolerance(autodiff=1e-4, fd=2e-2, fd_eps=1e-3, adjoint=1e-4)


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
    """Errors of one pytree leaf of the gradient.

    ``worst_autodiff`` is the index (into the leaf) of the largest |manual − autodiff|; ``worst_fd`` the probe
    with the largest |FD − ⟨manual, v⟩|: an index into the leaf where probes are basis vectors (the leaf has
    at most ``max_fd_elements`` entries), else the number of the random direction; ``None`` without probes.
    """

    path: str
    shape: tuple[int, ...]
    abs_autodiff: float  # max |manual − autodiff|
    rel_autodiff: float
    abs_fd: float  # max |FD − ⟨manual, v⟩| over the probed directions
    rel_fd: float
    fd_probes: int  # directions probed (= leaf size when elementwise)
    ok: bool
    worst_autodiff: tuple[int, ...] = ()
    worst_fd: tuple[int, ...] | int | None = None
    rel_fd_autodiff: float = 0.0  # jax.grad's own error against the same FD probes: the reference's accuracy
    kinks: int = 0  # probes whose differences crossed a kink (:func:`_differences`)


@dataclasses.dataclass(frozen=True)
class ForwardReport:
    """The check of a hand-written forward-mode rule (``Layer.jvp`` / ``Loss.jvp``) along one random tangent t.

    ``rel_autodiff``: the rule's J t against ``jax.jvp`` of the forward; ``rel_fd``: against central
    differences of the forward along t (float64 where available; 0 when skipped; for a scalar function
    relative to ‖∇L‖·‖t‖, see :func:`_forward_report`); ``adjoint``: the identity
    ⟨J_fwd t, c⟩ = ⟨t, J_bwdᵀ c⟩ between the two hand-written rules, with a random cotangent c (no autodiff
    in it); ``rel_value``: the rule's y against the forward's.
    """

    rel_autodiff: float
    rel_fd: float
    adjoint: float
    rel_value: float
    tolerance: Tolerance
    kinks: int = 0  # entries of J t whose differences crossed a kink
    zero: float = 0.0  # max |dy| of the rule along the zero tangent: must be exactly 0

    @property
    def exact_ok(self) -> bool:
        """The checks that take no difference quotient pass: vs jax.jvp, the adjoint identity, y, zero tangent."""
        t = self.tolerance
        return (
            bool(self.rel_autodiff <= t.autodiff and self.adjoint <= t.adjoint_bar and self.rel_value <= t.autodiff)
            and self.zero == 0
        )

    @property
    def ok(self) -> bool:
        return self.exact_ok and bool(self.rel_fd <= self.tolerance.fd)

    def __str__(self) -> str:
        t = self.tolerance
        return (
            f"forward mode (jvp) along a random t: rel vs jax.jvp {self.rel_autodiff:.2e} (bar {t.autodiff:.0e}), "
            f"vs FD {self.rel_fd:.2e} (bar {t.fd:.0e}), adjoint <J_fwd t, c> = <t, J_bwd^T c> {self.adjoint:.2e} "
            f"(bar {t.adjoint_bar:.0e}), y vs forward {self.rel_value:.2e}"
            + ("" if self.zero == 0 else f", zero tangent gives |dy| = {self.zero:.1e} (must be 0)")
            + f": {'yes' if self.ok else 'NO'}"
        )


@dataclasses.dataclass(frozen=True)
class SecondOrderReport:
    """The check of the rule's own derivative (``order=2``), as ``torch.autograd.gradgradcheck`` does.

    The rule B(θ) (the hand-written gradient: Jᵀc of a layer at a fixed random cotangent c, a loss's or a
    user's ``grad_fn``'s gradient) is itself differentiated by JAX along a random direction u, D B[u], which
    is what ``jax.jvp(jax.grad(...))`` computes through :func:`fnnet.custom_vjp` (a Hessian-vector product
    through the rules). It is compared with

    * ``rel_autodiff``: forward-over-reverse of ``jax.grad`` of the forward, H u;
    * ``rel_fd``: central differences of the rule itself along u, (B(θ + εu) − B(θ − εu)) / 2ε, float64;
    * ``symmetry``: ⟨w, D B[u]⟩ = ⟨u, D B[w]⟩ with a second random w; the rule is a gradient, so its
      derivative (a Hessian) is symmetric; no autodiff reference in it;
    * ``rel_hvp``: a loss's hand-written ``Loss.hvp(cache, u)`` against D B[u] (None for layers and losses
      without one).
    """

    rel_autodiff: float
    rel_fd: float
    symmetry: float
    tolerance: Tolerance
    rel_hvp: float | None = None
    kinks: int = 0  # entries of B whose differences along u crossed a kink

    @property
    def exact_ok(self) -> bool:
        t = self.tolerance
        hvp_ok = self.rel_hvp is None or self.rel_hvp <= t.autodiff
        return bool(self.rel_autodiff <= t.autodiff and self.symmetry <= t.adjoint_bar and hvp_ok)

    @property
    def ok(self) -> bool:
        return self.exact_ok and bool(self.rel_fd <= self.tolerance.fd)

    def __str__(self) -> str:
        t = self.tolerance
        hvp = "" if self.rel_hvp is None else f", Loss.hvp vs D(rule)[u] {self.rel_hvp:.2e} (bar {t.autodiff:.0e})"
        return (
            f"second order (the rule's own derivative along a random u): rel vs jax forward-over-reverse "
            f"{self.rel_autodiff:.2e} (bar {t.autodiff:.0e}), vs FD of the rule {self.rel_fd:.2e} (bar {t.fd:.0e}), "
            f"symmetry <w, D[u]> = <u, D[w]> {self.symmetry:.2e} (bar {t.adjoint_bar:.0e}){hvp}: "
            f"{'yes' if self.ok else 'NO'}"
        )


#: The re-probe after a kink crossing: each differentiated leaf moves by this fraction of its RMS (1 where the
#: leaf is all zeros) along a random direction, up to :data:`KINK_REPROBES` times. It is 10⁴ finite-difference
#: steps: a point at a kink (relu at 0, a tie of a max) moves off it by far more than one probe spans.
KINK_SHIFT = 1e-2
KINK_REPROBES = 3


@dataclasses.dataclass(frozen=True)
class KinkReport:
    """Finite-difference probes that crossed a kink at the point asked for, and the re-probe.

    Central differences straddling a kink (relu at 0, a tie of a max, an |x| at 0) are not the derivative, so
    a crossing is never counted as a pass: the check is re-run at a point shifted by :data:`KINK_SHIFT` (a
    fresh shift each time, up to :data:`KINK_REPROBES`), and its report, the one this belongs to, decides.
    The checks that take no difference quotient (autodiff, the adjoint identities, determinism, zero
    cotangent) are also required at the point asked for (``at_point_ok``): they hold there by the pinned
    convention (relu′(0) = 0, as ``jax.nn.relu``).
    """

    crossings: tuple[str, ...]  # where, at the point asked for: "params['W']: 3 of 64 probes", "forward mode: ..."
    reprobes: int  # shifted points tried
    resolved: bool  # the last shifted point crossed no kink
    at_point_ok: bool

    @property
    def ok(self) -> bool:
        return self.resolved and self.at_point_ok

    def __str__(self) -> str:
        tries = f"{self.reprobes} {'try' if self.reprobes == 1 else 'tries'}"
        how = (
            f"the differences above were taken at a point shifted by {KINK_SHIFT:g} x each leaf's RMS ({tries})"
            if self.resolved
            else f"every shifted point ({tries}) crossed a kink too: the differences decide nothing"
        )
        return (
            f"kink crossed, re-probed: at the point asked for, {'; '.join(self.crossings)} crossed one; {how}; "
            f"the checks without differences, at the point asked for: {'pass' if self.at_point_ok else 'FAIL'}"
        )


@dataclasses.dataclass(frozen=True)
class GradcheckReport:
    """The per-leaf result of :func:`gradcheck`; ``ok`` when every leaf passes every bar.

    ``hints`` are one-line diagnoses of a failure whose pattern points to a typical bug (a constant ratio
    to the reference, a sign flip, a transposed or zero gradient, an error confined to one leaf).
    """

    leaves: tuple[LeafReport, ...]
    dtype: str
    fd_dtype: str
    tolerance: Tolerance
    dot_error: float | None = None  # |⟨Jt, c⟩ − ⟨t, Jᵀc⟩| / max(...), layers only
    hints: tuple[str, ...] = ()
    forward: ForwardReport | None = None  # the forward-mode rule's check (modes with "fwd")
    nondeterminism: float | None = None  # max |B₁ − B₂| / max |B₁| of the rule run twice; 0.0: bit-equal
    nondet_tol: float = 0.0  # its bar: 0 (bit equality) unless the caller allows atomics
    zero: float | None = None  # max |rule| at the zero cotangent (layers): must be exactly 0
    second: SecondOrderReport | None = None  # the rule's own derivative (order=2)
    kink: KinkReport | None = None  # FD probes crossed a kink at the point asked for; this report is the re-probe

    @property
    def dot_ok(self) -> bool:
        """The adjoint identity holds within ``tolerance.adjoint_bar`` (or was not checked)."""
        return self.dot_error is None or self.dot_error <= self.tolerance.adjoint_bar

    @property
    def deterministic(self) -> bool:
        """The rule run twice on the same inputs agrees within ``nondet_tol`` (or was not run twice)."""
        return self.nondeterminism is None or self.nondeterminism <= self.nondet_tol

    @property
    def zero_ok(self) -> bool:
        """The zero cotangent gave exactly zero gradients, no NaN (or was not checked)."""
        return self.zero is None or self.zero == 0

    @property
    def kinks(self) -> int:
        """Difference probes of this report (leaves, forward mode, second order) that crossed a kink."""
        parts = [leaf.kinks for leaf in self.leaves]
        parts += [p.kinks for p in (self.forward, self.second) if p is not None]
        return int(sum(parts))

    @property
    def exact_ok(self) -> bool:
        """The checks that take no difference quotient pass: vs autodiff, the adjoint identities, determinism,
        the zero cotangent (what a kink crossing leaves standing at the point asked for)."""
        t = self.tolerance
        parts = [self.dot_ok, self.deterministic, self.zero_ok]
        parts += [leaf.rel_autodiff <= t.autodiff for leaf in self.leaves]
        parts += [p.exact_ok for p in (self.forward, self.second) if p is not None]
        return all(bool(p) for p in parts)

    @property
    def ok(self) -> bool:
        forward_ok = self.forward is None or self.forward.ok
        second_ok = self.second is None or self.second.ok
        kink_ok = self.kink is None or self.kink.ok
        checks = self.dot_ok and forward_ok and second_ok and self.deterministic and self.zero_ok and kink_ok
        return checks and all(leaf.ok for leaf in self.leaves)

    @property
    def rel_autodiff(self) -> float:
        return _worst_of(leaf.rel_autodiff for leaf in self.leaves)

    @property
    def rel_fd(self) -> float:
        return _worst_of(leaf.rel_fd for leaf in self.leaves)

    @property
    def abs_autodiff(self) -> float:
        return _worst_of(leaf.abs_autodiff for leaf in self.leaves)

    @property
    def abs_fd(self) -> float:
        return _worst_of(leaf.abs_fd for leaf in self.leaves)

    @property
    def failures(self) -> list[str]:
        return [leaf.path for leaf in self.leaves if not leaf.ok]

    @property
    def wrong(self) -> list[str]:
        """Every failed check by name: the failing leaves, then "adjoint identity", "forward-mode rule",
        "second order", "determinism", "zero cotangent", "kink"."""
        named = [
            ("adjoint identity", self.dot_ok),
            ("forward-mode rule", self.forward is None or self.forward.ok),
            ("second order", self.second is None or self.second.ok),
            ("determinism", self.deterministic),
            ("zero cotangent", self.zero_ok),
            ("kink", self.kink is None or self.kink.ok),
        ]
        return self.failures + [name for name, ok in named if not ok]

    def __str__(self) -> str:
        t = self.tolerance
        fd = "FD skipped" if self.fd_dtype == "skipped" else f"FD in {self.fd_dtype}"
        head = (
            f"gradcheck ({self.dtype}; {fd}): {'PASS' if self.ok else 'FAIL'}  "
            f"bars: rel vs autodiff <= {t.autodiff:.0e}, rel vs FD <= {t.fd:.0e}"
            + (f", adjoint <= {t.adjoint_bar:.0e}" if self.dot_error is not None else "")
        )
        rows = [
            f"{'leaf':<24} {'shape':<14} {'rel autodiff':>12} {'abs':>8} {'worst at':<10} "
            f"{'rel FD':>8} {'abs':>8} {'worst at':<10} {'probes':>6}  ok"
        ]
        for leaf in self.leaves:
            worst_fd = "-" if leaf.worst_fd is None else str(leaf.worst_fd)
            rows.append(
                f"{leaf.path:<24} {str(leaf.shape):<14} {leaf.rel_autodiff:>12.2e} {leaf.abs_autodiff:>8.1e} "
                f"{str(leaf.worst_autodiff):<10} {leaf.rel_fd:>8.2e} {leaf.abs_fd:>8.1e} {worst_fd:<10} "
                f"{leaf.fd_probes:>6}  {'yes' if leaf.ok else 'NO'}"
            )
        if self.dot_error is not None:
            rows.append(
                f"adjoint identity <Jt,c> = <t,J^T c>: rel error {self.dot_error:.2e} "
                f"(bar {t.adjoint_bar:.0e}): {'yes' if self.dot_ok else 'NO'}"
            )
        if self.forward is not None:
            rows.append(str(self.forward))
        if self.second is not None:
            rows.append(str(self.second))
        if self.nondeterminism is not None:
            if self.nondeterminism == 0:
                rows.append("determinism: two runs of the rule are bit-equal: yes")
            else:
                bar = "bit equality" if self.nondet_tol == 0 else f"bar {self.nondet_tol:.0e}"
                rows.append(
                    f"determinism: two runs of the rule differ, max |B1 - B2| / max |B1| = {self.nondeterminism:.1e} "
                    f"({bar}): {'yes' if self.deterministic else 'NO'}"
                )
        if self.zero is not None:
            rows.append(
                "zero cotangent: the gradient is exactly 0: yes"
                if self.zero_ok
                else f"zero cotangent: max |gradient| = {self.zero:.1e}, must be exactly 0: NO"
            )
        if self.kink is not None:
            rows.append(str(self.kink))
        if not self.ok:
            rows.append("wrong: " + ", ".join(self.wrong))
        rows.extend(f"hint: {h}" for h in self.hints)
        return "\n".join([head, *rows])


def _worst_of(errors: Any) -> float:
    """The largest of ``errors``, NaN if any is NaN (Python's ``max`` would keep or drop a NaN by its
    position), 0.0 if there are none."""
    errors = list(errors)
    return float(np.max(errors)) if errors else 0.0


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


# ----------------------------------------------------------------------------------------------
# The fused check: rule, references and probes in one compiled program
#
# Checking a rule costs almost nothing to run and a great deal to compile: eagerly, every primitive of
# jax.grad, of the jvp and of each leaf's probes is its own XLA program. So each check is one traced
# function, compiled once: the rule and jax.grad in the arguments' dtype (under the caller's x64 setting),
# then, in float64, the central differences of every leaf along all its probes (one vmap per leaf) and the
# two sides of the adjoint identity. It returns the manual and autodiff leaves and the probe values; the
# errors, worst indices and hints are computed from them on the host in float64.


class _Probe(NamedTuple):
    """How one leaf is probed: ``count`` directions, basis vectors when ``elementwise``."""

    count: int
    elementwise: bool


def _probes(primal_leaves: Sequence[Any], max_fd_elements: int, n_directions: int) -> list[_Probe | None]:
    out = []
    for p in primal_leaves:
        if not jnp.issubdtype(jnp.result_type(p), jnp.floating):
            out.append(None)
        else:
            size = int(np.prod(jnp.shape(p), dtype=np.int64))
            out.append(_Probe(size, True) if size <= max_fd_elements else _Probe(n_directions, False))
    return out


def _generator(key: Any) -> np.random.Generator:
    """NumPy's generator seeded by the bits of the PRNG ``key`` (a typed key or raw uint32 key data): the
    check's random directions are drawn on the host, from the key alone, with no global state and nothing
    for XLA to compile (each ``jax.random`` generator in a check's program cost about 0.1 s of tracing,
    lowering and compiling, a sizeable part of a small check)."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, dtype=np.uint32).ravel())


def _gaussians(gen: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[Any]) -> list[jax.Array]:
    """Standard normal arrays of the given shapes, drawn in float64 from ``gen`` and rounded on the host to
    the given dtypes: every computation that reads one (the rule, autodiff, the differences) reads the same
    correctly rounded values."""
    return [jnp.asarray(gen.standard_normal(tuple(shape)).astype(dtype)) for shape, dtype in zip(shapes, dtypes)]


def _fd_noise(gen: np.random.Generator, setup: _Setup, primal_leaves: Sequence[Any]) -> tuple:
    """The random probe directions of every leaf probed along random directions (``probe.count`` × size
    normals, in the FD dtype), None for the others: :func:`_measure`'s ``fd_noise``."""
    fd_dtype = np.float64 if setup.use64 else np.float32
    out = []
    for probe, leaf in zip(setup.probes, primal_leaves):
        if probe is None or probe.elementwise or not setup.fd:
            out.append(None)
        else:
            out.append(_gaussians(gen, [(probe.count, int(np.size(leaf)))], [fd_dtype])[0])
    return tuple(out)


def _directions(noise: jax.Array | None, size: int, probe: _Probe, dtype: Any) -> jax.Array:
    """The unit probe directions of a leaf of ``size`` entries, one per row (traced): basis vectors when
    ``probe.elementwise``, else the rows of ``noise`` (``probe.count`` × ``size`` normals) normalized."""
    if probe.elementwise:
        return jnp.eye(size, dtype=dtype)
    v = noise.astype(dtype)
    return v / jnp.linalg.norm(v, axis=1, keepdims=True)


def _check_structure(primal: tuple, manual: tuple, paths: Sequence[str]) -> None:
    s_primal, s_manual = jax.tree_util.tree_structure(primal), jax.tree_util.tree_structure(manual)
    if s_primal != s_manual:
        raise GradcheckError(
            f"grad_fn returned a pytree of structure {s_manual}, but the differentiated argument(s) "
            f"have structure {s_primal}; return one gradient leaf per parameter leaf"
        )
    for path, g, p in zip(paths, jax.tree_util.tree_leaves(manual), jax.tree_util.tree_leaves(primal)):
        g_shape, p_shape = tuple(jnp.shape(g)), tuple(jnp.shape(p))
        if g_shape != p_shape:
            transposed = " (transposed?)" if len(p_shape) == 2 and g_shape == p_shape[::-1] else ""
            raise GradcheckError(f"gradient leaf {path} has shape {g_shape}, its parameter {p_shape}{transposed}")


class _Setup(NamedTuple):
    """What the traced part of a check needs to know besides its operands (hashable: no arrays)."""

    nums: tuple[int, ...]
    probes: tuple[_Probe | None, ...]
    eps: float
    fd: bool  # probe with finite differences
    use64: bool  # FD in float64
    user_x64: bool  # the caller's x64 setting, under which rule and autodiff are traced


def _with_args(args: Any, nums: tuple[int, ...], values: Any) -> list:
    """``args`` (a sequence) with the entries at ``nums`` replaced by ``values``, in order."""
    call = list(args)
    for n, v in zip(nums, values):
        call[n] = v
    return call


def _flat_weights(c: Any, size: int, dtype: Any) -> jax.Array:
    """The cotangent ``c`` raveled over its leaves as a (size, 1) column in ``dtype`` (ones when c is None:
    f is the scalar loss itself)."""
    if c is None:
        return jnp.ones((size, 1), dtype)
    return jnp.concatenate([jnp.ravel(v).astype(dtype) for v in jax.tree_util.tree_leaves(c)])[:, None]


def _measure(
    setup: _Setup,
    f: Callable[..., Any],
    manual: tuple,
    args: tuple,
    fd_noise: tuple,
    *,
    c: Any = None,
    auto: tuple | None = None,
    along: tuple | None = None,
) -> dict:
    """Traced: autodiff gradient of the loss ⟨c, f(*args)⟩ (``f`` itself when ``c`` is None: a scalar
    function) and the FD probes of every leaf, next to ``manual``.

    ``auto``, when given, is the autodiff gradient already computed (the layer and loss checks transpose the
    linearization they also use for the adjoint identity, so the forward is traced for autodiff once).
    ``along``, a tangent shaped like the differentiated arguments, adds the forward-mode reference: the
    central difference of f itself along it (:func:`_fd_along`), taken in the same vmapped evaluation as
    the probes, so the forward is traced and compiled for finite differences once.

    Returns ``manual`` and ``auto`` (leaf lists, the arguments' dtype) and, per floating leaf, ``fd`` (the
    central differences along each probe), ``proj`` (⟨manual, v⟩ for the same probes) and ``proj_auto``
    (⟨autodiff, v⟩), in float64; with ``along``, ``"along"``: :func:`_fd_along`'s dict.
    """
    nums = setup.nums
    primal = tuple(args[n] for n in nums)

    def loss_fn(*a):
        y = f(*a)
        if c is None:
            return y
        pairs = zip(jax.tree_util.tree_leaves(c), jax.tree_util.tree_leaves(y))
        return sum(jnp.vdot(ci.astype(yi.dtype), yi) for ci, yi in pairs)

    if auto is None:
        with jax.enable_x64(setup.user_x64):
            auto = jax.grad(loss_fn, argnums=nums)(*args)
    out = {
        "manual": jax.tree_util.tree_leaves(manual),
        "auto": jax.tree_util.tree_leaves(auto),
        "fd": [],
        "proj": [],
        "proj_auto": [],
        "kink": [],
        "kink_floor": [],
    }
    if not setup.fd:
        return out
    fd_dtype = jnp.float64 if setup.use64 else jnp.float32
    eps = setup.eps
    base_args = list(_to(args, fd_dtype))
    base_leaves, treedef = jax.tree_util.tree_flatten(_to(primal, fd_dtype))
    probed = [i for i, probe in enumerate(setup.probes) if probe is not None]
    if along is not None and len(probed) < len(base_leaves):  # a non-float leaf the tangent moves: apart
        out["along"] = _fd_along(lambda *w: f(*_with_args(args, nums, w)), primal, along, eps, fd_dtype)
        along = None
    noise = {i: fd_noise[i] for i in probed if not setup.probes[i].elementwise}

    def f_at(flat):
        """f (raveled) at the probed leaves' values ``flat`` (concatenated, raveled), the others at their base."""
        new, offset = list(base_leaves), 0
        for i in probed:
            new[i] = flat[offset : offset + base_leaves[i].size].reshape(base_leaves[i].shape)
            offset += base_leaves[i].size
        y = f(*_with_args(base_args, nums, jax.tree_util.tree_unflatten(treedef, new)))
        return jnp.concatenate([jnp.ravel(v).astype(fd_dtype) for v in jax.tree_util.tree_leaves(y)])

    # All probes of all leaves as rows of one (P, N) matrix over the N probed entries, each row supported on
    # its leaf's columns; one vmap over the P rows evaluates every central difference.
    base = jnp.concatenate([base_leaves[i].ravel() for i in probed])
    # ⟨g, v⟩ for every probe as one product with the padded rows below, with g's non-finite entries as 0
    # there: 0 · NaN is NaN, so one leaf's NaN would spoil every leaf's projections (``_report`` marks the
    # leaves whose own gradient is not finite).
    grads = [jnp.concatenate([out[side][i].astype(fd_dtype).ravel() for i in probed]) for side in ("manual", "auto")]
    grads = [jnp.where(jnp.isfinite(g), g, 0) for g in grads]
    blocks, offset = [], 0
    for i in probed:
        size = base_leaves[i].size
        d = _directions(noise.get(i), size, setup.probes[i], fd_dtype)
        blocks.append(jnp.pad(d, ((0, 0), (offset, base.size - offset - size))))
        offset += size
    dirs = jnp.concatenate(blocks)
    # Every probe at ±ε and ±ε/2 in one vmapped evaluation (the forward is traced and compiled once), and the
    # base value: the central difference at ε, and the kink measure of each probe (:func:`_differences`).
    # With a tangent t, its unit direction u = t/‖t‖ is one more row: f itself along it, not the loss.
    n_dirs = len(dirs)
    if along is not None:
        t = jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(_to(along, fd_dtype))])
        norm = jnp.sqrt(jnp.vdot(t, t))
        dirs = jnp.concatenate([dirs, (t / jnp.where(norm > 0, norm, 1))[None]])
    steps = jnp.asarray([1.0, -1.0, 0.5, -0.5], fd_dtype)
    moves = (eps * steps[:, None, None] * dirs[None]).reshape(-1, base.size)
    ys = jax.vmap(lambda d: f_at(base + d))(jnp.concatenate([moves, jnp.zeros((1, base.size), fd_dtype)]))
    weights = _flat_weights(c, ys.shape[1], fd_dtype)
    values = (ys @ weights).reshape(-1)
    rows = values[:-1].reshape(4, len(dirs))[:, :n_dirs]
    fd, kink, floor = _differences(rows, values[-1], eps, fd_dtype)
    if along is not None:
        at_t = ys[:-1].reshape(4, len(dirs), -1)[:, n_dirs]
        fd_t, kink_t, floor_t = _differences(at_t, ys[-1], eps, fd_dtype)
        out["along"] = {"fd": fd_t * norm, "kink": kink_t * norm, "floor": floor_t * norm}
        dirs = dirs[:n_dirs]
    bounds = np.cumsum([setup.probes[i].count for i in probed])[:-1]
    split = (jnp.split(v, bounds) for v in (fd, dirs @ grads[0], dirs @ grads[1], kink, floor))
    out["fd"], out["proj"], out["proj_auto"], out["kink"], out["kink_floor"] = split
    return out


#: The rounding floor of the kink measure, in units of the FD dtype's eps·|f|/ε: the five evaluations each
#: carry the forward's own rounding (a few eps·|f| through its ops), and the measure combines them with
#: weights summing to 16 in absolute value.
_KINK_FLOOR_ULPS = 256


def _differences(values: jax.Array, f0: jax.Array, eps: float, dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Traced: the central difference at ε and the kink measure, from f at (+ε, −ε, +ε/2, −ε/2) (the rows of
    ``values``, any trailing shape) and f0 = f at the point.

    With f₊, f₋ at ±ε and h₊, h₋ at ±ε/2: where f is smooth, the one-sided gap D₊ − D₋ = (f₊ − 2f0 + f₋)/ε
    is ε f″ + O(ε³), linear in the step, and the central differences at ε and ε/2 agree to O(ε²). Where the
    probe crosses a kink, a jump Δ of the slope at distance δ ≤ ε from the point, the gap stops being linear
    in the step (at δ = 0, the kink exactly at the point, it is Δ at both steps) or the two central
    differences part (by Δδ/2ε for δ < ε/2). The measure is the larger of the two departures::

        kink = max(|f₊ + f₋ − 4h₊ − 4h₋ + 6 f0| / ε,  2 |(f₊ − f₋)/2ε − (h₊ − h₋)/ε|)

    which is O(ε²) times f's third and fourth derivatives where f is smooth, and of the order of |Δ| at a
    crossing. ``floor`` is its rounding floor (:data:`_KINK_FLOOR_ULPS`).
    """
    fp, fm, hp, hm = (v.astype(dtype) for v in values)
    f0 = f0.astype(dtype)
    fd = (fp - fm) / (2 * eps)
    bend = jnp.abs(fp + fm - 4 * hp - 4 * hm + 6 * f0) / eps
    kink = jnp.maximum(bend, 2 * jnp.abs(fd - (hp - hm) / eps))
    size = jnp.maximum(jnp.maximum(jnp.abs(fp), jnp.abs(fm)), jnp.maximum(jnp.abs(hp), jnp.abs(hm)))
    floor = _KINK_FLOOR_ULPS * jnp.finfo(dtype).eps * jnp.maximum(size, jnp.abs(f0)) / eps
    return fd, kink, floor


_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 512
_COMPILED_LOCK = threading.Lock()  # checks may run in threads (fnnet.catalog.check_all)
#: A check's program runs once on tiny inputs, so compile time is all its cost. On CPU most of it is code
#: generation, kernel by kernel: LLVM at -O0 without its expensive passes, XLA's classic loop emitters in
#: place of its newer MLIR fusion emitters (about half of a check's compile time), and one LLVM module in
#: place of many split for parallel code generation (a quarter of the rest, for modules this small) make
#: the same IEEE operations in a fraction of the time (``benchmarks/checker.py`` measures it). Options this
#: jaxlib does not know are dropped (:func:`_compile`), so a newer XLA that renames them still compiles.
_COMPILER_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}
_UNKNOWN_OPTION = "No such compile option: "


def _compile(lowered: Any) -> Any:
    """``lowered.compile`` with :data:`_COMPILER_OPTIONS`, less any option this XLA does not know."""
    options = dict(_COMPILER_OPTIONS)
    while True:
        try:
            return lowered.compile(options)
        except Exception as e:  # XlaRuntimeError: INVALID_ARGUMENT for an unknown option
            name = str(e).partition(_UNKNOWN_OPTION)[2].strip().strip("'\"")
            if name not in options:
                raise
            del options[name]  # refused while parsing the options, before any compile work


def clear_compiled() -> None:
    """Drop every kept compiled check program (:func:`run_compiled`), e.g. between the entries of a long run
    that never checks the same computation twice (the mutation benchmark), so its memory is returned."""
    with _COMPILED_LOCK:
        _COMPILED.clear()


def run_compiled(program: Callable[..., Any], use64: bool, *operands: Any) -> Any:
    """Run ``program(*operands)`` as one compiled XLA program, traced with x64 on when ``use64``
    (:func:`compiled`, called once)."""
    return compiled(program, use64, *operands)(*operands)


def compiled(program: Callable[..., Any], use64: bool, *operands: Any) -> Callable[..., Any]:
    """``program`` compiled as one XLA program for ``operands``' shapes and dtypes, traced with x64 on when
    ``use64``: a function of operands like them returning host (NumPy) values. Calling it again runs the same
    executable with no tracing (the checks run a rule twice, and at the zero cotangent, this way).

    Compiled programs are kept (up to ``_COMPILED_MAX``, least recently used dropped) under their lowered
    text and pytree structures, so checks with the same computation share one compilation even when their
    Python closures differ (two ``Dense(4)`` layers, the float32 and float64 rows' draws, a second
    ``check_all``). Thread-safe: XLA compiles without the GIL, so checks run in threads overlap one's
    compilation with another's tracing, and a thread that needs a program another is compiling waits for it.
    """
    with jax.enable_x64(use64):
        lowered = jax.jit(program).lower(*operands)
        avals = [(jnp.shape(x), str(getattr(x, "dtype", type(x)))) for x in jax.tree_util.tree_leaves(operands)]
        key = (lowered.as_text(), str(lowered.in_tree), str(lowered.out_tree), str(avals))
        with _COMPILED_LOCK:
            pending = _COMPILED.get(key)
            owner = pending is None
            if owner:  # this thread compiles; a thread asking meanwhile waits for it, not compiling twice
                pending = _COMPILED[key] = concurrent.futures.Future()
                if len(_COMPILED) > _COMPILED_MAX:
                    _COMPILED.popitem(last=False)
            else:
                _COMPILED.move_to_end(key)
        if owner:
            try:
                pending.set_result(_compile(lowered))  # outside the lock: other threads trace meanwhile
            except BaseException as e:
                with _COMPILED_LOCK:
                    _COMPILED.pop(key, None)
                pending.set_exception(e)
                raise
    executable = pending.result()

    def call(*operands: Any) -> Any:
        with jax.enable_x64(use64):
            return jax.device_get(executable(*operands))

    return call


def _host(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _kinked(kink: np.ndarray, floor: np.ndarray, bar: float, a: np.ndarray, b: np.ndarray) -> int:
    """How many probes crossed a kink: their kink measure (:func:`_differences`) is above what the FD bar
    allows at the scale of the compared values a, b (max of their norms), plus its rounding floor."""
    scale = max(np.linalg.norm(np.ravel(a)), np.linalg.norm(np.ravel(b)))
    return int(np.sum(np.asarray(kink) > bar * scale + np.asarray(floor)))


def _worst(diff: np.ndarray) -> tuple[int, ...]:
    if diff.size == 0:
        return ()
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))


def _report(
    out: dict,
    paths: Sequence[str],
    setup: _Setup,
    dtype: str,
    tol: Tolerance,
    fd_tol: Tolerance,
    dot_error: float | None = None,
    batch: int | None = None,
) -> GradcheckReport:
    """Errors, worst indices and hints of one check, in float64 on the host, from ``_measure``'s outputs."""
    reports, pairs = [], []
    fd_values = iter(zip(out["fd"], out["proj"], out["proj_auto"], out["kink"], out["kink_floor"]))
    for path, m, a, probe in zip(paths, out["manual"], out["auto"], setup.probes):
        if probe is None:
            continue
        m, a = _host(m), _host(a)
        diff = np.abs(m - a)
        abs_ad, rel_ad, worst_ad = float(np.max(diff, initial=0.0)), relative_error(m, a), _worst(diff)
        pairs.append((path, m, a))
        if not setup.fd:
            reports.append(LeafReport(path, m.shape, abs_ad, rel_ad, 0.0, 0.0, 0, rel_ad <= tol.autodiff, worst_ad))
            continue
        fd, proj, proj_auto, kink, floor = (_host(v) for v in next(fd_values))
        proj, proj_auto = (
            p if np.isfinite(g).all() else np.full_like(p, np.nan) for p, g in ((proj, m), (proj_auto, a))
        )
        fd_diff = np.abs(fd - proj)
        k = int(np.argmax(fd_diff)) if fd_diff.size else 0
        worst_fd = (tuple(int(i) for i in np.unravel_index(k, m.shape)) if m.ndim else ()) if probe.elementwise else k
        rel_fd = relative_error(fd, proj)
        ok = bool(rel_ad <= tol.autodiff and rel_fd <= fd_tol.fd)
        reports.append(
            LeafReport(path, m.shape, abs_ad, rel_ad, float(np.max(fd_diff, initial=0.0)), rel_fd, probe.count, ok)
        )
        reports[-1] = dataclasses.replace(
            reports[-1],
            worst_autodiff=worst_ad,
            worst_fd=worst_fd,
            rel_fd_autodiff=relative_error(fd, proj_auto),
            kinks=_kinked(kink, floor, fd_tol.fd, fd, proj),
        )
    fd_name = ("float64" if setup.use64 else "float32") if setup.fd else "skipped"
    report = GradcheckReport(tuple(reports), dtype, fd_name, fd_tol, dot_error)
    return dataclasses.replace(report, hints=tuple(_hints(report, pairs, tol, batch)))


# ----------------------------------------------------------------------------------------------
# Hints: the pattern of a failure


def _ratio_hint(path: str, r: float, batch: int | None) -> str:
    """Name the bug a constant ratio ``r`` = manual / reference points to."""
    said = f"{path}: manual = {r:.6g} x reference everywhere"
    if abs(r + 1) <= 1e-3:
        return f"{path}: manual = -reference (ratio {r:.6g}): a sign flip"
    if batch is not None and batch > 1:
        if abs(r * batch - 1) <= 1e-3:
            return f"{said} = 1/B (B = {batch}, the batch): a mean over the batch where the forward sums"
        if abs(r / batch - 1) <= 1e-3:
            return f"{said} = B (B = {batch}, the batch): a missing 1/B (a sum where the forward takes the mean)"
    k = round(r)
    if k >= 2 and abs(r / k - 1) <= 1e-3:
        return f"{said}: a spurious factor {k} (e.g. 2 from d(x^2) = 2x counted twice)"
    k = round(1 / r)
    if k >= 2 and abs(r * k - 1) <= 1e-3:
        return f"{said}: a missing factor {k} (e.g. 2 from d(x^2) = 2x), or a mean over {k} where a sum belongs"
    return f"{said}: a constant factor is wrong"


def _leaf_hint(path: str, m: np.ndarray, a: np.ndarray, bar: float, batch: int | None) -> str | None:
    tiny = np.finfo(np.float64).tiny
    norm_a, norm_m = np.linalg.norm(a), np.linalg.norm(m)
    if norm_a <= tiny:
        return None
    if norm_m <= tiny:
        return f"{path}: the rule returns zeros where the reference does not (a dropped term or path)"
    r = float(np.vdot(m, a) / np.vdot(a, a))
    if r != 0 and np.linalg.norm(m - r * a) <= bar * norm_m:
        return _ratio_hint(path, r, batch)
    if m.ndim == 2 and m.shape[0] == m.shape[1] and relative_error(m, a.T) <= bar:
        return f"{path}: manual = reference^T: a transposed gradient (e.g. dy W where dy W^T belongs)"
    scale = float(np.max(np.abs(a)))
    lost = (m == 0) & (np.abs(a) > bar * scale)
    if lost.any() and relative_error(np.where(lost, a, m), a) <= bar:
        return (
            f"{path}: zero at {int(lost.sum())} of {m.size} entries where the reference is not "
            f"(first at {_worst(lost.astype(np.float64))}); right elsewhere: a masked or dropped term"
        )
    return None


def _hints(report: GradcheckReport, pairs: Sequence[tuple], tol: Tolerance, batch: int | None) -> list[str]:
    """One-line diagnoses of ``report``'s failure, from the manual and autodiff leaves ``pairs``."""
    if report.ok:
        return []
    bar = min(max(10 * tol.autodiff, 1e-6), 1e-2)
    wrong = {leaf.path for leaf in report.leaves if leaf.rel_autodiff > tol.autodiff}
    hints = [h for path, m, a in pairs if path in wrong for h in [_leaf_hint(path, m, a, bar, batch)] if h]
    if len(wrong) == 1 and len(pairs) > 1:
        (path,) = wrong
        others = "leaf agrees" if len(pairs) == 2 else f"{len(pairs) - 1} leaves agree"
        hints.append(
            f"the error is confined to one leaf, {path}; the other {others}: look at that leaf's term alone "
            "(e.g. a bias gradient not summed over the batch)"
        )
    fd_only = [leaf.path for leaf in report.leaves if not leaf.ok and leaf.path not in wrong]
    if fd_only and not wrong:
        hints.append(
            f"{', '.join(fd_only)}: the rule agrees with jax.grad but not with finite differences: the function is "
            "not differentiable at these inputs (a kink, a tie; finite_differences=False skips FD there), "
            "or its autodiff is itself overridden (a custom_vjp)"
        )
    if not report.dot_ok and not wrong:
        hints.append(
            "the gradients agree with jax.grad but not <Jt,c> = <t,J^T c>: the forward's jvp (a custom_jvp?) "
            "disagrees with its vjp"
        )
    return hints


# ----------------------------------------------------------------------------------------------
# Beyond the first derivative at one point: determinism, the zero cotangent, second order, kinks


def _order(order: int) -> bool:
    """Validate ``order``; True when the rule's own derivative is to be checked too."""
    if order not in (1, 2):
        raise ValueError(f"order={order!r}: use 1 (the rule) or 2 (the rule and its own derivative)")
    return order == 2


def _flat64(leaves: Any) -> np.ndarray:
    """The floating leaves of a pytree (or list of arrays), raveled and concatenated, in float64 on the host."""
    parts = [
        _host(a).ravel() for a in jax.tree_util.tree_leaves(leaves) if np.issubdtype(np.asarray(a).dtype, np.inexact)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def _nondeterminism(first: Any, again: Any) -> float:
    """0.0 where two runs of a rule are identical (NaN where NaN), else max |a − b| / max |a| (inf where the
    NaNs sit in different places)."""
    a, b = _flat64(first), _flat64(again)
    if np.array_equal(a, b, equal_nan=True):
        return 0.0
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    return float(np.nanmax(np.abs(a - b)) / max(np.nanmax(np.abs(a)), np.finfo(np.float64).tiny))


def _max_abs(leaves: Any) -> float:
    """max |entry| over the floating leaves, NaN if any entry is NaN, 0.0 with no entries."""
    a = _flat64(leaves)
    return float(np.max(np.abs(a))) if a.size else 0.0


def _second_outputs(
    setup: _Setup,
    rule: Callable[..., Any],
    auto_rule: Callable[..., Any],
    wrt: tuple,
    u: Any,
    w: Any,
    rule_fd: Callable[[Any], Callable[..., Any]],
) -> dict:
    """Traced: what :func:`_second_report` reads. ``rule(*wrt)`` is the hand-written gradient (a tuple of
    pytrees shaped like ``wrt``), ``auto_rule(*wrt)`` autodiff's; ``u`` and ``w`` random directions shaped
    like ``wrt``. Rule and autodiff are differentiated under the caller's x64 setting, the rule's central
    differences along u are taken in float64 (where the backend has it), of ``rule_fd(dtype)``: the rule
    with its fixed operands (the cotangent, the target, the other arguments) in that dtype."""
    with jax.enable_x64(setup.user_x64):
        _, lin = jax.linearize(rule, *wrt)
        du, dw = lin(*u), lin(*w)
        du_auto = jax.jvp(auto_rule, wrt, u)[1]
    out = {"du": du, "du_auto": du_auto, "sym": (_vdot64(w, du), _vdot64(u, dw))}
    if setup.fd:
        fd_dtype = jnp.float64 if setup.use64 else jnp.float32
        fd = _fd_along(rule_fd(fd_dtype), wrt, u, setup.eps, fd_dtype)
        out.update(fd=fd["fd"], kink=fd["kink"], kink_floor=fd["floor"])
    return out


def _second_report(out: dict, tol: Tolerance, fd_tol: Tolerance, fd: bool, hvp: Any = None) -> SecondOrderReport:
    """The :class:`SecondOrderReport` from :func:`_second_outputs`'s values (``hvp``: a loss's Loss.hvp(u))."""
    du, du_auto = _flat64(out["du"]), _flat64(out["du_auto"])
    rel_fd, kinks = 0.0, 0
    if fd:
        fd_du = _host(out["fd"]).ravel()
        rel_fd = relative_error(du, fd_du)
        kinks = _kinked(out["kink"], out["kink_floor"], fd_tol.fd, du, fd_du)
    return SecondOrderReport(
        rel_autodiff=relative_error(du, du_auto),
        rel_fd=rel_fd,
        symmetry=_scalar_error(*(float(v) for v in out["sym"])),
        tolerance=tol._replace(fd=fd_tol.fd, fd_eps=fd_tol.fd_eps),
        rel_hvp=None if hvp is None else relative_error(_flat64(hvp), du),
        kinks=kinks,
    )


def _with_runs(
    report: GradcheckReport, nondeterminism: float, nondet_tol: float, zero: float | None
) -> GradcheckReport:
    """``report`` with the rule's second run and zero-cotangent run recorded, and their hints on a failure."""
    report = dataclasses.replace(report, nondeterminism=nondeterminism, nondet_tol=nondet_tol, zero=zero)
    hints = list(report.hints)
    if not report.deterministic:
        hints.append(
            "the rule gave different results on two runs with the same inputs: hidden state (a global RNG, a "
            "counter, a cache) or, on an accelerator, atomic adds in a scatter (nondet_tol allows those)"
        )
    if not report.zero_ok:
        hints.append(
            "the zero cotangent gave a nonzero (or NaN) gradient: the rule is not linear in dy (a term that does "
            "not multiply dy, e.g. a regularizer added into the gradient), or 0 * inf where it divides"
        )
    if report.forward is not None and report.forward.zero != 0:
        hints.append("the zero tangent gave a nonzero (or NaN) J t: the forward-mode rule is not linear in the tangent")
    return dataclasses.replace(report, hints=tuple(hints))


def _crossings(report: GradcheckReport) -> tuple[str, ...]:
    """Where ``report``'s difference probes crossed a kink, one phrase per place."""
    where = [f"{leaf.path}: {leaf.kinks} of {leaf.fd_probes} probes" for leaf in report.leaves if leaf.kinks]
    if report.forward is not None and report.forward.kinks:
        where.append(f"forward mode: {report.forward.kinks} entries of J t")
    if report.second is not None and report.second.kinks:
        where.append(f"second order: {report.second.kinks} entries of the rule along u")
    return tuple(where)


def _shifted(point: tuple, key: Any) -> tuple:
    """``point`` with every floating leaf moved by :data:`KINK_SHIFT` x its RMS (1 for an all-zero leaf) along a
    random direction drawn from ``key`` (on the host: NumPy's generator seeded by the key's bits, no global
    state, no compilation); other leaves as they are."""
    gen = _generator(key)

    def shift(a):
        if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
            return a
        a64 = np.asarray(a, dtype=np.float64)
        rms = float(np.sqrt(np.mean(a64**2))) if a64.size else 0.0
        moved = a64 + KINK_SHIFT * (rms if rms > 0 else 1.0) * gen.standard_normal(a64.shape)
        return jnp.asarray(moved.astype(jnp.result_type(a)))

    return jax.tree_util.tree_map(shift, point)


def _kink_aware(check_at: Callable[[tuple], GradcheckReport], point: tuple, key: Any, fd: bool) -> GradcheckReport:
    """``check_at(point)``, or where its difference probes crossed a kink, the check at a shifted point
    (:func:`_shifted`, up to :data:`KINK_REPROBES` tries) with a :class:`KinkReport` of the crossing."""
    report = check_at(point)
    if not fd or report.kinks == 0:
        return report
    crossings, at_point_ok = _crossings(report), report.exact_ok
    for attempt in range(1, KINK_REPROBES + 1):
        report = check_at(_shifted(point, jax.random.fold_in(key, attempt)))
        if report.kinks == 0:
            break
    kink = KinkReport(crossings, attempt, report.kinks == 0, at_point_ok)
    return dataclasses.replace(report, kink=kink)


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
    modes: Sequence[str] = ("rev",),
    jvp_fn: Callable[..., Any] | None = None,
    order: int = 1,
    nondet_tol: float = 0.0,
) -> GradcheckReport:
    """Compare ``grad_fn(*args)`` with ``jax.grad(loss_fn, argnums)(*args)`` and finite differences.

    Args:
      loss_fn: a scalar function of ``args`` written in ``jax.numpy`` (it is traced and compiled).
      grad_fn: the gradient under test, called as written (it need not be jittable, unless ``order=2``);
        returns the gradient w.r.t. ``args[argnums]`` (a tuple of them when ``argnums`` is a sequence), with
        the same pytree structure. It is called twice, and the two results must be identical
        (``report.nondeterminism``; hidden state such as a global RNG shows here).
      argnums: which argument(s) to differentiate, as in ``jax.grad``.
      tolerance: the bars; by default the row of :data:`TOLERANCES` for the arguments' dtype.
      max_fd_elements: leaves up to this size are checked element by element; larger ones along
        ``n_directions`` random unit directions drawn from ``key``.
      arg_names: names of the arguments for the report (default ``args[0]``, ``args[1]``, ...).
      finite_differences: ``False`` skips the finite-difference reference; each leaf then reports
        ``fd_probes=0`` and ``rel_fd=0``, ``fd_dtype`` reads ``"skipped"``, and only autodiff (and, for
        layers and losses, the adjoint identity) check the rule. It is rarely needed: where a probe's
        differences cross a kink (relu at exactly 0, a tie of a max) the check detects it from the
        one-sided differences at two steps, counts nothing there as a pass, and re-probes at a shifted
        point (``report.kink``, :class:`KinkReport`).
      modes: ``("rev",)``, or ``("rev", "fwd")`` to check ``jvp_fn`` as well.
      jvp_fn: the hand-written forward-mode rule, ``jvp_fn(primals, tangents) -> (value, dvalue)`` as
        ``jax.jvp`` takes them: ``primals`` the differentiated arguments ``args[argnums]`` (a tuple), the
        others fixed at ``args``. Along one random tangent t (from ``key``) it is checked three ways
        (``report.forward``): against ``jax.jvp`` of ``loss_fn``, against central differences of
        ``loss_fn`` along t, and by dvalue = ⟨``grad_fn(*args)``, t⟩, the adjoint identity between the two
        hand-written rules (for a scalar function J t is the gradient's inner product with t). At the
        zero tangent dvalue must be exactly 0.
      order: 2 also checks ``grad_fn``'s own derivative along a random direction (``report.second``,
        :class:`SecondOrderReport`), as ``torch.autograd.gradgradcheck`` does: what a Hessian-vector product
        through the rule computes. ``grad_fn`` is then traced by JAX.
      nondet_tol: the bar of ``report.nondeterminism``; 0 (the default) asks for identical results.

    Returns:
      A :class:`GradcheckReport`. Raises :class:`GradcheckError` if the structures differ.
    """
    check_fwd = _modes(modes, jvp_fn, "gradcheck (no jvp_fn given)")
    second = _order(order)
    key = jax.random.key(0) if key is None else key
    multi = not isinstance(argnums, int)
    nums = tuple(argnums) if multi else (argnums,)
    for n in nums:
        if not -len(args) <= n < len(args):
            raise GradcheckError(f"argnums={argnums} but gradcheck got only {len(args)} argument(s)")
    nums = tuple(n % len(args) for n in nums)
    args = tuple(jax.tree_util.tree_map(jnp.asarray, args))

    def with_primal(args: tuple, primal: tuple) -> tuple:
        call = list(args)
        for n, a in zip(nums, primal):
            call[n] = a
        return tuple(call)

    def at(primal: tuple) -> GradcheckReport:
        return _gradcheck_at(
            loss_fn,
            grad_fn,
            with_primal(args, primal),
            with_primal,
            nums=nums,
            multi=multi,
            names=[arg_names[n] if arg_names else f"args[{n}]" for n in nums],
            tolerance=tolerance,
            probes=(max_fd_elements, n_directions),
            key=key,
            finite_differences=finite_differences,
            jvp_fn=jvp_fn if check_fwd else None,
            second=second,
            nondet_tol=nondet_tol,
        )

    return _kink_aware(at, tuple(args[n] for n in nums), key, finite_differences)


def _gradcheck_at(
    loss_fn: Callable[..., Any],
    grad_fn: Callable[..., Any],
    args: tuple,
    with_primal: Callable[[tuple, tuple], tuple],
    *,
    nums: tuple[int, ...],
    multi: bool,
    names: Sequence[str],
    tolerance: Tolerance | None,
    probes: tuple[int, int],
    key: Any,
    finite_differences: bool,
    jvp_fn: Callable[..., Any] | None,
    second: bool,
    nondet_tol: float,
) -> GradcheckReport:
    """:func:`gradcheck` at one point ``args`` (no kink re-probe)."""
    primal = tuple(args[n] for n in nums)
    paths = _paths(primal, names)
    dtype = _dtype_name(primal)
    tol = tolerance or TOLERANCES.get(dtype, TOLERANCES["float32"])

    def manual_at(args: tuple) -> tuple:
        g = grad_fn(*args)
        return tuple(g) if multi else (g,)

    manual = manual_at(args)
    _check_structure(primal, manual, paths)
    again = manual_at(args)

    use64 = x64_available()
    fd_tol = tol if use64 else FD_FLOAT32
    probes = _probes(jax.tree_util.tree_leaves(primal), *probes)
    setup = _Setup(nums, tuple(probes), fd_tol.fd_eps, finite_differences, use64, bool(jax.config.jax_enable_x64))

    leaves = jax.tree_util.tree_leaves(primal)
    structure = jax.tree_util.tree_structure(primal)

    gen = _generator(key)
    fd_noise = _fd_noise(gen, setup, leaves)

    def directions() -> Any:
        noise = _gaussians(gen, [jnp.shape(a) for a in leaves], [jnp.result_type(a) for a in leaves])
        return jax.tree_util.tree_unflatten(structure, noise)

    tangent = forward = zero_forward = None
    if jvp_fn is not None:
        tangent = directions()
        forward = jvp_fn(primal, tangent)  # called as written, like grad_fn
        zero_forward = jvp_fn(primal, jax.tree_util.tree_map(jnp.zeros_like, tangent))[1]
    uw = (directions(), directions()) if second else None

    def program(args, manual, fd_noise, tangent, forward, uw):
        out = _measure(setup, loss_fn, manual, args, fd_noise, along=tangent)

        def at(*w):
            return loss_fn(*with_primal(args, w))

        w = tuple(args[n] for n in nums)
        if tangent is not None:
            with jax.enable_x64(setup.user_x64):
                value, jt = jax.jvp(at, w, tangent)
            rev_dot = _vdot64(tangent, manual)
            out["fwd"] = _forward_outputs(setup, at, w, tangent, value, jt, forward, rev_dot, fd=out.get("along"))
            out["fwd"]["scale"] = jnp.sqrt(_vdot64(manual, manual) * _vdot64(tangent, tangent))
        if uw is not None:
            rule = lambda *v: manual_at(with_primal(args, v))  # noqa: E731
            auto = jax.grad(at, argnums=tuple(range(len(w))))
            rule_fd = lambda dtype: lambda *v: manual_at(with_primal(_to(args, dtype), v))  # noqa: E731
            out["second"] = _second_outputs(setup, rule, auto, w, *uw, rule_fd)
        return out

    out = run_compiled(program, use64, args, manual, fd_noise, tangent, forward, uw)
    report = _report(out, paths, setup, dtype, tol, fd_tol)
    if jvp_fn is not None:
        f = dataclasses.replace(_forward_report(out, tol, fd_tol, setup.fd), zero=_max_abs(zero_forward))
        report = dataclasses.replace(report, forward=f)
    if second:
        report = dataclasses.replace(report, second=_second_report(out["second"], tol, fd_tol, setup.fd))
    return _with_runs(report, _nondeterminism(manual, again), nondet_tol, None)


# ----------------------------------------------------------------------------------------------
# Layers and losses: the three-way check of a hand-written rule


def _vdot64(a: Any, b: Any) -> jax.Array:
    """Traced: Σ a·b over the floating leaves of two pytrees, in float64 (the program traces with x64 on)."""
    total = jnp.zeros((), jnp.float64)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        if jnp.issubdtype(jnp.result_type(x), jnp.floating):
            total = total + jnp.vdot(x.astype(jnp.float64), y.astype(jnp.float64))
    return total


def _scalar_error(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), np.finfo(np.float64).tiny)


MODES = ("rev", "fwd")


def _modes(modes: Sequence[str], rule: Any, what: str) -> bool:
    """Validate ``modes``; True when the forward-mode rule is to be checked (``rule`` must then exist)."""
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or "rev" not in modes:
        raise ValueError(f"modes={modes!r}: use ('rev',) or ('rev', 'fwd') (the reverse rule is always checked)")
    if "fwd" in modes and rule is None:
        raise GradcheckError(f"modes include 'fwd' but {what} has no hand-written forward-mode rule (jvp is None)")
    return "fwd" in modes


def _fd_along(f: Callable[..., Any], w: tuple, t: tuple, eps: float, dtype: Any) -> dict:
    """Traced: the central difference of ``f(*w)`` along the tangent ``t`` in ``dtype``, J t ≈
    (f(w + ε u) − f(w − ε u)) / 2ε · ‖t‖ with u = t/‖t‖ (floating leaves only), and the kink measure of every
    output entry (:func:`_differences`); all five evaluations in one vmap.

    Returns ``{"fd", "kink", "floor"}``, raveled over the output's leaves, each scaled by ‖t‖ as J t is."""
    w, t = _to(w, dtype), _to(t, dtype)
    norm = jnp.sqrt(_vdot64(t, t)).astype(dtype)
    u = jax.tree_util.tree_map(lambda a: a / jnp.where(norm > 0, norm, 1), t)

    def at(step):
        y = f(*jax.tree_util.tree_map(lambda a, b: a + step * eps * b, w, u))
        return jnp.concatenate([jnp.ravel(v).astype(dtype) for v in jax.tree_util.tree_leaves(y)])

    values = jax.vmap(at)(jnp.asarray([1.0, -1.0, 0.5, -0.5, 0.0], dtype))
    fd, kink, floor = _differences(values[:4], values[4], eps, dtype)
    return {"fd": fd * norm, "kink": kink * norm, "floor": floor * norm}


def _forward_outputs(
    setup: _Setup,
    f: Callable[..., Any],
    w: tuple,
    t: tuple,
    y: Any,
    jt: Any,
    rule: tuple,
    rev_dot: Any,
    c: Any = None,
    fd: dict | None = None,
) -> dict:
    """Traced: what :func:`_forward_report` reads, for the forward rule's ``rule = (y_rule, dy)`` at ``w``.

    ``f(*w)`` is the forward (``y`` its value, ``jt`` autodiff's J t), ``rev_dot`` the reverse side ⟨t, Jᵀc⟩
    of the adjoint identity; ``c`` the cotangent of a vector output, None for a scalar one (dy is then
    ⟨∇L, t⟩ itself). ``fd``: the central difference along t when already taken (:func:`_measure`'s
    ``along``), else it is taken here.
    """
    y_rule, dy = rule
    fwd_dot = _vdot64(dy, c) if c is not None else jnp.asarray(dy).astype(jnp.float64)
    out = {"y": y, "y_rule": y_rule, "jt": jt, "dy": dy, "dot": (fwd_dot, rev_dot)}
    if setup.fd:
        if fd is None:
            fd = _fd_along(f, w, t, setup.eps, jnp.float64 if setup.use64 else jnp.float32)
        out.update(fd=fd["fd"], kink=fd["kink"], kink_floor=fd["floor"])
    return out


def _forward_report(out: dict, tol: Tolerance, fd_tol: Tolerance, fd: bool) -> ForwardReport:
    """The :class:`ForwardReport` from the program's forward-mode outputs, in float64 on the host.

    For a scalar function (a loss, :func:`gradcheck`) the FD error is relative to ‖∇L‖·‖t‖, the largest a
    directional derivative along t can be (``out["fwd"]["scale"]``), not to |dL| itself: a single central
    difference carries an absolute rounding error of about eps·|L|/ε whatever the direction, so along a
    tangent nearly orthogonal to the gradient |dL| is tiny and the plain relative error would measure
    only that rounding.
    """
    f = out["fwd"]
    rel_fd = 0.0
    if fd:
        diff = np.linalg.norm(_host(f["dy"]).ravel() - _host(f["fd"]).ravel())
        norms = [np.linalg.norm(_host(v).ravel()) for v in (f["dy"], f["fd"])]
        scale = float(f["scale"]) if "scale" in f else 0.0
        denom = max(*norms, scale, np.finfo(np.float64).tiny)
        rel_fd = float(diff / denom)
        kinks = int(np.sum(_host(f["kink"]) > fd_tol.fd * denom + _host(f["kink_floor"])))
    return ForwardReport(
        rel_autodiff=relative_error(f["dy"], f["jt"]),
        rel_fd=rel_fd,
        adjoint=_scalar_error(*(float(v) for v in f["dot"])),
        rel_value=relative_error(f["y_rule"], f["y"]),
        tolerance=tol._replace(fd=fd_tol.fd, fd_eps=fd_tol.fd_eps),
        kinks=kinks if fd else 0,
    )


_ONE, _ZERO = np.ones((), np.float32), np.zeros((), np.float32)  # the cotangent's scale: checked, zero-cotangent runs


def _three_runs(
    program: Callable[..., Any], use64: bool, operands: tuple, eager: Any, eager_rules: Callable[..., Any]
) -> tuple[dict, tuple, tuple]:
    """Run a layer's or loss's check ``program(*operands, eager, scale)`` as one executable: at scale 1 (the
    check), again at scale 1 (determinism) and at scale 0 (the zero cotangent and tangent). A rule run eagerly
    (``eager`` not None) is re-run eagerly, ``eager_rules(*operands[:2], scale)``.

    Returns the check's outputs, and of the second and the zero run (the rule's gradient leaves, the forward
    rule's dy or None).
    """
    run = compiled(program, use64, *operands, eager, _ONE)
    out = run(*operands, eager, _ONE)

    def rules(o: dict) -> tuple:
        return o["manual"], o["fwd"]["dy"] if "fwd" in o else None

    if eager is None:
        return out, rules(run(*operands, None, _ONE)), rules(run(*operands, None, _ZERO))

    def eager_at(scale: Any) -> tuple:
        grads, forward = eager_rules(*operands[:2], scale)
        return grads, None if forward is None else forward[1]

    return out, eager_at(_ONE), eager_at(_ZERO)


def _checked_rule(transform: str, rule: Callable[..., Any], *operands: Any) -> Any:
    """The rule's output for a check: ``None`` (traced inside the program) unless ``transform`` is "none",
    where the rule runs eagerly, op by op, as written."""
    if transform not in ("none", "jit", "vmap"):
        raise ValueError(f"transform={transform!r}: use 'none', 'jit' or 'vmap'")
    return rule(*operands) if transform == "none" else None


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
    modes: Sequence[str] = ("rev",),
    order: int = 1,
    nondet_tol: float = 0.0,
) -> GradcheckReport:
    """Check ``layer.backward`` three ways at (params, x), and with ``modes=("rev", "fwd")`` ``layer.jvp`` too.

    With a random cotangent c, the scalar ⟨c, f(θ, x)⟩ has gradient Jᵀc, so the rule is compared with
    ``jax.grad`` of it (a vjp) and with finite differences (as :func:`gradcheck`); then the adjoint
    identity ⟨J t, c⟩ = ⟨t, Jᵀ c⟩ is checked with a random tangent t and ``jax.jvp``, within
    ``TOLERANCES[dtype].adjoint``. All of it is one compiled program.

    The same program runs twice more: once on the same inputs, where the rule must give identical results
    (``report.nondeterminism``, within ``nondet_tol``: 0 asks for bit equality; an accelerator's atomic
    scatter-adds may need more), and once at the zero cotangent, where it must give exactly zero gradients
    and no NaN (``report.zero``; the forward-mode rule likewise exactly zero J t at the zero tangent).

    ``transform``: ``"none"`` (the rule runs eagerly, op by op; the references are compiled), ``"jit"``
    (the rule is traced into the program), or ``"vmap"``: ``x`` carries a leading axis of independent
    problems, each with its own batch; the rule is vmapped over it and its parameter gradients summed, as
    the gradient of Σ_k ⟨c_k, f(θ, x_k)⟩ requires.

    Where a finite-difference probe crosses a kink (relu at 0, a tie of a max), detected from the one-sided
    differences at two steps, nothing there counts as a pass: the check re-probes at a shifted point
    (``report.kink``, :class:`KinkReport`). ``finite_differences=False`` skips that reference altogether.

    An integer ``x`` (token ids, e.g. for :func:`fnnet.Embedding`) has no gradient: the rule must return
    ``dx=None`` for it, and only the parameter gradients are checked (the adjoint identity too).

    ``modes=("rev", "fwd")`` also checks the hand-written forward-mode rule along the same random tangent
    t, three ways (:class:`ForwardReport`, ``report.forward``): its J t against ``jax.jvp`` of the
    forward, against central differences of the forward along t, and the adjoint identity between the
    two hand-written rules ⟨J_fwd t, c⟩ = ⟨t, J_bwdᵀ c⟩, which involves no autodiff at all.

    ``order=2`` also checks the rule's own derivative (:class:`SecondOrderReport`, ``report.second``): the
    backward, as a function of (θ, x) at the fixed c, differentiated by JAX along a random u, against
    forward-over-reverse autodiff, against its own central differences, and for symmetry.
    """
    check_fwd = _modes(modes, layer.jvp, layer.label)
    second = _order(order)
    rng = jax.random.key(1) if rng is None else rng
    params, x = jax.tree_util.tree_map(jnp.asarray, (params, x))

    def at(point: tuple) -> GradcheckReport:
        return _check_layer_at(
            layer,
            *point,
            key=key,
            train=train,
            transform=transform,
            rng=rng,
            tolerance=tolerance,
            finite_differences=finite_differences,
            check_fwd=check_fwd,
            second=second,
            nondet_tol=nondet_tol,
        )

    return _kink_aware(at, (params, x), rng, finite_differences)


def _check_layer_at(
    layer: Layer,
    params: Any,
    x: Any,
    *,
    key: Any,
    train: bool,
    transform: str,
    rng: Any,
    tolerance: Tolerance | None,
    finite_differences: bool,
    check_fwd: bool,
    second: bool,
    nondet_tol: float,
) -> GradcheckReport:
    """:func:`check_layer` at one point (no kink re-probe)."""
    float_x = bool(jnp.issubdtype(x.dtype, jnp.floating))

    def apply(p, xx):
        if transform == "vmap":
            return jax.vmap(lambda xi: layer.forward(p, xi, key=key, train=train)[0])(xx)
        return layer.forward(p, xx, key=key, train=train)[0]

    def manual(p, xx, c):
        if transform == "vmap":

            def one(xi, ci):
                _, cache = layer.forward(p, xi, key=key, train=train)
                return layer.backward(p, cache, ci)

            dps, dx = jax.vmap(one)(xx, c)
            return jax.tree_util.tree_map(lambda g: jnp.sum(g, axis=0), dps), dx
        _, cache = layer.forward(p, xx, key=key, train=train)
        return layer.backward(p, cache, c)

    y = jax.eval_shape(apply, params, x)
    wrt_leaves = jax.tree_util.tree_leaves((params, x) if float_x else (params,))
    wrt_structure = jax.tree_util.tree_structure((params, x) if float_x else (params,))

    gen = _generator(rng)
    n = 3 if second else 1
    shapes = [y.shape] + [jnp.shape(a) for a in wrt_leaves] * n
    drawn = _gaussians(gen, shapes, [y.dtype] + [jnp.result_type(a) for a in wrt_leaves] * n)

    def noise(drawn, scale):
        """The cotangent c and the tangent t (one leaf per differentiated leaf) from the ``drawn`` normals, times
        ``scale`` (1, or 0 for the zero-cotangent run); with ``order=2`` the directions u and w of the second
        order."""
        c, *rest = drawn
        k = len(wrt_leaves)
        t = [a * scale.astype(a.dtype) for a in rest[:k]]
        uw = None
        if second:
            uw = tuple(jax.tree_util.tree_unflatten(wrt_structure, rest[i * k : (i + 1) * k]) for i in (1, 2))
        return c * scale.astype(c.dtype), t, uw

    def rule(p, xx, c):
        """The rule's gradients w.r.t. the differentiated arguments: (params, x), or (params,) for integer x."""
        dparams, dx = manual(p, xx, c)
        if float_x:
            return dparams, dx
        if dx is not None:
            raise GradcheckError(
                f"the backward returned a gradient for the integer input x (dtype {x.dtype}); integer inputs "
                "have none: return dx=None"
            )
        return (dparams,)

    def forward_rule(p, xx, t):
        """The hand-written J t and y: ``layer.jvp`` along the tangent leaves ``t`` (params', then x's)."""
        wrt = (p, xx) if float_x else (p,)
        tangent = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(wrt), t)
        tp, tx = tangent if float_x else (tangent[0], None)
        if transform == "vmap":
            one = lambda xi, ti: layer.jvp(p, xi, tp, ti, key=key, train=train)  # noqa: E731
            return jax.vmap(one, in_axes=(0, 0 if float_x else None))(xx, tx)
        return layer.jvp(p, xx, tp, tx, key=key, train=train)

    def eager_rules(p, xx, scale):
        c, t, _ = noise(drawn, scale)
        return rule(p, xx, c), (forward_rule(p, xx, t) if check_fwd else None)

    eager = _checked_rule(transform, eager_rules, params, x, _ONE)
    primal = (params, x) if float_x else (params,)
    paths = _paths(primal, ("params", "x"))
    dtype = _dtype_name(primal)
    tol = tolerance or TOLERANCES.get(dtype, TOLERANCES["float32"])
    use64 = x64_available()
    fd_tol = tol if use64 else FD_FLOAT32
    probes = _probes(jax.tree_util.tree_leaves(primal), 64, 8)
    nums = (0, 1) if float_x else (0,)
    setup = _Setup(nums, tuple(probes), fd_tol.fd_eps, finite_differences, use64, bool(jax.config.jax_enable_x64))

    fd_noise = _fd_noise(gen, setup, jax.tree_util.tree_leaves(primal))

    def program(params, x, drawn, fd_noise, eager, scale):
        with jax.enable_x64(setup.user_x64):
            c, t, uw = noise(drawn, scale)
            t_leaves = t
            grads = eager[0] if eager is not None else rule(params, x, c)
            grads = tuple(grads)
            wrt = (params, x) if float_x else (params,)
            _check_structure(wrt, grads, paths)
            t = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(wrt), t)
            # One linearization serves both references: J t (the adjoint identity) and, transposed, Jᵀ c
            # (autodiff); jax.grad of <c, f> would trace and compile the forward a second time.
            y, jvp = jax.linearize(lambda *w: apply(*w, *(() if float_x else (x,))), *wrt)
            jt = jvp(*t)
            auto = jax.linear_transpose(jvp, *wrt)(c.astype(y.dtype))

        along = t if check_fwd else None
        out = _measure(setup, apply, grads, (params, x), fd_noise, c=c, auto=auto, along=along)
        out["dot"] = (_vdot64(jt, c), _vdot64(t, grads))
        f = lambda *w: apply(*w, *(() if float_x else (x,)))  # noqa: E731
        if check_fwd:
            with jax.enable_x64(setup.user_x64):
                y_rule, dy = eager[1] if eager is not None else forward_rule(params, x, t_leaves)
            fd = out.get("along")
            out["fwd"] = _forward_outputs(setup, f, wrt, t, y, jt, (y_rule, dy), out["dot"][1], c, fd)
        if uw is not None:
            fixed = () if float_x else (x,)
            second_rule = lambda *w: tuple(rule(*w, *fixed, c))  # noqa: E731
            auto_rule = lambda *w: jax.vjp(f, *w)[1](c.astype(y.dtype))  # noqa: E731
            rule_fd = lambda dtype: lambda *w: tuple(rule(*w, *fixed, c.astype(dtype)))  # noqa: E731
            out["second"] = _second_outputs(setup, second_rule, auto_rule, wrt, *uw, rule_fd)
        return out

    out, again, at_zero = _three_runs(program, use64, (params, x, drawn, fd_noise), eager, eager_rules)
    dot = _scalar_error(*(float(v) for v in out["dot"]))
    batch = int(x.shape[1] if transform == "vmap" else x.shape[0]) if x.ndim > 1 else None
    report = _report(out, paths, setup, dtype, tol, fd_tol, dot, batch)
    first = (out["manual"], out["fwd"]["dy"] if check_fwd else None)
    if check_fwd:
        f = dataclasses.replace(_forward_report(out, tol, fd_tol, setup.fd), zero=_max_abs(at_zero[1]))
        report = dataclasses.replace(report, forward=f)
    if second:
        report = dataclasses.replace(report, second=_second_report(out["second"], tol, fd_tol, setup.fd))
    return _with_runs(report, _nondeterminism(first, again), nondet_tol, _max_abs(at_zero[0]))


def check_loss(
    loss: Loss,
    pred: Any,
    target: Any,
    *,
    transform: str = "jit",
    rng: Any = None,
    tolerance: Tolerance | None = None,
    finite_differences: bool = True,
    modes: Sequence[str] = ("rev",),
    order: int = 1,
    nondet_tol: float = 0.0,
) -> GradcheckReport:
    """Check ``loss.backward`` against ``jax.grad``, finite differences and the adjoint identity, in one
    compiled program; with ``modes=("rev", "fwd")`` ``loss.jvp`` too, as :func:`check_layer` does (its
    adjoint identity is dvalue = ⟨t, backward⟩ between the two hand-written rules; at the zero tangent
    dvalue must be exactly 0). The program runs twice, and the two gradients must agree (``nondet_tol``).

    ``transform``: as in :func:`check_layer` (``"vmap"`` vmaps forward and rule over a leading axis of
    independent batches); kinks and ``finite_differences=False`` as there.

    ``order=2`` also checks the rule's own derivative (:class:`SecondOrderReport`): the backward
    differentiated by JAX along a random u against the Hessian of the loss (forward-over-reverse autodiff),
    its own central differences and symmetry, and, where the loss has one, the hand-written
    ``Loss.hvp(cache, u)`` against it (``report.second.rel_hvp``).
    """
    check_fwd = _modes(modes, loss.jvp, "the loss")
    second = _order(order)
    rng = jax.random.key(1) if rng is None else rng
    pred, target = jax.tree_util.tree_map(jnp.asarray, (pred, target))

    def at(point: tuple) -> GradcheckReport:
        return _check_loss_at(
            loss,
            point[0],
            target,
            transform=transform,
            rng=rng,
            tolerance=tolerance,
            finite_differences=finite_differences,
            check_fwd=check_fwd,
            second=second,
            nondet_tol=nondet_tol,
        )

    return _kink_aware(at, (pred,), rng, finite_differences)


def _check_loss_at(
    loss: Loss,
    pred: Any,
    target: Any,
    *,
    transform: str,
    rng: Any,
    tolerance: Tolerance | None,
    finite_differences: bool,
    check_fwd: bool,
    second: bool,
    nondet_tol: float,
) -> GradcheckReport:
    """:func:`check_loss` at one ``pred`` (no kink re-probe)."""

    def value(p, tt):
        if transform == "vmap":
            return jnp.sum(jax.vmap(lambda pi, ti: loss.forward(pi, ti)[0])(p, tt))
        return loss.forward(p, tt)[0]

    def manual(p, tt):
        if transform == "vmap":
            return jax.vmap(lambda pi, ti: loss.backward(loss.forward(pi, ti)[1]))(p, tt)
        return loss.backward(loss.forward(p, tt)[1])

    def hvp(p, tt, v):
        if transform == "vmap":
            return jax.vmap(lambda pi, ti, vi: loss.hvp(loss.forward(pi, ti)[1], vi))(p, tt, v)
        return loss.hvp(loss.forward(p, tt)[1], v)

    def forward_rule(p, tt, t):
        if transform == "vmap":
            value_, dvalue = jax.vmap(loss.jvp)(p, tt, t)
            return jnp.sum(value_), jnp.sum(dvalue)
        return loss.jvp(p, tt, t)

    gen = _generator(rng)
    drawn = _gaussians(gen, [jnp.shape(pred)] * (3 if second else 1), [jnp.result_type(pred)] * 3)

    def noise(drawn, scale):
        """The tangent t (times ``scale``: 1, or 0 for the zero-tangent run), and u, w for ``order=2``."""
        t, *uw = drawn
        return t * scale.astype(t.dtype), (tuple((v,) for v in uw) if second else None)

    def eager_rules(p, tt, scale):
        if not check_fwd:
            return manual(p, tt), None
        t, _ = noise(drawn, scale)
        return manual(p, tt), forward_rule(p, tt, t)

    eager = _checked_rule(transform, eager_rules, pred, target, _ONE)
    paths = _paths((pred,), ("pred",))
    dtype = _dtype_name((pred,))
    tol = tolerance or TOLERANCES.get(dtype, TOLERANCES["float32"])
    use64 = x64_available()
    fd_tol = tol if use64 else FD_FLOAT32
    setup = _Setup(
        (0,), tuple(_probes([pred], 64, 8)), fd_tol.fd_eps, finite_differences, use64, bool(jax.config.jax_enable_x64)
    )

    fd_noise = _fd_noise(gen, setup, [pred])

    def program(pred, target, drawn, fd_noise, eager, scale):
        with jax.enable_x64(setup.user_x64):
            grad = eager[0] if eager is not None else manual(pred, target)
            _check_structure((pred,), (grad,), paths)
            t, uw = noise(drawn, scale)
            v, jvp = jax.linearize(lambda p: value(p, target), pred)
            jt = jvp(t)
            auto = jax.linear_transpose(jvp, pred)(jnp.ones_like(v))
        out = _measure(setup, value, (grad,), (pred, target), fd_noise, auto=auto, along=(t,) if check_fwd else None)
        out["dot"] = (jt.astype(jnp.float64), _vdot64(t, grad))
        f = lambda p: value(p, target)  # noqa: E731
        if check_fwd:
            with jax.enable_x64(setup.user_x64):
                v_rule, dv = eager[1] if eager is not None else forward_rule(pred, target, t)
            rule_out = (v_rule, dv)
            out["fwd"] = _forward_outputs(setup, f, (pred,), (t,), v, jt, rule_out, out["dot"][1], fd=out.get("along"))
            out["fwd"]["scale"] = jnp.sqrt(_vdot64(grad, grad) * _vdot64(t, t))
        if uw is not None:
            rule = lambda p: (manual(p, target),)  # noqa: E731
            rule_fd = lambda dtype: lambda p: (manual(p, _to(target, dtype)),)  # noqa: E731
            out["second"] = _second_outputs(setup, rule, jax.grad(f, argnums=(0,)), (pred,), *uw, rule_fd)
            if loss.hvp is not None:
                with jax.enable_x64(setup.user_x64):
                    out["second"]["hvp"] = hvp(pred, target, uw[0][0])
        return out

    out, again, at_zero = _three_runs(program, use64, (pred, target, drawn, fd_noise), eager, eager_rules)
    dot = _scalar_error(*(float(v) for v in out["dot"]))
    batch = int(pred.shape[1] if transform == "vmap" else pred.shape[0]) if pred.ndim > 1 else None
    report = _report(out, paths, setup, dtype, tol, fd_tol, dot, batch)
    first = (out["manual"], out["fwd"]["dy"] if check_fwd else None)
    if check_fwd:
        f = dataclasses.replace(_forward_report(out, tol, fd_tol, setup.fd), zero=_max_abs(at_zero[1]))
        report = dataclasses.replace(report, forward=f)
    if second:
        s = _second_report(out["second"], tol, fd_tol, setup.fd, hvp=out["second"].get("hvp"))
        report = dataclasses.replace(report, second=s)
    return _with_runs(report, _nondeterminism(first, again), nondet_tol, None)
