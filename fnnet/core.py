"""The two contracts of fnnet, and the input and params checks every layer shares.

A **Layer** is a tuple of pure functions, in the manner of ``jax.example_libraries.stax``::

    init(key, in_shape, dtype=jnp.float32) -> (out_shape, params)
    forward(params, x, *, key=None, train=True) -> (y, cache)
    backward(params, cache, dy) -> (dparams, dx)
    update_state(params, cache) -> params          # optional; None for stateless layers
    jvp(params, x, dparams, dx, *, key=None, train=True) -> (y, dy)   # hand-written forward mode
    name                                           # a short label, e.g. "Dense(64)"; None: derived

* ``in_shape`` and ``out_shape`` exclude the batch dimension; ``x`` and ``y`` carry it first.
* ``forward`` uses only ``jax.numpy``/``lax``, so ``jax.grad`` differentiates the very same code: that
  is the reference every hand-written rule is checked against.
* ``backward`` is the hand-written vector-Jacobian product. It never calls ``jax.grad``, ``jax.vjp``
  or ``jax.jvp``. ``dparams`` has exactly the pytree structure of ``params``.
* ``cache`` holds only arrays (so it can be a ``jax.custom_vjp`` residual) and only what the rule
  needs. Static facts such as an input shape travel as a zero-size :func:`shape_token`.
* ``update_state`` is how layers with state (batch-norm running statistics) return it: the state
  lives in ``params`` as non-trainable buffers whose gradient is zero in training mode, and
  ``update_state(params, cache)`` returns new params with the statistics of the last training
  forward folded in. Nothing is mutated.
* **Buffers are recognizable from params alone**: a layer keeps them in a sub-dict under the key
  ``"state"`` (:data:`STATE_KEY`) of its params dict, e.g. BatchNorm's
  ``{"gamma", "beta", "state": {"mean", "var"}}``. Every leaf below a ``"state"`` key is a buffer,
  every other leaf is trained: :func:`fnnet.optim.trainable_mask` reads this, so weight decay and
  optax's ``mask=`` spare buffers without the Layer at hand. A plain sub-dict (not a marker type)
  keeps params ordinary pytrees that every JAX, optax and checkpoint tool handles as they are.
* **Masks.** A layer that takes a key-padding mask (a boolean ``(B, T)`` array, True = attend, e.g.
  :func:`fnnet.MultiHeadAttention`) has ``forward(params, x, *, key=None, train=True, mask=None)`` and
  declares it by marking that function with :func:`mark_takes_mask` (an attribute on ``forward``, as the
  combinators keep their children on ``init``, so the Layer fields stay as they are). :func:`takes_mask`
  reads the mark. ``serial`` and ``residual`` take ``mask=`` when any child does and hand it to exactly
  the children that take it; ``value_and_grad``, ``autodiff_value_and_grad`` and
  ``custom_vjp_value_and_grad`` accept ``mask=`` and pass it on, and ``custom_vjp(layer)`` takes it as its
  fourth argument, ``f(params, x, key, mask)``. A layer without the mark keeps the plain signature and is
  never given a mask; passing ``mask=`` to a network none of whose layers takes one is a TypeError naming it. The
  mask is data, not a parameter: it gets no gradient, and the caches hold it where the rule needs it.
* ``jvp`` is the hand-written forward-mode rule, the Jacobian-vector product: for a tangent
  ``(dparams, dx)`` it returns the forward's own ``y`` and ``dy = ∂y/∂params · dparams + ∂y/∂x · dx``.
  Like ``backward`` it never calls ``jax.grad``, ``jax.vjp`` or ``jax.jvp``; its formula is in the
  layer's docstring. ``dparams`` has the structure of ``params`` (buffers under ``"state"`` included:
  BatchNorm in evaluation mode depends on them); ``dx`` has the shape and dtype of ``x``, and is
  ignored (``None`` is accepted) where ``x`` is integer, as for Embedding's ids. ``key`` and ``train``
  are the forward's, so Dropout draws the same mask; a layer that takes a mask takes ``mask=`` here too.
  The combinators compose it (serial: the tangents flow forward through the children in order).
  ``None``: not provided. :func:`fnnet.custom_jvp` makes ``jax.jvp``, ``jax.jacfwd`` and
  ``jax.linearize`` run it.
* ``name`` is a short label used by ``repr`` and :func:`fnnet.summary`: ``"Dense(64)"``, ``"Relu"``,
  ``"serial(Dense(64), Relu, Dense(10))"``. ``None`` (a hand-made Layer) is shown as the name of the
  public function that built it (``def MyLayer(): ...`` gives ``"MyLayer"``), or ``"Layer"``.

Every layer checks its params against the structure its ``init`` makes (:func:`check_params`,
:func:`check_no_params`) while tracing, so another net's params, a bias of the wrong length or a
parameter-free layer handed arrays raise an error naming the layer and the leaf, never an XLA error;
``serial`` and ``residual`` add the child's position.

A **Loss** is ``Loss(forward, backward, jvp, hvp)``::

    forward(pred, target) -> (mean loss over the batch, cache)
    backward(cache) -> dloss/dpred
    jvp(pred, target, dpred) -> (value, dvalue)    # forward mode: dvalue = ⟨dloss/dpred, dpred⟩
    hvp(cache, v) -> H v                            # H = d²loss/dpred², v of pred's shape

Every loss is the *mean* over the batch (the first axis), so every gradient is the gradient of that
mean, and H its Hessian with respect to ``pred`` alone (the target is data). ``jvp`` and ``hvp`` are
hand-written like ``backward``; ``None``: not provided (a user's ``Loss(forward, backward)`` still works
everywhere but forward mode and curvature).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Shape = tuple[int, ...]
Params = Any  # a pytree of arrays; () for a layer without parameters
Cache = Any  # a pytree of arrays saved by forward for backward
PRNGKey = jax.Array

__all__ = [
    "Array",
    "Cache",
    "DTypeError",
    "Layer",
    "Loss",
    "ParamSpec",
    "Params",
    "PRNGKey",
    "Shape",
    "STATE_KEY",
    "ShapeError",
    "annotate",
    "check_dtype_match",
    "check_float",
    "check_input",
    "check_no_params",
    "check_param_dtype",
    "check_params",
    "check_real",
    "check_tangent",
    "is_concrete",
    "is_int",
    "mark_takes_mask",
    "mask_kwargs",
    "takes_mask",
    "prod",
    "shape_str",
    "shape_token",
    "token_shape",
]


class Layer(NamedTuple):
    """A layer: ``init``, ``forward``, hand-written ``backward``, optional ``update_state``, ``jvp``, ``name``.

    The contract of each field is in the module docstring. A Layer is a tuple of functions and
    strings, so it compares and hashes by its fields, as ``jax.jit``'s static arguments need; its
    ``repr`` shows the name (``Layer(Dense(64))``), not the functions' addresses.
    """

    init: Callable[..., tuple[Shape, Params]]
    forward: Callable[..., tuple[Array, Cache]]
    backward: Callable[[Params, Cache, Array], tuple[Params, Array]]
    update_state: Callable[[Params, Cache], Params] | None = None
    jvp: Callable | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """``name``, or for a Layer made without one the name of the function that built it."""
        if self.name is not None:
            return self.name
        qualname = getattr(self.init, "__qualname__", "")
        outer = qualname.rsplit(".<locals>.", 1)[0].rsplit(".", 1)[-1]  # the innermost enclosing function
        inner = ".<locals>." in qualname and outer.isidentifier() and not outer.startswith("_")
        return outer if inner else "Layer"

    def __repr__(self) -> str:
        return f"Layer({self.label})"


class Loss(NamedTuple):
    """A loss: ``forward(pred, target) -> (mean loss, cache)``, ``backward(cache) -> dpred``, and the
    optional forward-mode rule ``jvp(pred, target, dpred) -> (value, dvalue)`` and Hessian-vector
    product ``hvp(cache, v) -> H v`` (see the module docstring)."""

    forward: Callable[[Array, Array], tuple[Array, Cache]]
    backward: Callable[[Cache], Array]
    jvp: Callable[[Array, Array, Array], tuple[Array, Array]] | None = None
    hvp: Callable[[Cache, Array], Array] | None = None


class ShapeError(ValueError):
    """An array has the wrong shape for the layer or loss it is given to."""


class DTypeError(TypeError):
    """An array has a dtype the layer or loss cannot take (e.g. integers where floats are needed)."""


def annotate(exc: Exception, prefix: str) -> Exception:
    """``exc`` with ``prefix`` put in front of its message, of the same type, to re-raise.

    Used by the combinators (``serial layer 2, Dense(10): ...``) and the initializer draw. fnnet's
    own error types and plain ``ValueError``/``TypeError`` are rebuilt with the longer message (and
    the original traceback); any other exception (a subclass with its own constructor) keeps its
    message and gets ``prefix`` as a note instead. Use as ``raise annotate(e, "...") from None``.
    """
    if type(exc) in (ShapeError, DTypeError, ValueError, TypeError) and len(exc.args) == 1:
        new = type(exc)(f"{prefix}{exc.args[0]}").with_traceback(exc.__traceback__)
        for note in getattr(exc, "__notes__", ()):
            new.add_note(note)
        return new
    exc.add_note(f"(raised in {prefix.rstrip(', :')})")
    return exc


def mark_takes_mask(forward: Callable) -> Callable:
    """Mark ``forward`` (which has a ``mask=None`` keyword) as taking a key-padding mask; returns it."""
    forward.takes_mask = True
    return forward


def takes_mask(layer: Layer) -> bool:
    """True when ``layer.forward`` takes ``mask=`` (it was marked with :func:`mark_takes_mask`)."""
    return bool(getattr(layer.forward, "takes_mask", False))


def mask_kwargs(layer: Layer, mask: Any) -> dict:
    """``{"mask": mask}`` for a layer that takes one and a mask that is given, else ``{}``.

    A mask given to a layer that takes none is a TypeError naming the layer.
    """
    if mask is None:
        return {}
    if not takes_mask(layer):
        raise TypeError(
            f"{layer.label} takes no mask: none of its layers uses one (masks go to layers such as "
            f"fn.MultiHeadAttention); call it without mask="
        )
    return {"mask": mask}


def shape_str(shape: Shape) -> str:
    """``(32, 50)`` for a shape, with a trailing comma only for 1-tuples, as Python prints them."""
    return str(tuple(int(d) for d in shape))


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values now (not a tracer inside ``jit``/``vmap``/``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def is_int(v: Any) -> bool:
    """True for a Python or NumPy integer that is not a bool (``3`` and ``np.int64(3)``, not ``True``)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_real(name: str, arg: str, value: Any) -> float:
    """``value`` as a float if it is a real number (Python or NumPy, not a bool); else ``TypeError``.

    Only the type is checked here (NaN and Inf pass); callers check the range, naming ``arg``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} needs {arg} to be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_float(name: str, x: Any, what: str = "input") -> None:
    """Raise :class:`DTypeError` unless ``x`` is a floating-point array."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise DTypeError(
            f"{name} needs a floating-point {what}, got dtype {dtype}; convert it first, e.g. x.astype(jnp.float32)"
        )


def check_param_dtype(name: str, dtype: Any) -> None:
    """Raise :class:`DTypeError` unless ``dtype`` (given to ``init``) is a floating-point dtype."""
    try:
        d = jnp.dtype(dtype)
    except TypeError:
        raise DTypeError(f"{name} init needs a floating-point dtype such as jnp.float32, got {dtype!r}") from None
    if not jnp.issubdtype(d, jnp.floating):
        raise DTypeError(f"{name} init needs a floating-point dtype for its parameters, got {d}")


def check_input(name: str, x: Any, expected: tuple, *, leading: str = "batch") -> None:
    """Check that ``x`` is a float array of shape ``(batch, *expected)``.

    ``expected`` may hold ``None`` for an axis of any size. With ``leading="..."`` any number
    (at least one) of leading axes is allowed instead of exactly one batch axis. The error reads,
    e.g., ``Dense(10) expected inputs (..., 64), got (32, 50)``.
    """
    shape = tuple(jnp.shape(x))
    dims = ", ".join("*" if d is None else str(d) for d in expected)
    want = f"({leading}, {dims})" if dims else f"({leading},)"
    n = len(expected)
    ok_rank = len(shape) == n + 1 if leading == "batch" else len(shape) >= n + 1
    tail = shape[len(shape) - n :] if n else ()
    if not ok_rank or any(e is not None and e != s for e, s in zip(expected, tail)):
        raise ShapeError(f"{name} expected inputs {want}, got {shape_str(shape)}")
    check_float(name, x)


def check_dtype_match(name: str, x: Any, param: Any) -> None:
    """Raise :class:`DTypeError` when ``x`` and a parameter differ in dtype (no silent up/downcast)."""
    xd, pd = jnp.result_type(x), jnp.result_type(param)
    if xd != pd:
        raise DTypeError(
            f"{name} got {xd} inputs but its parameters are {pd}; nothing is cast silently, so cast one "
            f"(e.g. x.astype(jnp.{pd}) or init the layer with dtype=jnp.{xd})"
        )


def shape_token(shape: Shape, dtype: Any = jnp.float32) -> Array:
    """A zero-size array whose shape carries ``shape``: a static fact a cache can hold for free."""
    return jnp.zeros(tuple(shape) + (0,), dtype)


def token_shape(token: Array) -> Shape:
    """The shape stored in a :func:`shape_token`."""
    return tuple(token.shape[:-1])


def prod(shape: Shape) -> int:
    """The number of elements of ``shape`` (1 for ``()``)."""
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


# ----------------------------------------------------------------------------------------------
# params that fit the layer

#: The leaves a layer's params must hold: key -> expected shape. A dimension is an int (that size
#: exactly) or a name such as ``"d_in"`` (any size, but the same size wherever the name recurs). A value
#: that is itself a ParamSpec describes a sub-dict, e.g. the ``"state"`` buffers of BatchNorm.
ParamSpec = Mapping[str, Any]

#: The key of the sub-dict that holds a layer's buffers (non-trainable state) inside its params dict.
STATE_KEY = "state"


def _keys(keys: Any) -> str:
    return ", ".join(repr(k) for k in keys) if keys else "none"


def check_params(name: str, params: Any, spec: ParamSpec) -> None:
    """Check that ``params`` is a dict holding exactly the leaves of ``spec``, as the layer's init makes them.

    Shapes and dtypes are static under ``jit``/``vmap``/``grad``, so this costs nothing at run time:
    it runs once, while tracing, and never reads a value (NaN and Inf pass). It raises, naming the
    layer ``name`` and the leaf (e.g. ``Dense(10): params['b'] has shape (5,), expected (10,)``, or
    ``params['state']['var']`` inside a sub-dict):

    * ``TypeError`` when ``params`` (or a sub-dict of ``spec``) is not a mapping, or a leaf is not an array;
    * ``ValueError`` when keys are missing or unexpected;
    * :class:`ShapeError` when a leaf has the wrong rank or size (named dimensions of ``spec`` are
      bound by the first leaf that has them and must agree in the others, sub-dicts included);
    * :class:`DTypeError` when a leaf is not floating point, or the leaves differ in dtype.
    """
    _check_dict(name, params, spec, "params", {}, [])


def _check_dict(name: str, params: Any, spec: ParamSpec, where: str, bound: dict, first: list) -> None:
    """:func:`check_params` of the dict at ``where``; ``bound`` and ``first`` are shared with its sub-dicts."""
    want = list(spec)
    if not isinstance(params, Mapping):
        got = type(params).__name__
        if isinstance(params, (tuple, list)):
            got = f"a {got} of {len(params)} entries"
            if not params and where == "params":
                got += " (the params of a layer without parameters)"
        what = "params" if where == "params" else where
        raise TypeError(f"{name} needs {what} as a dict with keys {_keys(want)}, as its init returns; got {got}")
    missing = [k for k in want if k not in params]
    extra = [k for k in params if k not in spec]
    if missing or extra:
        parts = ([f"missing {_keys(missing)}"] if missing else []) + ([f"unexpected {_keys(extra)}"] if extra else [])
        raise ValueError(
            f"{name} needs {where} with keys {_keys(want)}, as its init returns; got keys {_keys(list(params))} "
            f"({'; '.join(parts)})"
        )
    for k in want:
        leaf, dims, at = params[k], spec[k], f"{where}[{k!r}]"
        if isinstance(dims, Mapping):
            _check_dict(name, leaf, dims, at, bound, first)
            continue
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise TypeError(f"{name}: {at} must be an array, got {type(leaf).__name__}")
        shape = tuple(leaf.shape)
        if len(shape) != len(dims) or any(
            (d != s) if isinstance(d, int) else (bound.get(d, s) != s) for d, s in zip(dims, shape)
        ):
            want_shape = "(" + ", ".join(str(d if isinstance(d, int) else bound.get(d, d)) for d in dims)
            want_shape += ",)" if len(dims) == 1 else ")"
            raise ShapeError(f"{name}: {at} has shape {shape_str(shape)}, expected {want_shape}")
        bound.update({d: s for d, s in zip(dims, shape) if isinstance(d, str)})
        dtype = jnp.dtype(leaf.dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise DTypeError(f"{name}: {at} has dtype {dtype}; parameters must be floating-point")
        if not first:
            first.append((at, dtype))
        elif dtype != first[0][1]:
            raise DTypeError(
                f"{name}: {at} is {dtype} but {first[0][0]} is {first[0][1]}; nothing is cast "
                f"silently, so give all of its params one dtype"
            )


def check_no_params(name: str, params: Any) -> None:
    """Raise ``ValueError`` unless ``params`` holds no arrays: the layer has no parameters (params ``()``).

    A pytree without leaves (``()``, ``[]``, ``{}``, ``None``) passes; anything else (e.g. the params of
    another layer, passed to the wrong position of a ``serial``) is refused, naming the layer.
    """
    if jax.tree_util.tree_leaves(params):
        got = f"a dict with keys {_keys(list(params))}" if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{name} has no parameters and takes params (), got {got}")


def check_tangent(name: str, what: str, tangent: Any, primal: Any, primal_what: str | None = None) -> None:
    """Check that a JVP's ``tangent`` has the pytree structure, leaf shapes and leaf dtypes of ``primal``.

    Every hand-written ``jvp`` runs it on its ``dparams`` and ``dx`` while tracing (shapes and dtypes are
    static, so it costs nothing at run time). ``what`` and ``primal_what`` name the two in the message
    (``"dx"`` and ``"x"``, ``"dparams"`` and ``"params"``; by default ``what`` without its leading ``d``). A
    mismatch raises, naming the layer ``name`` and the leaf, before XLA would fail: ``TypeError`` for a
    missing tangent (``None``), ``ValueError`` for missing or unexpected leaves, :class:`ShapeError` for a
    shape and :class:`DTypeError` for a dtype (nothing is cast silently).
    """
    primal_what = primal_what or (what[1:] if what.startswith("d") else "its primal")
    if tangent is None and primal is not None:
        raise TypeError(f"{name} needs a tangent {what} with the structure of {primal_what}; got None")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(primal)
    t_leaves, t_treedef = jax.tree_util.tree_flatten_with_path(tangent)
    if t_treedef != treedef:
        want = {jax.tree_util.keystr(k) for k, _ in leaves}
        got = {jax.tree_util.keystr(k) for k, _ in t_leaves}
        parts = [f"missing {', '.join(sorted(want - got))}"] if want - got else []
        parts += [f"unexpected {', '.join(sorted(got - want))}"] if got - want else []
        detail = "; ".join(parts) or f"got {t_treedef}, expected {treedef}"
        raise ValueError(f"{name} needs a tangent {what} with the structure of {primal_what}; {what}: {detail}")
    for (path, p), (_, t) in zip(leaves, t_leaves):
        at, of = what + jax.tree_util.keystr(path), primal_what + jax.tree_util.keystr(path)
        if tuple(np.shape(t)) != tuple(np.shape(p)):
            raise ShapeError(
                f"{name}: the tangent {at} has shape {shape_str(np.shape(t))}, expected "
                f"{shape_str(np.shape(p))} (the shape of {of})"
            )
        if jnp.result_type(t) != jnp.result_type(p):
            raise DTypeError(
                f"{name}: the tangent {at} is {jnp.result_type(t)}, expected {jnp.result_type(p)} "
                f"(the dtype of {of}); nothing is cast silently"
            )
