"""The builds of one quantize call run the calibration samples through each float model once."""

from __future__ import annotations

import onnx_ir as ir

import eightbit
from eightbit.api import fallback_of, load_samples
from eightbit.calibrate import memo as memo_module
from eightbit.calibrate.memo import RangeMemo
from eightbit.calibrate.runner import collect_ranges
from eightbit.config import ACTIVATIONS_U8
from eightbit.ir import as_model
from test_inspect import chain_cnn, images  # noqa: F401  (images: a fixture)


def _names(model: ir.Model) -> list[str]:
    return [node.outputs[0].name for node in model.graph if node.op_type in ("Conv", "Relu")]


def test_a_memo_collects_each_range_once_and_gives_what_collecting_gives(images):  # noqa: F811
    model = as_model(chain_cnn(outlier=False))
    samples = load_samples(images, model)
    memo, names = RangeMemo(samples), _names(model)
    for method in ("minmax", "mse"):
        expected = collect_ranges(model, names, samples, method, show_progress=False, fmt=ACTIVATIONS_U8)
        runs = memo.runs
        assert memo.ranges(model, names, method, 1, False, ACTIVATIONS_U8) == expected
        assert memo.ranges(model, names[:2], method, 1, False, ACTIVATIONS_U8) == {n: expected[n] for n in names[:2]}
        assert memo.runs == runs + 1
    # the same graph with other weights is another float model
    other = as_model(chain_cnn(outlier=False, seed=5))
    assert memo.ranges(other, names, "minmax", 1, False, ACTIVATIONS_U8) != memo.ranges(
        model, names, "minmax", 1, False, ACTIVATIONS_U8)
    assert memo.runs == 3


def test_the_budget_search_calibrates_once_per_float_model(images, monkeypatch):  # noqa: F811
    passes = []

    def counted(*args, **kwargs):
        passes.append(args[0])
        return collect_ranges(*args, **kwargs)

    monkeypatch.setattr(memo_module, "collect_ranges", counted)
    model = eightbit.quantize(chain_cnn(outlier=True), images, min_sqnr=300.0, speed_check=False)
    fallback = fallback_of(model)
    assert fallback.probes >= 4  # several builds, each with other nodes float
    # one float model: the all-integer build's tensors, then every float tensor for the partly float builds
    assert len(passes) == 2 and passes[0] is passes[1]


def test_a_second_build_asking_for_more_collects_every_float_tensor(images):  # noqa: F811
    model = as_model(chain_cnn(outlier=False))
    samples = load_samples(images, model)  # held here: the memo holds it weakly
    memo = RangeMemo(samples)
    memo.ranges(model, ["ca"], "minmax", 1, False, ACTIVATIONS_U8)
    memo.ranges(model, ["ra"], "minmax", 1, False, ACTIVATIONS_U8)
    for name in _names(model):
        memo.ranges(model, [name], "minmax", 1, False, ACTIVATIONS_U8)
    assert memo.runs == 2
