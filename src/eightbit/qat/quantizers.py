"""The ranges training learns: activations from running batch ranges, weights and biases from themselves.

Every scale and zero point is chosen by the same numpy functions the converter uses
(quant.choose_qparams, quant.weights.weight_qparams, quant.quantize_bias), so the grid a
trained model carries is the grid the converter would choose for the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eightbit.config import IntegerFormat
from eightbit.qat.fake_quantize import exported_quantize_dequantize, fake_quantize
from eightbit.quant import choose_qparams
from eightbit.quant.weights import weight_qparams

# Weight of the past in the running range (Jacob et al. 2018, section 3.1, use an exponential
# moving average of the batch minima and maxima).
RANGE_MOMENTUM = 0.9


def _torch_dtype(fmt: IntegerFormat) -> torch.dtype:
    return {"uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32}[fmt.numpy_dtype.name]


def _global_min_max(x: torch.Tensor) -> tuple[float, float]:
    """The batch's minimum and maximum, over every process when training is distributed."""
    extremes = torch.stack([-x.min(), x.max()]).to(torch.float64)
    processes = torch.distributed
    if processes.is_available() and processes.is_initialized():
        every = [torch.empty_like(extremes) for _ in range(processes.get_world_size())]
        processes.all_gather(every, extremes)  # each process's pair; the largest of each is the global one
        extremes = torch.stack(every).amax(dim=0)
    return -float(extremes[0]), float(extremes[1])


class ActivationQuantizer(nn.Module):
    """Fake-quantizes a tensor onto the grid of its running range (eq. 2-4, 22 through choose_qparams).

    In training mode each batch's minimum and maximum (reduced over all processes) update an
    exponential moving average; in eval mode the range is fixed. Exported, it is the tensor's
    QuantizeLinear -> DequantizeLinear pair. `requantizes`: the tensor is an integer op's output,
    whose codes the integer model rounds ties away from zero (eq. 11) rather than to even (eq. 5);
    with power-of-two scales such ties are common.
    """

    def __init__(self, fmt: IntegerFormat, requantizes: bool = False, momentum: float = RANGE_MOMENTUM) -> None:
        super().__init__()
        self.fmt, self.requantizes, self.momentum = fmt, requantizes, momentum
        self.register_buffer("low", torch.zeros((), dtype=torch.float64))
        self.register_buffer("high", torch.zeros((), dtype=torch.float64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.int64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros((), dtype=_torch_dtype(fmt)))
        self.export_grid: tuple[float, int] | None = None  # (scale, zero point), fixed by prepare_export

    @torch.no_grad()
    def prepare_export(self) -> None:
        """Fix the grid as numbers, for the exporter to write as a QuantizeLinear -> DequantizeLinear pair."""
        info = torch.iinfo(self.zero_point.dtype)
        if (self.fmt.qmin, self.fmt.qmax) != (info.min, info.max):
            raise ValueError(f"codes [{self.fmt.qmin}, {self.fmt.qmax}] are not the whole range of {info.dtype}: "
                             "a QuantizeLinear could not clamp there")
        if int(self.batches) == 0:
            raise RuntimeError("an activation quantizer has seen no data: run the prepared model in train mode "
                               "on some batches before exporting it")
        self.export_grid = (float(self.scale), int(self.zero_point))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export_grid is not None:
            return exported_quantize_dequantize(x, *self.export_grid, self.zero_point.dtype)
        if self.training:
            self.observe(x.detach())
        elif int(self.batches) == 0:
            raise RuntimeError("an activation quantizer has seen no data: run the prepared model in train mode "
                               "on some batches before evaluating or exporting it")
        return fake_quantize(x, self.scale, self.zero_point, self.fmt.qmin, self.fmt.qmax, None, self.requantizes)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        low, high = _global_min_max(x)
        if int(self.batches) > 0:
            low = self.momentum * float(self.low) + (1 - self.momentum) * low
            high = self.momentum * float(self.high) + (1 - self.momentum) * high
        self.low.fill_(low)
        self.high.fill_(high)
        self.batches += 1
        scale, zero_point = choose_qparams(low, high, self.fmt)
        self.scale.copy_(torch.from_numpy(np.asarray(scale)))
        self.zero_point.copy_(torch.from_numpy(np.asarray(zero_point)))

    def extra_repr(self) -> str:
        return f"{self.fmt.numpy_dtype.name}, range [{float(self.low):.4g}, {float(self.high):.4g}]"


def weight_grid(weight: torch.Tensor, fmt: IntegerFormat, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of a weight tensor, by the converter's rule (quant.weights.weight_qparams)."""
    scale, zero_point = weight_qparams(weight.detach().cpu().numpy(), fmt, axis)
    return torch.from_numpy(np.asarray(scale, np.float32)), torch.from_numpy(np.asarray(zero_point))


def fake_quantize_weight(weight: torch.Tensor, fmt: IntegerFormat, axis: int | None) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """(fake-quantized weight, its scale)."""
    scale, zero_point = weight_grid(weight, fmt, axis)
    return fake_quantize(weight, scale, zero_point, fmt.qmin, fmt.qmax, axis), scale


def fake_quantize_bias(bias: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor,
                       fmt: IntegerFormat) -> torch.Tensor:
    """The bias as the integer model adds it: integers at scale s_in * s_w, saturated to fmt (eq. 7)."""
    scale = (input_scale.to(torch.float32) * weight_scale.to(torch.float32)).expand(bias.shape)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return fake_quantize(bias, scale, torch.zeros(bias.shape, dtype=torch.int32), fmt.qmin, fmt.qmax, 0)
