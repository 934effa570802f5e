"""The PyTorch column of ``fnnet bench``: every entry's model in PyTorch eager, with fnnet's parameters, timed
against fnnet's train step in the same process.

**The same model.** :func:`torch_model` translates the entry's fnnet Layer tree, child by child, into
``torch.nn`` modules and copies fnnet's initial parameters into them (through NumPy), so both sides start
from the same values and train the same function:

* ``serial`` -> ``nn.Sequential``; ``residual`` -> x + F(x); ``transformer_block`` is a serial of
  residuals, so it translates as one (Pre-LN: LayerNorm, causal attention, LayerNorm, MLP 4x with the
  exact GELU, the structure of :func:`fnnet.transformer_block`).
* ``Dense`` -> ``nn.Linear`` (weight = Wᵀ); ``Conv2D`` (3x3, SAME, stride 1) -> ``nn.Conv2d`` (weight = W
  from HWIO to OIHW, padding 1); ``MaxPool(2)`` -> ``nn.MaxPool2d(2)``; ``Flatten`` -> ``nn.Flatten``.
  PyTorch's images are logically NCHW, and ``Flatten`` of NCHW orders features (c, h, w), fnnet's NHWC
  (h, w, c): the rows of the Dense after the Flatten are permuted to match, so no copy enters the step.
* ``RNN`` (tanh), ``LSTM``, ``GRU`` -> ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` (``batch_first``), the last
  hidden state into the next layer. The layouts are PyTorch's (gates [i, f, g, o] and [r, z, n]):
  ``weight_ih = Wᵀ``, ``weight_hh = Uᵀ``. fnnet's RNN and LSTM have one bias b, PyTorch's two; b goes to
  ``bias_ih`` and ``bias_hh`` is held at 0 and frozen (``requires_grad=False``), so both sides train the
  same parameters (fnnet's GRU has both biases, as PyTorch's).
* ``BatchNorm`` -> ``nn.BatchNorm1d`` in train mode (momentum 1 − 0.9 = 0.1, as PyTorch counts it;
  ε = 1e-5; the running variance unbiased on both sides); ``LayerNorm`` -> ``nn.LayerNorm`` (ε = 1e-5).
* ``MultiHeadAttention(h, causal)`` -> one fused ``nn.Linear(d, 3d)`` for Q, K, V (the rows of
  ``[Wq | Wk | Wv]ᵀ``, as ``nn.MultiheadAttention``'s ``in_proj_weight``), ``F.scaled_dot_product_attention``
  with ``is_causal``, and ``nn.Linear(d, d)`` for Wo.

A Layer's label and its params give the translation; settings that neither shows (a LayerNorm's ε, a
BatchNorm's momentum, a convolution's dilation) are taken at fnnet's defaults, which every entry uses.
The benchmark checks the translation on every run: PyTorch's loss at the initial parameters is recorded
next to fnnet's (``loss_rel_diff``), and ``tests/test_bench_peers.py`` pins loss, parameter count and one
SGD step on the quick set.

**The same loss and step.** ``softmax_cross_entropy`` with integer labels is ``F.cross_entropy`` (mean
over the batch). fnnet's ``mse`` is ½‖ŷ − y‖² summed per example and averaged over the batch (see
:mod:`fnnet.losses`), so here it is ``0.5 * F.mse_loss(pred, y, reduction="sum") / B``, not
``F.mse_loss``'s mean over every element. The step is plain SGD, p ← p − lr·g with lr =
:data:`fnnet.bench.timing.LR`, in float32: ``torch.autograd.grad`` returns the gradients (nothing
accumulates in ``.grad``) and ``torch._foreach_add_`` applies them, the kernel ``torch.optim.SGD`` runs
with ``foreach=True``.

**Images.** The CNN's input is fnnet's NHWC batch viewed as NCHW with ``permute(0, 3, 1, 2)``: that view
is PyTorch's ``channels_last`` memory format, without a copy, and the model's convolutions are put in the
same format (:data:`MEMORY_FORMAT`). On the 2-core AMD EPYC this was written on (shared with other jobs),
PyTorch 2.13's eager ``cnn_28x28_b64`` step took 0.94 times as long in channels_last as in contiguous NCHW
with one thread (median of 9 per-round ratios; 28 ms against 29 ms) and the same within the noise with two.

**Timing**, the protocol of :mod:`fnnet.bench.timing` with PyTorch in the rotation: fnnet's manual and
autodiff steps (compiled here again, so they can be interleaved), PyTorch eager and, when it compiles,
``torch.compile`` of the model (the update stays eager), sampled **interleaved**, the order rotated by one
each round (manual, autodiff, eager, compiled; then autodiff, eager, compiled, manual; ...), after two
warm-up calls and a calibration call that sets each one's calls per sample (at least ``min_time``
seconds). The ratios are medians over the rounds of the per-round ratios (fnnet / PyTorch), so a burst
of load on the machine cancels within a round. Both sides get N = the CPU count threads:
``torch.set_num_threads(N)`` (restored afterwards), and XLA's CPU backend, which uses every core by
default. OpenMP threads that spin after a PyTorch sample may still take CPU from the next sample; the
rotation spreads that over every source, and samples of ``min_time`` (0.2 s by default) keep it small.

**The device** follows JAX's (:func:`torch_device`): on JAX's CPU backend PyTorch runs on the CPU; on its
GPU backend, on the GPU (``cuda``, which is also PyTorch's name for a ROCm device). Where this torch build
has no such device, or JAX runs on a TPU, the column is skipped with the reason: a PyTorch step on the
host against fnnet's on an accelerator would compare two machines, not two implementations. On a GPU
both sides are asynchronous, so they are timed alike: JAX waits for the last result of a sample, and
PyTorch's result of a sample carries a ``block_until_ready`` that calls ``torch.cuda.synchronize()``.
float32 products there run as JAX's GPU default does, with TensorFloat-32 where the GPU has it, so
PyTorch is set the same way for the run (``torch.set_float32_matmul_precision("high")`` and
``torch.backends.cudnn.allow_tf32``; both restored afterwards), and the row records it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn
from fnnet.bench import timing
from fnnet.bench.models import Entry
from fnnet.core import Layer
from fnnet.layers.combinators import parts
from fnnet.layers.dense import dense_of

SKIPPED = "torch not installed: PyTorch column skipped"
MEMORY_FORMAT = "channels_last"  # of images: NHWC in memory, as fnnet's; the alternative is "contiguous_format"


def torch_version() -> str | None:
    """PyTorch's version, or None when it is not installed (any ImportError counts as not installed)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def param_count(model: Any) -> int:
    """Trainable parameters plus floating buffers: what fnnet's params hold (BatchNorm's running statistics
    included, PyTorch's frozen zero ``bias_hh`` and integer ``num_batches_tracked`` not)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable + sum(b.numel() for b in model.buffers() if b.is_floating_point())


def fnnet_param_count(params: Any) -> int:
    """Every leaf of fnnet's params, BatchNorm's running statistics included (as the bench row's ``params``)."""
    return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


# ----------------------------------------------------------------------------------------------
# the model


def _activation(layer: Layer):
    from torch import nn

    kind, kwargs = layer.forward.activation
    if kind == "relu":
        return nn.ReLU()
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "tanh":
        return nn.Tanh()
    if kind == "gelu":
        return nn.GELU(approximate="tanh" if kwargs.get("approximate") else "none")
    if kind == "identity":
        return nn.Identity()
    raise NotImplementedError(f"no PyTorch peer for activation {kind!r}")


def _modules():
    """The two modules torch.nn lacks, defined on first use so that importing this file needs no torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Residual(nn.Module):
        """y = x + F(x)."""

        def __init__(self, body: nn.Module):
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

    class SelfAttention(nn.Module):
        """Multi-head self-attention with fused Q, K, V projections and ``F.scaled_dot_product_attention``."""

        def __init__(self, d: int, heads: int, causal: bool, bias: bool):
            super().__init__()
            self.heads, self.causal = heads, causal
            self.qkv = nn.Linear(d, 3 * d, bias=bias)
            self.out = nn.Linear(d, d, bias=bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, T, d = x.shape
            q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
            return self.out(o.transpose(1, 2).reshape(B, T, d))

    class LastState(nn.Module):
        """A batch-first recurrent module's last hidden state (B, H), or every state (B, T, H)."""

        def __init__(self, cell: nn.Module, sequences: bool):
            super().__init__()
            self.cell, self.sequences = cell, sequences

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.cell(x)
            return out if self.sequences else out[:, -1]

    return Residual, SelfAttention, LastState


class _Translation:
    """One walk over a Layer tree; ``perm`` is the pending row order after a Flatten of an NCHW image."""

    def __init__(self):
        self.perm: np.ndarray | None = None
        self.Residual, self.SelfAttention, self.LastState = _modules()

    def layer(self, layer: Layer, params: Any, in_shape: tuple[int, ...]):
        from torch import nn

        tree = parts(layer)
        if tree is not None:
            kind, children = tree
            if kind == "residual":
                body, out = self.layer(children[0], params, in_shape)
                return self.Residual(body), out
            mods = []
            for child, p in zip(children, params):
                m, in_shape = self.layer(child, p, in_shape)
                mods.append(m)
            return nn.Sequential(*mods), in_shape
        label = layer.label
        if getattr(layer.forward, "activation", None) is not None:
            return _activation(layer), in_shape
        if dense_of(layer) is not None:
            return self.dense(params, in_shape)
        head = label.split("(", 1)[0]
        method = {
            "Conv2D": self.conv,
            "MaxPool": self.pool,
            "Flatten": self.flatten,
            "BatchNorm": self.batchnorm,
            "LayerNorm": self.layernorm,
            "RNN": self.recurrent,
            "LSTM": self.recurrent,
            "GRU": self.recurrent,
            "MultiHeadAttention": self.attention,
        }.get(head)
        if method is None:
            raise NotImplementedError(f"no PyTorch peer for fnnet layer {label}")
        if self.perm is not None and head != "Flatten":
            raise NotImplementedError(f"{label} after a Flatten of an image: only a Dense may follow it here")
        return method(layer, params, in_shape)

    def dense(self, params: Any, in_shape: tuple[int, ...]):
        import torch
        from torch import nn

        W = np.asarray(params["W"])
        if self.perm is not None:
            W, self.perm = W[self.perm], None
        m = nn.Linear(W.shape[0], W.shape[1], bias="b" in params)
        with torch.no_grad():
            m.weight.copy_(torch.tensor(W.T))
            if "b" in params:
                m.bias.copy_(torch.tensor(np.asarray(params["b"])))
        return m, tuple(in_shape[:-1]) + (W.shape[1],)

    def conv(self, layer: Layer, params: Any, in_shape: tuple[int, ...]):
        import torch
        from torch import nn

        out, _ = layer.init(jax.random.key(0), in_shape)
        kh, kw, c_in, c_out = params["W"].shape
        if tuple(out[:2]) == tuple(in_shape[:2]) and kh % 2 and kw % 2:
            pad = (kh // 2, kw // 2)
        elif tuple(out[:2]) == (in_shape[0] - kh + 1, in_shape[1] - kw + 1):
            pad = (0, 0)
        else:
            raise NotImplementedError(f"{layer.label}: only stride-1 SAME or VALID convolutions have a peer here")
        m = nn.Conv2d(c_in, c_out, (kh, kw), padding=pad, bias="b" in params)
        with torch.no_grad():
            m.weight.copy_(torch.tensor(np.asarray(params["W"]).transpose(3, 2, 0, 1)))
            if "b" in params:
                m.bias.copy_(torch.tensor(np.asarray(params["b"])))
        return m, tuple(out)

    def pool(self, layer: Layer, params: Any, in_shape: tuple[int, ...]):
        from torch import nn

        out, _ = layer.init(jax.random.key(0), in_shape)
        k = in_shape[0] // out[0]
        if (in_shape[0] // k, in_shape[1] // k) != tuple(out[:2]) or in_shape[1] // out[1] != k:
            raise NotImplementedError(f"{layer.label}: only square windows with stride = window have a peer here")
        return nn.MaxPool2d(k), tuple(out)

    def flatten(self, layer: Layer, params: Any, in_shape: tuple[int, ...]):
        from torch import nn

        if len(in_shape) == 3:  # an NHWC image, NCHW in PyTorch: Dense rows in (c, h, w) order
            h, w, c = in_shape
            self.perm = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        return nn.Flatten(), (int(np.prod(in_shape)),)

    def batchnorm(self, layer: Layer, params: Any, in_shape: tuple[int, ...]):
        import torch
        from torch import nn

        if len(in_shape) != 1:
            raise NotImplementedError("BatchNorm has a PyTorch peer here on (batch, features) inputs only")
        c = in_shape[0]
        m = nn.BatchNorm1d(c, eps=1e-5, momentum=0.1)
        with torch.no_grad():
            m.weight.copy_(torch.tensor(np.asarray(params["gamma"])))
            m.bias.copy_(torch.tensor(np.asarray(params["beta"])))
            m.running_mean.copy_(torch.tensor(np.asarray(params["state"]["mean"])))
            m.running_var.copy_(torch.tensor(np.asarray(params["state"]["var"])))
        return m.train(), in_shape

    def layernorm(self, layer: Layer, params: Any, in_shape: tuple[int, ...]):
        import torch
        from torch import nn

        affine = bool(params)
        m = nn.LayerNorm(in_shape[-1], eps=1e-5, elementwise_affine=affine)
        if affine:
            with torch.no_grad():
                m.weight.copy_(torch.tensor(np.asarray(params["gamma"])))
                m.bias.copy_(torch.tensor(np.asarray(params["beta"])))
        return m, in_shape

    def recurrent(self, layer: Layer, params: Any, in_shape: tuple[int, ...]):
        import torch
        from torch import nn

        out, _ = layer.init(jax.random.key(0), in_shape)
        kind = layer.label.split("(", 1)[0]
        d_in, H = in_shape[-1], params["U"].shape[0]
        cell = {
            "RNN": lambda: nn.RNN(d_in, H, nonlinearity="tanh", batch_first=True),
            "LSTM": lambda: nn.LSTM(d_in, H, batch_first=True),
            "GRU": lambda: nn.GRU(d_in, H, batch_first=True),
        }[kind]()
        with torch.no_grad():
            cell.weight_ih_l0.copy_(torch.tensor(np.asarray(params["W"]).T))
            cell.weight_hh_l0.copy_(torch.tensor(np.asarray(params["U"]).T))
            cell.bias_ih_l0.copy_(torch.tensor(np.asarray(params["b"])))
            if kind == "GRU":
                cell.bias_hh_l0.copy_(torch.tensor(np.asarray(params["bh"])))
            else:  # fnnet's one bias: PyTorch's second stays 0, untrained
                cell.bias_hh_l0.zero_()
                cell.bias_hh_l0.requires_grad_(False)
        return self.LastState(cell, len(out) == 2), tuple(out)

    def attention(self, layer: Layer, params: Any, in_shape: tuple[int, ...]):
        import torch

        found = re.match(r"MultiHeadAttention\((\d+)(, causal)?\)", layer.label)
        if found is None:
            raise NotImplementedError(f"cannot read heads and causality from {layer.label}")
        d = in_shape[-1]
        bias = "bq" in params
        m = self.SelfAttention(d, int(found.group(1)), found.group(2) is not None, bias)
        with torch.no_grad():
            m.qkv.weight.copy_(torch.tensor(np.concatenate([np.asarray(params[w]).T for w in ("Wq", "Wk", "Wv")])))
            m.out.weight.copy_(torch.tensor(np.asarray(params["Wo"]).T))
            if bias:
                m.qkv.bias.copy_(torch.tensor(np.concatenate([np.asarray(params[b]) for b in ("bq", "bk", "bv")])))
                m.out.bias.copy_(torch.tensor(np.asarray(params["bo"])))
        return m, in_shape


def torch_device() -> tuple[str | None, str | None]:
    """Where PyTorch's twin runs: ``(device, None)``, or ``(None, the reason it cannot)``.

    The device is the kind JAX computes on, so that both sides share one machine: ``"cpu"`` on JAX's CPU
    backend, ``"cuda"`` on its GPU backend when this torch build sees a GPU (CUDA or ROCm). A TPU, or a
    GPU that this torch cannot use, has no twin here.
    """
    import torch

    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu", None
    if backend in ("gpu", "cuda", "rocm") and torch.cuda.is_available():
        return "cuda", None
    return None, (
        f"JAX runs on {backend} ({jax.devices()[0].device_kind}) and PyTorch {torch.__version__} has no device "
        "there: PyTorch column skipped (PyTorch on the host against fnnet on the accelerator would compare "
        "machines, not implementations)"
    )


@contextlib.contextmanager
def _torch_settings(torch: Any, device: str, threads: int):
    """PyTorch's thread count and, on a GPU, TensorFloat-32 float32 products (JAX's GPU default) for the run;
    every setting restored afterwards."""
    before = torch.get_num_threads(), torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_num_threads(threads)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.set_float32_matmul_precision(before[1])
        torch.backends.cudnn.allow_tf32 = before[2]


class _Pending:
    """A PyTorch result on a GPU, for :func:`jax.block_until_ready`: waiting for it synchronizes the device,
    so a PyTorch sample ends when its last step's kernels have run, as a JAX sample does."""

    def __init__(self, value: Any, synchronize: Callable[[], None]):
        self.value, self._synchronize = value, synchronize

    def block_until_ready(self) -> _Pending:
        self._synchronize()
        return self


def torch_model(layer: Layer, params: Any, in_shape: tuple[int, ...], device: str = "cpu"):
    """The PyTorch module of ``layer`` holding ``params`` (copied) on ``device``, in train mode;
    NotImplementedError for a layer without a peer (the message names it)."""
    import torch

    model, _ = _Translation().layer(layer, params, tuple(in_shape))
    model = model.to(device)
    if len(in_shape) == 3:
        model = model.to(memory_format=getattr(torch, MEMORY_FORMAT))
    return model.train()


def torch_loss(loss: Any) -> Callable:
    """fnnet's loss in PyTorch: ``F.cross_entropy`` for integer labels; ½ Σ (ŷ − y)² / B for ``mse``."""
    from torch.nn import functional as F

    if loss is fn.softmax_cross_entropy:
        return F.cross_entropy
    if loss is fn.mse:
        return lambda pred, y: 0.5 * F.mse_loss(pred, y, reduction="sum") / pred.shape[0]
    raise NotImplementedError(f"no PyTorch peer for the loss {type(loss).__name__}")


def torch_batch(x: Any, y: Any, device: str = "cpu") -> tuple[Any, Any]:
    """fnnet's (x, y) as PyTorch tensors on ``device``: images NHWC -> an NCHW view (channels_last), labels
    int64."""
    import torch

    xt = torch.tensor(np.asarray(x), device=device)
    if xt.ndim == 4:
        xt = xt.permute(0, 3, 1, 2).contiguous(memory_format=getattr(torch, MEMORY_FORMAT))
    y = np.asarray(y)
    yt = torch.tensor(y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y, device=device)
    return xt, yt


def make_step(model: Any, loss: Callable, lr: float = timing.LR) -> Callable:
    """``step(x, y) -> loss`` at the parameters before the step; updates ``model``'s parameters in place by
    p ← p − lr·g (and BatchNorm's running statistics, in its forward)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]

    def step(x, y):
        value = loss(model(x), y)
        grads = torch.autograd.grad(value, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-lr)
        return value.detach()

    return step


# ----------------------------------------------------------------------------------------------
# timing


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def bench_torch(
    entry: Entry,
    *,
    repeats: int,
    min_time: float,
    peak_gflops: float | None = None,
    fnnet_loss: float | None = None,
    compile: bool = True,
    threads: int | None = None,
) -> dict:
    """The ``torch`` dict of one bench row: PyTorch's step time and the interleaved fnnet / PyTorch ratios.

    ``fnnet_loss``, fnnet's loss at the initial params, gives ``loss_rel_diff`` (the check that both sides
    compute one function). A model without a peer, or a JAX device without a PyTorch twin
    (:func:`torch_device`), gives ``{"skipped": reason}``; a ``torch.compile`` that fails gives
    ``"compile": "n/a: <the exception's first line>"`` and the rest of the dict.
    """
    import torch

    threads = threads or os.cpu_count() or 1
    device, why_not = torch_device()
    out: dict[str, Any] = {"version": torch.__version__, "threads": threads, "xla_threads": "all cores (default)"}
    if device is None:
        return {**out, "device": None, "skipped": why_not}
    out["device"] = device if device == "cpu" else f"{device} ({torch.cuda.get_device_name()})"
    out["precision"] = "float32" if device == "cpu" else "TensorFloat-32 products on both sides (JAX's GPU default)"
    layer = entry.build()
    params, x, y = timing.inputs(entry)
    try:
        model = torch_model(layer, params, entry.in_shape, device)
        loss = torch_loss(entry.loss)
    except NotImplementedError as e:
        return {**out, "skipped": str(e)}
    out["params"] = param_count(model)
    out["params_match"] = out["params"] == fnnet_param_count(params)
    if len(entry.in_shape) == 3:
        out["memory_format"] = MEMORY_FORMAT
    xt, yt = torch_batch(x, y, device)

    def waited(step: Callable) -> Callable[[], Any]:
        if device == "cpu":
            return lambda: step(xt, yt)  # ready when the call returns
        return lambda: _Pending(step(xt, yt), torch.cuda.synchronize)

    with _torch_settings(torch, device, threads):
        calls: dict[str, Callable[[], Any]] = {}
        compiled_model = copy.deepcopy(model)
        eager = make_step(model, loss)
        out["loss"] = float(eager(xt, yt))
        if fnnet_loss is not None:
            out["loss_rel_diff"] = abs(out["loss"] - fnnet_loss) / max(abs(fnnet_loss), 1e-30)
        for s in ("manual", "autodiff"):
            exe = jax.jit(timing.make_step(layer, entry.loss, s), donate_argnums=0).lower(params, x, y).compile()
            state = {"p": jax.tree_util.tree_map(jnp.copy, params)}

            def call(exe=exe, state=state):
                state["p"], value = exe(state["p"], x, y)
                return value

            calls[s] = call
        calls["torch_eager"] = waited(eager)
        if compile:
            try:
                step = make_step(torch.compile(compiled_model), loss)
                t0 = time.perf_counter()
                jax.block_until_ready(waited(step)())
                out["compile_s"] = time.perf_counter() - t0
                calls["torch_compile"] = waited(step)
                out["compile"] = "ok"
            except Exception as e:  # no C++ compiler, an unsupported Python, a graph dynamo refuses, ...
                out["compile"] = "n/a: " + _one_line(e)
        else:
            out["compile"] = "n/a: not tried (--quick or --no-torch-compile)"
        samples = _interleaved(calls, repeats, min_time)

    step_s = {s: statistics.median(v) for s, v in samples.items()}
    out["step_s"] = step_s["torch_eager"]
    out["step_s_compile"] = step_s.get("torch_compile")
    out["fnnet_step_s"] = {s: step_s[s] for s in ("manual", "autodiff")}
    for s in ("manual", "autodiff"):
        out[f"ratio_{s}_torch"] = statistics.median(a / b for a, b in zip(samples[s], samples["torch_eager"]))
        if "torch_compile" in samples:
            out[f"ratio_{s}_torch_compile"] = statistics.median(
                a / b for a, b in zip(samples[s], samples["torch_compile"])
            )
    if peak_gflops:
        frac = {s: entry.flops / t / 1e9 / peak_gflops for s, t in step_s.items()}
        out["peak_fraction"] = frac["torch_eager"]
        out["peak_fraction_compile"] = frac.get("torch_compile")
        out["fnnet_peak_fraction"] = {s: frac[s] for s in ("manual", "autodiff")}
    out["repeats"] = repeats
    return out


def _interleaved(calls: dict[str, Callable[[], Any]], repeats: int, min_time: float) -> dict[str, list[float]]:
    """Seconds per call of each callable: warm-up, calibration, then ``repeats`` interleaved rounds, the order
    rotated by one each round, so that each callable follows each other one equally often (what a PyTorch
    sample leaves behind, such as OpenMP threads still spinning, then falls on every fnnet source alike)."""
    inner = {}
    for s, call in calls.items():
        for _ in range(2):
            jax.block_until_ready(call())
        inner[s] = max(1, int(np.ceil(min_time / max(timing.seconds_per_call(call, 1), 1e-7))))
    samples: dict[str, list[float]] = {s: [] for s in calls}
    order = list(calls)
    for i in range(repeats):
        for s in order[i % len(order) :] + order[: i % len(order)]:
            samples[s].append(timing.seconds_per_call(calls[s], inner[s]))
    return samples


# ----------------------------------------------------------------------------------------------
# the table


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def ratio_text(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


TABLE = [
    ("entry", lambda r, t: r["entry"]),
    ("torch eager ms", lambda r, t: _ms(t.get("step_s"))),
    ("torch.compile ms", lambda r, t: _ms(t.get("step_s_compile"))),
    ("manual/torch", lambda r, t: ratio_text(t.get("ratio_manual_torch"))),
    ("autodiff/torch", lambda r, t: ratio_text(t.get("ratio_autodiff_torch"))),
    ("manual/compile", lambda r, t: ratio_text(t.get("ratio_manual_torch_compile"))),
    ("% peak man/auto/eager/compile", lambda r, t: "/".join(map(_pct, _fractions(t)))),
    ("params equal", lambda r, t: {True: "yes", False: "NO"}.get(t.get("params_match"), "-")),
    ("loss rel diff", lambda r, t: "-" if "loss_rel_diff" not in t else f"{t['loss_rel_diff']:.1e}"),
    ("torch.compile", lambda r, t: t.get("skipped") or t.get("compile", "-")),
]


def _fractions(t: dict) -> list[float | None]:
    f = t.get("fnnet_peak_fraction") or {}
    return [f.get("manual"), f.get("autodiff"), t.get("peak_fraction"), t.get("peak_fraction_compile")]


def where_text(t: dict) -> str:
    """Where both sides ran, from a ``torch`` dict: the thread count on a CPU, the device and precision on a GPU."""
    device = t.get("device", "cpu")
    if device is None:
        return "PyTorch not run (no device beside JAX's)"
    if device == "cpu":
        return f"N = {t['threads']} threads on both sides (torch.set_num_threads, XLA's CPU backend on all cores)"
    return f"both sides on {device}, {t.get('precision', '')}"


def table_lines(rows: list[dict]) -> list[str]:
    """The markdown table "fnnet / PyTorch" for the rows that have a ``torch`` dict (empty when none has)."""
    rows = [r for r in rows if "torch" in r]
    if not rows:
        return []
    t0 = rows[0]["torch"]
    lines = [
        "## fnnet / PyTorch",
        "",
        f"PyTorch {t0['version']} eager, same model, batch, loss, parameters and SGD step; {where_text(t0)}. "
        "Ratios: medians of per-round ratios of interleaved samples (fnnet manual, autodiff, torch eager, "
        "torch.compile); below 1, fnnet is faster. % peak: of the measured matmul peak.",
        "",
        "| " + " | ".join(h for h, _ in TABLE) + " |",
        "|" + "---|" * len(TABLE),
    ]
    for r in rows:
        lines.append("| " + " | ".join(f(r, r["torch"]) for _, f in TABLE) + " |")
    return lines + [""]


def print_table(rows: list[dict]) -> None:
    """The same table, printed with aligned columns."""
    rows = [r for r in rows if "torch" in r]
    if not rows:
        return
    cells = [[h for h, _ in TABLE]] + [[f(r, r["torch"]) for _, f in TABLE] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE))]
    t0 = rows[0]["torch"]
    print(f"fnnet / PyTorch {t0['version']} eager: {where_text(t0)}. Ratio < 1: fnnet faster.")
    for c in cells:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))), flush=True)
