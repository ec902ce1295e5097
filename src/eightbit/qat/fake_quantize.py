"""Fake quantization in PyTorch: dequantize(quantize(x)) forward, straight-through backward.

Forward is eq. 5 then eq. 1 of docs/quantization.md, computed in float32 as ONNX
QuantizeLinear / DequantizeLinear compute them (x / scale, round half to even, add the
integer zero point, clamp). Backward is the straight-through estimator (eq. 27): the
gradient passes unchanged where x lies on the grid's span and is 0 where x was clamped.
Exported to ONNX, a fake quantization is the QuantizeLinear -> DequantizeLinear pair it
simulates: for export, its grid is fixed and it is written with PyTorch's decomposed quantize
ops, which the ONNX exporter (torch.onnx.export, dynamo=True) writes as those two nodes.
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


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                     axis: int | None) -> torch.Tensor:
    """Integer codes to float (eq. 1)."""
    s, z = _along(scale, codes, axis), _along(zero_point, codes, axis)
    return (codes.to(torch.int64) - z.to(torch.int64)).to(torch.float32) * s


def _decomposed():
    """PyTorch's decomposed quantize ops (registered by the module that defines them)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401

    return torch.ops.quantized_decomposed


def exported_quantize_dequantize(x: torch.Tensor, scale: float, zero_point: int, dtype: torch.dtype) -> torch.Tensor:
    """x on a grid fixed for export, as the QuantizeLinear -> DequantizeLinear pair the exporter writes. The
    grid spans its code type's whole range: the range QuantizeLinear clamps to."""
    info, ops = torch.iinfo(dtype), _decomposed()
    codes = ops.quantize_per_tensor(x, scale, zero_point, info.min, info.max, dtype)
    return ops.dequantize_per_tensor(codes, scale, zero_point, info.min, info.max, dtype)


def exported_dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                        axis: int | None) -> torch.Tensor:
    """Constant codes to float, as the DequantizeLinear the exporter writes: per channel along `axis`, or with
    one scale and zero point (axis None)."""
    info, ops = torch.iinfo(codes.dtype), _decomposed()
    if axis is None:
        return ops.dequantize_per_tensor(codes, float(scale), int(zero_point), info.min, info.max, codes.dtype)
    return ops.dequantize_per_channel(codes, scale, zero_point, axis, info.min, info.max, codes.dtype)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                  axis: int | None = None, ties_away: bool = False) -> torch.Tensor:
    """Round half to even (eq. 5: quantizing float data), or with `ties_away` half away from zero
    (eq. 11: the integer model's requantization of an integer op's accumulator)."""
    return FakeQuantize.apply(x, scale, zero_point, qmin, qmax, axis, ties_away)
