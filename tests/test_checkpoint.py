"""fnnet.checkpoint: a damaged file of any kind loads as None (never raises); files follow the umask."""

import os
import zipfile

import numpy as np
import pytest

import fnnet as fn
from fnnet import checkpoint, optim
from fnnet.training import TrainResult, init_state


@pytest.fixture
def saved(tmp_path, key):
    """A real checkpoint of a tiny model, its bytes, and what load needs: (path, data, params, opt)."""
    net = fn.serial(fn.Dense(3))
    _, params = net.init(key, (2,))
    opt = optim.sgd(0.1, momentum=0.9)
    res = TrainResult(params, init_state(params, opt, key), {"loss": np.zeros(2), "accuracy": np.ones(2)}, {}, 1, 0.5)
    path = tmp_path / "c.npz"
    checkpoint.save(path, res, "fp")
    return path, path.read_bytes(), params, opt


def _member_data_offset(path, name: str) -> tuple[int, int]:
    """(offset of the last byte of member ``name``'s data in the zip file, its size)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    raw = path.read_bytes()
    start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    start += int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return start + info.compress_size - 1, info.compress_size


def _damaged(path, data: bytes) -> dict[str, bytes]:
    last, _ = _member_data_offset(path, "state_0.npy")
    flipped = bytearray(data)
    flipped[last] ^= 0xFF  # one array byte: the zip member's CRC-32 no longer matches
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    cut_member = data.index(b"PK\x01\x02")  # start of the central directory
    return {
        "empty": b"",
        "not a zip": b"truncated",
        "half": data[: len(data) // 2],
        "central directory cut": data[: cut_member + 10],
        "last byte cut": data[:-1],
        "crc mismatch": bytes(flipped),
        "member list only": b"PK\x05\x06" + bytes(18),  # an empty zip: no members at all
        f"first of {len(names)} members cut": data[: data.index(b"PK\x03\x04", 4)],
    }


def test_load_returns_none_for_every_kind_of_damage(saved, key):
    path, data, params, opt = saved
    assert checkpoint.load(path, params, opt, key, "fp") is not None  # the intact file loads
    assert checkpoint.info(path) == checkpoint.CheckpointInfo("fp", 2)
    for name, damaged in _damaged(path, data).items():
        path.write_bytes(damaged)
        assert checkpoint.load(path, params, opt, key, "fp") is None, name
        assert checkpoint.info(path) is None, name


def test_load_returns_none_for_wrong_contents(saved, tmp_path, key):
    path, _, params, opt = saved
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    cases = {
        "object array (pickle)": {**arrays, "state_0": np.array([{"a": 1}], dtype=object)},
        "string history": {**arrays, "history_loss": np.array(["a", "b"])},
        "histories of unequal length": {**arrays, "history_accuracy": np.ones(3)},
        "no loss history": {k: v for k, v in arrays.items() if k != "history_loss"},
        "array fingerprint": {**arrays, "meta_fingerprint": np.array(["fp", "fp"])},
        "array steps per epoch": {**arrays, "meta_steps_per_epoch": np.ones(2)},
    }
    for name, content in cases.items():
        bad = tmp_path / "bad.npz"
        with open(bad, "wb") as f:
            np.savez(f, **content)
        assert checkpoint.load(bad, params, opt, key, "fp") is None, name


def test_checkpoint_file_follows_the_umask(saved, tmp_path, key):
    _, _, params, opt = saved
    res = TrainResult(params, init_state(params, opt, key), {"loss": np.zeros(1)}, {}, 1, 0.0)
    old = os.umask(0o022)
    try:
        checkpoint.save(tmp_path / "u.npz", res, "fp")
    finally:
        os.umask(old)
    assert (tmp_path / "u.npz").stat().st_mode & 0o777 == 0o644
