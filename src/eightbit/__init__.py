"""eightbit: float ONNX models in, 8-bit integer ONNX models out."""

from eightbit.api import finetune, quantize
from eightbit.errors import InputError

__all__ = ["finetune", "quantize", "InputError"]
__version__ = "0.1.0"
