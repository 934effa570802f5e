"""The steps-to-target sweep's settings, shared by :mod:`experiments.batch_size.steps_to_target` (which runs it)
and :mod:`experiments.batch_size.gradient_noise_scale` (which fits B_simple against it)."""

from __future__ import annotations

import dataclasses

from experiments.batch_size import _batch_util as bu


@dataclasses.dataclass(frozen=True)
class StepsConfig:
    batch_sizes: tuple[int, ...] = tuple(2**k for k in range(11))  # 1 … 1024
    n_seeds: int = 2
    momenta: tuple[float, ...] = (0.0,)  # 0 = plain SGD (the default workload)
    lr0_exp: int = -6  # the first window is centred on 2^lr0_exp at the smallest B
    workload: bu.Workload = bu.Workload()
    seed: int = 0


STEPS_PRESETS = {
    "tiny": StepsConfig(
        batch_sizes=(256, 1024),
        n_seeds=1,
        lr0_exp=-1,
        workload=bu.Workload(hidden=(32,), target=1.6, n_eval=500, max_steps=400, eval_ratio=1.1),
    ),
    "quick": StepsConfig(),
    "full": StepsConfig(
        batch_sizes=tuple(2**k for k in range(12)) + (4000,),
        n_seeds=5,
        momenta=(0.0, 0.9),
        workload=bu.Workload(n_eval=4000, max_steps=60000, eval_ratio=1.02, stop_factor=2.0),
    ),
}


def seeds_of(config) -> tuple[int, ...]:
    return tuple(config.seed + i for i in range(config.n_seeds))
