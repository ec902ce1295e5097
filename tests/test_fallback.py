"""--min-sqnr and --max-drop: the fewest tensors kept float (most harmful first, else from the input) until the
budget holds."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

import eightbit
from eightbit.api import fallback_of, float_nodes_of
from eightbit.backends import OrtSession
from eightbit.cli import main
from eightbit.config import DEFAULT_MIN_SQNR_DB, DEFAULT_MIN_SQNR_DB_CLASSES, SCHEMES
from eightbit.fallback import (
    FROM_THE_INPUT,
    MOST_HARMFUL_FIRST,
    Budget,
    Fallback,
    Harm,
    fallback_from_dict,
    fewest_meeting,
    in_search_order,
    searched_prefixes,
)
from eightbit.ir import as_model
from eightbit.measure.metrics import sqnr_db
from test_cli import assert_refused, run_cli, unchanged
from test_inspect import chain_cnn


def test_fewest_meeting_finds_the_smallest_count_with_few_probes():
    asked = []

    def measure(count):
        asked.append(count)
        return 10.0 + count

    count, measured, probes = fewest_meeting(lambda value: value >= 15.5, 40, measure)
    assert (count, measured) == (6, 16.0)
    assert probes == len(set(asked)) <= 2 * math.ceil(math.log2(40))
    assert 5 in asked  # the count just below was measured and found short


def test_fewest_meeting_with_slack_stops_within_that_share_of_the_fewest_and_measures_less():
    def run(slack):
        return fewest_meeting(lambda value: value >= 70.0, 200, float, slack=slack)

    exact, slack = run(0.0), run(0.125)
    assert exact[0] == 70
    assert 70 <= slack[0] <= 70 / (1 - 0.125)  # the count below the bracket measured short
    assert slack[2] < exact[2]


def test_fewest_meeting_reports_the_most_it_could_keep_when_nothing_meets_the_budget():
    count, measured, _ = fewest_meeting(lambda value: value >= 100.0, 5, lambda count: float(count))
    assert (count, measured) == (5, 5.0)
    # where keeping more float measures worse past some count, the count measured closest to the budget
    count, measured, _ = fewest_meeting(lambda value: value >= 100.0, 8, lambda count: 10.0 - abs(count - 2),
                                        standing=lambda value: value)
    assert (count, measured) == (2, 10.0)


def test_fewest_meeting_most_first_settles_a_budget_out_of_reach_with_one_model():
    asked = []

    def measure(count):
        asked.append(count)
        return float(count)

    assert fewest_meeting(lambda value: value >= 100.0, 40, measure, most_first=True) == (40, 40.0, 1)
    assert asked == [40]
    # in reach: bisection from the most down, the same count as doubling up finds, with fewer models here
    asked.clear()
    count, _, probes = fewest_meeting(lambda value: value >= 30.0, 40, measure, most_first=True)
    assert count == 30 and 29 in asked and min(asked) >= 20
    assert probes < fewest_meeting(lambda value: value >= 30.0, 40, float)[2]


def _harms(*impacts):
    """Groups named g0, g1, ... in graph order, with these single-group impacts."""
    return [Harm((f"g{i}",), (f"node{i}",), impact) for i, impact in enumerate(impacts)]


def test_the_fewest_grids_win_whichever_order_found_them():
    harms = _harms(0.1, 0.2, 3.0, 2.0, 1.0, 0.5)
    measured = []

    def measure(order, kept):  # each grid from the input gains 2 dB, each of the most harmful ones 1 dB
        measured.append((order, len(kept)))
        return 20.0 + (2.0 if order == FROM_THE_INPUT else 1.0) * len(kept)

    order, kept, value, probes = searched_prefixes(harms, Budget.min_sqnr(23.0), measure)
    assert order == FROM_THE_INPUT and [h.tensors[0] for h in kept] == ["g0", "g1"] and value == 24.0
    # the second order was searched below the first order's 3 grids only
    assert max(count for o, count in measured if o == FROM_THE_INPUT) <= 2 and probes == len(set(measured))
    # as many grids either way: the first order's
    order, kept, _, _ = searched_prefixes(harms, Budget.min_sqnr(21.0), measure)
    assert order == MOST_HARMFUL_FIRST and len(kept) == 1


def test_search_orders_rank_by_harm_or_keep_the_graph_order_up_to_half_the_grids():
    harms = _harms(0.5, -0.2, 2.0, 0.0, 1.0, 0.1)
    assert [h.tensors[0] for h in in_search_order(harms, MOST_HARMFUL_FIRST)] == ["g2", "g4", "g0", "g5"]
    assert [h.tensors[0] for h in in_search_order(harms, FROM_THE_INPUT)] == ["g0", "g1", "g2"]


def test_the_search_goes_on_from_the_input_where_the_most_harmful_groups_fall_short():
    # Error that enters early is carried by every later layer: here the model meets the budget once its first
    # three grids are float, whatever their single impacts, and keeping the "most harmful" ones never does.
    harms = _harms(-0.1, 0.0, 0.2, 1.5, 1.0, 0.8, 0.1, 0.1)
    measured = []

    def measure(order, kept):
        measured.append((order, len(kept)))
        first = {f"g{i}" for i in range(3)}
        return 20.0 + (6.0 if first <= {h.tensors[0] for h in kept} else 0.1 * len(kept))

    order, kept, value, probes = searched_prefixes(harms, Budget.min_sqnr(25.0), measure)
    assert order == FROM_THE_INPUT and [h.tensors[0] for h in kept] == ["g0", "g1", "g2"] and value == 26.0
    assert probes == len(set(measured)) and {o for o, _ in measured} == {MOST_HARMFUL_FIRST, FROM_THE_INPUT}
    # where the most harmful groups meet it with fewer grids than any prefix from the input can, those
    order, kept, _, _ = searched_prefixes(harms, Budget.min_sqnr(20.15), measure)
    assert order == MOST_HARMFUL_FIRST and [h.tensors[0] for h in kept] == ["g3", "g4"]
    # out of reach in both orders: the prefix measured closest
    order, kept, value, _ = searched_prefixes(harms, Budget.min_sqnr(40.0), measure)
    assert value == 26.0 and order == FROM_THE_INPUT
    assert searched_prefixes(_harms(-1.0), Budget.min_sqnr(40.0), measure)[0] == FROM_THE_INPUT
    assert searched_prefixes([], Budget.min_sqnr(40.0), measure) is None


@pytest.fixture
def images():
    rng = np.random.default_rng(4)
    return {"x": rng.normal(0, 1, (32, 3, 12, 12)).astype(np.float32)}


@pytest.fixture
def held_out():
    return np.random.default_rng(5).normal(0, 1, (16, 3, 12, 12)).astype(np.float32)


def _output_sqnr(float_proto, model, x):
    expected = OrtSession(as_model(float_proto)).run({"x": x})["logits"]
    return sqnr_db(expected, OrtSession(model).run({"x": x})["logits"])


def test_the_outlier_layer_is_kept_float_to_meet_the_budget(images, held_out):
    broken = chain_cnn(outlier=True)
    # (bias correction, which repairs much of this model by itself, is left out: this is about the search)
    within = eightbit.quantize(broken, images, min_sqnr=-100.0, bias_correction=False)  # met as it is
    untouched = fallback_of(within)
    assert untouched.met and untouched.kept == [] and untouched.after == untouched.before
    budget = untouched.before + 6.0

    model = eightbit.quantize(broken, images, min_sqnr=budget, bias_correction=False, effort="max")
    fallback = fallback_of(model)
    assert fallback.met and fallback.after >= budget > fallback.before
    assert fallback.kept[0].tensors == ("rb",) and fallback.kept[0].impact_db > 3.0
    assert "conv_b" in fallback.kept_nodes and fallback.latency_ms is not None
    kept = {node.name: node.reason for node in float_nodes_of(model)}
    assert "--min-sqnr" in kept["conv_b"]
    # The budget was measured on the calibration samples; held-out samples gain too.
    assert _output_sqnr(broken, model, held_out) > _output_sqnr(broken, within, held_out) + 3.0
    assert "met with" in fallback.summary() and "latency" in fallback.summary()
    # The fast search keeps grids from the input, measures no single grid's harm and times nothing.
    fast = fallback_of(eightbit.quantize(broken, images, min_sqnr=budget, bias_correction=False))
    assert fast.met and fast.after >= budget and fast.order == FROM_THE_INPUT and fast.latency_ms is None
    assert all(harm.impact_db is None for harm in fast.kept) and "latency" not in fast.summary()


def test_a_budget_out_of_reach_keeps_every_harmful_grid_float_and_says_so(images):
    model = eightbit.quantize(chain_cnn(outlier=True), images, min_sqnr=300.0)
    fallback = fallback_of(model)
    assert not fallback.met and fallback.kept and fallback.after > fallback.before
    assert "NOT met" in fallback.summary()


def test_the_eightbit_scheme_keeps_its_floor_unless_told_otherwise(images):
    broken = chain_cnn(outlier=True)
    floor = fallback_of(eightbit.quantize(broken, images))
    assert floor.budget == Budget.min_sqnr(DEFAULT_MIN_SQNR_DB, floor=True)
    assert floor.summary().startswith(f"--min-sqnr {DEFAULT_MIN_SQNR_DB:g} dB (the default floor): met")
    assert fallback_from_dict(floor.as_dict()) == floor
    assert SCHEMES["eightbit"].default_min_sqnr_db == DEFAULT_MIN_SQNR_DB
    assert floor.before < DEFAULT_MIN_SQNR_DB and floor.met and floor.kept and floor.order == FROM_THE_INPUT
    healthy = fallback_of(eightbit.quantize(chain_cnn(outlier=False), images))
    assert healthy.met and healthy.kept == [] and "met with every node quantized" in healthy.summary()
    # off, a budget of the caller's own, po2 (integer-only hardware), a scheme without fixed grids: no floor
    assert fallback_of(eightbit.quantize(broken, images, min_sqnr=None)) is None
    assert fallback_of(eightbit.quantize(broken, images, max_drop=100.0)).budget.flag == "--max-drop"
    assert fallback_of(eightbit.quantize(broken, images, scheme="po2")) is None
    assert fallback_of(eightbit.quantize(broken, images, scheme="dynamic")) is None


def _with_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its one output put through a Softmax: class probabilities."""
    output = model.graph.output[0]
    model.graph.node.append(onnx.helper.make_node("Softmax", [output.name], ["probabilities"], axis=-1))
    output.name = "probabilities"
    return model


def test_a_classifier_is_held_to_the_floor_for_class_probabilities(images):
    classifier = _with_softmax(chain_cnn(outlier=True))
    floor = fallback_of(eightbit.quantize(classifier, images))
    assert floor.budget == Budget.min_sqnr(DEFAULT_MIN_SQNR_DB_CLASSES, floor=True)
    assert SCHEMES["eightbit"].default_min_sqnr_db_classes == DEFAULT_MIN_SQNR_DB_CLASSES > DEFAULT_MIN_SQNR_DB
    assert floor.met and floor.after >= DEFAULT_MIN_SQNR_DB_CLASSES > floor.before
    # the same layers without the softmax: the floor for other outputs
    assert fallback_of(eightbit.quantize(chain_cnn(outlier=True), images)).budget.limit == DEFAULT_MIN_SQNR_DB


def test_cli_min_sqnr_prints_what_was_kept_and_refuses_what_it_cannot_measure(tmp_path, images, capsys):
    source, data, out = tmp_path / "chain.onnx", tmp_path / "x.npz", tmp_path / "chain.int8.onnx"
    onnx.save(chain_cnn(outlier=True), source)
    np.savez(data, **images)
    # (weights pinned to 8 bits: without VNNI, 7-bit weights take the outlier's harm and another grid leads)
    assert main(["quantize", str(source), "--calibration", str(data), "-o", str(out), "--min-sqnr", "300",
                 "--effort", "max", "--weight-range", "full", "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Unmet, the closest prefix of either search order is kept: the outlier's tensor rb alone (most harmful
    # first), or the first three from the input up to rb; which measures closer differs by a fraction of a dB
    # between instruction sets.
    kept = [name for group in report["fallback"]["kept"] for name in group["tensors"]]
    assert report["fallback"]["met"] is False and "rb" in kept and len(kept) <= 3

    before = source.read_bytes()
    refused = tmp_path / "refused.onnx"
    assert_refused(run_cli("quantize", source, "-o", refused, "--min-sqnr", "30"), "--min-sqnr", "--calibration")
    assert_refused(run_cli("quantize", source, "--calibration", data, "-o", refused, "--scheme", "weights",
                           "--min-sqnr", "30"), "--min-sqnr", "weights")
    assert_refused(run_cli("quantize", source, "--calibration", data, "-o", refused, "--min-sqnr", "nan"),
                   "--min-sqnr")
    word = run_cli("quantize", source, "--calibration", data, "-o", refused, "--min-sqnr", "high")
    assert word.returncode == 2 and "--min-sqnr: expected a number of dB, auto or off" in word.stderr
    assert main(["quantize", str(source), "--calibration", str(data), "-o", str(out), "--min-sqnr", "off",
                 "--json", "-q"]) == 0
    assert "fallback" not in json.loads(capsys.readouterr().out)
    assert not refused.exists() and unchanged(source, before)


def test_max_drop_keeps_float_what_a_user_metric_needs(images):
    def mean_error(got, expected):  # higher is better: minus the mean squared error against float
        return -float(np.mean((got - expected) ** 2))

    broken = chain_cnn(outlier=True)
    loose = fallback_of(eightbit.quantize(broken, images, max_drop=1e9, metric=mean_error))
    assert loose.met and loose.kept == [] and loose.before > 0  # the drop from float's 0
    limit = loose.before / 4
    model = eightbit.quantize(broken, images, max_drop=limit, metric=mean_error, effort="max")
    fallback = fallback_of(model)
    assert fallback.met and fallback.after <= limit < fallback.before and fallback.kept[0].tensors == ("rb",)
    assert "--max-drop" in {node.name: node.reason for node in float_nodes_of(model)}["conv_b"]
    assert fallback.summary().startswith(f"--max-drop {limit:g} points: met") and "mean error" in fallback.summary()
    # the default metric: top-1 agreement with float, in percent
    default = fallback_of(eightbit.quantize(broken, images, max_drop=0.0))
    assert default.budget.measures.startswith("drop in top-1 agreement") and default.met == (default.after <= 0.0)


def test_a_budget_no_float_tensor_brings_closer_keeps_the_all_integer_model(images):
    def error(got, expected):  # float's own figure out of reach; below it, one that rises with the error
        mse = float(np.mean((got - expected) ** 2))
        return mse if mse > 0 else 1e6

    broken = chain_cnn(outlier=True)
    model = eightbit.quantize(broken, images, max_drop=0.0, metric=error, bias_correction=False)
    fallback = fallback_of(model)
    assert not fallback.met and fallback.kept == [] and fallback.after == fallback.before
    assert fallback.probes > 1 and "NOT met, and every node kept quantized" in fallback.summary()
    assert not any("--max-drop" in node.reason for node in float_nodes_of(model))


def test_fallbacks_stored_before_max_drop_still_read():
    old = {"budget_db": 20.0, "before_db": 15.0, "after_db": 21.0, "met": True, "probes": 3,
           "kept": [{"tensors": ["rb"], "nodes": ["conv_b"], "impact_db": 4.0}], "latency_ms": None}
    fallback = fallback_from_dict(old)
    assert fallback.budget == Budget.min_sqnr(20.0) and fallback.met and fallback.after == 21.0
    assert fallback.order == MOST_HARMFUL_FIRST
    assert fallback_from_dict(fallback.as_dict()) == fallback
    assert isinstance(fallback, Fallback) and not Budget.max_drop(1.0).meets(1.5)


def test_cli_max_drop_refuses_what_it_cannot_measure(tmp_path, images):
    source, data = tmp_path / "chain.onnx", tmp_path / "x.npz"
    onnx.save(chain_cnn(outlier=True), source)
    np.savez(data, **images)
    before = source.read_bytes()
    refused = tmp_path / "refused.onnx"
    assert_refused(run_cli("quantize", source, "-o", refused, "--max-drop", "1"), "--max-drop", "--calibration")
    assert_refused(run_cli("quantize", source, "--calibration", data, "-o", refused, "--max-drop", "-1"),
                   "--max-drop", "0 or more")
    assert_refused(run_cli("quantize", source, "--calibration", data, "-o", refused, "--max-drop", "1",
                           "--min-sqnr", "20"), "--min-sqnr", "--max-drop")
    assert_refused(run_cli("quantize", source, "--calibration", data, "-o", refused, "--scheme", "dynamic",
                           "--max-drop", "1"), "--max-drop", "dynamic")
    assert not refused.exists() and unchanged(source, before)


@pytest.mark.parametrize("flags, message", [
    (["--min-sqnr", "-inf"], "--min-sqnr must be a finite number of dB, got -inf"),
    (["--max-drop", "-nan"], "--max-drop must be a finite number, 0 or more, got nan"),
    (["--min-sqnr", "inf"], "--min-sqnr must be a finite number of dB, got inf"),
])
def test_a_budget_that_is_not_a_finite_number_is_refused_by_name(cnn_path, cnn_data, tmp_path, capsys, flags,
                                                                 message):
    out = tmp_path / "out.onnx"
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"eightbit: error: {message}" and not out.exists()
