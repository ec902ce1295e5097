"""ONNX Runtime's block-quantized operators as their specification defines them (docs/quantization.md, section
2b): com.microsoft MatMulNBits and GatherBlockQuantized, weights dequantized per block (eq. 38), arithmetic in
float. MatMulNBits at accuracy level 4 also rounds its input to int8 per block in the runtime; here the input
stays float (level 0), so the two differ by that rounding."""

from __future__ import annotations

import numpy as np


def unpacked(data: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes from bytes packed low bits first (two 4-bit codes a byte, or one 8-bit code): the last
    axis doubles at 4 bits."""
    data = np.asarray(data, np.uint8)
    if bits == 8:
        return data
    return np.stack([data & 0x0F, data >> 4], axis=-1).reshape(*data.shape[:-1], -1)


def _zero_points(zero_points: np.ndarray | None, rows: int, blocks: int, bits: int) -> np.ndarray:
    """Zero points (rows, blocks): the default 2^(bits-1), packed bytes, or given in the scales' float type."""
    if zero_points is None:
        return np.full((rows, blocks), 2 ** (bits - 1), np.float32)
    if zero_points.dtype == np.uint8:
        return unpacked(zero_points.reshape(rows, -1), bits)[:, :blocks].astype(np.float32)
    return zero_points.reshape(rows, blocks).astype(np.float32)


def matmul_nbits(a: np.ndarray, b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None = None,
                 bias: np.ndarray | None = None, *, k: int, n: int, bits: int, block_size: int) -> np.ndarray:
    """A · Wᵀ (+ bias), W (n, k) the codes of `b` (n, blocks, block bytes) dequantized per block."""
    blocks = -(-k // block_size)
    codes = unpacked(b.reshape(n, blocks, -1), bits).astype(np.float32)
    scale = scales.reshape(n, blocks).astype(np.float32)
    zero = _zero_points(zero_points, n, blocks, bits)
    weights = ((codes - zero[..., None]) * scale[..., None]).reshape(n, -1)[:, :k]
    y = np.asarray(a, np.float32) @ weights.T
    return y + bias if bias is not None else y


def gather_block_quantized(data: np.ndarray, indices: np.ndarray, scales: np.ndarray,
                           zero_points: np.ndarray | None = None, *, block_size: int, bits: int) -> np.ndarray:
    """Rows `indices` of the table `data` (packed bytes, rows × row bytes), dequantized per block of each row
    (gather_axis 0, quantize_axis 1, the forms eightbit writes)."""
    rows = data.shape[0]
    codes = unpacked(data, bits).astype(np.float32)
    blocks = codes.shape[1] // block_size
    scale = scales.reshape(rows, blocks).astype(np.float32)
    zero = _zero_points(zero_points, rows, blocks, bits)
    indices = indices.astype(np.int64)
    picked = np.take(codes, indices, axis=0)
    step = np.repeat(np.take(scale, indices, axis=0), block_size, axis=-1)
    offset = np.repeat(np.take(zero, indices, axis=0), block_size, axis=-1)
    return (picked - offset) * step
