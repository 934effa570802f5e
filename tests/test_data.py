"""Data: MNIST-1D (cached, no global RNG side effect), synthetic sets, file loaders, helpers."""

import gzip
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnet import data
from fnnet.data import generated


def test_mnist1d_isolates_global_rngs_and_caches(tmp_path):
    random.seed(123)
    np.random.seed(123)
    py_before, np_before = random.getstate(), np.random.get_state()
    train, test = data.mnist1d(num_samples=200, cache=tmp_path)
    assert random.getstate() == py_before
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    assert train.x.shape == (160, 40) and train.x.dtype == np.float32
    assert test.x.shape == (40, 40) and test.y.dtype == np.int32
    assert set(np.unique(train.y)) <= set(range(10))
    files = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    again, _ = data.mnist1d(num_samples=200, cache=tmp_path)  # from the cache, identical
    np.testing.assert_array_equal(again.x, train.x)
    files[0].write_bytes(b"garbage")  # a corrupt cache is regenerated
    third, _ = data.mnist1d(num_samples=200, cache=tmp_path)
    np.testing.assert_array_equal(third.y, train.y)


def test_mnist1d_default_split_shape(tmp_path, monkeypatch):
    """The default is the paper's 4000/1000 split (generation mocked for speed: arguments only)."""
    seen = {}

    def fake(args):
        seen.update(args)
        n = args["num_samples"]
        k = int(n * args["train_split"])
        return {
            "x": np.zeros((k, 40)),
            "y": np.zeros(k, int),
            "x_test": np.zeros((n - k, 40)),
            "y_test": np.zeros(n - k, int),
        }

    monkeypatch.setattr(generated, "_generate_mnist1d", fake)
    train, test = data.mnist1d(cache=False)
    assert seen == {"num_samples": 5000, "train_split": 0.8, "seed": 42}
    assert train.x.shape == (4000, 40) and test.x.shape == (1000, 40)


def test_xor_and_spirals(key):
    ds = data.xor()
    np.testing.assert_array_equal(ds.y, [0, 1, 1, 0])
    noisy = data.xor(key, n=64, noise=0.1)
    assert noisy.x.shape == (64, 2)
    sp = data.two_spirals(key, 100, noise=0.0)
    assert sp.x.shape == (100, 2) and int(sp.y.sum()) == 50
    np.testing.assert_allclose(sp.x[:50], -sp.x[50:])
    assert float(jnp.max(jnp.linalg.norm(sp.x, axis=1))) <= 1.0 + 1e-6


def test_linearly_separable_has_its_margin(key):
    ds, w = data.linearly_separable(key, 500, dim=3, margin=0.2)
    s = ds.x @ w
    assert float(jnp.min(jnp.abs(s))) >= 0.2 - 1e-6
    np.testing.assert_array_equal(ds.y, (s > 0).astype(jnp.int32))
    assert 0 < int(ds.y.sum()) < 500


def test_teacher_student_and_targets(key):
    import fnnet as fn

    teacher = fn.serial(fn.Dense(8), fn.Tanh(), fn.Dense(2))
    ds, tp = data.teacher_student(key, 64, teacher, in_dim=5)
    y, _ = teacher.forward(tp, ds.x)
    np.testing.assert_allclose(ds.y, y, rtol=1e-6)
    for name in ("sine", "abs", "step"):
        t = data.target_1d(name, n=33)
        assert t.x.shape == (33, 1) and t.y.shape == (33, 1)
        assert float(t.x[0, 0]) == pytest.approx(-np.pi) and float(t.x[-1, 0]) == pytest.approx(np.pi)
    np.testing.assert_allclose(data.target_1d("abs", n=5).y[:, 0], np.abs(np.linspace(-np.pi, np.pi, 5)), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown 1-D target 'cos'"):
        data.target_1d("cos")


def test_standardize_and_one_hot(key):
    x = 3.0 + 2.0 * jax.random.normal(key, (1000, 4))
    z, m, s = data.standardize(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    z2, _, _ = data.standardize(x[:10], m, s)
    np.testing.assert_allclose(z2, z[:10], rtol=1e-6)
    np.testing.assert_array_equal(data.one_hot(jnp.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])


def test_validate_names_the_problem():
    x = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="empty"):
        data.validate((x[:0], np.zeros(0, np.int32)))
    with pytest.raises(ValueError, match="4 inputs but 3 targets"):
        data.validate((x, np.zeros(3, np.int32)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        data.validate((np.full((4, 2), np.nan, np.float32), np.zeros(4, np.int32)))
    with pytest.raises(ValueError, match=r"label 7, out of range for 5 classes \(labels must lie in \[0, 4\]\)"):
        data.validate((x, np.array([0, 1, 7, 2], np.int32)), num_classes=5)
    with pytest.raises(ValueError, match="label -1"):
        data.validate((x, np.array([0, -1, 1, 2], np.int32)))
    assert isinstance(data.validate((x, np.zeros(4, np.int32))), data.Dataset)


def test_batches(key):
    ds = data.Dataset(np.arange(10, dtype=np.float32)[:, None], np.arange(10, dtype=np.int32))
    got = list(data.batches(ds, 3, key))
    assert len(got) == 3 and all(b.x.shape == (3, 1) for b in got)
    seen = np.concatenate([b.y for b in got])
    assert len(set(seen.tolist())) == 9


def _write_idx(path, arr, code=0x08, gz=True):
    raw = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes() + arr.astype(">u1").tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.fixture
def fake_mnist(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    return tmp_path


def test_mnist_from_idx(fake_mnist):
    tr = data.mnist(fake_mnist)
    te = data.fashion_mnist(fake_mnist, split="test", flatten=True)
    assert tr.x.shape == (6, 28, 28, 1) and tr.x.dtype == np.float32 and tr.y.dtype == np.int32
    assert 0.0 <= float(tr.x.min()) and float(tr.x.max()) <= 1.0
    assert te.x.shape == (4, 784)
    raw = gzip.open(fake_mnist / "train-images-idx3-ubyte.gz").read()
    np.testing.assert_array_equal(tr.x[..., 0] * 255, np.frombuffer(raw, np.uint8, offset=16).reshape(6, 28, 28))


def test_mnist_truncated_and_corrupt_files(fake_mnist):
    p = fake_mnist / "train-images-idx3-ubyte.gz"
    raw = gzip.open(p).read()
    gzip.open(p, "wb").write(raw[:-10])
    with pytest.raises(data.DataFileError, match="truncated"):
        data.mnist(fake_mnist)
    p.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(data.DataFileError, match="not a readable"):
        data.mnist(fake_mnist)


def test_mnist_missing_says_what_and_where(tmp_path):
    with pytest.raises(data.DataFileError, match=r"train-images-idx3-ubyte\.gz.*into .*") as e:
        data.mnist(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)


def test_mnist_from_npz_without_pickle(tmp_path, key):
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=rng.integers(0, 256, (5, 28, 28)).astype(np.uint8),
        y_train=rng.integers(0, 10, 5),
        x_test=rng.integers(0, 256, (3, 28, 28)).astype(np.uint8),
        y_test=rng.integers(0, 10, 3),
    )
    assert data.mnist(tmp_path, split="test").x.shape == (3, 28, 28, 1)
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1))
    with pytest.raises(data.DataFileError, match=r"stores array 'x_train' as Python objects \(pickled\)"):
        data.mnist(tmp_path / "obj.npz")
