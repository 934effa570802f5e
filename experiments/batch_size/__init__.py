"""The batch-size study: GD regimes, the edge of stability, steps to target, noise scales, warm-up, generalization gap,
data parallelism."""
