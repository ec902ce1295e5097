"""Activation-aware input scales for weights in blocks (docs/quantization.md, eq. 39).

A layer y = W x (rows of W = outputs, columns = inputs) computes the same with x's channel k divided by s_k and
W's column k multiplied by it. Quantized in blocks, the scaled columns take finer steps relative to their
weights where s_k > 1: the inputs that carry the most signal (the largest mean squares) are given the largest
s_k, so their weights are rounded finest, at the cost of coarser steps for weights that meet small inputs.
"""

from __future__ import annotations

import numpy as np

from eightbit.quant.blocks import BlockFormat, block_grid, dequantized, nearest_codes
from eightbit.quant.rounding import moments_error

# The exponents tried for s_k = rms_k^alpha; 0 (no scaling) is among them, so a scaling is taken only where it
# lowers the error.
ALPHAS = tuple(step / 10 for step in range(11))


def input_rms(moments: np.ndarray, columns: int) -> np.ndarray:
    """Each input's root mean square, from H's diagonal: calibrate.moments' (groups, columns, columns) or its
    diagonal blocks (groups, blocks, B, B), the first group's."""
    h = np.asarray(moments)[0]
    diagonal = np.diagonal(h) if h.ndim == 2 else np.diagonal(h, axis1=1, axis2=2).reshape(-1)
    return np.sqrt(np.maximum(diagonal[:columns], 0.0))


def channel_scales(rms: np.ndarray, alpha: float) -> np.ndarray:
    """s_k = rms_k^alpha / sqrt(max · min) over the channels (eq. 39): the inputs' root mean squares raised to
    alpha, centred so that the largest and smallest scale are reciprocal. A channel that is never nonzero
    takes the smallest nonzero rms (its weights then meet nothing, and any scale serves)."""
    rms = np.asarray(rms, np.float64)
    floor = rms[rms > 0].min() if np.any(rms > 0) else 1.0
    scales = np.maximum(rms, floor) ** alpha
    return scales / np.sqrt(scales.max() * scales.min())


def scaled_error(rows: np.ndarray, moments: np.ndarray, scales: np.ndarray, block: BlockFormat) -> float:
    """tr(E H Eᵀ) of the layer whose inputs are divided by `scales` and whose columns, multiplied by them, take
    their nearest codes in blocks: E = W − Q(W diag(s)) diag(s)⁻¹, H = `moments` of the unscaled inputs."""
    scaled = np.asarray(rows, np.float64) * scales[None, :]
    grid = block_grid(scaled, block)
    approximation = dequantized(nearest_codes(scaled, grid, block.fmt), grid) / scales[None, :]
    return moments_error(rows, approximation, moments)


def scaled_moments(moments: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """H of the inputs divided by `scales`: H_ij / (s_i s_j), for calibrate.moments' (groups, columns, columns)
    or its diagonal blocks (groups, blocks, B, B)."""
    h = np.asarray(moments, np.float64)
    if h.ndim == 3:
        return h / np.outer(scales, scales)[None]
    width = h.shape[-1]
    padded = np.pad(scales, (0, h.shape[1] * width - len(scales)), constant_values=1.0).reshape(h.shape[1], width)
    return h / (padded[:, :, None] * padded[:, None, :])[None]
