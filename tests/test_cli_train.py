"""``fnnet train``: one-line usage errors with exit 2, metrics.json, checkpoint resume, a SIGKILL mid-run.

Also: a run in ``--out`` is never replaced by another configuration without ``--overwrite``; every
flag and ``--out`` itself are checked before the data is loaded; a damaged checkpoint is ignored;
Ctrl-C exits 130 on one line; files follow the umask.
"""

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fnnet.cli import train as cli_train

SMALL = [
    "--data",
    "xor",
    "--hidden",
    "8",
    "--activation",
    "tanh",
    "--init",
    "glorot_normal",
    "--batch-size",
    "4",
    "--optimizer",
    "sgd",
    "--lr",
    "0.5",
    "--no-progress",
]


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if the command gets as far as loading its data."""

    def load(args):
        raise AssertionError("the data was loaded before the flags were checked")

    monkeypatch.setattr(cli_train, "_load", load)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--activation", "swishy"], "unknown activation 'swishy'"),
        (["--init", "kaiming_magic"], "unknown initializer 'kaiming_magic'"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--lr", "-0.1"], "--lr must be a positive, finite learning rate, got -0.1"),
        (["--lr", "inf"], "--lr must be a positive, finite learning rate, got inf"),
        (["--lr", "nan"], "--lr must be a positive, finite learning rate, got nan"),
        (["--momentum", "nan"], "--momentum must be in [0, 1), got nan"),
        (["--optimizer", "nesterov", "--momentum", "0"], "--optimizer nesterov needs --momentum > 0"),
        (["--weight-decay", "nan"], "--weight-decay must be >= 0 and finite, got nan"),
        (["--weight-decay", "inf"], "--weight-decay must be >= 0 and finite, got inf"),
        (["--clip", "nan"], "--clip must be >= 0 (0 or inf = off), got nan"),
        (["--clip", "-1"], "--clip must be >= 0 (0 or inf = off), got -1"),
        (["--seed", "99999999999999999999"], "--seed must be an integer in [0, 4294967295]"),
        (["--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1"),
        (["--hidden", "8,x"], "--hidden takes comma-separated widths"),
        (["--hidden", "8,,8"], "--hidden takes comma-separated widths"),
        (["--hidden", "0"], "--hidden widths must be positive, got '0'"),
        (["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
        (["--epochs", "many"], "invalid int value: 'many'"),
        (["--epochs", "0"], "--epochs must be a positive number of passes, got 0"),
        (["--epochs", "99999999999999999999"], "--epochs must be a positive number of passes"),
    ],
)
def test_bad_flags_exit_2_with_one_line_before_the_data_is_loaded(capsys, no_data, argv, needle):
    code = _main(SMALL + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("fnnet train: error:") and needle in err[0], err[0]


def test_flags_that_need_the_data_exit_2_with_one_line(capsys):
    code = _main(SMALL + ["--batch-size", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert (
        err[0].startswith("fnnet train: error:") and "--batch-size 5 is larger than the 4 training examples" in err[0]
    )


@pytest.mark.parametrize("where", ["under a file", "in /proc", "a file"])
def test_unwritable_out_exits_2_before_the_data_is_loaded(capsys, no_data, tmp_path, where):
    (tmp_path / "f").write_bytes(b"")
    out = {"under a file": tmp_path / "f" / "run", "in /proc": "/proc/fnnet-test/run", "a file": tmp_path / "f"}
    code = _main(SMALL + ["--out", str(out[where])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"fnnet train: error: --out {out[where]} ") and "writable folder" in err[0], err[0]


def _main(argv):
    """cli_train.main, with argparse's own exits (bad choice, bad int) turned into return codes."""
    try:
        return cli_train.main(argv)
    except SystemExit as e:
        return e.code


def test_missing_data_file_says_where_to_put_it(capsys, tmp_path):
    code = _main(["--data", "mnist", "--data-dir", str(tmp_path / "mnist"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fnnet train: error:")
    assert "train-images-idx3-ubyte.gz" in err[0] and str(tmp_path / "mnist") in err[0]


def test_trains_writes_metrics_and_resumes(capsys, tmp_path):
    assert cli_train.main(SMALL + ["--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "checkpoint.npz").exists()
    # rerun with more epochs: resumes from the checkpoint
    assert cli_train.main(SMALL + ["--epochs", "5", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr()
    assert "resuming" in out.err and "5 epochs" in out.out and "wrote" in out.out
    assert cli_train.main(SMALL + ["--epochs", "5", "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["history"] == b["history"] and len(a["history"]["test_loss"]) == 5
    assert a["summary"]["steps"] == 5 and a["config"]["activation"] == "tanh"
    assert {"backend", "versions", "summary", "config"} <= set(a)
    assert not list((tmp_path / "a").glob("*.tmp"))
    assert np.isfinite(a["summary"]["train_loss"])


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_diverged_run_writes_standard_json_with_nan_as_a_string_and_reports_it(capsys, tmp_path):
    argv = SMALL + ["--activation", "relu", "--lr", "1e30", "--epochs", "3", "--out", str(tmp_path / "d")]
    assert cli_train.main(argv) == 0
    first = capsys.readouterr().out
    m = _strict_json((tmp_path / "d" / "metrics.json").read_text())
    assert m["summary"]["diverged"] is True and m["summary"]["train_loss"] == "nan"
    assert "nan" in m["history"]["loss"]
    assert "diverged at step" in first and "train loss nan" in first
    assert cli_train.main(argv) == 0  # the stored result, read back: "nan" is a float again
    again = capsys.readouterr()
    assert "already finished" in again.err and "train loss nan" in again.out


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_another_config_never_replaces_a_run_without_overwrite(capsys, tmp_path):
    d = tmp_path / "run"
    assert cli_train.main(SMALL + ["--epochs", "2", "--out", str(d)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "checkpoint.npz", "run.json"):  # as `open` creates them, readable by the group
        assert (d / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    finished = _snapshot(d)
    capsys.readouterr()
    other = [a if a != "0.5" else "0.25" for a in SMALL]  # --lr 0.5 -> 0.25
    for extra in ([], ["--no-resume"], ["--epochs", "9"]):
        assert _main(other + ["--epochs", "2", "--out", str(d), *extra]) == 2
        err = _err_lines(capsys)
        assert len(err) == 1 and err[0].startswith(f"fnnet train: error: --out {d} holds a finished run"), err
        assert "--lr 0.5 -> 0.25" in err[0] and "--overwrite" in err[0] and "--hidden" not in err[0], err[0]
        assert _snapshot(d) == finished
    # folders written before run.json existed: metrics.json with its config, or a bare checkpoint
    (d / "run.json").unlink()
    (d / "checkpoint.npz").rename(tmp_path / "ckpt")
    assert _main(other + ["--out", str(d)]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "--lr 0.5 -> 0.25" in err[0] and "--overwrite" in err[0], err
    (d / "metrics.json").unlink()
    (tmp_path / "ckpt").rename(d / "checkpoint.npz")
    assert _main(other + ["--out", str(d)]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "holds a partial run (checkpoint after epoch 2)" in err[0], err
    assert "flags were not recorded" in err[0] and "--overwrite" in err[0], err[0]
    # --overwrite replaces it
    assert cli_train.main(other + ["--epochs", "1", "--out", str(d), "--overwrite"]) == 0
    m = json.loads((d / "metrics.json").read_text())
    assert m["config"]["lr"] == 0.25 and len(m["history"]["loss"]) == 1
    assert json.loads((d / "run.json").read_text())["config"] == m["config"]


def test_fewer_epochs_never_cut_a_finished_run_and_the_same_epochs_report_it(capsys, no_data, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    config = cli_train._config(cli_train.configure(argparse.ArgumentParser()).parse_args(SMALL + ["--epochs", "3"]))
    summary = {"epochs": 3, "steps": 3, "diverged": False, "diverged_step": -1, "train_loss": 0.5}
    summary.update(train_accuracy=0.75, test_loss=0.5, test_accuracy=0.75, best_test_accuracy=1.0, best_epoch=2)
    summary.update(wall_time_s=1.0, train_time_s=0.5)
    (d / "metrics.json").write_text(json.dumps({"config": config, "summary": summary}))  # as the old code wrote it
    finished = _snapshot(d)
    for extra in ([], ["--no-resume"]):
        assert _main(SMALL + ["--epochs", "2", "--out", str(d), *extra]) == 2
        err = _err_lines(capsys)
        assert len(err) == 1 and err[0].startswith(f"fnnet train: error: --out {d} holds a finished run of 3"), err
        assert "--epochs 3" in err[0] and "--overwrite" in err[0], err[0]
        assert _snapshot(d) == finished
    assert _main(SMALL + ["--epochs", "3", "--out", str(d)]) == 0  # the finished result, without training
    out = capsys.readouterr()
    assert "already finished" in out.err and "3 epochs, 3 steps: train loss 0.5 acc 75.0%" in out.out
    assert _snapshot(d) == finished


def test_damaged_checkpoint_is_ignored_on_one_line(capsys, tmp_path):
    d = tmp_path / "run"
    assert cli_train.main(SMALL + ["--epochs", "1", "--out", str(d)]) == 0
    data = (d / "checkpoint.npz").read_bytes()
    (d / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    (d / "metrics.json").unlink()  # as if killed before the end
    capsys.readouterr()
    assert _main(SMALL + ["--epochs", "2", "--out", str(d)]) == 0
    err = _err_lines(capsys)
    assert sum("damaged checkpoint" in line for line in err) == 1, err
    assert any(
        line == f"fnnet train: ignored the damaged checkpoint {d / 'checkpoint.npz'}; starting over" for line in err
    )
    assert len(json.loads((d / "metrics.json").read_text())["history"]["loss"]) == 2


def test_a_checkpoint_of_an_older_params_layout_is_refused_unless_overwrite(capsys, tmp_path):
    from fnnet import checkpoint

    d = tmp_path / "run"
    assert cli_train.main(SMALL + ["--epochs", "1", "--out", str(d)]) == 0
    with np.load(d / "checkpoint.npz") as f:  # as an fnnet before layout versions wrote it: no version member
        old = {k: f[k] for k in f.files if k != "meta_layout_version"}
    np.savez(d / "checkpoint.npz", **old)
    (d / "metrics.json").unlink()  # a partial run, as if killed after epoch 1
    before = _snapshot(d)
    capsys.readouterr()
    for more in ([], ["--no-resume"]):
        assert _main(SMALL + ["--epochs", "2", "--out", str(d), *more]) == 2
        assert _err_lines(capsys) == [
            f"fnnet train: error: --out {d}: checkpoint {d / 'checkpoint.npz'} was written by fnnet's params "
            f"layout version 1; this fnnet reads version {checkpoint.LAYOUT_VERSION} — pass --overwrite to replace "
            "the run"
        ]
        assert _snapshot(d) == before  # nothing touched
    assert _main(SMALL + ["--epochs", "2", "--out", str(d), "--overwrite"]) == 0
    replaced = checkpoint.info(d / "checkpoint.npz")
    assert replaced.version == checkpoint.LAYOUT_VERSION and replaced.epochs == 2
    assert len(json.loads((d / "metrics.json").read_text())["history"]["loss"]) == 2


def test_ctrl_c_exits_130_on_one_line(capsys, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("fnnet.training"), "train", interrupted)  # `fn.train` is the function
    try:
        code = cli_train.main(SMALL + ["--epochs", "2", "--out", str(tmp_path / "run")])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped cli_train.main")
    err = _err_lines(capsys)
    assert code == 130 and err[-1].startswith("fnnet train: interrupted"), err
    assert not any("Traceback" in line for line in err)


def test_checkpoint_of_another_config_or_corrupt_is_not_resumed(tmp_path, key):
    import fnnet as fn
    from fnnet import checkpoint, optim
    from fnnet.training import TrainResult, init_state

    net = fn.serial(fn.Dense(3))
    _, params = net.init(key, (2,))
    opt = optim.sgd(0.1, momentum=0.9)
    state = init_state(params, opt, key)
    res = TrainResult(params, state, {"loss": np.zeros(1)}, {}, 1, 0.0)
    checkpoint.save(tmp_path / "c.npz", res, "abc")
    back = checkpoint.load(tmp_path / "c.npz", params, opt, key, "abc")
    np.testing.assert_array_equal(back.params[0]["W"], params[0]["W"])
    assert back.state.key == key
    assert checkpoint.load(tmp_path / "c.npz", params, opt, key, "other config") is None
    assert checkpoint.load(tmp_path / "c.npz", params, optim.sgd(0.1), key, "abc") is None  # other state layout
    (tmp_path / "c.npz").write_bytes(b"truncated")
    assert checkpoint.load(tmp_path / "c.npz", params, opt, key, "abc") is None


def test_fnnet_train_subcommand_is_registered():
    cli = pytest.importorskip("fnnet.cli")
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0


def _train_process(out, epochs):
    """``fnnet train`` in a fresh process: two-spirals, 100 SGD steps per epoch, a checkpoint after each."""
    argv = ["--data", "spirals", "--hidden", "32,32", "--activation", "tanh", "--init", "glorot_normal"]
    argv += ["--optimizer", "momentum", "--lr", "0.05", "--batch-size", "10", "--epochs", str(epochs)]
    argv += ["--seed", "3", "--no-progress", "--out", str(out)]
    code = "import sys; from fnnet.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "train", *argv]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_equals_uninterrupted(tmp_path):
    epochs = 200
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _train_process(killed, epochs)
    ckpt = killed / "checkpoint.npz"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # a few more epochs
    assert proc.poll() is None, "the run finished before it could be killed; raise `epochs`"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (killed / "metrics.json").exists()

    resumed = _train_process(killed, epochs)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    after = int(err.split("after epoch ")[1].split()[0])  # "fnnet train: resuming from ... after epoch k"
    assert 0 < after < epochs

    other = _train_process(clean, epochs)
    assert other.wait(timeout=300) == 0
    a = json.loads((killed / "metrics.json").read_text())
    b = json.loads((clean / "metrics.json").read_text())
    assert len(a["history"]["loss"]) == epochs
    assert a["history"] == b["history"]  # bit-identical: float values round-trip through JSON exactly
    for key in ("train_loss", "test_accuracy", "steps"):
        assert a["summary"][key] == b["summary"][key]
    assert not list(killed.glob("*.tmp"))
