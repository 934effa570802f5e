"""The training loop: full-batch GD, SGD and mini-batch, one compiled ``lax.scan`` per epoch.

API summary (``import fnnet as fn``)::

    fn.train(layer, loss, params, data, *, optimizer, batch_size, epochs, key,
             grad="manual", record="epoch", per_layer_grad_norms=False, test_data=None,
             accuracy="auto", eval_train=True, eval_batch_size=None, mesh=None,
             progress=True, resume=None, callback=None) -> TrainResult
    fn.sweep(layer, loss, params, data, *, keys, optimizer=fn.optim.sgd, learning_rates=None,
             batch_size, epochs, **same options) -> TrainResult   # every leaf has a leading K axis
    fn.init_params(layer, in_shape, keys, dtype=float32) -> stacked params (K, ...)
    fn.stack(trees) / fn.pick(result_or_tree, k)            # build / slice K-model pytrees
    fn.evaluate(layer, loss, params, data, *, accuracy="auto", batch_size=None) -> (loss, accuracy)
    fn.make_step(layer, loss, optimizer, *, grad="manual", accuracy=None, per_layer_grad_norms=False,
                 batch_sharding=None) -> step(state, (x, y), key, learning_rate=None) -> (state, metrics)

* ``data``/``test_data``: ``fn.data.Dataset(x, y)`` or any pair; x float (N, ...), y int32 labels (N,)
  or float targets (N, k). ``batch_size`` B in [1, N]: B = N is full-batch gradient descent, B = 1
  is SGD, anything else mini-batch. Each epoch draws a fresh permutation from the key and takes
  ⌊N/B⌋ batches; the **remainder of N % B examples is dropped** for that epoch (a different random
  subset each epoch), so every step has the same batch size and the same gradient-noise scale.
* ``optimizer``: any optax ``GradientTransformation`` (``fn.optim.sgd(0.1, momentum=0.9)``,
  ``optax.adam(1e-3)``, chains with clipping/weight decay). In ``sweep`` with ``learning_rates``, a
  factory ``lr -> GradientTransformation`` called with a traced scalar (``fn.optim.sgd`` is one).
* ``grad``: ``"manual"`` (the hand-written rules), ``"autodiff"`` (``jax.grad``) or ``"custom_vjp"``.
  ``layer.update_state`` (batch-norm running statistics) is applied after every optimizer step.
* One epoch is one jitted ``lax.scan`` over its steps; a Python loop over epochs shows a tqdm bar
  (shown after 2 s; ``progress=False`` hides it) and stops early once every run has diverged.
* One optimizer step is :func:`make_step`'s ``step``; ``train``/``sweep`` scan over it, and your own
  loops (a ``lax.while_loop``, a full-batch ``lax.scan``) can use the same function.
* Divergence: a step whose loss, gradient norm or updated params are not finite is not applied;
  the run is frozen from then on, ``diverged`` is set and ``diverged_step`` is the number of
  updates applied before it. Metrics after that point read NaN. Nothing raises.
* ``TrainResult.history`` (per epoch, arrays (E,)): ``loss``/``accuracy``/``grad_norm`` — means over
  the epoch's minibatches in training mode; ``layer_grad_norms`` (E, L) on request, one column per
  top-level child with parameters (:func:`param_layers`); ``train_loss``/``train_accuracy`` on the
  whole training set and ``test_loss``/``test_accuracy`` on ``test_data``, both in eval mode at the
  end of the epoch; ``diverged`` (E,) bool. With ``record="step"``, ``step_history`` holds
  ``loss``/``accuracy``/``grad_norm``/``layer_grad_norms`` per step (E·⌊N/B⌋,). ``accuracy`` is the
  argmax accuracy for integer labels or one-hot targets with softmax cross-entropy, sign accuracy
  with binary cross-entropy, absent for regression; pass a function ``(pred, y) -> fraction`` or None.
* ``mesh`` (:func:`fnnet.parallel.data_mesh`): data-parallel SPMD; each batch is sharded over the
  mesh's ``"data"`` axis, params are replicated, XLA inserts the gradient all-reduce.
* ``resume``: a previous (partial) ``TrainResult``; training continues to ``epochs`` in total and the
  result equals an uninterrupted run. ``callback(epoch, result_so_far)`` runs after each epoch.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from fnnet.core import Array, Layer, Loss, Params, is_int
from fnnet.data import Dataset, validate
from fnnet.grad import GRAD_SOURCES
from fnnet.metrics import accuracy_fn, check_labels, evaluate, layer_norms, make_eval, param_layers
from fnnet.optim import global_norm

__all__ = [
    "EpochSpec",
    "TrainResult",
    "TrainState",
    "evaluate",
    "init_state",
    "make_epoch",
    "make_step",
    "param_layers",
    "train",
]

RECORDS = ("epoch", "step")


class TrainState(NamedTuple):
    """Everything a run carries from one epoch to the next (a pytree: it jits, vmaps, checkpoints)."""

    params: Params  # the model, as layer.init made it
    opt_state: Any  # the optimizer's state pytree
    key: Array  # () PRNG key: split once per epoch into the shuffle key and per-step layer keys
    step: Array  # () int32: optimizer updates applied so far
    diverged: Array  # () bool: a non-finite loss, gradient or update was met; the run is frozen
    diverged_step: Array  # () int32: updates applied before the non-finite step; -1 if none


class TrainResult(NamedTuple):
    """The outcome of :func:`train` (or :func:`fnnet.sweep`, with a leading K axis everywhere)."""

    params: Params  # final params (the last finite ones if the run diverged)
    state: TrainState  # the full final state (resume from it)
    history: dict[str, np.ndarray]  # per-epoch metrics, (E,) or (E, L); see the module docstring
    step_history: dict[str, np.ndarray]  # per-step metrics with record="step", else {}
    steps_per_epoch: int  # ⌊N / B⌋
    wall_time: float  # seconds spent in the epoch loop (compilation included)

    @property
    def diverged(self) -> np.ndarray:
        return np.asarray(self.state.diverged)

    @property
    def diverged_step(self) -> np.ndarray:
        return np.asarray(self.state.diverged_step)


def init_state(params: Params, optimizer: optax.GradientTransformation, key: Array) -> TrainState:
    """The state before the first epoch: ``optimizer.init(params)``, step 0, not diverged."""
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        key=key,
        step=jnp.zeros((), jnp.int32),
        diverged=jnp.zeros((), bool),
        diverged_step=jnp.full((), -1, jnp.int32),
    )


def _tree_where(c: Array, a: Any, b: Any) -> Any:
    return jax.tree_util.tree_map(lambda u, v: jnp.where(c, u, v), a, b)


def _all_finite(tree: Any) -> Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def _check_grad(grad: Any) -> None:
    if grad not in GRAD_SOURCES:
        raise ValueError(f"unknown gradient source {grad!r}; choose one of {', '.join(GRAD_SOURCES)}")


def make_step(
    layer: Layer,
    loss: Loss,
    optimizer: Any,
    *,
    grad: str = "manual",
    accuracy: Callable | None = None,
    per_layer_grad_norms: bool = False,
    batch_sharding: Any = None,
) -> Callable:
    """One optimizer step as a pure function ``step(state, batch, key, learning_rate=None) -> (state, metrics)``.

    With θ = ``state.params``, s = ``state.opt_state`` and ``batch = (x, y)``::

        (L, (ŷ, cache)), g = value_and_grad(θ, x, y, key, train=True)   # by the ``grad`` source
        u, s ← optimizer.update(g, s, θ)
        θ ← θ + u;  θ ← layer.update_state(θ, cache)   # the latter if the layer has state (batch norm)

    Divergence freeze: the step is applied (and ``state.step`` advanced by one) only if the run has
    not diverged and L, ‖g‖ (:func:`fnnet.optim.global_norm`) and every element of the new θ are
    finite. Otherwise params, optimizer state and step are left as they were, ``diverged`` is set
    and, the first time, ``diverged_step`` records ``state.step``: the updates applied before it.
    A gradient whose norm overflows counts as non-finite. The new θ is checked rather than u alone:
    a non-finite u makes it non-finite, and the check also catches θ + u overflowing and a non-finite
    statistic from ``update_state`` (at the cost of one reduction per leaf). ``state.key`` is passed
    through untouched (it is the epoch loop's, for shuffling); ``key`` is this step's layer key
    (dropout), or None for layers that draw nothing.

    ``metrics``: ``loss`` L and ``grad_norm`` ‖g‖, ``accuracy`` = ``accuracy(ŷ, y)`` if given,
    ``layer_grad_norms`` (one per :func:`param_layers` child) on request; all NaN when the run had
    diverged before this step (the step that diverges reports its own values).

    Args:
      optimizer: an optax GradientTransformation, or a factory ``lr -> GradientTransformation``
        called with ``learning_rate`` inside the step, so the rate may be traced (``jax.vmap`` over
        it to sweep rates, as :func:`fnnet.sweep` does).
      grad: the gradient source, one of :data:`fnnet.grad.GRAD_SOURCES`.
      batch_sharding: a sharding both halves of the batch are constrained to (data parallel).

    ``step`` jits, vmaps and scans; :func:`train` and :func:`fnnet.sweep` scan over it.
    """
    _check_grad(grad)
    vg = GRAD_SOURCES[grad](layer, loss, has_aux=True)

    def step(state: TrainState, batch: Any, key: Array | None, learning_rate: Any = None):
        params, opt_state, diverged = state.params, state.opt_state, state.diverged
        opt = optimizer if isinstance(optimizer, optax.GradientTransformation) else optimizer(learning_rate)
        xb, yb = batch
        if batch_sharding is not None:
            xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
            yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
        (value, (pred, cache)), grads = vg(params, xb, yb, key=key, train=True)
        gnorm = global_norm(grads)
        updates, new_opt = opt.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if layer.update_state is not None:
            new_params = layer.update_state(new_params, cache)
        finite = jnp.isfinite(value) & jnp.isfinite(gnorm) & _all_finite(new_params)
        live = ~diverged & finite
        nan = jnp.full((), jnp.nan, jnp.result_type(value))
        metrics = {"loss": jnp.where(diverged, nan, value), "grad_norm": jnp.where(diverged, nan, gnorm)}
        if accuracy is not None:
            metrics["accuracy"] = jnp.where(diverged, nan, accuracy(pred, yb).astype(nan.dtype))
        if per_layer_grad_norms:
            metrics["layer_grad_norms"] = jnp.where(diverged, nan, layer_norms(grads))
        new_state = state._replace(
            params=_tree_where(live, new_params, params),
            opt_state=_tree_where(live, new_opt, opt_state),
            step=state.step + live.astype(state.step.dtype),
            diverged=diverged | ~finite,
            diverged_step=jnp.where(~diverged & ~finite, state.step, state.diverged_step),
        )
        return new_state, metrics

    return step


class EpochSpec(NamedTuple):
    """The static configuration of a compiled epoch (hashable: equal specs share one compilation)."""

    layer: Layer
    loss: Loss
    optimizer: Any  # a GradientTransformation, or a factory lr -> GradientTransformation
    num_examples: int
    batch_size: int
    grad: str = "manual"
    record: str = "epoch"
    per_layer_grad_norms: bool = False
    accuracy: Callable | None = None
    eval_train: bool = True
    eval_batch_size: int | None = None
    batch_sharding: Any = None


def make_epoch(layer: Layer, loss: Loss, optimizer: Any, *, num_examples: int, batch_size: int, **options) -> Callable:
    """The pure epoch function ``(state, data, test_data, lr=None) -> (state, metrics, step_metrics)``.

    ``optimizer`` is a GradientTransformation, or a factory ``lr -> GradientTransformation`` called
    with the (possibly traced) ``lr``. ``options`` are the other fields of :class:`EpochSpec`.
    :func:`train` jits it; :func:`fnnet.sweep` jits its vmap. Use it to build your own loops.
    """
    spec = EpochSpec(layer, loss, optimizer, num_examples, batch_size, **options)
    _check_grad(spec.grad)
    return functools.partial(_epoch, spec)


def _epoch(spec: EpochSpec, state: TrainState, data: Dataset, test_data: Dataset | None, lr: Any = None):
    """One epoch: ⌊N/B⌋ :func:`make_step` steps over a fresh permutation, in one ``lax.scan``, then eval."""
    layer, n, batch_size, accuracy = spec.layer, spec.num_examples, spec.batch_size, spec.accuracy
    step = make_step(
        layer,
        spec.loss,
        spec.optimizer,
        grad=spec.grad,
        accuracy=accuracy,
        per_layer_grad_norms=spec.per_layer_grad_norms,
        batch_sharding=spec.batch_sharding,
    )
    steps = n // batch_size
    x, y = data
    key, k_perm, k_steps = jax.random.split(state.key, 3)
    if batch_size == n:
        idx = jnp.zeros((1, 0), jnp.int32)  # full batch: no gather, order is irrelevant
    else:
        idx = jax.random.permutation(k_perm, n)[: steps * batch_size].reshape(steps, batch_size)

    def body(state, inp):
        batch_idx, k = inp
        return step(state, (x, y) if batch_size == n else (x[batch_idx], y[batch_idx]), k, lr)

    end, per_step = jax.lax.scan(body, state, (idx, jax.random.split(k_steps, steps)))
    metrics = {k: jnp.mean(v, axis=0) for k, v in per_step.items()}
    nan = jnp.full((), jnp.nan, metrics["loss"].dtype)
    evaluate_ = make_eval(layer, spec.loss, accuracy, spec.eval_batch_size)
    for prefix, ds in (("train", data if spec.eval_train else None), ("test", test_data)):
        if ds is not None:
            v, a = evaluate_(end.params, *ds)
            metrics[f"{prefix}_loss"] = jnp.where(end.diverged, nan, v)
            if accuracy is not None:
                metrics[f"{prefix}_accuracy"] = jnp.where(end.diverged, nan, a)
    metrics["diverged"] = end.diverged
    new_state = end._replace(key=jnp.where(end.diverged, state.key, key))
    return new_state, metrics, (per_step if spec.record == "step" else {})


# Jitted once per distinct spec (JAX's own cache keys on the static spec): repeated runs of one
# configuration, e.g. a loop over seeds with the same optimizer object, compile once.
@functools.partial(jax.jit, static_argnums=0)
def jit_epoch(spec: EpochSpec, state: TrainState, data: Dataset, test_data: Dataset | None, lr: Any = None):
    return _epoch(spec, state, data, test_data, lr)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def jit_sweep_epoch(spec: EpochSpec, lr_axis: int | None, shared_key: bool, state, data, test_data, lr):
    """K runs at once: :func:`_epoch` vmapped over state (and lr when ``lr_axis`` is 0).

    With ``shared_key`` every run still training holds the same key (one batch order for all, see
    :func:`shares_key`). That key then enters the vmap unbatched, so the epoch draws one permutation,
    gathers one batch per step and every product with the batch (a first layer's x W_k and its
    x̂ᵀ δ_k) is one matmul over the K models side by side, (B, d) @ (d, K·n), instead of K small ones.
    The key is taken from the first run that has not diverged; a diverged run keeps its own key, as in
    the unshared case, so each run's state equals its own :func:`train` either way.
    """
    epoch = functools.partial(_epoch, spec)
    if not shared_key:
        return jax.vmap(epoch, in_axes=(0, None, None, lr_axis))(state, data, test_data, lr)
    axes = TrainState(params=0, opt_state=0, key=None, step=0, diverged=0, diverged_step=0)
    shared = state._replace(key=state.key[jnp.argmin(state.diverged)])
    end, metrics, per_step = jax.vmap(epoch, in_axes=(axes, None, None, lr_axis))(shared, data, test_data, lr)
    # a run frozen before this epoch got the shared key back from _epoch; it keeps the one it froze with
    return end._replace(key=jnp.where(state.diverged, state.key, end.key)), metrics, per_step


def shares_key(state: TrainState) -> bool:
    """Whether every run of a stacked ``state`` that has not diverged holds the same PRNG key (a host check)."""
    live = ~np.asarray(state.diverged)
    bits = np.asarray(jax.random.key_data(state.key))[live]
    return bool(len(bits)) and bool(np.all(bits == bits[:1]))


def check_options(
    data: Any,
    test_data: Any,
    batch_size: Any,
    epochs: Any,
    record: str,
    grad: str,
    *,
    eval_batch_size: Any = None,
    resume: Any = None,
):
    """Validate the shared options of :func:`train` and :func:`fnnet.sweep`; returns the datasets.

    ``epochs`` is the total: at least 1 for a fresh run, at least 0 when resuming (a resumed run that
    has already reached ``epochs`` returns its result unchanged).
    """
    data = validate(data, "data")
    test_data = None if test_data is None else validate(test_data, "test_data")
    n = int(np.shape(data.x)[0])
    if not is_int(batch_size) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an integer in [1, {n}] (the number of examples), got {batch_size!r}")
    least = 0 if resume is not None else 1
    if not is_int(epochs) or epochs < least:
        raise ValueError(f"epochs must be an integer >= {least}, got {epochs!r}")
    if eval_batch_size is not None and (not is_int(eval_batch_size) or eval_batch_size < 1):
        raise ValueError(f"eval_batch_size must be None or an integer >= 1, got {eval_batch_size!r}")
    if record not in RECORDS:
        raise ValueError(f"record must be 'epoch' or 'step', got {record!r}")
    _check_grad(grad)
    as_jax = lambda ds: None if ds is None else Dataset(jnp.asarray(ds.x), jnp.asarray(ds.y))  # noqa: E731
    return as_jax(data), as_jax(test_data)


def setup(
    layer: Layer,
    loss: Loss,
    optimizer: Any,
    params: Params,
    data: Any,
    test_data: Any,
    *,
    batch_size: Any,
    epochs: Any,
    grad: str,
    record: str,
    per_layer_grad_norms: bool,
    accuracy: Any,
    eval_train: bool,
    eval_batch_size: Any,
    resume: Any,
    stacked: bool = False,
) -> tuple[EpochSpec, Dataset, Dataset | None]:
    """The option set-up of :func:`train` and :func:`fnnet.sweep`: ``(spec, data, test_data)``.

    Validates the options (:func:`check_options`) and the labels against the model's outputs
    (``stacked``: params with a leading model axis), resolves ``accuracy`` (:func:`accuracy_fn`) and
    builds the :class:`EpochSpec` (without a batch sharding; ``train`` adds its mesh's).
    """
    data, test_data = check_options(
        data, test_data, batch_size, epochs, record, grad, eval_batch_size=eval_batch_size, resume=resume
    )
    check_labels(layer, loss, params, {"data": data, "test_data": test_data}, stacked=stacked)
    spec = EpochSpec(
        layer,
        loss,
        optimizer,
        int(data.x.shape[0]),
        batch_size,
        grad=grad,
        record=record,
        per_layer_grad_norms=per_layer_grad_norms,
        accuracy=accuracy_fn(accuracy, loss, data.y),
        eval_train=eval_train,
        eval_batch_size=eval_batch_size,
    )
    return spec, data, test_data


def run_epochs(epoch_fn, state, lr, data, test_data, *, epochs, start, prior, steps, progress, callback, desc):
    """Call the compiled epoch ``epochs - start`` times; stack histories; NaN-fill after divergence."""
    hist, shist = [], []
    t0 = time.perf_counter()
    bar = tqdm(range(start, epochs), desc=desc, unit="epoch", disable=not progress, delay=2.0, leave=False)
    result = None
    for e in bar:
        state, m, sm = epoch_fn(state, data, test_data, lr)
        hist.append(m)
        shist.append(sm)
        diverged = np.asarray(m["diverged"])  # one host sync per epoch: also paces the progress bar
        shown = np.where(diverged, np.nan, np.asarray(m["loss"]))
        bar.set_postfix(loss=f"{np.nanmean(shown):.4g}" if not diverged.all() else "nan", diverged=int(diverged.sum()))
        if callback is not None or bool(diverged.all()):
            result = _assemble(state, prior, hist, shist, steps, time.perf_counter() - t0, e + 1)
            if callback is not None:
                callback(e, result)
            if bool(diverged.all()):
                break
    bar.close()
    return _assemble(state, prior, hist, shist, steps, time.perf_counter() - t0, max(epochs, start))


def _assemble(state, prior, hist, shist, steps, wall, upto):
    """A TrainResult whose histories cover ``upto`` epochs: prior + new, NaN after an early stop."""
    lead = np.ndim(state.step)  # 0 for one run, 1 for a sweep (K runs first)
    h = _join(prior.history if prior else {}, hist, upto, lead, stack=True)
    sh = _join(prior.step_history if prior else {}, [r for r in shist if r], upto * steps, lead, stack=False)
    return TrainResult(state.params, state, h, sh, steps, wall + (prior.wall_time if prior else 0.0))


def _join(prior: dict, rows: list[dict], length: int, lead: int, *, stack: bool) -> dict:
    """Prior arrays + new rows along axis ``lead``, padded to ``length`` with NaN (True for flags)."""
    out = {}
    for k in rows[0].keys() if rows else prior.keys():
        new = [np.asarray(r[k]) for r in rows]
        parts = ([np.asarray(prior[k])] if k in prior else []) + ([np.stack(new, axis=lead)] if stack and new else new)
        arr = np.concatenate(parts, axis=lead)
        missing = length - arr.shape[lead]
        if missing > 0:  # stopped early because every run diverged
            pad = list(arr.shape)
            pad[lead] = missing
            arr = np.concatenate([arr, np.full(pad, True if arr.dtype == bool else np.nan, arr.dtype)], axis=lead)
        out[k] = arr
    return out


def train(
    layer: Layer,
    loss: Loss,
    params: Params,
    data: Any,
    *,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    epochs: int,
    key: Array,
    grad: str = "manual",
    record: str = "epoch",
    per_layer_grad_norms: bool = False,
    test_data: Any = None,
    accuracy: Any = "auto",
    eval_train: bool = True,
    eval_batch_size: int | None = None,
    mesh: Any = None,
    progress: bool = True,
    resume: TrainResult | None = None,
    callback: Callable[[int, TrainResult], None] | None = None,
) -> TrainResult:
    """Train ``layer`` with ``loss`` on ``data`` for ``epochs`` epochs of ⌊N/B⌋ steps each.

    Each step is :func:`make_step`'s: (L, g) = value_and_grad over a batch (by the chosen ``grad``
    source); (u, s) = optimizer.update(g, s, θ); θ ← θ + u; θ ← layer.update_state(θ, cache) if
    present; not applied if non-finite. See the module docstring for the regimes, the records and
    divergence.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}")
    spec, data, test_data = setup(
        layer,
        loss,
        optimizer,
        params,
        data,
        test_data,
        batch_size=batch_size,
        epochs=epochs,
        grad=grad,
        record=record,
        per_layer_grad_norms=per_layer_grad_norms,
        accuracy=accuracy,
        eval_train=eval_train,
        eval_batch_size=eval_batch_size,
        resume=resume,
    )
    n = spec.num_examples
    if mesh is not None:
        from fnnet.parallel import batch_sharding, replicate

        spec = spec._replace(batch_sharding=batch_sharding(mesh, batch_size))
        params = replicate(params, mesh)
        data = replicate(data, mesh)
        test_data = None if test_data is None else replicate(test_data, mesh)
    state = resume.state if resume is not None else init_state(params, optimizer, key)
    if mesh is not None:
        state = replicate(state, mesh)
    start = len(resume.history["loss"]) if resume is not None else 0
    return run_epochs(
        functools.partial(jit_epoch, spec),
        state,
        None,
        data,
        test_data,
        epochs=epochs,
        start=start,
        prior=resume,
        steps=n // batch_size,
        progress=progress,
        callback=callback,
        desc="train",
    )
