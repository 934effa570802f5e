"""The initialization study: signal and gradient propagation, symmetry, trainability, mean field, residual depth,
and the Hessian at init."""
