"""Convolutions and linear layers that train on the integer model's weights and biases."""

from __future__ import annotations

import torch
from torch import nn

from eightbit.config import Granularity, Scheme
from eightbit.qat.fake_quantize import exported_dequantize
from eightbit.qat.quantizers import ActivationQuantizer, fake_quantize_bias, fake_quantize_weight, weight_grid
from eightbit.quant import quantize


class QuantizedWeights(nn.Module):
    """A layer whose weight is fake-quantized per output channel (axis 0) and whose bias is added as
    the integer model adds it: integers at s_in * s_w (eq. 7), s_in the grid of the layer's input.

    Subclasses give `folded()`: the float weight and bias the converter will see.
    """

    def __init__(self, scheme: Scheme) -> None:
        super().__init__()
        self.scheme = scheme
        self.input_quantizer: ActivationQuantizer | None = None  # set by prepare(); not a submodule
        self.exporting = False

    def set_input_quantizer(self, quantizer: ActivationQuantizer | None) -> None:
        object.__setattr__(self, "input_quantizer", quantizer)

    def _axis(self) -> int | None:
        return 0 if self.scheme.weights.granularity is Granularity.PER_CHANNEL else None

    def quantized_folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = self.folded()
        weight, weight_scale = fake_quantize_weight(weight, self.scheme.weights, self._axis())
        if bias is not None and self.input_quantizer is not None:
            bias = fake_quantize_bias(bias, self.input_quantizer.scale, weight_scale, self.scheme.bias)
        return weight, bias

    @torch.no_grad()
    def prepare_export(self) -> None:
        """Freeze the weight as integer codes (exported as a DequantizeLinear of constants) and the
        float bias the converter quantizes."""
        weight, bias = self.folded()
        axis = self._axis()
        scale, zero_point = weight_grid(weight, self.scheme.weights, axis)
        codes = quantize(weight.cpu().numpy(), scale.numpy(), zero_point.numpy(), self.scheme.weights, axis)
        self.register_buffer("export_codes", torch.from_numpy(codes))
        self.register_buffer("export_scale", scale)
        self.register_buffer("export_zero_point", zero_point)
        self.export_grid = (float(scale), int(zero_point)) if axis is None else None  # one grid: numbers
        self.register_buffer("export_bias", None if bias is None else bias.detach().clone())
        self.exporting = True

    def exported_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        scale, zero_point = self.export_grid or (self.export_scale, self.export_zero_point)
        return exported_dequantize(self.export_codes, scale, zero_point, self._axis()), self.export_bias

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class QuantConv(QuantizedWeights):
    """Conv (1-3d), with the batch norm after it folded in (Jacob et al. 2018, section 3.2).

    Folded weight and bias (docs eq. 28): w * gamma / sigma, beta + (b - mu) * gamma / sigma,
    with the running mean mu and sigma = sqrt(running var + eps). While the batch norm still
    learns its statistics (training, before `freeze_batch_norm_after` steps), the conv runs on
    the fake-quantized folded weight, is scaled back by sigma / gamma and normalized with the
    batch's statistics (eq. 29), so the weights train against their quantized form while the
    statistics move. After the freeze, and in eval mode, it computes exactly the folded conv
    the converter makes.
    """

    def __init__(self, conv: nn.Module, batch_norm: nn.Module | None, scheme: Scheme,
                 freeze_batch_norm_after: int | None = None) -> None:
        super().__init__(scheme)
        self.conv, self.batch_norm = conv, batch_norm
        self.freeze_batch_norm_after = freeze_batch_norm_after
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    @property
    def batch_norm_frozen(self) -> bool:
        after = self.freeze_batch_norm_after
        return self.batch_norm is None or (after is not None and int(self.steps) >= after)

    def _factor(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.batch_norm
        sigma = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(sigma)
        return gamma / sigma, sigma

    def _per_channel(self, vector: torch.Tensor, ndim: int) -> torch.Tensor:
        return vector.reshape([-1] + [1] * (ndim - 1))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = self.conv.weight, self.conv.bias
        if self.batch_norm is None:
            return weight, bias
        factor, _ = self._factor()
        bn = self.batch_norm
        beta = bn.bias if bn.bias is not None else torch.zeros_like(factor)
        bias = torch.zeros_like(factor) if bias is None else bias
        return weight * self._per_channel(factor, weight.dim()), beta + (bias - bn.running_mean) * factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exporting:
            return self.conv._conv_forward(x, *self.exported_weight())
        learning_statistics = self.training and not self.batch_norm_frozen
        if self.training:
            self.steps += 1
        if learning_statistics:
            factor, _ = self._factor()
            weight = self.conv.weight * self._per_channel(factor.detach(), self.conv.weight.dim())
            weight, _ = fake_quantize_weight(weight, self.scheme.weights, self._axis())
            y = self.conv._conv_forward(x, weight, None)
            shape = [1, -1] + [1] * (y.dim() - 2)
            y = y / factor.detach().reshape(shape)
            if self.conv.bias is not None:
                y = y + self.conv.bias.reshape(shape)
            return self.batch_norm(y)
        return self.conv._conv_forward(x, *self.quantized_folded())


class QuantLinear(QuantizedWeights):
    """Linear with its weight fake-quantized per output feature and its bias as the integer model adds it."""

    def __init__(self, linear: nn.Linear, scheme: Scheme) -> None:
        super().__init__(scheme)
        self.linear = linear

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.linear.weight, self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.exported_weight() if self.exporting else self.quantized_folded()
        return nn.functional.linear(x, weight, bias)
