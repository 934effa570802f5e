"""The batch-size study: GD regimes, steps to target, noise scales, warm-up, generalization gap, data parallelism."""
