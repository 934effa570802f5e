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
    assert result["settings"]["torch"] is True
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
