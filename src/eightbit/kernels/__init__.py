"""Integer reference kernels: what every integer op of an eightbit model computes.

One op per module, plain numpy. Each kernel takes integer arrays and integer parameters
(zero points, Q0.31 multipliers and shifts, lookup tables) and returns integers; every float
(a scale, a real multiplier, an activation function) is turned into integers beforehand, by
the `prepare_*` functions beside the kernels, as TFLite separates Prepare from Eval.
docs/quantization.md, section 8, is the specification.
"""
