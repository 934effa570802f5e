"""Smoke tests of the experiments on the texts' own material: each tiny preset runs and says real things.

Every experiment runs its ``tiny`` preset into a temporary folder (under the strict rank promotion of
conftest.py); its figures must exist as PNGs, every claim must carry a source, an expected and a
measured value, and the claims that are mathematical facts must hold. Claims where the texts' own
numbers do not reproduce are pinned as failing, with the values measured.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math

import pytest

from experiments import module_path
from experiments._common import Result, to_jsonable

NAMES = ("activations", "backprop_cases", "worked_example", "perceptron_xor", "universal_approximation", "conv_toy")


def _run(name: str, out_dir) -> tuple[object, Result]:
    module = importlib.import_module(module_path(name))
    return module, module.run(module.PRESETS["tiny"], out_dir)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Each experiment's tiny preset, run once per test module: name -> (module, result, out_dir)."""
    done = {}

    def get(name: str):
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            done[name] = (*_run(name, out), out)
        return done[name]

    return get


def _holding(result: Result, fragment: str) -> bool:
    hits = [c for c in result.claims if fragment in c.claim]
    assert hits, f"no claim mentions {fragment!r}"
    return all(c.holds for c in hits)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_preset_writes_figures_and_complete_claims(name, tiny):
    module, result, out = tiny(name)
    assert module.NAME == name and module.TITLE
    assert set(module.PRESETS) == {"tiny", "quick", "full"}
    for preset in module.PRESETS.values():
        assert dataclasses.is_dataclass(preset) and hasattr(preset, "seed")
        hash(preset)  # frozen: the runner hashes configs
    assert result.figures, "every experiment draws at least one figure"
    for fig in result.figures:
        png = out / fig.file
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert fig.caption and fig.caption.count("\n") <= 1
    assert result.claims
    for c in result.claims:
        assert c.claim and c.source, c
        assert c.expected is not None and c.measured is not None, c
        assert isinstance(c.holds, bool), c
        assert c.tolerance is not None, c
    json.dumps(to_jsonable(result.metrics))  # plain JSON
    json.dumps(to_jsonable(result.claims))


def test_activations_every_derivative_matches(tiny):
    _, result, _ = tiny("activations")
    assert all(c.holds for c in result.claims), [c.claim for c in result.claims if not c.holds]
    m = result.metrics
    assert m["max_derivative"]["sigmoid"] == pytest.approx(0.25, abs=1e-12)
    assert m["derivative_at_zero"]["ReLU"] == {"manual": 0.0, "autodiff": 0.0}


def test_worked_example_numbers(tiny):
    _, result, _ = tiny("worked_example")
    man, auto = result.metrics["manual"], result.metrics["autodiff"]
    # the forward and most of the backward pass reproduce the text at its rounding
    assert man["h1"] == pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-12)
    assert round(man["y_hat"], 4) == -0.5225 and round(man["L"], 4) == 0.1365
    assert round(man["sigma_prime_z1"], 4) == 0.2350 and round(man["delta1"], 4) == 0.1228
    assert round(man["w2_new"], 4) == -0.8374 and round(man["w1_new"], 4) == 0.4386
    for key in man:
        assert man[key] == pytest.approx(auto[key], abs=1e-12), key
    for fragment in ("z1 = w1·x + b1", "h1 = σ(z1)", "L = ½(ŷ − y)²", "δ1 = w2·δ2·σ'(z1)", "b1 ← b1"):
        assert _holding(result, fragment), fragment
    assert _holding(result, "manual rules and jax.grad agree")
    # the text's numbers that do not follow from its own set-up
    for fragment in ("∂L/∂w2 = δ2·h1", "b2 ← b2", "ŷ recomputed", "L recomputed", "dropped by a factor"):
        assert not _holding(result, fragment), fragment
    assert man["y_hat_after"] == pytest.approx(-0.13552, abs=1e-5)
    assert man["loss_ratio"] == pytest.approx(14.86, abs=0.01)


def test_backprop_cases(tiny):
    _, result, _ = tiny("backprop_cases")
    failing = [c.claim for c in result.claims if not c.holds]
    assert len(failing) == 1 and "index as printed" in failing[0]
    assert result.metrics["listing"]["rel_err_corrected"] < 1e-12


def test_perceptron_xor(tiny):
    _, result, _ = tiny("perceptron_xor")
    assert _holding(result, "never exceeds Novikoff's bound")
    assert _holding(result, "converges (100% training accuracy)")
    assert _holding(result, "on XOR the perceptron never classifies all four points")
    assert result.metrics["xor_perceptron"]["best_accuracy"] <= 0.75
    assert result.metrics["novikoff"]["ratio_updates_over_bound"]["max"] <= 1.0


def test_universal_approximation_step_floor(tiny):
    _, result, _ = tiny("universal_approximation")
    assert _holding(result, "no continuous net gets within ½ of a unit jump")
    for per_width in result.metrics["errors"].values():
        for e in per_width["step"]:
            assert e["sup"] >= 0.5


def test_conv_toy(tiny):
    _, result, _ = tiny("conv_toy")
    assert all(c.holds for c in result.claims), [c.claim for c in result.claims if not c.holds]
    y = result.metrics["closed_form"]["y"]
    assert to_jsonable(y) == [[9.5, 12.0], [17.0, 19.5]]


def test_metrics_are_identical_between_runs(tmp_path):
    _, a = _run("worked_example", tmp_path / "a")
    _, b = _run("worked_example", tmp_path / "b")
    assert json.dumps(to_jsonable(a.metrics)) == json.dumps(to_jsonable(b.metrics))
