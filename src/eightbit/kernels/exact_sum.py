"""Integer dot products through float64 BLAS, exactly.

Every operand is an integer of at most 9 bits of magnitude (an 8-bit code minus an 8-bit zero
point lies in [-255, 255]), so each product is below 2^16 in magnitude and a sum of K products
below K * 2^16. Integers below 2^53 are exact in float64 and so is every partial sum of them,
whatever order BLAS adds them in. With K < 2^37 every result is therefore the exact integer;
`exact_matmul` checks the bound and returns int64.
"""

from __future__ import annotations

import numpy as np

_MAX_OPERAND = 1 << 16  # bound on |a| and |b| accepted (16-bit codes minus zero points)
_EXACT = float(1 << 53)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for integer arrays, exact, as int64 (numpy matmul broadcasting)."""
    depth = a.shape[-1]
    bound_a = int(np.abs(a).max(initial=0))
    bound_b = int(np.abs(b).max(initial=0))
    if bound_a > _MAX_OPERAND or bound_b > _MAX_OPERAND or float(depth) * bound_a * bound_b >= _EXACT:
        # Outside the float64-exact range: integer matmul (slow but exact).
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
