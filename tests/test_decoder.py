"""A decoder with its KV cache (scripts/train_decoder.py, tiny shape, trained here for a few seconds) through every
scheme: the quantized model keeps the graph's inputs and outputs as they were, decodes with its cache as it
does without, and its held-out perplexity stays near the float model's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import eightbit

torch = pytest.importorskip("torch")  # the qat extra; everything else is tested without it

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_decoder.py"
# Standard library files the tiny decoder reads: enough text for 120 steps, parsed in about a second.
FILES = 60


def _script():
    spec = importlib.util.spec_from_file_location("train_decoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    """(script module, float model path, calibration runs, held-out runs)."""
    script = _script()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    text, held_out = script.corpus(FILES)
    path = tmp_path_factory.mktemp("decoder") / "decoder.onnx"
    # A higher learning rate than the benchmark decoder's: a few seconds of training still learns the bytes.
    script.export(script.train(script.TINY, text, steps=120, learning_rate=3e-3), path)
    length = script.TINY.context
    return script, path, script.windows(text, length, 32, 1), script.windows(held_out, length, 32, 2)


def _feed(script, tokens: np.ndarray, cache: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    return script.feeds(script.TINY, tokens, cache)


def _perplexity(script, path: Path, tokens: np.ndarray) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return script.perplexity(session.run(["logits"], _feed(script, tokens))[0], tokens)


def _cached_logits(script, path: Path, tokens: np.ndarray, prompt: int) -> tuple[np.ndarray, np.ndarray]:
    """The logits of the token after `prompt` ones: (run with the prompt's cache, run over the whole sequence)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.run(None, _feed(script, tokens[:, :prompt]))
    step = session.run(["logits"], _feed(script, tokens[:, prompt:prompt + 1], first[1:]))[0][:, 0]
    whole = session.run(["logits"], _feed(script, tokens[:, :prompt + 1]))[0][:, prompt]
    return step, whole


def _interface(path: Path) -> list[tuple[str, int, list]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return [(value.name, value.type.tensor_type.elem_type,
             [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim])
            for value in [*graph.input, *graph.output]]


def test_the_float_decoder_gives_the_same_logits_with_its_cache_as_without(decoder):
    script, path, _, held_out = decoder
    step, whole = _cached_logits(script, path, held_out, prompt=20)
    np.testing.assert_allclose(step, whole, atol=1e-4)
    assert _perplexity(script, path, held_out) < 40  # learned something: 256 for a uniform guess


# (scheme options, largest perplexity increase allowed, as a share of float's)
SCHEMES = {
    "4-bit blocks": ({"scheme": "weights", "weight_bits": 4, "block_size": 16}, 0.02),
    "8-bit blocks": ({"scheme": "weights", "weight_bits": 8, "block_size": 16}, 0.005),
    "dynamic": ({"scheme": "dynamic"}, 0.005),
    "static": ({"scheme": "eightbit"}, 0.01),
}


@pytest.mark.parametrize("name", list(SCHEMES))
def test_every_scheme_keeps_the_cache_contract_and_the_perplexity(decoder, tmp_path, name):
    script, path, calibration, held_out = decoder
    options, allowed = SCHEMES[name]
    output = tmp_path / "decoder_int.onnx"
    eightbit.quantize(path, _feed(script, calibration), output=output, **options)

    assert _interface(output) == _interface(path)  # names, element types and (symbolic) shapes
    float_perplexity = _perplexity(script, path, held_out)
    assert _perplexity(script, output, held_out) <= float_perplexity * (1 + allowed)
    step, whole = _cached_logits(script, output, held_out, prompt=20)
    assert np.mean(step.argmax(-1) == whole.argmax(-1)) >= 0.9
    assert np.sqrt(np.mean((step - whole) ** 2)) < 0.1 * np.sqrt(np.mean(whole**2))
