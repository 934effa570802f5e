"""The batch-size study: GD regimes, steps to target, noise scales, the generalization gap, data parallelism."""
