"""Sweep-point caches: keyed by the config that made them, damaged files recomputed, NaN/Inf round-trip."""

import dataclasses
import importlib
import json
import math
from pathlib import Path

import pytest

from experiments._common import (
    CACHE,
    PointCache,
    config_hash,
    point_cache,
    prune_point_caches,
    to_jsonable,
)


@dataclasses.dataclass(frozen=True)
class _Cfg:
    width: int = 4
    seed: int = 0


class _Counter:
    """A compute function that counts its calls and returns a value depending on the config."""

    def __init__(self, config):
        self.config, self.calls = config, 0

    def __call__(self):
        self.calls += 1
        return {"seed": self.config.seed, "curve": (1.0, float("nan"), float("inf"), -float("inf")), 3: [True]}


def test_a_cached_point_reads_back_equal_to_the_computed_one_nan_and_inf_included(tmp_path):
    cache = point_cache(tmp_path, _Cfg())
    compute = _Counter(_Cfg())
    first = cache.point("p", compute)
    again = cache.point("p", compute)
    assert compute.calls == 1
    for value in (first, again):
        assert value["seed"] == 0 and value["3"] == [True]
        c = value["curve"]
        assert c[0] == 1.0 and math.isnan(c[1]) and c[2] == math.inf and c[3] == -math.inf  # floats, not strings
    assert json.dumps(first) == json.dumps(again)
    on_disk = json.loads((cache.folder / "p.json").read_text())  # standard JSON: NaN/Inf as strings
    assert on_disk["value"]["curve"] == [1.0, "nan", "inf", "-inf"] and on_disk["config_hash"] == cache.config_hash


def test_a_config_change_never_reads_another_configs_points(tmp_path):
    old, new = _Cfg(seed=0), _Cfg(seed=1)
    made_old, made_new = _Counter(old), _Counter(new)
    assert point_cache(tmp_path, old).point("p", made_old)["seed"] == 0
    assert point_cache(tmp_path, new).point("p", made_new)["seed"] == 1  # recomputed, not seed 0's number
    assert made_new.calls == 1
    assert point_cache(tmp_path, old).point("p", made_old)["seed"] == 0 and made_old.calls == 1  # each kept
    assert point_cache(tmp_path, old).folder == tmp_path / CACHE / config_hash(old) != point_cache(tmp_path, new).folder


def _another_configs_point(path: Path) -> None:
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "config_hash": "0123456789abcdef"}))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_text(p.read_text()[:-9]),  # truncated
        lambda p: p.write_bytes(b"\xff\xfe\x00"),  # not text
        lambda p: p.write_text("[1, 2]"),  # JSON of the wrong structure
        lambda p: p.write_text('{"seed": 0}'),  # a bare value: the unkeyed format of old
        _another_configs_point,  # a file copied from another config's folder
    ],
    ids=["truncated", "binary", "wrong-structure", "unkeyed", "other-config"],
)
def test_a_damaged_point_is_reported_in_one_line_and_recomputed(tmp_path, capsys, damage):
    cfg = _Cfg(seed=3)
    cache, compute = point_cache(tmp_path, cfg), _Counter(cfg)
    cache.point("p", compute)
    path = cache.folder / "p.json"
    damage(path)
    capsys.readouterr()
    assert cache.point("p", compute)["seed"] == 3
    assert compute.calls == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "damaged" in err[0] and "Traceback" not in err[0]
    assert cache.point("p", compute)["seed"] == 3 and compute.calls == 2  # repaired on disk


def test_point_names_are_plain_file_stems(tmp_path):
    cache = PointCache(tmp_path, "h")
    for bad in ("../p", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="cache point name must be a plain file stem"):
            cache.point(bad, dict)


def test_prune_keeps_only_the_named_config(tmp_path):
    for cfg in (_Cfg(seed=0), _Cfg(seed=1)):
        point_cache(tmp_path, cfg).point("p", _Counter(cfg))
    keep = config_hash(_Cfg(seed=1))
    assert [p.name for p in prune_point_caches(tmp_path, keep)] == [config_hash(_Cfg(seed=0))]
    assert [p.name for p in (tmp_path / CACHE).iterdir()] == [keep]
    prune_point_caches(tmp_path, None)
    assert not list((tmp_path / CACHE).iterdir())
    assert prune_point_caches(tmp_path / "absent", None) == []


def test_a_real_experiment_recomputes_its_points_for_another_seed(tmp_path, monkeypatch):
    """lr_noise_scale (the cheapest sweep with a tiny preset): a seed change into the same folder recomputes."""
    mod = importlib.import_module("experiments.batch_size.lr_noise_scale")
    made = []
    real = mod.train_sweep
    monkeypatch.setattr(
        mod, "train_sweep", lambda config, b, *rest: made.append((config.seed, b)) or real(config, b, *rest)
    )
    tiny = dataclasses.replace(mod.PRESETS["tiny"], batch_sizes=(1024,), bopt_sizes=(1000,), bopt_batch_factors=(512,))
    first = mod.run(tiny, tmp_path)
    other = mod.run(dataclasses.replace(tiny, seed=tiny.seed + 1), tmp_path)
    # every point (the sweep at B = 1024 and the B_opt point at B = 512) is made anew under seed 1
    assert made == [(tiny.seed, 1024), (tiny.seed, 512), (tiny.seed + 1, 1024), (tiny.seed + 1, 512)]
    assert json.dumps(to_jsonable(other.metrics)) != json.dumps(to_jsonable(first.metrics))
    again = mod.run(tiny, tmp_path)  # resumes from its own points
    assert len(made) == 4 and json.dumps(to_jsonable(again.metrics)) == json.dumps(to_jsonable(first.metrics))
