"""The steps-to-target sweep's settings, shared by :mod:`experiments.batch_size.steps_to_target` (which runs it)
and :mod:`experiments.batch_size.gradient_noise_scale` (which fits B_simple against it).

The workload's ``target`` is the tightest loss; ``targets`` are looser ones read off the same runs'
curves (:func:`experiments.batch_size._batch_util.tune_batch`), so one sweep answers every target.
"""

from __future__ import annotations

import dataclasses

from experiments.batch_size import _batch_util as bu


@dataclasses.dataclass(frozen=True)
class StepsConfig:
    batch_sizes: tuple[int, ...] = (4, 16, 64, 256, 1024)  # powers of 4 (B = 1 and 2: the full preset)
    n_seeds: int = 5
    momenta: tuple[float, ...] = (0.0,)  # 0 = plain SGD (the default workload)
    lr0_exp: int = -5  # the first window is centred on 2^lr0_exp at the smallest B
    targets: tuple[float, ...] = (1.6, 1.2)  # looser targets (training CE), besides workload.target
    workload: bu.Workload = bu.Workload(target=0.8)
    seed: int = 0


STEPS_PRESETS = {
    "tiny": StepsConfig(
        batch_sizes=(64, 256, 1024),
        n_seeds=5,
        lr0_exp=-2,
        targets=(1.9,),
        workload=bu.Workload(hidden=(32,), target=1.6, n_eval=500, max_steps=400, eval_ratio=1.1),
    ),
    "quick": StepsConfig(),
    "full": StepsConfig(
        batch_sizes=tuple(2**k for k in range(12)) + (4000,),
        n_seeds=8,
        lr0_exp=-6,
        momenta=(0.0, 0.9),
        targets=(1.6, 1.2, 1.0),
        workload=bu.Workload(target=0.6, n_eval=4000, max_steps=60000, eval_ratio=1.02, stop_factor=2.0),
    ),
}


def seeds_of(config) -> tuple[int, ...]:
    return tuple(config.seed + i for i in range(config.n_seeds))


def all_targets(config) -> tuple[float, ...]:
    """Every target of the sweep, loosest first (the workload's own target last)."""
    return tuple(sorted(set(config.targets) | {config.workload.target}, reverse=True))


def sweep(config, cache, momentum: float | None = None):
    """The sweep's points for one momentum (the first by default), cached point by point."""
    m = config.momenta[0] if momentum is None else momentum
    targets = tuple(t for t in config.targets if t != config.workload.target)
    return bu.sweep_batches(config.workload, config.batch_sizes, seeds_of(config), m, config.lr0_exp, cache, targets)
