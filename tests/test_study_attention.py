"""The attention study: its corpus and measures against exact answers, and its tiny presets run for real.

Every experiment runs its ``tiny`` preset into a temporary folder (under the strict rank promotion of
conftest.py) and must keep the experiments' contract (:func:`_helpers.assert_keeps_the_contract`).
The GPT and the Pre-/Post-LN runs compile transformers (tens of seconds of CPU on 2 cores): their
runs carry the ``slow`` marker.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_keeps_the_contract

import fnnet as fn
from experiments import STUDIES
from experiments._common import check_claim
from experiments.attention import _corpus, _lm, attention_scale, char_gpt, norm_position, rank_collapse
from fnnet._io import dumps

NAMES = STUDIES["attention"]
SLOW = ("char_gpt", "norm_position")  # compile-bound tiny runs


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES])
def test_tiny_preset_keeps_the_contract(name, tiny):
    module, result, out = tiny(name)
    assert_keeps_the_contract(module, result, out)
    for c in result.claims:
        assert check_claim(c) == [], (c.claim, check_claim(c))


# ----------------------------------------------------------------------------------------------
# the corpus and its baselines


def test_corpus_is_fixed_large_enough_and_hashed():
    a, b = _corpus.load_corpus(), _corpus.load_corpus()
    text = _corpus.corpus_text()
    assert a.text_sha256 == b.text_sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert len(text.encode("utf-8")) >= 400_000
    assert len(a.train) + len(a.held_out) == len(text)
    assert a.decode(a.train[:500]) + a.decode(a.held_out[:10]) != ""  # both parts are real text
    assert a.decode(np.concatenate([a.train, a.held_out])) == text  # the split loses nothing
    np.testing.assert_array_equal(a.encode(text[:1000]), a.train[:1000])
    with pytest.raises(ValueError, match="outside the corpus vocabulary"):
        a.encode("\x00")


def test_ngram_baselines_on_sequences_with_known_entropy():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 8, 200_000).astype(np.int32)
    assert _corpus.unigram_bpc(uniform[:100_000], uniform[100_000:], 8) == pytest.approx(3.0, abs=0.01)
    assert _corpus.bigram_bpc(uniform[:100_000], uniform[100_000:], 8) == pytest.approx(3.0, abs=0.01)
    cycle = np.tile(np.arange(8, dtype=np.int32), 5000)  # the next character is certain given the last
    assert _corpus.unigram_bpc(cycle, cycle, 8) == pytest.approx(3.0, abs=1e-6)
    assert _corpus.bigram_bpc(cycle, cycle, 8, alpha=1e-3) < 0.01
    c = _corpus.load_corpus()
    assert _corpus.bigram_bpc(c.train, c.held_out, c.vocab_size) < _corpus.unigram_bpc(
        c.train, c.held_out, c.vocab_size
    )


def test_batches_are_windows_shifted_by_one_and_sampling_keeps_the_prompt(key):
    ids = jnp.arange(1000, dtype=jnp.int32)
    x, y = _lm.batch(key, ids, 8, 16)
    assert x.shape == y.shape == (8, 16)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x) + 1)
    np.testing.assert_array_equal(np.diff(np.asarray(x), axis=1), 1)
    net = fn.gpt(11, 8, 16, 2, 1)
    _, params = net.init(key, (8,))
    out = jax.jit(_lm.sample_fn(net, 8, 3, 20, 1.0))(params, jnp.asarray([1, 2, 3], jnp.int32), key)
    assert out.shape == (23,) and list(np.asarray(out[:3])) == [1, 2, 3]
    assert int(out.min()) >= 0 and int(out.max()) < 11


@pytest.mark.slow
def test_char_gpt_tiny_manual_equals_autodiff_and_records_the_corpus(tiny):
    _, result, _ = tiny("char_gpt")
    check = result.metrics["llmc_check"]
    man, auto = np.asarray(check["losses_manual"]), np.asarray(check["losses_autodiff"])
    assert len(man) == char_gpt.CHECK_STEPS
    np.testing.assert_allclose(man, auto, rtol=char_gpt.F32_BAR)
    assert man[-1] < man[0]  # the 10 AdamW steps do descend
    assert max(check["grad_rel_err"].values()) <= char_gpt.F32_BAR
    assert check["zero_grad_leaves"] and max(check["zero_grad_leaves"].values()) <= char_gpt.F32_BAR
    assert result.metrics["corpus"]["sha256"] == _corpus.load_corpus().text_sha256
    config = char_gpt.PRESETS["tiny"]
    sample = result.metrics["sample"]
    assert sample.startswith(config.prompt) and len(sample) == len(config.prompt) + config.sample_chars
    held = np.asarray(result.metrics["training"]["held_out_loss"])
    assert np.all(held[:, -1] < held[:, 0])  # training lowers the held-out loss on every seed


def test_leaf_errors_name_the_leaf_and_the_key_bias_is_measured_against_wk():
    a = ({"Wk": jnp.ones((2, 2)), "bk": jnp.asarray([1e-8, -1e-8])}, {"W": jnp.ones(3)})
    b = ({"Wk": jnp.ones((2, 2)), "bk": jnp.asarray([-1e-8, 1e-8])}, {"W": jnp.ones(3) * 1.001})
    errs = char_gpt.leaf_errors(a, b)
    assert errs["[0]['bk']"] == pytest.approx(2.0)  # two opposite rounding-level vectors: O(1) relative error
    assert errs["[1]['W']"] == pytest.approx(0.001 / 1.001, rel=1e-4)  # float32 ones · 1.001
    zeros = char_gpt.zero_leaves(a, b)
    assert list(zeros) == ["[0]['bk']"] and zeros["[0]['bk']"] == pytest.approx(np.sqrt(2) * 1e-8 / 2, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# attention_scale


def test_row_stats_of_a_uniform_and_of_a_saturated_softmax(key):
    g = jax.random.normal(key, (4, 10))
    ent, max_p, grad = np.asarray(attention_scale.row_stats(jnp.zeros((4, 10)), g))
    assert ent == pytest.approx(np.log(10), rel=1e-6) and max_p == pytest.approx(0.1, rel=1e-6)
    want = np.linalg.norm((np.asarray(g) - np.asarray(g).mean(1, keepdims=True)) / 10, axis=1).mean()
    assert grad == pytest.approx(want, rel=1e-5)  # dS = P ⊙ (G − rowsum(G ⊙ P)) at P = 1/n
    ent, max_p, grad = np.asarray(attention_scale.row_stats(jnp.zeros((4, 10)).at[:, 3].set(60.0), g))
    assert ent < 1e-20 and max_p == pytest.approx(1.0) and grad < 1e-20  # saturated: no gradient


def test_attention_scale_tiny_saturates_without_the_scale(tiny):
    _, result, _ = tiny("attention_scale")
    by = result.metrics["by_d_k"]
    ds = sorted(by, key=int)
    unscaled = [np.mean(by[d]["unscaled"]["entropy"]) for d in ds]
    assert unscaled == sorted(unscaled, reverse=True)
    assert all(np.mean(by[d]["scaled"]["entropy"]) > np.mean(by[d]["unscaled"]["entropy"]) for d in ds)
    assert next(c for c in result.claims if "variance d_k" in c.claim).kind == "sanity"


# ----------------------------------------------------------------------------------------------
# rank_collapse


def test_relative_residual_of_rank_one_and_of_centred_tokens(key):
    x = jax.random.normal(key, (5, 7))
    assert float(rank_collapse.rel_residual(jnp.ones((6, 1)) * x[:1])) < 1e-6  # 1 xᵀ: rank one
    centred = x - x.mean(0, keepdims=True)
    assert float(rank_collapse.rel_residual(centred)) == pytest.approx(1.0, rel=1e-6)


def test_cubic_slope_tells_doubly_exponential_from_exponential():
    r = [0.5]
    while r[-1] > 1e-12:
        r.append(2.0 * r[-1] ** 3)
    assert rank_collapse.cubic_slope(np.asarray(r), 0.9)[0] == pytest.approx(3.0, abs=1e-9)
    geometric = 0.5 * 0.1 ** np.arange(10)
    assert rank_collapse.cubic_slope(geometric, 0.9)[0] == pytest.approx(1.0, abs=1e-9)


def test_rank_collapse_tiny_pure_attention_collapses_and_skips_do_not(tiny):
    _, result, _ = tiny("rank_collapse")
    pure, skip = np.asarray(result.metrics["residual_pure"]), np.asarray(result.metrics["residual_skip"])
    assert np.all(pure[:, -1] < 1e-10) and np.all(skip[:, -1] > 1e-2)
    assert np.all(pure[:, 0] == skip[:, 0])  # one X_0 for both stacks


def test_rank_collapse_metrics_are_identical_between_runs(tmp_path):
    config = rank_collapse.PRESETS["tiny"]
    a, b = (rank_collapse.run(config, tmp_path / d) for d in "ab")
    assert dumps(a.metrics) == dumps(b.metrics)


# ----------------------------------------------------------------------------------------------
# norm_position


def test_norm_position_nets_and_their_w2_leaves(key):
    for norm in norm_position.NORMS:
        net = norm_position.make_net(norm, 3, 16, 2, 8, 11)
        _, params = net.init(key, (8,))
        assert len(params) == 2 + 3 + (norm == "pre") + 1  # embeddings, blocks, [final LN], head
        got = np.asarray(norm_position.w2_norms(params, 3, 16))
        want = [
            np.linalg.norm(leaf) for p in params[2:5] for leaf in jax.tree_util.tree_leaves(p) if leaf.shape == (64, 16)
        ]
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.slow
def test_norm_position_tiny_gradients_are_finite_and_positive(tiny):
    _, result, _ = tiny("norm_position")
    for norm in norm_position.NORMS:
        for per_seed in result.metrics["w2_grad_norm"][norm].values():
            g = np.asarray(per_seed)
            assert np.all(np.isfinite(g)) and np.all(g > 0)
