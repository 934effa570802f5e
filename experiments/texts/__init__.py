"""The texts study: the source texts' own material (activations, backprop, worked example, XOR, ...) reproduced."""
