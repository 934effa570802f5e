"""fnnet's experiments: runnable studies that reproduce the texts' material and classic results.

``python -m experiments`` runs them all (quick preset); see ``experiments/__main__.py``.

This module is the one registry. Each study is a package ``experiments/<study>/`` and each of its
experiments a module ``experiments/<study>/<name>.py`` that keeps the contract of
:class:`experiments._common.Experiment`. :data:`STUDIES` lists them in report order;
:data:`EXPERIMENTS`, :data:`STUDY_OF` and :func:`load` derive from it, and the runner, ``--list``,
the README's table and the tests all read it. Every experiment module is
imported here, plainly; none does work at import.
"""

from __future__ import annotations

from experiments._common import Experiment, check_experiment
from experiments.batch_size import (
    data_parallel,
    gd_regimes,
    generalization_gap,
    gradient_noise_scale,
    lr_noise_scale,
    steps_to_target,
)
from experiments.checks import gradient_checks
from experiments.initialization import (
    gradient_propagation,
    mean_field,
    residual_depth,
    signal_propagation,
    symmetry,
    trainability_depth,
)
from experiments.texts import (
    activations,
    backprop_cases,
    conv_toy,
    dead_relu,
    loss_landscape,
    perceptron_xor,
    rnn_bptt,
    universal_approximation,
    worked_example,
)

_BY_STUDY: dict[str, tuple[Experiment, ...]] = {
    # the three-way checks of every rule (fnnet check)
    "checks": (gradient_checks,),
    # the texts' own material
    "texts": (
        activations,
        backprop_cases,
        worked_example,
        perceptron_xor,
        universal_approximation,
        conv_toy,
        rnn_bptt,
        dead_relu,
        loss_landscape,
    ),
    # the initialization study
    "initialization": (
        signal_propagation,
        gradient_propagation,
        symmetry,
        trainability_depth,
        mean_field,
        residual_depth,
    ),
    # the batch-size study
    "batch_size": (
        gd_regimes,
        steps_to_target,
        gradient_noise_scale,
        lr_noise_scale,
        generalization_gap,
        data_parallel,
    ),
}

#: study -> the names of its experiments, in report order.
STUDIES: dict[str, tuple[str, ...]] = {study: tuple(m.NAME for m in mods) for study, mods in _BY_STUDY.items()}

#: Every experiment, in report order (the studies' names, concatenated).
EXPERIMENTS: tuple[str, ...] = tuple(name for names in STUDIES.values() for name in names)

#: experiment name -> its study.
STUDY_OF: dict[str, str] = {name: study for study, names in STUDIES.items() for name in names}

_MODULES: dict[str, Experiment] = {m.NAME: m for mods in _BY_STUDY.values() for m in mods}


def load(name: str) -> Experiment:
    """The module of experiment ``name``, checked against the contract (:func:`check_experiment`).

    Raises:
        ValueError: ``name`` is not in :data:`EXPERIMENTS`.
        TypeError: the module breaks the contract (the message names every part it breaks).
    """
    if name not in _MODULES:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return check_experiment(_MODULES[name], name)
