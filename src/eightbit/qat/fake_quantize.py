"""Fake quantization in PyTorch: dequantize(quantize(x)) forward, straight-through backward.

Forward is eq. 5 then eq. 1 of docs/quantization.md, computed in float32 as ONNX
QuantizeLinear / DequantizeLinear compute them (x / scale, round half to even, add the
integer zero point, clamp). Backward is the straight-through estimator (eq. 27): the
gradient passes unchanged where x lies on the grid's span and is 0 where x was clamped.
Exported to ONNX, a fake quantization is the QuantizeLinear -> DequantizeLinear pair it
simulates.
"""

from __future__ import annotations

import torch


def _along(param: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None:
        return param
    shape = [1] * x.dim()
    shape[axis] = -1
    return param.reshape(shape)


class FakeQuantize(torch.autograd.Function):
    """x on the grid {scale * (q - zero_point) : qmin <= q <= qmax}, per tensor or per channel along axis."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int, axis: int | None, ties_away: bool = False):
        s, z = _along(scale, x, axis), _along(zero_point, x, axis).to(x.dtype)
        scaled = x / s
        rounded = torch.sign(scaled) * torch.floor(torch.abs(scaled) + 0.5) if ties_away else torch.round(scaled)
        q = rounded + z
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - z) * s

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None, None, None

    @staticmethod
    def symbolic(g, x, scale, zero_point, qmin: int, qmax: int, axis: int | None, ties_away: bool = False):
        info = torch.iinfo(zero_point.type().dtype())
        if (qmin, qmax) != (info.min, info.max):
            raise ValueError(f"codes [{qmin}, {qmax}] are not the whole range of {info.dtype}: "
                             "a QuantizeLinear could not clamp there")
        attributes = {} if axis is None else {"axis_i": axis}
        codes = g.op("QuantizeLinear", x, scale, zero_point, **attributes)
        return g.op("DequantizeLinear", codes, scale, zero_point, **attributes)


class Dequantize(torch.autograd.Function):
    """Integer codes to float (eq. 1); exported as DequantizeLinear of constant codes."""

    @staticmethod
    def forward(ctx, codes, scale, zero_point, axis: int | None):
        s, z = _along(scale, codes, axis), _along(zero_point, codes, axis)
        return (codes.to(torch.int64) - z.to(torch.int64)).to(torch.float32) * s

    @staticmethod
    def symbolic(g, codes, scale, zero_point, axis: int | None):
        attributes = {} if axis is None else {"axis_i": axis}
        return g.op("DequantizeLinear", codes, scale, zero_point, **attributes)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                  axis: int | None = None, ties_away: bool = False) -> torch.Tensor:
    """Round half to even (eq. 5: quantizing float data), or with `ties_away` half away from zero
    (eq. 11: the integer model's requantization of an integer op's accumulator)."""
    return FakeQuantize.apply(x, scale, zero_point, qmin, qmax, axis, ties_away)
