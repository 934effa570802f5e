"""fnnet._io: atomic writes follow the umask and leave no temporary; NaN goes into JSON one way."""

import os

import pytest

from fnnet._io import atomic_write, probe_writable, remove_stale_temporaries


def test_atomic_write_follows_the_umask(tmp_path):
    old = os.umask(0o022)  # process-wide: restored at once, the tests run in one process
    try:
        modes = {}
        for mask in (0o022, 0o027, 0o077):
            os.umask(mask)
            atomic_write(tmp_path / f"m{mask:o}.json", b"{}")
            modes[mask] = (tmp_path / f"m{mask:o}.json").stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert modes == {0o022: 0o644, 0o027: 0o640, 0o077: 0o600}


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write(target, b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["metrics.json"]
    (tmp_path / ".metrics.json.abc123.tmp").write_bytes(b"left by a killed writer")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".metrics.json.abc123.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_probe_writable_creates_the_folder_or_raises(tmp_path):
    probe_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not os.listdir(tmp_path / "a" / "b")
    (tmp_path / "file").write_bytes(b"")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub", "/proc/fnnet-no-such-folder"):
        with pytest.raises(OSError):
            probe_writable(bad)


def test_one_json_encoding_writes_nan_and_inf_as_strings_and_reads_them_back():
    import json

    import numpy as np

    from fnnet._io import dumps, from_jsonable

    value = {"a": np.array([1.0, np.nan, np.inf, -np.inf], np.float32), "n": np.int64(3), "ok": np.bool_(True)}
    text = dumps(value)
    assert json.loads(text) == {"a": [1.0, "nan", "inf", "-inf"], "n": 3, "ok": True}  # standard JSON
    back = from_jsonable(json.loads(text))
    assert back["a"][0] == 1.0 and np.isnan(back["a"][1]) and back["a"][2:] == [np.inf, -np.inf]
