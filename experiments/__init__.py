"""fnnet's experiments: runnable studies that reproduce the texts' material and classic results.

``python -m experiments`` runs them all (quick preset); see ``experiments/__main__.py``.
"""

#: Every experiment, in report order. Each is a module ``experiments/<name>.py``.
EXPERIMENTS: tuple[str, ...] = (
    # the three-way checks of every rule (fnnet check)
    "gradient_checks",
    # the texts' own material
    "activations",
    "backprop_cases",
    "worked_example",
    "perceptron_xor",
    "universal_approximation",
    "conv_toy",
    "rnn_bptt",
    "dead_relu",
    "loss_landscape",
    # the initialization study
    "signal_propagation",
    "gradient_propagation",
    "symmetry",
    "trainability_depth",
    "mean_field",
    "residual_depth",
    # the batch-size study
    "gd_regimes",
    "steps_to_target",
    "gradient_noise_scale",
    "lr_noise_scale",
    "generalization_gap",
    "data_parallel",
)
