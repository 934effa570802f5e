"""Smoke test of ``fnnet bench --quick``: the table, the JSON and the files, and that the three gradient
sources compute the same loss. No timing is asserted: speed is measured by the benchmark, not tested."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest

from fnnet import cli
from fnnet.bench import models as bench_models
from fnnet.cli import bench

SOURCES = ("manual", "autodiff", "custom_vjp")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run (two entries and a 2-model sweep): exit code, the JSON it prints, its output dir."""
    out = tmp_path_factory.mktemp("bench")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = bench.main(
            ["--quick", "--json", "--only", "mlp_40-100,bn_mlp,sweep", "--models", "2", "--out", str(out)]
        )
    return code, json.loads(buf.getvalue()), out


def test_quick_run_exits_zero_and_writes_files(quick):
    code, result, out = quick
    assert code == 0
    name = result["machine"]["name"]
    assert json.loads((out / f"{name}-quick.json").read_text())["entries"] == result["entries"]
    md = (out / f"{name}-quick.md").read_text()
    assert md.startswith(f"# fnnet bench — {name}")
    assert "| entry |" in md and "| target | measured | met |" in md


def test_json_structure(quick):
    _, result, _ = quick
    assert result["quick"] is True
    for key in ("name", "backend", "cpu", "cores", "jax", "load_before", "load_after"):
        assert key in result["machine"]
    assert result["matmul_peak"]["gflops"] > 0
    assert [e["entry"] for e in result["entries"]] == ["mlp_40-100-100-10_b32", "bn_mlp_40-64-64-10_b32"]
    for row in result["entries"]:
        assert row["flops"] > 0 and row["params"] > 0
        assert row["ratio_manual_autodiff"] > 0
        for s in SOURCES:
            src = row["sources"][s]
            assert src["step_s"] > 0 and src["compile_s"] > 0 and src["inner"] >= 1
            assert src["temp_bytes"] is None or src["temp_bytes"] >= 0
            assert 0 < src["peak_fraction"]
    assert {t["target"].split(" ")[0] for t in result["targets"]} >= {"manual/autodiff", "temp", "large", "vmapped"}


def test_three_sources_compute_the_same_loss(quick):
    _, result, _ = quick
    for row in result["entries"]:
        losses = [row["sources"][s]["loss"] for s in SOURCES]
        assert all(math.isfinite(v) for v in losses)
        assert max(losses) - min(losses) <= 1e-5 * max(1.0, abs(losses[0])), (row["entry"], losses)


def test_sweep_structure(quick):
    _, result, _ = quick
    sw = result["sweep"]
    assert sw["models"] == 2 and sw["steps_per_model"] == 40
    assert sw["vmapped_s"] > 0 and sw["jit_loop_s"] > 0 and sw["speedup_vs_jit_loop"] > 0
    # the vmapped sweep and the loop of runs train the same models: same final losses up to rounding
    assert sw["vmapped_final_loss"] == pytest.approx(sw["jit_loop_final_loss"], rel=1e-4)
    assert ("torch_eager_s" in sw) != ("torch_skipped" in sw)
    # one key for all models: other batches, so another loss, but the same models trained as long
    assert sw["vmapped_one_key_s"] > 0 and math.isfinite(sw["vmapped_one_key_final_loss"])
    assert sw["speedup_one_key_vs_jit_loop"] == pytest.approx(sw["jit_loop_s"] / sw["vmapped_one_key_s"])
    assert sw["vmapped_one_key_final_loss"] != sw["vmapped_final_loss"]


def test_fnnet_command_has_bench(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--only" in out and "--json" in out and "--out" in out


def test_only_matching_nothing_is_a_usage_error(capsys):
    assert bench.main(["--quick", "--only", "no-such-entry", "--out", ""]) == 2
    assert "no entry matches" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--repeats", "0"], "--repeats: expected a positive integer, got 0"),
        (["--min-time", "-1"], "--min-time: expected a positive number of seconds, got -1.0"),
        (["--min-time", "nan"], "--min-time: expected a positive number of seconds, got nan"),
        (["--models", "x"], "--models: expected a positive integer, got 'x'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2_with_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and needle in err[0], err


def test_only_gpu_picks_the_gpu_subset_and_every_name_in_it_exists():
    names = [e.name for e in bench_models.entries(quick=False)] + ["sweep"]
    assert set(bench_models.GPU_SUBSET) <= set(names)
    assert bench._select(names, "gpu") == [n for n in names if n in bench_models.GPU_SUBSET]
    assert bench._select(names, "gpu,rnn_t50") == [n for n in names if n in bench_models.GPU_SUBSET or "rnn_t50" in n]
