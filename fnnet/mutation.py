"""Mutation testing of the checker: plant a typical bug in a rule, one at a time, and see which check catches it.

A checker's worth is the wrong rules it fails. This module builds **mutants** of a catalog entry, each the
entry's layer or loss with one bug planted in its hand-written backward (VJP) or forward-mode (JVP) rule,
and runs every check of :func:`fnnet.catalog.check_entry` on each; ``benchmarks/mutation.py`` runs it over
the whole catalog and prints the detection rates.

Generic, output-level mutants, for every rule and every leaf of its output (the parameter gradients and
dx, or a loss's dpred):

* ``scale 1e-3``: the leaf times 1 + 1e-3, a small relative error (a wrong constant deep in a formula);
* ``sign``: the leaf negated;
* ``transpose``: a square leaf transposed (``dy W`` where ``dy Wᵀ`` belongs);
* ``zero``: the leaf replaced by zeros (a dropped path);
* ``batch mean``: a parameter leaf divided by the batch size (a mean over the batch where the forward sums);
* ``wrong axis``: the leaf averaged over its first axis and broadcast back (a reduction over the wrong axis).

Forward-rule mutants: ``jvp scale 1e-3``, ``jvp sign``, ``jvp drops dparams`` (the parameter tangent
ignored), ``jvp drops dx`` (the input tangent ignored).

Source-level mutants, per family, where the entry has the structure they need:

* ``missing mask``: the backward run on a cache with its key-padding mask removed (attention);
* ``output cached``: an activation whose rule reads its input given the output instead (the wrong cached
  value);
* ``swapped gates``: two gate blocks of a recurrent layer's weight gradients exchanged (LSTM, GRU);
* ``off-by-one``: a convolution's or pooling's dx shifted by one row (an off-by-one in stride or padding).

A mutant that changes nothing at the checked point (zeroing a gradient that is exactly zero there, e.g.
a BatchNorm buffer's) is **equivalent**: no check can catch it, and :func:`run` reports it as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fnnet import catalog
from fnnet.checking import TOLERANCES, GradcheckReport
from fnnet.core import Layer, Loss

__all__ = ["CHECKS", "Mutant", "Outcome", "check_grads_catches", "detected", "mutants", "run"]

#: The checks a mutant can be caught by, in the order of the tables.
CHECKS = ("rev vs autodiff", "rev vs FD", "rev adjoint", "fwd three-way", "default check")


class Mutant(NamedTuple):
    """One planted bug: the ``kind``, in which rule (``"backward"`` or ``"jvp"``), where (a leaf's path or
    ``"-"``) and the mutated entry to check."""

    entry: str
    kind: str
    rule: str
    where: str
    mutated: catalog.Entry


class Outcome(NamedTuple):
    """A mutant checked in one dtype: which checks caught it, or ``equivalent`` when it changed nothing."""

    mutant: Mutant
    dtype: str
    caught: dict  # check name -> True / False / None (not applicable)
    equivalent: bool


def _output_leaves(entry: catalog.Entry, point: catalog.Point) -> list[tuple[str, Any]]:
    """(path, leaf) of the rule's output at ``point``: params' leaves then x (if floating) for a layer,
    ``pred`` for a loss."""
    if catalog.is_loss(entry):
        return [("pred", point.x)]
    flat, _ = jax.tree_util.tree_flatten_with_path(point.other)
    leaves = [("params" + jax.tree_util.keystr(path), leaf) for path, leaf in flat]
    return leaves + ([("x", point.x)] if jnp.issubdtype(point.x.dtype, jnp.floating) else [])


def _on_leaf(i: int, f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A function applying ``f`` to the ``i``-th leaf of a pytree (``None`` leaves skipped)."""

    def apply(tree):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        leaves[i] = f(leaves[i])
        return jax.tree_util.tree_unflatten(treedef, leaves)

    return apply


def _backward_mutant(layer_or_loss: Any, change: Callable[[Any], Any]) -> Any:
    """The layer or loss with ``change`` applied to its backward's output: ``(dparams, dx)`` or ``dpred``."""
    if isinstance(layer_or_loss, Loss):
        loss = layer_or_loss
        return loss._replace(backward=lambda cache: change(loss.backward(cache)))
    layer = layer_or_loss
    return layer._replace(backward=lambda p, cache, dy: change(layer.backward(p, cache, dy)))


def _jvp_mutant(layer_or_loss: Any, kind: str) -> Any:
    """The layer or loss with a bug of ``kind`` in its forward-mode rule; None where the kind does not apply
    (a loss has no parameter tangent, and its only input tangent is the one scaled or negated)."""
    thing = layer_or_loss
    if isinstance(thing, Loss):
        scale = {"jvp scale 1e-3": 1.001, "jvp sign": -1.0}.get(kind)
        if scale is None:
            return None
        return thing._replace(jvp=lambda p, t, dp: (lambda v: (v[0], v[1] * scale))(thing.jvp(p, t, dp)))

    def jvp(params, x, dparams, dx, **kw):
        if kind == "jvp drops dparams":
            dparams = jax.tree_util.tree_map(jnp.zeros_like, dparams)
        if kind == "jvp drops dx" and dx is not None:
            dx = jnp.zeros_like(dx)
        y, dy = thing.jvp(params, x, dparams, dx, **kw)
        scale = {"jvp scale 1e-3": 1.001, "jvp sign": -1.0}.get(kind, 1.0)
        return y, dy * scale

    return thing._replace(jvp=jvp)


_LEAF_KINDS: dict[str, Callable[[Any, int], Any]] = {
    "scale 1e-3": lambda g, batch: g * (1 + 1e-3),
    "sign": lambda g, batch: -g,
    "transpose": lambda g, batch: g.T,
    "zero": lambda g, batch: jnp.zeros_like(g),
    "batch mean": lambda g, batch: g / batch,
    "wrong axis": lambda g, batch: jnp.broadcast_to(jnp.mean(g, axis=0, keepdims=True), g.shape),
}


def _applies(kind: str, path: str, shape: tuple[int, ...]) -> bool:
    if kind == "transpose":
        return len(shape) == 2 and shape[0] == shape[1] and shape[0] > 1
    if kind == "batch mean":
        return path.startswith("params")
    if kind == "wrong axis":
        return len(shape) >= 1 and shape[0] > 1
    return True


def _entry_with(entry: catalog.Entry, thing: Any, suffix: str) -> catalog.Entry:
    return entry._replace(name=f"{entry.name} <{suffix}>", make=lambda: thing)


def _drop_masks(cache: Any) -> Any:
    if isinstance(cache, dict):
        return {k: _drop_masks(v) for k, v in cache.items() if k != "mask"}
    if isinstance(cache, (tuple, list)):
        return type(cache)(_drop_masks(v) for v in cache)
    return cache


def _has_mask(cache: Any) -> bool:
    if isinstance(cache, dict):
        return "mask" in cache or any(_has_mask(v) for v in cache.values())
    if isinstance(cache, (tuple, list)):
        return any(_has_mask(v) for v in cache)
    return False


def _family_mutants(entry: catalog.Entry, thing: Any, point: catalog.Point) -> list[tuple[str, str, Any]]:
    """(kind, where, mutated layer) of the source-level mutants that apply to this entry."""
    if isinstance(thing, Loss):
        return []
    layer = thing
    out = []
    _, cache = layer.forward(point.other, point.x, key=point.key, train=entry.train)
    if _has_mask(cache):
        out.append(
            ("missing mask", "cache", layer._replace(backward=lambda p, c, dy: layer.backward(p, _drop_masks(c), dy)))
        )
    if point.other == () and isinstance(cache, jax.Array) and cache.shape == point.x.shape:
        if bool(jnp.all(cache == point.x)):  # the rule reads its input: hand it the output instead

            def backward(p, c, dy):
                return layer.backward(p, layer.forward(p, c)[0], dy)

            out.append(("output cached", "cache", layer._replace(backward=backward)))
    name = entry.name
    gates = 4 if name.startswith("LSTM") else 3 if name.startswith("GRU") else 0
    if gates and isinstance(point.other, dict):
        leaves = [k for k in ("W", "U") if k in point.other]
        for k in leaves:

            def swap(grads, k=k):
                dparams, dx = grads
                g = dparams[k]
                h = g.shape[-1] // gates
                swapped = jnp.concatenate([g[..., h : 2 * h], g[..., :h], g[..., 2 * h :]], axis=-1)
                return {**dparams, k: swapped}, dx

            out.append(("swapped gates", f"params['{k}']", _backward_mutant(layer, swap)))
    if name.startswith(("Conv2D", "MaxPool", "AvgPool")) and point.x.ndim == 4:

        def shift(grads):
            dparams, dx = grads
            return dparams, jnp.roll(dx, 1, axis=1)

        out.append(("off-by-one", "x", _backward_mutant(layer, shift)))
    return out


def mutants(entry: catalog.Entry) -> list[Mutant]:
    """Every mutant of ``entry``: the generic ones per output leaf, the forward-rule ones, the family ones."""
    thing = entry.make()
    point = catalog.draw_point(entry, jnp.float32)
    batch = int(point.x.shape[0])
    out = []
    for i, (path, leaf) in enumerate(_output_leaves(entry, point)):
        shape = tuple(jnp.shape(leaf))
        for kind, f in _LEAF_KINDS.items():
            if not _applies(kind, path, shape):
                continue
            mutated = _backward_mutant(thing, _on_leaf(i, lambda g, f=f: f(g, batch)))
            out.append(Mutant(entry.name, kind, "backward", path, _entry_with(entry, mutated, f"{kind} {path}")))
    if thing.jvp is not None:
        for kind in ("jvp scale 1e-3", "jvp sign", "jvp drops dparams", "jvp drops dx"):
            if isinstance(thing, Layer):
                if kind == "jvp drops dparams" and not jax.tree_util.tree_leaves(point.other):
                    continue
                if kind == "jvp drops dx" and not jnp.issubdtype(point.x.dtype, jnp.floating):
                    continue
            mutated = _jvp_mutant(thing, kind)
            if mutated is not None:
                out.append(Mutant(entry.name, kind, "jvp", "-", _entry_with(entry, mutated, kind)))
    for kind, where, mutated in _family_mutants(entry, thing, point):
        out.append(Mutant(entry.name, kind, "backward", where, _entry_with(entry, mutated, kind)))
    return out


def _errors(report: GradcheckReport) -> tuple:
    """Every number a report holds, to tell a mutant that changed nothing from one that did."""
    leaves = tuple((leaf.rel_autodiff, leaf.rel_fd) for leaf in report.leaves)
    f = report.forward
    return leaves, report.dot_error, None if f is None else (f.rel_autodiff, f.rel_fd, f.adjoint)


def detected(report: GradcheckReport, dtype: str, fd: bool) -> dict:
    """Which checks fail ``report``: the bars of ``TOLERANCES[dtype]``; None where a check did not run."""
    bar = report.tolerance
    f = report.forward
    return {
        "rev vs autodiff": any(leaf.rel_autodiff > TOLERANCES[dtype].autodiff for leaf in report.leaves),
        "rev vs FD": any(leaf.rel_fd > bar.fd for leaf in report.leaves) if fd else None,
        "rev adjoint": report.dot_error is not None and report.dot_error > bar.adjoint_bar,
        "fwd three-way": None if f is None else not f.ok,
        "default check": not report.ok,
    }


def check_grads_catches(mutant: Mutant, dtype: str = "float64") -> bool:
    """Does ``jax.test_util.check_grads`` (order 1, its default tolerances) fail the mutant, at the same point?

    A backward mutant goes through :func:`fnnet.custom_vjp` (``modes=("rev",)``: the VJP against numerical
    JVPs), a forward-rule mutant through :func:`fnnet.custom_jvp` (``modes=("fwd",)``); a loss through the
    matching loss bridge, in ``pred``.
    """
    from jax.test_util import check_grads

    from fnnet import grad

    entry = mutant.mutated
    point = catalog.draw_point(entry, jnp.dtype(dtype))
    thing = point.thing
    fwd = mutant.rule == "jvp"
    with jax.enable_x64(jnp.dtype(dtype) == jnp.float64):
        if catalog.is_loss(entry):
            bridge = grad.custom_jvp_loss(thing) if fwd else grad.custom_vjp_loss(thing)
            f, args = (lambda p: bridge(p, point.other)), (point.x,)
        else:
            bridge = (grad.custom_jvp if fwd else grad.custom_vjp)(thing, train=entry.train)
            if jnp.issubdtype(point.x.dtype, jnp.floating):
                f, args = (lambda p, x: bridge(p, x, point.key)), (point.other, point.x)
            else:
                f, args = (lambda p: bridge(p, point.x, point.key)), (point.other,)
        try:
            check_grads(f, args, order=1, modes=("fwd",) if fwd else ("rev",))
        except AssertionError:
            return True
    return False


def run(
    entries: Sequence[catalog.Entry],
    dtypes: Sequence[str] = ("float64",),
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Check every mutant of every entry in every dtype with the default check (``modes=("rev", "fwd")``).

    A mutant whose report is identical to the unmutated entry's is marked ``equivalent``.
    """
    outcomes = []
    for entry in entries:
        for dtype in dtypes:
            base = _errors(catalog.check_entry(entry, jnp.dtype(dtype), modes=("rev", "fwd")))
            for m in mutants(entry):
                report = catalog.check_entry(m.mutated, jnp.dtype(dtype), modes=("rev", "fwd"))
                caught = detected(report, dtype, entry.fd)
                o = Outcome(m, dtype, caught, _errors(report) == base)
                outcomes.append(o)
                if on_outcome is not None:
                    on_outcome(o)
    return outcomes
