"""``fnnet train``: one-line usage errors with exit 2, metrics.json, checkpoint resume, a SIGKILL mid-run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fnnet import cli_train

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


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--activation", "swishy"], "unknown activation 'swishy'"),
        (["--init", "kaiming_magic"], "unknown initializer 'kaiming_magic'"),
        (["--batch-size", "5"], "--batch-size 5 is larger than the 4 training examples"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--lr", "-0.1"], "--lr must be a positive learning rate"),
        (["--hidden", "8,x"], "--hidden takes comma-separated widths"),
        (["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
        (["--epochs", "many"], "invalid int value: 'many'"),
        (["--epochs", "0"], "--epochs must be a positive number of passes, got 0"),
    ],
)
def test_bad_flags_exit_2_with_one_line(capsys, argv, needle):
    code = _main(SMALL + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("fnnet train: error:") and needle in err[0]


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


def test_checkpoint_of_another_config_or_corrupt_is_not_resumed(tmp_path, key):
    import fnnet as fn
    from fnnet import checkpoint, optim
    from fnnet.train import TrainResult, init_state

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
