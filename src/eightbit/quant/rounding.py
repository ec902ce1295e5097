"""Weight codes chosen with the layer's inputs in view (docs/quantization.md, section 2a, eq. 34).

Rounding every weight to its nearest code (eq. 5) minimizes the error of each weight; what the
model feels is the error of the layer's output, (W − Ŵ)·x. With H = Σ x·xᵀ over the calibration
inputs, that error is tr((W − Ŵ) H (W − Ŵ)ᵀ). Quantizing one input column at a time and moving
its rounding error onto the columns not yet quantized, in proportion to the inverse of H,
lowers it (Optimal Brain Quantization, Frantar and Alistarh 2022; in blocks of columns as GPTQ,
Frantar et al. 2023). The grid, one (scale, zero point) per output row, is the one eq. 6 gives;
only which code each weight takes changes.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas, lapack

from eightbit.config import IntegerFormat

# Added to H's diagonal, as a fraction of its mean: keeps H invertible where inputs are
# (nearly) linearly dependent, and limits how far an error is moved.
DAMPING = 0.01
# Columns quantized one at a time inside a block; the block's error reaches later columns in one product.
BLOCK = 128


class InputMoments(dict):
    """Node name -> H of its inputs (as input_moments gives them), and the weight codes eq. 34 chose from them.

    One quantize call builds the same float model many times (each measured choice, each probe of a budget's
    search), and a node's codes depend only on its weight, its H, its grid and its input's scale: `codes`
    keeps them by those (passes/weight_rounding.py), so each is chosen once a call. A rewrite that changes
    the weights (equalization) gets moments of its own.

    The float model's pass that takes the moments also takes the per-channel means bias correction compares
    with (eq. 7b): `means`, by tensor name, and `mean_rows`, which samples they are over (start, count).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.codes: dict[tuple, np.ndarray] = {}
        self.means: dict[str, np.ndarray] = {}
        self.mean_rows: tuple[int, int] | None = None


def _nearest(column: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, fmt: IntegerFormat) -> np.ndarray:
    return np.clip(np.rint(column / scale) + zero_point, fmt.qmin, fmt.qmax)


def _inverse_upper_factor(h: np.ndarray, diagonal: np.ndarray) -> np.ndarray | None:
    """U, upper triangular, with H⁻¹ = Uᵀ·U (row i: how column i's error spreads to the columns after it), for H
    the matrix `h` with `diagonal` on its diagonal (`h` itself is left as it is); None where H is not positive
    definite.

    With J the reversal of the columns' order and J·H·J = L·Lᵀ (Cholesky), H = (J·L·J)(J·L·J)ᵀ where J·L·J is
    upper triangular, so U = (J·L·J)⁻¹ = J·L⁻¹·J: one factorization and one triangular inverse, a third of the
    work of inverting H and factoring the inverse. Both in float32, as GPTQ does them (H is damped, so its
    condition number stays below about 100 times its width; against float64, at most 3 codes in 1,000 moved on
    ResNet-50's layers and their output error by at most 0.4%); float64 where float32 does not find H
    positive definite.
    """
    for factor, invert, dtype in ((lapack.spotrf, lapack.strtri, np.float32),
                                  (lapack.dpotrf, lapack.dtrtri, np.float64)):
        # J·H·J is symmetric, so its rows in C order are its columns in LAPACK's (Fortran) order: copied once,
        # reading memory forwards, and handed over without another copy.
        reversed_h = np.ascontiguousarray(h[::-1, ::-1], dtype=dtype)
        np.fill_diagonal(reversed_h, diagonal[::-1])
        lower, info = factor(reversed_h.T, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            continue
        inverse, info = invert(lower, lower=1, overwrite_c=1)
        if info == 0:  # U in column order, as LAPACK left it: the column walk reads U's columns
            return np.array(inverse[::-1, ::-1], dtype=np.float64, order="F")
    return None


def _per_weight(parameter: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """A grid parameter given per tensor, per row or per weight, as one per weight (rows, columns)."""
    parameter = np.asarray(parameter, np.float64)
    if parameter.ndim < 2:
        parameter = parameter.reshape(-1, 1)
    return np.broadcast_to(parameter, (rows, columns))


def error_feedback_codes(
    weights: np.ndarray, moments: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, fmt: IntegerFormat,
    input_noise: float = 0.0,
) -> np.ndarray:
    """Codes for `weights` (rows = outputs, columns = inputs) on the grid (scale, zero point), one per row
    or one per weight (rows, columns: a block's repeated over its inputs), that lower tr(E·H·Eᵀ),
    E = weights − dequantized codes, H = `moments` (inputs × inputs) (eq. 34).

    Columns are taken in their own order. `input_noise` (the variance the input's own rounding adds,
    s_x²/12) is added to H's diagonal. Inputs that were always zero take their nearest codes: on
    these samples they cost nothing, and where other inputs do reach them their float weights hold.
    """
    w = np.array(weights, dtype=np.float64)
    rows, columns = w.shape
    scale = _per_weight(scale, rows, columns)
    zero_point = _per_weight(zero_point, rows, columns)
    diagonal = np.diag(moments).astype(np.float64)
    dead = diagonal <= 0  # such an input's row and column of H are zero too
    diagonal = np.where(dead, 1.0, diagonal + input_noise)  # dead: alone on the diagonal, no error reaches it
    diagonal += DAMPING * np.mean(diagonal)
    spread = _inverse_upper_factor(moments, diagonal)
    if spread is None:
        return _nearest(w, scale, zero_point, fmt)
    # Columns as rows (inputs × outputs). Within a block, a column takes the errors of the block's earlier
    # columns only when its turn comes (one product), and the block's errors reach the later blocks at its end.
    # The products go to the BLAS that factored H (SciPy's): numpy's is another library with threads of its
    # own, and each library's idle threads spin for a while after a call, so alternating the two layer by
    # layer had both sets of threads on the two cores at once (Inception-v1's codes took 2.2 s, 0.9 s on one).
    remaining = np.ascontiguousarray(w.T)
    codes = np.empty_like(remaining)
    for first in range(0, columns, BLOCK):
        last = min(first + BLOCK, columns)
        errors = np.empty((last - first, rows))
        for i in range(last - first):
            c = first + i
            column = remaining[c] - blas.dgemv(1.0, errors[:i].T, spread[first:c, c]) if i else remaining[c]
            code = _nearest(column, scale[:, c], zero_point[:, c], fmt)
            codes[c] = code
            errors[i] = (column - (code - zero_point[:, c]) * scale[:, c]) / spread[c, c]
        if last < columns:  # remaining[last:] −= errorsᵀ·spread[block, last:], written in place (as its transpose)
            blas.dgemm(-1.0, errors.T, spread[first:last, last:], beta=1.0, c=remaining[last:].T, overwrite_c=1)
    return codes.T


def output_error(weights: np.ndarray, approximation: np.ndarray, moments: np.ndarray) -> float:
    """tr(E·H·Eᵀ), E = weights − approximation: the summed squared output error over the inputs behind H."""
    e = np.asarray(weights, np.float64) - np.asarray(approximation, np.float64)
    return float(np.sum((e @ np.asarray(moments, np.float64)) * e))  # a matrix product: BLAS, not einsum's loop


def moments_error(weights: np.ndarray, approximation: np.ndarray, moments: np.ndarray) -> float:
    """output_error over H as calibrate.moments gives it, (groups, columns, columns) or its diagonal blocks
    (groups, blocks, B, B), for weights of one group (rows = outputs, columns = inputs)."""
    h = np.asarray(moments, np.float64)[0]
    if h.ndim == 2:
        return output_error(weights, approximation, h)
    width = h.shape[-1]
    e = np.asarray(weights, np.float64) - np.asarray(approximation, np.float64)
    e = np.pad(e, ((0, 0), (0, h.shape[0] * width - e.shape[1]))).reshape(e.shape[0], h.shape[0], width)
    e = e.transpose(1, 0, 2)  # (blocks, rows, width)
    return float(np.sum(np.matmul(e, h) * e))
