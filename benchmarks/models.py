"""The real graphs the harness measures, and how each is obtained.

* The `onnx` wheel's light model zoo: real architectures whose weights were replaced by
  ConstantOfShape nodes. `materialize` puts back random He-initialized weights (and sane
  batch-norm statistics) so that the graphs compute something non-degenerate.
* PP-OCR models from the `rapidocr-onnxruntime==1.4.4` wheel: real trained weights. The
  harness downloads the wheel with pip (no dependencies) into benchmarks/.cache once.
* The digits CNN that ships inside eightbit.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

CACHE = Path(__file__).parent / ".cache"
LIGHT_ZOO = ("resnet50", "squeezenet", "inception_v1", "densenet121", "shufflenet", "vgg19")
RAPIDOCR_WHEEL = "rapidocr-onnxruntime==1.4.4"
RAPIDOCR_MODELS = {
    "ppocr_det": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    "ppocr_cls": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "ppocr_rec": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
}
# Every model the harnesses measure by default.
ALL_MODELS = [*LIGHT_ZOO, "ppocr_det", "ppocr_cls", "digits"]


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, index))
    return uses


def _role(name: str, uses: dict) -> tuple[str, int]:
    """What a constant feeds: (op_type, input index), following Unsqueeze/Reshape."""
    for node, index in uses.get(name, []):
        if node.op_type in ("Unsqueeze", "Reshape", "Identity") and index == 0:
            return _role(node.output[0], uses)
        return node.op_type, index
    return "", -1


def _initial_values(shape: tuple[int, ...], role: tuple[str, int], rng: np.random.Generator) -> np.ndarray:
    op, index = role
    if op in ("Conv", "Gemm", "MatMul") and index == 1:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else int(shape[-1] if op == "Gemm" else shape[0])
        return rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
    if op == "BatchNormalization":
        return {
            1: rng.uniform(0.5, 1.0, shape),  # scale
            2: rng.normal(0.0, 0.1, shape),  # bias
            3: rng.normal(0.0, 0.1, shape),  # mean
            4: rng.uniform(0.5, 1.5, shape),  # variance
        }[index]
    if op == "Mul":
        return rng.uniform(0.5, 1.0, shape)
    return rng.normal(0.0, 0.05, shape)


def materialize(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace every ConstantOfShape with a constant shape by an initializer of random weights."""
    rng = np.random.default_rng(seed)
    graph = model.graph
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    uses = _consumers(graph)
    kept = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in constants:
            shape = tuple(int(d) for d in constants[node.input[0]])
            values = _initial_values(shape, _role(node.output[0], uses), rng).astype(np.float32)
            graph.initializer.append(onnx.numpy_helper.from_array(values, node.output[0]))
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    keep_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)  # from IR 4 on, initializers need not be inputs
    return model


def light_model(name: str) -> Path:
    """Path of the materialized light-zoo model `name`, built once into the cache."""
    path = CACHE / f"light_{name}.onnx"
    if not path.exists():
        source = Path(onnx.__file__).parent / "backend/test/data/light" / f"light_{name}.onnx"
        CACHE.mkdir(parents=True, exist_ok=True)
        onnx.save(materialize(onnx.load(source)), path)
    return path


def rapidocr_model(name: str) -> Path:
    """Path of a PP-OCR model from the pinned rapidocr wheel, downloaded once with pip."""
    path = CACHE / Path(RAPIDOCR_MODELS[name]).name
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", RAPIDOCR_WHEEL, "-d", str(CACHE)],
            check=True,
        )
        wheels = list(CACHE.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        for member in RAPIDOCR_MODELS.values():
            (CACHE / Path(member).name).write_bytes(wheel.read(member))
    return path
