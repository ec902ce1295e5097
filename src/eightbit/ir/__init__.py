"""Loading, saving and evaluating ONNX graphs: the only package that imports onnx."""

from eightbit.ir.evaluate import evaluate_node
from eightbit.ir.load import as_model, load_model
from eightbit.ir.save import check_output_path, model_to_bytes, save_model, write_atomically

__all__ = [
    "as_model", "check_output_path", "evaluate_node", "load_model", "model_to_bytes", "save_model", "write_atomically",
]
