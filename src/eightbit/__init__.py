"""eightbit: float ONNX models in, 8-bit integer ONNX models out."""

from eightbit.errors import InputError

__all__ = ["finetune", "quantize", "InputError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """quantize and finetune, imported on first use: the command line's --help need not load onnx."""
    if name in ("quantize", "finetune"):
        from eightbit import api

        return getattr(api, name)
    raise AttributeError(f"module 'eightbit' has no attribute {name!r}")
