"""The integer LSTM of the dynamic scheme (com.microsoft DynamicQuantizeLSTM, docs eq. 30-31, 33).

Gate pre-activations are two integer matrix products: the inputs of all time steps at once
against W, then each step's hidden state against R. Each left operand is quantized at run time
as DynamicQuantizeLinear does (eq. 30: uint8, its range widened to hold 0), the products are
exact integers, and scale_x * scale_w (per gate row) brings them back to float. The gates
themselves are the ONNX LSTM's, in float: i, o, f, c order, peepholes, optional clip.
"""

from __future__ import annotations

import numpy as np

from eightbit.quant.affine import quantize_at_run_time

_ACTIVATIONS = {
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": np.tanh,
    "Relu": lambda x: np.maximum(x, 0.0),
}


def integer_product(x: np.ndarray, codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """x [rows, K] quantized at run time, times weight codes [K, N] with per-column (or one) scale and
    zero point: the exact integer sum, scaled back to float32 (eq. 31)."""
    x_codes, x_scale, x_zero = quantize_at_run_time(x)
    accumulator = (x_codes.astype(np.int64) - int(x_zero)) @ (codes.astype(np.int64) - zero_point.astype(np.int64))
    return (accumulator.astype(np.float32) * (x_scale * scale.astype(np.float32))).astype(np.float32)


def dynamic_lstm(
    x: np.ndarray, w_codes: np.ndarray, r_codes: np.ndarray, bias: np.ndarray | None,
    initial_h: np.ndarray | None, initial_c: np.ndarray | None, peepholes: np.ndarray | None,
    w_scale: np.ndarray, w_zero: np.ndarray, r_scale: np.ndarray, r_zero: np.ndarray,
    hidden_size: int, direction: str = "forward", activations: list[str] | None = None,
    clip: float | None = None, input_forget: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y [steps, directions, batch, hidden], Y_h and Y_c [directions, batch, hidden].

    x [steps, batch, inputs]; w_codes [directions, inputs, 4 hidden], r_codes [directions, hidden,
    4 hidden]; scales and zero points [directions] or [directions, 4 hidden]. Sequence lengths
    are not supported (every sequence runs all steps).
    """
    steps, batch, _ = x.shape
    directions = 2 if direction == "bidirectional" else 1
    names = activations or ["Sigmoid", "Tanh", "Tanh"] * directions
    hidden = hidden_size
    y = np.zeros((steps, directions, batch, hidden), np.float32)
    last_h = np.zeros((directions, batch, hidden), np.float32)
    last_c = np.zeros((directions, batch, hidden), np.float32)
    for d in range(directions):
        gate, cell, out = (_ACTIVATIONS[name] for name in names[3 * d:3 * d + 3])
        reverse = direction == "reverse" or d == 1
        order = range(steps - 1, -1, -1) if reverse else range(steps)

        def per_row(values: np.ndarray, d: int = d) -> np.ndarray:
            return values[d] if values.ndim == 2 else np.full(4 * hidden, values[d])

        b = bias[d, :4 * hidden] + bias[d, 4 * hidden:] if bias is not None else np.zeros(4 * hidden, np.float32)
        inputs = integer_product(x.reshape(steps * batch, -1), w_codes[d], per_row(w_scale), per_row(w_zero))
        inputs = inputs.reshape(steps, batch, 4 * hidden)
        h = initial_h[d] if initial_h is not None else np.zeros((batch, hidden), np.float32)
        c = initial_c[d] if initial_c is not None else np.zeros((batch, hidden), np.float32)
        p_i, p_o, p_f = (peepholes[d].reshape(3, hidden) if peepholes is not None else np.zeros((3, hidden)))
        for t in order:
            z = inputs[t] + integer_product(h, r_codes[d], per_row(r_scale), per_row(r_zero)) + b
            if clip is not None:
                z = np.clip(z, -clip, clip)
            zi, zo, zf, zc = np.split(z, 4, axis=-1)
            i = gate(zi + p_i * c)
            f = 1.0 - i if input_forget else gate(zf + p_f * c)
            c = f * c + i * cell(zc)
            h = (gate(zo + p_o * c) * out(c)).astype(np.float32)
            c = c.astype(np.float32)
            y[t, d] = h
        last_h[d], last_c[d] = h, c
    return y, last_h, last_c
