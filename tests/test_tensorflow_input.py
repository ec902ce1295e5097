"""TensorFlow models in: a Keras CNN trained on the digits here, frozen to a .pb the way TensorFlow's own tools
took it (named inputs and outputs), saved as a SavedModel and as a .tflite file; each quantized end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import eightbit
from eightbit.backends import OrtSession
from eightbit.cli import main
from eightbit.demo import shipped_digits
from eightbit.errors import InputError
from eightbit.frontends.tensorflow import from_tensorflow

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")


def _images(pixels: np.ndarray) -> np.ndarray:
    """Digits as the Keras model takes them: NHWC floats in [0, 1]."""
    return (np.asarray(pixels, np.float32) / 16.0).reshape(-1, 8, 8, 1)


@pytest.fixture(scope="module")
def keras_digits(tmp_path_factory):
    """(folder with digits.pb, digits_saved/ and digits.tflite; the Keras model's held-out logits)."""
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
    model.fit(_images(digits.x_train), digits.y_train.astype(np.int64), epochs=20, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("keras")
    spec = tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")
    frozen = convert_variables_to_constants_v2(tf.function(lambda image: model(image)).get_concrete_function(spec))
    tf.io.write_graph(frozen.graph.as_graph_def(), str(folder), "digits.pb", as_text=False)
    model.export(str(folder / "digits_saved"), verbose=False)
    (folder / "digits.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    np.savez(folder / "calibration.npz", image=_images(digits.x_train[:256]))
    logits = model.predict(_images(digits.x_test), verbose=0)
    return folder, logits, frozen.outputs[0].name.split(":")[0]


def _agreement(quantized, logits: np.ndarray) -> float:
    session = OrtSession(quantized)
    name = session.input_names[0]
    got = session.run({name: _images(shipped_digits().x_test)})[session.output_names[0]]
    return float(np.mean(got.argmax(axis=1) == logits.argmax(axis=1)))


def test_frozen_graph_with_named_inputs_and_outputs_is_quantized_end_to_end(keras_digits, capsys):
    folder, logits, output = keras_digits
    target = folder / "digits.int8.onnx"
    assert main(["quantize", str(folder / "digits.pb"), "--inputs", "image", "--outputs", output,
                 "--calibration", str(folder / "calibration.npz"), "-o", str(target), "--no-report"]) == 0
    quantized = eightbit.ir.load_model(target)
    assert [v.name for v in quantized.graph.inputs] == ["image"]  # TensorFlow's name, without ":0"
    assert any(node.op_type == "DequantizeLinear" for node in quantized.graph)
    assert _agreement(quantized, logits) >= 0.97


def test_frozen_graph_inputs_and_outputs_are_found_when_not_named(keras_digits):
    folder, logits, _ = keras_digits
    converted = from_tensorflow(folder / "digits.pb")
    assert [v.name for v in converted.graph.inputs] == ["image"]
    quantized = eightbit.quantize(folder / "digits.pb", folder / "calibration.npz")
    assert _agreement(quantized, logits) >= 0.97


@pytest.mark.parametrize("name", ["digits_saved", "digits.tflite"])
def test_saved_model_and_tflite_are_quantized(keras_digits, name):
    folder, logits, _ = keras_digits
    converted = from_tensorflow(folder / name)
    calibration = {converted.graph.inputs[0].name: _images(shipped_digits().x_train[:256])}
    assert _agreement(eightbit.quantize(folder / name, calibration), logits) >= 0.97


def test_an_unknown_tensor_name_is_refused_with_what_the_graph_has(keras_digits, capsys):
    folder, _, _ = keras_digits
    target = folder / "never.onnx"
    assert main(["quantize", str(folder / "digits.pb"), "--inputs", "images", "--calibration",
                 str(folder / "calibration.npz"), "-o", str(target)]) == 2
    error = capsys.readouterr().err
    assert "no op named images" in error and "placeholders are image" in error
    assert not target.exists()


def test_a_file_that_is_no_graph_is_refused(tmp_path, capsys):
    broken = tmp_path / "model.pb"
    broken.write_bytes(b"\x0a\xff\xff\xff\xff\x0f not a graph")
    assert main(["quantize", str(broken), "-o", str(tmp_path / "out.onnx")]) == 2
    assert "not a frozen TensorFlow GraphDef" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()


def test_names_for_a_model_that_has_its_own_are_refused(tmp_path):
    with pytest.raises(InputError, match="frozen TensorFlow graph"):
        eightbit.quantize(tmp_path / "model.onnx", None, graph_inputs=["x"])


def test_without_the_extra_the_error_names_it(keras_digits, monkeypatch):
    folder, _, _ = keras_digits
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(InputError, match=r"pip install 'eightbit\[tf\]'"):
        from_tensorflow(folder / "digits.pb")


def test_bench_takes_the_frozen_graph_as_its_float_model(keras_digits, capsys):
    folder, _, _ = keras_digits
    assert main(["bench", str(folder / "digits.pb"), "--calibration", str(folder / "calibration.npz"), "--no-peer",
                 "--no-openvino", "--no-memory", "--rounds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == str(folder / "digits.pb")
    rows = {row["label"]: row for row in result["rows"]}
    assert rows["eightbit int8, ONNX Runtime"]["top1_agreement"] >= 0.9
