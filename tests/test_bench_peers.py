"""The PyTorch column of ``fnnet bench``: each quick entry's PyTorch twin, and small twins of the full set's
other kinds, is the same model with the same loss (equal losses at fnnet's initial parameters, equal
parameter counts) and takes the same SGD step; the column is there with torch and skipped, with one
message, without it. No timing is asserted."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import jax
import numpy as np
import pytest

from fnnet.bench import models, peers, report, timing
from fnnet.cli import bench

QUICK = models.entries(quick=True)
# small twins of the full set's kinds the quick set lacks: the LSTM, the GRU, the GPT block, other activations
KINDS = [
    models.recurrent("lstm_t5_b3", "lstm", 5, 4, 8, 3),
    models.recurrent("gru_t5_b3", "gru", 5, 4, 8, 3),
    models.gpt_block("gpt_block_t16_d32_h4_b2", 16, 32, 4, 2),
    models.mlp("mlp_gelu_8-16-16-4_b4", [8, 16, 16, 4], 4, act="gelu"),
    models.mlp("mlp_tanh_8-16-4_b4", [8, 16, 4], 4, act="tanh"),
    models.mlp("mlp_sigmoid_8-16-4_b4", [8, 16, 4], 4, act="sigmoid"),
]
EVERY = QUICK + KINDS


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _pair(entry, params=None):
    """(layer, params, x, y, torch model holding params, torch loss, torch x, torch y)."""
    layer = entry.build()
    p0, x, y = timing.inputs(entry)
    params = p0 if params is None else params
    xt, yt = peers.torch_batch(x, y)
    return layer, params, x, y, peers.torch_model(layer, params, entry.in_shape), peers.torch_loss(entry.loss), xt, yt


def _state(model) -> dict[str, np.ndarray]:
    """Every floating parameter and buffer of a PyTorch model, in float64, by name."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {n: t.detach().double().numpy().copy() for n, t in named if t.is_floating_point()}


def _rel(a: dict, b: dict) -> float:
    """‖a − b‖ / ‖b‖ over all tensors together (a tensor whose true change is 0 holds only rounding)."""
    assert a.keys() == b.keys()
    diff = sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a)
    return float(np.sqrt(diff / max(sum(float(np.sum(b[k] ** 2)) for k in b), 1e-300)))


@pytest.mark.parametrize("entry", EVERY, ids=[e.name for e in EVERY])
def test_torch_loss_at_the_shared_initial_params_equals_fnnets(torch, entry):
    layer, params, x, y, model, loss, xt, yt = _pair(entry)
    fnnet_loss = float(entry.loss.forward(layer.forward(params, x)[0], y)[0])
    with torch.no_grad():
        torch_loss = float(loss(model(xt), yt))
    assert abs(torch_loss - fnnet_loss) <= 1e-5 * abs(fnnet_loss), (torch_loss, fnnet_loss)


@pytest.mark.parametrize("entry", EVERY, ids=[e.name for e in EVERY])
def test_parameter_counts_match(torch, entry):
    _, params, _, _, model, _, _, _ = _pair(entry)
    assert peers.param_count(model) == peers.fnnet_param_count(params) > 0


@pytest.mark.parametrize("entry", EVERY, ids=[e.name for e in EVERY])
def test_one_sgd_step_gives_the_same_params(torch, entry):
    """At the bench's lr the updated params agree to 1e-4; at lr = 1 the change itself (−g, and BatchNorm's
    running statistics) does, which a wrong gradient would fail (at lr = 1e-3 it hides under the params)."""
    for lr, what in ((timing.LR, "params"), (1.0, "change")):
        layer, params, x, y, model, loss, xt, yt = _pair(entry)
        before = _state(model)
        peers.make_step(model, loss, lr)(xt, yt)
        stepped = jax.jit(timing.make_step(layer, entry.loss, "manual", lr))(params, x, y)[0]
        expected = _state(peers.torch_model(layer, stepped, entry.in_shape))
        got = _state(model)
        if what == "change":
            got = {k: got[k] - before[k] for k in got}
            expected = {k: expected[k] - before[k] for k in expected}
        else:
            for k in got:
                np.testing.assert_allclose(got[k], expected[k], rtol=1e-4, atol=1e-6, err_msg=f"{entry.name} {k}")
        assert _rel(got, expected) <= 1e-4, (entry.name, what, _rel(got, expected))


def test_a_bench_row_gains_the_torch_column(torch, tmp_path):
    """``fnnet bench --quick`` with torch: each row has its ``torch`` dict, the markdown its table."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = bench.main(["--quick", "--json", "--only", "mlp_40-100,rnn", "--repeats", "2", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads(buf.getvalue())
    assert result["settings"]["torch"] is True and result["settings"]["torch_compile"] is False  # --quick
    for row in result["entries"]:
        t = row["torch"]
        assert t["version"] == torch.__version__ and t["threads"] >= 1
        assert t["params_match"] is True and t["params"] == row["params"]
        assert t["loss_rel_diff"] <= 1e-5
        assert t["step_s"] > 0 and t["ratio_manual_torch"] > 0 and t["ratio_autodiff_torch"] > 0
        assert 0 < t["peak_fraction"] and 0 < t["fnnet_peak_fraction"]["manual"]
        assert t["compile"].startswith("n/a: not tried")  # --quick leaves torch.compile out
    md = (tmp_path / f"{result['machine']['name']}-quick.md").read_text()
    assert "## fnnet / PyTorch" in md and "| manual/torch |" in md and "man/torch" in md


def test_a_failing_torch_compile_is_recorded_not_raised(torch, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Compiler: cc not found\nsecond line of the message")

    monkeypatch.setattr(torch, "compile", refuse)
    t = peers.bench_torch(QUICK[0], repeats=1, min_time=1e-3, compile=True)
    assert t["compile"] == "n/a: RuntimeError: Compiler: cc not found"
    assert t["step_s"] > 0 and t["step_s_compile"] is None and "ratio_manual_torch_compile" not in t


def test_without_torch_the_column_is_skipped_with_one_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert peers.torch_version() is None
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = bench.main(["--quick", "--json", "--only", "mlp_40-100", "--repeats", "1", "--out", ""])
    assert code == 0
    assert err.getvalue().count(peers.SKIPPED) == 1
    result = json.loads(out.getvalue())
    assert result["settings"]["torch"] is False
    assert all("torch" not in row for row in result["entries"])
    md = report.markdown(result)
    assert "fnnet / PyTorch" not in md and "| man/torch |" in md  # the column is there, its cells "-"


def test_the_torch_device_follows_jaxs_backend(torch, monkeypatch):
    """CPU with CPU; the GPU with a GPU this torch sees; otherwise no twin, and the row says why."""
    assert peers.torch_device() == ("cpu", None)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert peers.torch_device() == ("cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, why = peers.torch_device()
    assert device is None and "JAX runs on gpu" in why and "skipped" in why
    t = peers.bench_torch(QUICK[0], repeats=1, min_time=1e-3, compile=False)
    assert t["skipped"] == why and "step_s" not in t
    assert peers.where_text(t) == "PyTorch not run (no device beside JAX's)"  # the header does not claim a device
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert peers.torch_device()[0] is None


def test_a_gpu_sample_waits_for_the_device_once_at_its_end():
    """On a GPU PyTorch is asynchronous, as JAX is: a sample of n calls synchronizes once, after the last."""
    waits = []
    value = object()
    calls = []

    def call():
        calls.append(len(waits))  # no wait has happened before any call of the sample
        return peers._Pending(value, lambda: waits.append(len(calls)))

    assert timing.seconds_per_call(call, 5) >= 0
    assert calls == [0, 0, 0, 0, 0] and waits == [5]
    assert call().value is value


def test_torch_settings_hold_for_the_run_and_are_restored(torch):
    before = torch.get_num_threads(), torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    with peers._torch_settings(torch, "cuda", 1):
        assert torch.get_num_threads() == 1
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32 is True
    assert (torch.get_num_threads(), torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before
    with peers._torch_settings(torch, "cpu", 1):
        assert torch.get_float32_matmul_precision() == before[1]  # on the CPU only the threads change
    assert torch.get_num_threads() == before[0]


def test_the_table_names_where_both_sides_ran():
    cpu = {"threads": 2}
    gpu = {"threads": 16, "device": "cuda (NVIDIA H100)", "precision": "TensorFloat-32 products on both sides"}
    assert peers.where_text(cpu).startswith("N = 2 threads on both sides")
    assert peers.where_text(gpu) == "both sides on cuda (NVIDIA H100), TensorFloat-32 products on both sides"


def test_the_sweeps_torch_loop_leaves_torchs_global_state_as_it_was(torch):
    """Its models are seeded on a fork of PyTorch's global generator; its thread count is put back."""
    from types import SimpleNamespace

    from fnnet.bench import sweep

    gen = np.random.default_rng(0)
    train = SimpleNamespace(x=gen.normal(size=(200, 40)).astype(np.float32), y=gen.integers(0, 10, 200))
    torch.manual_seed(1234)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    runs = [sweep._torch_runs(train, models=2, epochs=1, batch=100, threads=1) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert runs[0]["final_loss"] == runs[1]["final_loss"]  # seeded per model, so it repeats
    assert runs[0]["device"] == "cpu" and runs[0]["threads"] == 1
