"""Weights in blocks (docs/quantization.md, section 2b): one (scale, zero point) per output row and run of
`size` consecutive inputs, so that a 16-code grid follows the weights' local range.

A weight is handled here as rows: one row per output, its inputs (the reduction axis) along the row. The
last block of a row whose length is not a multiple of `size` is shorter; its grid comes from the inputs it
has.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from eightbit.config import IntegerFormat
from eightbit.quant.affine import choose_qparams

# Block sizes offered: powers of two, as the runtimes' block kernels take them.
BLOCK_SIZES = (16, 32, 64, 128, 256)
# Code widths offered in blocks.
BLOCK_BITS = (4, 8)
# The block size where 4-bit codes are asked and no size is: 32 inputs keep 4-bit error small on every
# model measured (BENCHMARKS.md), at 1 byte of scale per 16 bytes of codes.
DEFAULT_BLOCK_SIZE = 32


@dataclasses.dataclass(frozen=True)
class BlockFormat:
    """Codes of `fmt` (value bits 4 or 8 in a byte), one grid per `size` inputs of each output row.

    Symmetric formats are signed with zero point 0 ([-8, 7] at 4 bits); the others unsigned with a zero
    point per block ([0, 15])."""

    fmt: IntegerFormat
    size: int

    @property
    def bits(self) -> int:
        return self.fmt.value_bits or self.fmt.bits

    @property
    def symmetric(self) -> bool:
        return self.fmt.symmetric


def block_format(bits: int, size: int, symmetric: bool) -> BlockFormat:
    """The block format of `bits`-bit codes (BLOCK_BITS) in blocks of `size` (BLOCK_SIZES)."""
    if bits not in BLOCK_BITS or size not in BLOCK_SIZES:
        raise ValueError(f"blocks of {size} {bits}-bit codes are not offered: bits {BLOCK_BITS}, sizes {BLOCK_SIZES}")
    fmt = IntegerFormat(bits=8, signed=symmetric, symmetric=symmetric, value_bits=bits)
    return BlockFormat(fmt, size)


@dataclasses.dataclass(frozen=True)
class BlockGrid:
    """The grids of one weight: scale and zero point (rows, blocks), the zero point in the format's type."""

    scale: np.ndarray
    zero_point: np.ndarray
    size: int

    def per_input(self, columns: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point of each weight (rows, columns): each block's repeated over its inputs."""
        scale = np.repeat(self.scale, self.size, axis=1)[:, :columns]
        zero_point = np.repeat(self.zero_point, self.size, axis=1)[:, :columns]
        return scale, zero_point


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """`rows` with zero columns added up to a multiple of `size` (zeros change no grid: eq. 2 holds 0)."""
    missing = -rows.shape[1] % size
    return np.pad(rows, ((0, 0), (0, missing))) if missing else rows


def block_grid(rows: np.ndarray, block: BlockFormat) -> BlockGrid:
    """Each block's grid from its own [min, max] (eq. 2-4)."""
    blocks = _padded(np.asarray(rows, np.float32), block.size)
    blocks = blocks.reshape(blocks.shape[0], -1, block.size)
    scale, zero_point = choose_qparams(blocks.min(axis=2), blocks.max(axis=2), block.fmt)
    return BlockGrid(scale, zero_point, block.size)


def nearest_codes(rows: np.ndarray, grid: BlockGrid, fmt: IntegerFormat) -> np.ndarray:
    """Each weight's nearest code on its block's grid (eq. 5), in the format's type."""
    scale, zero_point = grid.per_input(rows.shape[1])
    codes = np.rint(np.asarray(rows, np.float64) / scale) + zero_point
    return np.clip(codes, fmt.qmin, fmt.qmax).astype(fmt.numpy_dtype)


def dequantized(codes: np.ndarray, grid: BlockGrid) -> np.ndarray:
    """The real values the codes stand for (eq. 6), float32 (rows, columns)."""
    scale, zero_point = grid.per_input(codes.shape[1])
    return ((codes.astype(np.float32) - zero_point.astype(np.float32)) * scale).astype(np.float32)


def as_unsigned(codes: np.ndarray, fmt: IntegerFormat) -> np.ndarray:
    """Codes (or zero points) of `fmt` moved onto [0, 2^bits): a signed format's by 2^(bits-1), as the
    runtimes' block kernels store them, their zero point then 2^(bits-1)."""
    bits = fmt.value_bits or fmt.bits
    offset = 2 ** (bits - 1) if fmt.signed else 0
    return (codes.astype(np.int16) + offset).astype(np.uint8)


def packed(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes (rows, columns) in bytes, low bits first: two 4-bit codes a byte (an odd last
    column is padded with code 0), or one 8-bit code a byte."""
    codes = np.asarray(codes, np.uint8)
    if bits == 8:
        return codes
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], 1), np.uint8)], axis=-1)
    return (codes[..., 0::2] & 0x0F) | ((codes[..., 1::2] & 0x0F) << 4)
