"""fnnet's experiments: runnable studies that reproduce the texts' material and classic results.

``python -m experiments`` runs them all (quick preset); see ``experiments/__main__.py``.

The one registry is :data:`STUDIES`: each study is a package ``experiments/<study>/`` and each of its
experiments a module ``experiments/<study>/<name>.py``. :data:`EXPERIMENTS` (every name, in report
order) and :func:`module_path` are derived from it; the runner, ``--list`` and the tests read them.
"""

#: study -> its experiments, in report order. Each experiment is the module ``experiments.<study>.<name>``.
STUDIES: dict[str, tuple[str, ...]] = {
    # the three-way checks of every rule (fnnet check)
    "checks": ("gradient_checks",),
    # the texts' own material
    "texts": (
        "activations",
        "backprop_cases",
        "worked_example",
        "perceptron_xor",
        "universal_approximation",
        "conv_toy",
        "rnn_bptt",
        "dead_relu",
        "loss_landscape",
    ),
    # the initialization study
    "initialization": (
        "signal_propagation",
        "gradient_propagation",
        "symmetry",
        "trainability_depth",
        "mean_field",
        "residual_depth",
    ),
    # the batch-size study
    "batch_size": (
        "gd_regimes",
        "steps_to_target",
        "gradient_noise_scale",
        "lr_noise_scale",
        "generalization_gap",
        "data_parallel",
    ),
}

#: Every experiment, in report order (the studies' names, concatenated).
EXPERIMENTS: tuple[str, ...] = tuple(name for names in STUDIES.values() for name in names)

#: experiment name -> its study.
STUDY_OF: dict[str, str] = {name: study for study, names in STUDIES.items() for name in names}


def module_path(name: str) -> str:
    """The module of experiment ``name``, e.g. ``"experiments.texts.worked_example"``.

    Raises:
        ValueError: ``name`` is not in :data:`EXPERIMENTS`.
    """
    if name not in STUDY_OF:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return f"experiments.{STUDY_OF[name]}.{name}"
