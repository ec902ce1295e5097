"""The pipeline: quantize as a sequence of steps, each one decision (docs/quantization.md)."""
