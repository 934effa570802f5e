"""fnnet's experiments: runnable studies that reproduce the texts' material and classic results.

``python -m experiments`` runs them all (quick preset); see ``experiments/__main__.py``.

This module is the one registry. Each study is a package ``experiments/<study>/`` and each of its
experiments a module ``experiments/<study>/<name>.py`` that keeps the contract of
:class:`experiments._common.Experiment`. :data:`STUDIES` lists them in report order;
:data:`EXPERIMENTS`, :data:`STUDY_OF` and :func:`load` derive from it, and the runner, ``--list``,
the README's table and the tests all read it. :data:`STUDY_BUDGET_SECONDS` gives each study's budget
at the quick preset. Every experiment module is
imported here, plainly; none does work at import.
"""

from __future__ import annotations

from experiments._common import Experiment, check_experiment
from experiments.attention import attention_scale, char_gpt, norm_position, rank_collapse
from experiments.batch_size import (
    data_parallel,
    edge_of_stability,
    gd_regimes,
    generalization_gap,
    gradient_noise_scale,
    lr_noise_scale,
    steps_to_target,
    warmup,
)
from experiments.checks import gradient_checks, mnist1d_baselines
from experiments.initialization import (
    critical_depth,
    dropout_criticality,
    expressivity,
    glorot_training,
    gradient_propagation,
    hessian_at_init,
    isometry_training,
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
    # the three-way checks of every rule (fnnet check), and the MNIST-1D pipeline against Greydanus 2020
    "checks": (gradient_checks, mnist1d_baselines),
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
        critical_depth,
        expressivity,
        dropout_criticality,
        glorot_training,
        isometry_training,
        residual_depth,
        hessian_at_init,
    ),
    # the batch-size study
    "batch_size": (
        gd_regimes,
        edge_of_stability,
        steps_to_target,
        gradient_noise_scale,
        lr_noise_scale,
        warmup,
        generalization_gap,
        data_parallel,
    ),
    # the attention study
    "attention": (char_gpt, attention_scale, norm_position, rank_collapse),
}

#: study -> the names of its experiments, in report order.
STUDIES: dict[str, tuple[str, ...]] = {study: tuple(m.NAME for m in mods) for study, mods in _BY_STUDY.items()}

#: Every experiment, in report order (the studies' names, concatenated).
EXPERIMENTS: tuple[str, ...] = tuple(name for names in STUDIES.values() for name in names)

#: experiment name -> its study.
STUDY_OF: dict[str, str] = {name: study for study, names in STUDIES.items() for name in names}

#: study -> its budget in seconds at the quick preset on an idle 2-core CPU, all its experiments together.
#: The whole quick run (every study) must fit in 20 minutes; the full preset has no budget (GPU-sized).
STUDY_BUDGET_SECONDS: dict[str, int] = {
    "checks": 90,
    "texts": 240,
    "initialization": 270,
    "batch_size": 330,
    "attention": 240,
}

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
