"""fn.summary: one row per layer (combinators opened), output shapes from init, params and buffers counted apart."""

import jax
import jax.numpy as jnp
import pytest

import fnnet as fn


def _rows(text):
    return [line.split() for line in text.splitlines()]


def test_summary_of_an_mlp():
    text = fn.summary(fn.serial(fn.Dense(64), fn.Tanh(), fn.Dense(10)), (784,))
    rows = _rows(text)
    assert rows[0] == ["layer", "output", "shape", "params", "buffers"]
    assert rows[1] == ["input", "(784,)"]
    assert rows[2] == ["serial", "(10,)"]
    assert rows[3] == ["Dense(64)", "(64,)", "50,240", "0"]  # 784·64 + 64
    assert rows[4][1:] == ["(64,)", "0", "0"]
    assert rows[5] == ["Dense(10)", "(10,)", "650", "0"]
    assert rows[6] == ["total", "50,890", "0"]
    assert text.splitlines()[3].startswith("  Dense(64)")  # children indented under their combinator


def test_summary_of_a_cnn():
    net = fn.serial(fn.Conv2D(8, 3), fn.MaxPool(2), fn.Conv2D(16, 3, padding="SAME"), fn.Flatten(), fn.Dense(10))
    rows = _rows(fn.summary(net, (28, 28, 1)))
    assert rows[3] == ["Conv2D(8)", "(26,", "26,", "8)", "80", "0"]  # 3·3·1·8 + 8
    assert rows[4] == ["MaxPool(2)", "(13,", "13,", "8)", "0", "0"]
    assert rows[5] == ["Conv2D(16)", "(13,", "13,", "16)", "1,168", "0"]  # 3·3·8·16 + 16
    assert rows[6] == ["Flatten", "(2704,)", "0", "0"]
    assert rows[7] == ["Dense(10)", "(10,)", "27,050", "0"]
    assert rows[-1] == ["total", f"{80 + 1168 + 27050:,}", "0"]


def test_summary_of_a_residual_block_with_batch_norm_counts_buffers_apart():
    block = fn.residual(fn.serial(fn.Dense(8), fn.BatchNorm(), fn.Tanh(), fn.Dense(8)))
    text = fn.summary(fn.serial(fn.Dense(8), block, fn.Dense(3)), (5,))
    rows = _rows(text)
    assert [r[0] for r in rows[2:]] == ["serial", "Dense(8)", "residual", "serial", "Dense(8)", "BatchNorm",
                                        rows[8][0], "Dense(8)", "Dense(3)", "total"]  # fmt: skip
    assert rows[4] == ["residual", "(8,)"] and rows[5] == ["serial", "(8,)"]
    assert rows[7] == ["BatchNorm", "(8,)", "16", "16"]  # γ, β trained; running mean, var buffers
    assert text.splitlines()[7].startswith("      BatchNorm")  # three levels deep
    trained = 48 + 72 + 16 + 72 + 27
    assert rows[-1] == ["total", str(trained), "16"]
    _, params = fn.serial(fn.Dense(8), block, fn.Dense(3)).init(jax.random.key(0), (5,))
    assert sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)) == trained + 16


def test_summary_draws_nothing_and_reports_init_errors_in_the_layers_terms():
    huge = fn.serial(fn.Dense(50_000), fn.Dense(50_000))  # 2.5e9 parameters: only shapes are made
    assert _rows(fn.summary(huge, (10,)))[-1] == ["total", f"{10 * 50_000 + 50_000 + 50_000**2 + 50_000:,}", "0"]
    with pytest.raises(fn.ShapeError, match=r"^serial layer 1, residual branch, Conv2D\(4\) needs input shape"):
        fn.summary(fn.serial(fn.Dense(3), fn.residual(fn.Conv2D(4))), (10,))
    with pytest.raises(TypeError, match="summary needs a fnnet Layer"):
        fn.summary(fn.Dense, (3,))
    with jax.enable_x64(True):
        assert "Dense(2)" in fn.summary(fn.Dense(2), (3,), jnp.float64)
