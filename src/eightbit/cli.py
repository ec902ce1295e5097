"""The eightbit command line: a thin layer over eightbit.api."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from eightbit import __version__
from eightbit.config import (
    BACKENDS,
    BIAS_BITS,
    CALIBRATION_METHODS,
    DEFAULT_MIN_SQNR_DB,
    DEFAULT_MIN_SQNR_DB_CLASSES,
    DEFAULT_REPORT_SAMPLES,
    DEFAULT_SCHEME,
    DEFAULT_TARGET,
    DEFAULT_THREADS,
    DEFAULT_WEIGHT_RANGE,
    EFFORTS,
    SCHEMES,
    TARGETS,
    WEIGHT_GRANULARITIES,
    WEIGHT_RANGES,
    WEIGHT_ROUNDINGS,
    scheme_named,
)
from eightbit.errors import DataWarning, InputError

if TYPE_CHECKING:
    from eightbit.datasets import ImagePreprocessing

# Only what builds the parser is imported up front, so that --help and --version answer at once: each
# command imports the modules it runs (onnx, onnx_ir and ONNX Runtime take a second or more to load).


def _add_image_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("image folders (when DATA is a folder of images)")
    group.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="resize every image to H x W")
    group.add_argument("--mean", nargs="+", type=float, help="per-channel mean of pixels scaled to [0, 1]")
    group.add_argument("--std", nargs="+", type=float, help="per-channel std of pixels scaled to [0, 1]")
    group.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw")


def _images(args: argparse.Namespace) -> ImagePreprocessing | None:
    from eightbit.datasets import ImagePreprocessing

    if args.size is None:
        if args.mean is not None or args.std is not None:
            raise InputError("--mean/--std need --size H W (they describe an image folder)")
        return None
    return ImagePreprocessing(
        height=args.size[0], width=args.size[1],
        mean=tuple(args.mean or (0.0,)), std=tuple(args.std or (1.0,)), layout=args.layout,
    )


def _min_sqnr(text: str) -> float | str | None:
    """--min-sqnr's value: dB, "auto" (the scheme's floor) or "off" (None: no budget)."""
    if text in ("auto", "off"):
        return None if text == "off" else text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of dB, auto or off, got {text!r}") from None


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _quantize_options(args: argparse.Namespace):
    """The quantize command's flags as QuantizeOptions, one to one."""
    from eightbit.pipeline.options import QuantizeOptions

    return QuantizeOptions(
        scheme=args.scheme, calibrate=args.calibrate, weight_range=args.weight_range, bias_bits=args.bias_bits,
        weight_granularity=args.weight_granularity, weight_rounding=args.weight_rounding,
        weight_bits=args.weight_bits, block_size=args.block_size, weight_symmetric=args.weight_symmetric,
        exclude=tuple(args.exclude),
        min_sqnr_db=args.min_sqnr,
        max_drop_points=args.max_drop, bias_correction=not args.no_bias_correction,
        equalization=not args.no_equalize, speed_check=args.speed_check, target=args.target, effort=args.effort,
        threads=args.threads, show_progress=_show_progress(args),
    )


def _recipe_options(args: argparse.Namespace):
    """The options of --recipe, with this run's threads and progress; InputError where a flag also sets one."""
    import dataclasses

    from eightbit.recipe import FIELDS, read_recipe

    given = _quantize_options(args)
    defaults = _quantize_options(build_parser().parse_args(["quantize", args.model, "-o", args.output]))
    clashing = [field for field in (*FIELDS, "exclude") if getattr(given, field) != getattr(defaults, field)]
    if clashing:
        raise InputError(f"--recipe gives every option; {', '.join(clashing)} given on the command line too: set "
                         "it in the recipe, or drop --recipe")
    return dataclasses.replace(read_recipe(args.recipe), threads=given.threads, show_progress=given.show_progress)


def _save_recipe(path: str, options, model) -> None:
    from eightbit.ir import write_atomically
    from eightbit.recipe import recipe_text
    from eightbit.record import decisions_of, float_nodes_of

    text = recipe_text(options, decisions_of(model), float_nodes_of(model))
    write_atomically(path, lambda temporary: Path(temporary).write_text(text), suffix=".toml")


def _quantize(args: argparse.Namespace) -> int:
    from eightbit import api
    from eightbit.backends.onnxruntime import check_loads
    from eightbit.frontends.tensorflow import TensorNames
    from eightbit.ir import check_output_path, load_model, save_model
    from eightbit.ir.load import external_data_files
    from eightbit.report.compare import compare_models

    source, output = Path(args.model), Path(args.output)
    given = [path for path in (args.calibration, args.eval, args.recipe) if path is not None]
    check_output_path(output, source, *external_data_files(source), *given)
    images = _images(args)
    seconds: dict[str, float] = {}
    if args.save_recipe is not None:
        check_output_path(args.save_recipe, source, output, *given)
    options = _recipe_options(args) if args.recipe is not None else _quantize_options(args)
    # A .pt2 program exported once, a TensorFlow model converted once, for quantize and the report.
    float_model = api.onnx_of(source, names=TensorNames(tuple(args.inputs or ()), tuple(args.outputs or ())))
    model = api.quantize_with(float_model, args.calibration, options, images=images, seconds=seconds)
    save_model(model, output, check=check_loads)
    if args.save_recipe is not None:
        _save_recipe(args.save_recipe, options, model)
    report_data = args.eval if args.eval is not None else args.calibration
    comparison = None
    if report_data is not None and not args.no_report:
        samples = api.load_samples(report_data, load_model(source) if float_model is source else float_model, images)
        if args.eval is None:
            samples = samples.take(0, min(samples.count, DEFAULT_REPORT_SAMPLES))
        comparison = compare_models(float_model, output, samples, threads=args.threads,
                                    show_progress=_show_progress(args), **_timed_in(args.target))
    if args.json:
        print(json.dumps(_quantize_json(args, model, comparison, seconds), indent=2))
    else:
        _print_quantize_report(args, model, comparison, seconds)
    return 0


def _timed_in(target: str) -> dict:
    """compare_models' timing for a model made for `target`: in its runtime where that runs here (OpenVINO where
    installed); not timed for a runtime that does not (TensorRT, an NPU)."""
    from eightbit.backends.openvino import openvino_available

    if target == "ort" or (target == "openvino" and openvino_available()):
        return {"timed_in": target}
    return {"time_it": False}


def _quantize_json(args: argparse.Namespace, model, comparison, seconds: dict[str, float]) -> dict:
    """The quantize report as JSON."""
    from eightbit import api
    from eightbit.record import decisions_of
    from eightbit.report.compare import file_size

    sizes = (file_size(args.model), file_size(args.output))
    result = comparison.as_dict() if comparison is not None else {}
    result["size_bytes"] = {"float": sizes[0], "quantized": sizes[1], "ratio": round(sizes[1] / sizes[0], 4)}
    result["scheme"] = args.scheme
    result["weight_range"] = model.metadata_props.get(api.WEIGHT_RANGE_KEY)
    result["decisions"] = decisions_of(model)
    result["seconds"] = {stage: round(value, 3) for stage, value in seconds.items()}
    result["float_nodes"] = [vars(node) for node in api.float_nodes_of(model)]
    result["bias_saturated"] = api.bias_saturation_of(model)
    fallback, checked = api.fallback_of(model), api.speed_check_of(model)
    if fallback is not None:
        result["fallback"] = fallback.as_dict()
    if checked is not None:
        result["speed_check"] = checked.as_dict()
    result["output"] = str(args.output)
    return result


def _print_quantize_report(args: argparse.Namespace, model, comparison, seconds: dict[str, float]) -> None:
    """The quantize report for a person: the table, a line per decision, the budget, the float nodes."""
    from eightbit import api
    from eightbit.report.compare import file_size
    from eightbit.report.tables import comparison_table, float_nodes_table, print_tables

    source, output = Path(args.model), Path(args.output)
    sizes = (file_size(source), file_size(output))
    if comparison is not None:
        comparison.float_bytes, comparison.quantized_bytes = sizes
        where = "held-out samples" if args.eval is not None else "calibration samples (pass --eval for held-out)"
        print_tables(comparison_table(comparison, f"{source.name} -> {output.name}, {comparison.samples} {where}"))
        if comparison.latency is not None and comparison.latency.speedup < 1.0:
            print(_slower_than_float(args, comparison, api.fallback_of(model)))
    else:
        print(f"{source.name} -> {output.name}: {sizes[0]} -> {sizes[1]} bytes (x{sizes[1] / sizes[0]:.2f})")
    _print_decisions(model, seconds, args.verbose)
    if args.scheme == "weights":
        return
    fallback, checked, float_nodes = api.fallback_of(model), api.speed_check_of(model), api.float_nodes_of(model)
    if fallback is not None:
        print(fallback.summary())
    if checked is not None:
        print(checked.summary())
    saturated = api.bias_saturation_of(model)
    if saturated:
        bits = args.bias_bits or scheme_named(args.scheme).bias_bits
        print(f"bias values clipped to {bits} bits: "
              + ", ".join(f"{node} ({count})" for node, count in saturated.items()))
    if float_nodes and (args.verbose or len(float_nodes) <= FLOAT_NODES_LISTED):
        print_tables(float_nodes_table(float_nodes))
    elif float_nodes:
        print(f"nodes left in float: {len(float_nodes)} ({_reasons(float_nodes)}); --verbose lists them")
    else:
        print("nodes left in float: none")


def _slower_than_float(args: argparse.Namespace, comparison, fallback) -> str:
    """The report's line for a model timed slower than float: by how much, where the time goes, and what to make
    instead: the all-integer model where a budget kept nodes float, else whatever `bench` finds fastest here
    (the float model itself where nothing is)."""
    from eightbit.never_slower import RUNTIMES

    source, output, latency = Path(args.model), Path(args.output), comparison.latency
    line = (f"slower than float here: {latency.second_ms:.3f} ms against {latency.first_ms:.3f} ms for the float "
            f"model ({RUNTIMES[comparison.timed_in]}, interleaved medians); `eightbit explain {output} --float "
            f"{source}` shows where the time goes")
    if fallback is not None and fallback.kept:
        line += (f"; nodes are kept float for {fallback.budget.flag} {fallback.budget.limit:g} "
                 f"{fallback.budget.unit}: `--min-sqnr off` writes the all-integer model")
    calibration = f" --calibration {args.calibration}" if args.calibration else ""
    return (line + f"; `eightbit bench {source}{calibration}` times every runtime and target here and names the "
            "fastest, and where none is faster than float, keep the float model")


# The quantize report lists the nodes left float where there are at most this many (--verbose: always).
FLOAT_NODES_LISTED = 12


def _reasons(float_nodes: list) -> str:
    """How many float nodes stay float for each kind of reason (its words up to the first colon)."""
    counts: dict[str, int] = {}
    for node in float_nodes:
        kind = node.reason.split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items(), key=lambda item: -item[1]))


def _print_decisions(model, seconds: dict[str, float], verbose: bool) -> None:
    """One line per decision quantize made (each in full with `verbose`), and the time each stage took."""
    from eightbit import api
    from eightbit.record import decisions_of

    if verbose:
        print(model.metadata_props.get(api.WEIGHT_RANGE_KEY, ""))
    else:
        for decision in decisions_of(model):
            print(f"{decision['step']}: {decision['taken']}")
    stages = {stage: value for stage, value in seconds.items() if stage != "steps"}
    print("time: " + ", ".join(f"{stage} {value:.1f} s" for stage, value in stages.items())
          + f"; quantize {sum(seconds.get(s, 0.0) for s in ('load and prepare', 'steps', 'save')):.1f} s in all")


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from eightbit import api
    from eightbit.backends import open_session
    from eightbit.ir import check_output_path, load_model, write_atomically

    output = Path(args.output)
    check_output_path(output, args.model, args.data)
    model = load_model(args.model)
    samples = api.load_samples(args.data, model, _images(args))
    session = open_session(model if args.backend == "reference" else args.model, args.backend, args.threads)
    results: dict[str, list[np.ndarray]] = {name: [] for name in session.output_names}
    for feeds in samples.batches():
        for name, value in session.run(feeds).items():
            results[name].append(value)
    join = np.stack if samples.per_sample else np.concatenate
    arrays = {name: join(values) for name, values in results.items()}
    write_atomically(output, lambda temporary: np.savez(temporary, **arrays), suffix=".npz")
    print(f"{samples.count} samples -> {output} ({', '.join(f'{k} {list(v.shape)}' for k, v in arrays.items())})")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from eightbit import api
    from eightbit.backends.onnxruntime import check_loads
    from eightbit.ir import check_output_path, save_model
    output = check_output_path(args.output, args.float_model, args.quantized_model, args.data)
    model = api.finetune(args.float_model, args.quantized_model, args.data, steps=args.steps,
                         augment=not args.no_augment, images=_images(args), threads=args.threads,
                         show_progress=_show_progress(args))
    report = api.finetune_of(model)
    save_model(model, output, check=check_loads)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        verdict = "kept" if report["kept"] else "not kept: the model given measures better, written unchanged"
        print(f"fine-tuned {report['steps']} steps on {report['training_samples']} samples: held-out SQNR "
              f"(pre-softmax) {report['sqnr_before_db']:.1f} -> {report['sqnr_after_db']:.1f} dB "
              f"({report['held_out_samples']} samples), {report['codes_changed']} codes changed, {verdict}; "
              f"wrote {output}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from eightbit import api
    from eightbit.ir import as_model, load_model
    from eightbit.report.compare import compare_models, file_size
    from eightbit.report.tables import comparison_table, print_tables

    source = api.onnx_of(args.float_model)  # a .pt2 program exported as quantize exports it
    float_model = as_model(source)
    load_model(args.quantized_model)
    samples = api.load_samples(args.data, float_model, _images(args))
    comparison = compare_models(source, args.quantized_model, samples, threads=args.threads,
                                time_it=not args.no_timing, show_progress=_show_progress(args),
                                backend=args.backend)
    comparison.float_bytes = file_size(args.float_model)
    comparison.quantized_bytes = file_size(args.quantized_model)
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=2))
    else:
        print_tables(comparison_table(comparison, f"{args.float_model} vs {args.quantized_model}, "
                                                  f"{comparison.samples} samples"))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from eightbit import api
    from eightbit.ir import as_model, check_output_path, load_model, write_atomically
    from eightbit.report.inspect import inspect_models
    from eightbit.report.tables import db_text, inspection_table, print_tables

    written = [check_output_path(path, args.float_model, args.quantized_model, args.data,
                                 *([args.recipe] if args.recipe else []))
               for path in (args.html, args.png, args.save_recipe) if path is not None]
    if len(set(written)) < len(written):
        raise InputError("--html, --png and --save-recipe name the same file; choose one path for each")
    if args.keep_float < 1:
        raise InputError(f"--keep-float {args.keep_float}: give 1 or more tensors")
    if args.recipe is not None:
        from eightbit.recipe import read_recipe

        read_recipe(args.recipe)  # a bad recipe is refused before the models run
    float_model = as_model(api.onnx_of(args.float_model))  # a .pt2 program exported as quantize exports it
    samples = api.load_samples(args.data, float_model, _images(args))
    inspection = inspect_models(float_model, load_model(args.quantized_model), samples, impact=args.impact,
                                threads=args.threads, show_progress=_show_progress(args))
    title = f"{Path(args.quantized_model).name} vs {Path(args.float_model).name}"
    if args.html is not None or args.png is not None:
        from eightbit.report.html import inspection_html
        from eightbit.report.plot import sqnr_plot_png

        png = sqnr_plot_png(inspection, f"SQNR along the network: {title}, {inspection.samples} samples")
        if args.png is not None:
            write_atomically(args.png, lambda temporary: temporary.write_bytes(png), suffix=".png")
        if args.html is not None:
            page = inspection_html(inspection, title, png)
            write_atomically(args.html, lambda temporary: temporary.write_text(page, encoding="utf-8"),
                             suffix=".html")
    if args.json:
        print(json.dumps(inspection.as_dict(), indent=2))
        return 0
    shown = f", the worst {args.top}" if args.top and args.top < len(inspection.tensors) else ""
    print_tables(inspection_table(inspection, f"{title}: {len(inspection.tensors)} quantized tensors{shown}, "
                                              f"{inspection.samples} samples, worst first", args.top))
    worst = inspection.tensors[0]
    print(f"worst: {worst.name} ({worst.layer or worst.op_type}): {worst.diagnosis()}")
    for name, agreement in inspection.outputs.items():
        print(f"output {name}: {db_text(agreement.sqnr_db)} SQNR vs float (pre-softmax where a softmax ends the model)")
    if args.save_recipe is not None:
        kept = _save_inspected_recipe(args, inspection)
        print(f"wrote {args.save_recipe}: {', '.join(kept)} kept float")
    for path in (args.png, args.html):
        if path is not None:
            print(f"wrote {path}")
    return 0


def _save_inspected_recipe(args: argparse.Namespace, inspection) -> list[str]:
    """A recipe that keeps float the layers of the --keep-float worst tensors, from --recipe (or the default
    options); the layers named, worst first."""
    import dataclasses

    from eightbit.ir import write_atomically
    from eightbit.pipeline.options import QuantizeOptions
    from eightbit.recipe import read_recipe, recipe_text

    options = read_recipe(args.recipe) if args.recipe is not None else QuantizeOptions()
    worst = [t for t in inspection.tensors if t.layer and t.layer not in options.exclude][:args.keep_float]
    kept = list(dict.fromkeys(t.layer for t in worst))
    decisions = [{"step": "inspect", "taken": f"{t.layer} kept float: its output {t.name}, {t.diagnosis()}"}
                 for t in worst]
    text = recipe_text(dataclasses.replace(options, exclude=(*options.exclude, *kept)), decisions, [])
    write_atomically(args.save_recipe, lambda temporary: Path(temporary).write_text(text), suffix=".toml")
    return kept


def _bench(args: argparse.Namespace) -> int:
    from eightbit import api
    from eightbit.backends.openvino import openvino_available
    from eightbit.ir import check_output_path, load_model, save_model, write_atomically
    from eightbit.report.bench import RECOMMENDABLE, bench, bench_markdown, recommendation, recommended
    from eightbit.report.tables import bench_table, print_tables

    source = Path(args.model)
    markdown = Path(args.markdown) if args.markdown else None
    if markdown is not None:
        check_output_path(markdown, source, *(p for p in (args.int8, args.calibration, args.eval) if p))
    if args.rounds < 1:
        raise InputError(f"--rounds {args.rounds}: give at least 1 timed block per session")
    if args.batch < 1:
        raise InputError(f"--batch {args.batch}: give at least 1 sample per timed call")
    if args.int8 is None and args.calibration is None:
        raise InputError("bench needs --calibration DATA to quantize the model (or --int8 QUANTIZED.onnx, a model "
                         "already quantized from it)")
    if args.eval is None and args.calibration is None:
        raise InputError("bench needs samples to feed: --eval DATA (or --calibration DATA)")
    images = _images(args)
    with tempfile.TemporaryDirectory(prefix="eightbit-bench-") as scratch:
        # A .pt2 program or a TensorFlow model: the ONNX model it converts to is the float model benched.
        converted = api.onnx_of(source)
        float_path = source if converted is source else save_model(converted, Path(scratch) / f"{source.stem}.onnx")
        float_model = load_model(float_path)
        calibration = api.load_samples(args.calibration, float_model, images) if args.calibration else None
        if args.eval is not None:
            evaluation = api.load_samples(args.eval, float_model, images)
        else:
            evaluation = calibration.take(0, min(calibration.count, DEFAULT_REPORT_SAMPLES))
        int8 = Path(args.int8) if args.int8 else Path(scratch) / f"{source.stem}.int8.onnx"
        # Made here, the model is made for each runtime benched: for ONNX Runtime, and for OpenVINO too.
        for_openvino = Path(scratch) / f"{source.stem}.ov.int8.onnx" \
            if args.int8 is None and not args.no_openvino and openvino_available() else None
        if args.int8 is None:
            for target, path in (("ort", int8), ("openvino", for_openvino)):
                if path is not None:
                    api.quantize(float_path, calibration, output=path, images=images, threads=args.threads,
                                 show_progress=_show_progress(args), target=target)
        else:
            load_model(int8)
        result = bench(float_path, int8, evaluation, calibration, peer=not args.no_peer,
                       openvino=not args.no_openvino, openvino_int8_path=for_openvino, memory=not args.no_memory,
                       threads=args.threads, rounds=args.rounds, show_progress=_show_progress(args),
                       batch=args.batch)
    result.model = source
    advice = recommendation(result, args.min_sqnr)
    target = RECOMMENDABLE[recommended(result, args.min_sqnr).label].target
    if target is not None and args.int8 is None:
        flags = ["--target", target] if target != "ort" else []
        made = ["quantize", str(source), "--calibration", args.calibration, *flags, "-o",
                f"{source.stem}.{'ov.' if flags else ''}int8.onnx"]
        advice += f"; made by: eightbit {shlex.join(made)}"
    result.notes.append(advice)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print_tables(bench_table(result))
        for note in result.notes:
            print(f"- {note}")
    if markdown is not None:
        text = bench_markdown(result, "eightbit " + shlex.join(args.argv))
        write_atomically(markdown, lambda temporary: Path(temporary).write_text(text), suffix=".md")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from eightbit import api
    from eightbit.frontends import is_framework_file
    from eightbit.ir import load_model
    from eightbit.report.explain import explain
    from eightbit.report.tables import explain_tables, print_tables

    if args.runs < 1 or args.top < 0:
        raise InputError(f"--runs {args.runs} --top {args.top}: give at least 1 profiled run and a top of 0 or more")
    model = load_model(args.model)
    if args.float_model is not None and not is_framework_file(args.float_model):  # checked as it is converted
        load_model(args.float_model)
    feeds = None
    if args.data is not None:
        feeds = api.load_samples(args.data, model, _images(args)).single_feed()
    result = explain(args.model, args.float_model, feeds, runs=args.runs, threads=args.threads)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(f"CPU: {result.cpu}; int8 can reach {result.limit} fp32's multiply-accumulate rate here")
    print_tables(*explain_tables(result, args.top))
    if not result.made_by_eightbit:
        print("(not made by eightbit: no record of which nodes stayed float and why)")
    elif not result.float_nodes:
        print("nodes left in float: none")
    print("why:")
    for line in result.verdict():
        print(f"- {line}")
    return 0


def _export_int(args: argparse.Namespace) -> int:
    from eightbit.backends.export import export_int
    from eightbit.ir import check_output_path, load_model

    output = check_output_path(args.output, args.model)
    description = export_int(load_model(args.model), output)
    kinds: dict[str, int] = {}
    for step in description["steps"]:
        kinds[step["kind"]] = kinds.get(step["kind"], 0) + 1
    requantizing = [[v for v in step["params"].values() if isinstance(v, dict) and "multiplier" in v]
                     for step in description["steps"] if step["kind"] == "integer"]
    requantizing = [found for found in requantizing if found]
    shifts = [found for found in requantizing if all("rounding_right_shift" in v for v in found)]
    print(f"{args.model} -> {output}: {kinds.get('integer', 0)} integer steps ({len(requantizing)} requantize, "
          f"{len(shifts)} of them by a shift alone), {kinds.get('quantize', 0)} quantize / "
          f"{kinds.get('dequantize', 0)} dequantize at the float edges, {kinds.get('float', 0)} float ops")
    return 0


def _export_c(args: argparse.Namespace) -> int:
    import re

    from eightbit.codegen import export_c
    from eightbit.ir import load_model

    name = args.name or re.sub(r"\W|^(?=\d)", "_", Path(args.model).name.split(".")[0], flags=re.ASCII)
    library = export_c(load_model(args.model), args.output, name)
    print(f"{args.model} -> {Path(args.output) / name}.h, .c: {library.steps} integer steps; constants (flash) "
          f"{library.flash_bytes} bytes, static tensors (RAM) {library.ram_bytes} bytes")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from eightbit.demo import run_demo

    if args.qat:
        try:
            from eightbit.qat.demo import run_qat_demo
        except ModuleNotFoundError as error:
            if error.name != "torch":
                raise
            raise InputError("eightbit demo --qat trains in PyTorch, which is not installed: "
                             "pip install torch==2.13.0") from None
        return run_qat_demo(threads=args.threads)

    return run_demo(output_dir=args.output_dir, threads=args.threads, show_progress=_show_progress(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eightbit", description="Float ONNX models in, 8-bit ONNX models out.")
    parser.add_argument("--version", action="version", version=f"eightbit {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an internal error, print its full trace")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="ONNX Runtime threads")
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    quantize = commands.add_parser("quantize", help="quantize a float ONNX model")
    quantize.add_argument("model", help="float model (.onnx; .pt2, a program torch.export.save wrote; or a "
                                        "TensorFlow model: a frozen graph .pb, a SavedModel folder or a .tflite "
                                        "file, with pip install 'eightbit[tf]')")
    quantize.add_argument("--recipe", metavar="FILE",
                          help="take every option from a recipe (TOML) that --save-recipe wrote, perhaps edited "
                               "([nodes.\"NAME\"] float = true keeps a node float)")
    quantize.add_argument("--save-recipe", metavar="FILE",
                          help="write this run's options (and, as comments, what it decided) as a recipe")
    quantize.add_argument("--inputs", nargs="+", metavar="NAME",
                          help="a frozen graph's input tensors (default: its placeholders)")
    quantize.add_argument("--outputs", nargs="+", metavar="NAME",
                          help="a frozen graph's output tensors (default: the ops nothing reads)")
    quantize.add_argument("-o", "--output", required=True, help="where to write the quantized model")
    quantize.add_argument("--calibration", help="calibration samples: .npz keyed by input name, or an image folder")
    quantize.add_argument("--scheme", choices=tuple(SCHEMES), default=DEFAULT_SCHEME)
    quantize.add_argument("--calibrate", choices=CALIBRATION_METHODS, default=None,
                          help="how activation ranges are chosen: minmax (every value seen), or from a histogram: "
                               "percentile (99.99%%), mse (least expected squared error; with po2, the 2^k with "
                               "the least error) or entropy (least KL divergence between the clipped and the "
                               "quantized distribution); auto (static schemes) chooses one of these per tensor by "
                               "the output error each causes, searched on calibration batches and kept where the "
                               "model is measured better (slow: a model run per candidate). Default: minmax, and "
                               "mse for po2")
    quantize.add_argument("--bias-bits", type=int, choices=BIAS_BITS, default=None,
                          help="integer width of biases (default: 32, and 16 for po2); values that do not fit are "
                               "clipped and reported")
    quantize.add_argument("--weight-granularity", choices=WEIGHT_GRANULARITIES, default=None,
                          help="one weight scale per output channel or per tensor (default: per_channel, and "
                               "per_tensor for po2)")
    quantize.add_argument("--weight-range", choices=WEIGHT_RANGES, default=DEFAULT_WEIGHT_RANGE,
                          help="weight codes: full [-127,127], 7bit [-63,63] (exact on x86 without VNNI), "
                               "or auto (full with VNNI; on other x86 CPUs, whichever of the two agrees better with "
                               "the float model on the calibration samples)")
    quantize.add_argument("--weight-rounding", choices=WEIGHT_ROUNDINGS, default=None,
                          help="gptq: choose each layer's weight codes together, lowering the error of the layer's "
                               "output on the calibration samples; nearest: round each weight on its own; auto "
                               "(default): with --calibration, the static schemes build both and keep gptq where "
                               "it agrees better with the float model on those samples, --scheme weights takes gptq")
    quantize.add_argument("--weight-bits", type=int, default=None,
                          help="--scheme weights: 4 stores MatMul and Gemm weights as 4-bit codes in blocks (of "
                               "--block-size inputs, default 32), embedding tables as 8-bit; 8 (default) stores 8-bit "
                               "codes, per channel unless --block-size is given")
    quantize.add_argument("--block-size", type=int, default=None,
                          help="--scheme weights: one grid per this many inputs of each output (16, 32, 64, 128 or "
                               "256), written as ONNX Runtime's MatMulNBits/GatherBlockQuantized for --target ort, "
                               "as DequantizeLinear with block_size (opset 21) otherwise")
    zero_points = quantize.add_mutually_exclusive_group()
    zero_points.add_argument("--weight-symmetric", dest="weight_symmetric", action="store_true", default=None,
                             help="blocks without zero points (default at 8 bits)")
    zero_points.add_argument("--weight-asymmetric", dest="weight_symmetric", action="store_false",
                             help="a zero point per block (default at 4 bits)")
    quantize.add_argument("--exclude", nargs="+", action="extend", default=[], metavar="NODE",
                          help="keep these nodes float: node names (globs such as 'encoder.*' allowed) or op types "
                               "(Softmax), as `eightbit inspect` lists them")
    quantize.add_argument("--no-bias-correction", action="store_true",
                          help="keep the biases as rounded (by default, static schemes with --calibration move each "
                               "integer layer's bias by its mean output error on those samples where that measures "
                               "better)")
    quantize.add_argument("--no-equalize", action="store_true",
                          help="leave the channels feeding depthwise convolutions as they are (by default, static "
                               "schemes with --calibration scale them to fill their shared grid, through ReLU, "
                               "pooling and hard-swish, and keep that where it measures better on those samples)")
    quantize.add_argument("--equalize", action="store_true", help=argparse.SUPPRESS)
    quantize.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET,
                          help="the runtime the model is made for (static schemes): its fast graph forms, and its "
                               "profiles for the speed check (default: ort, ONNX Runtime; openvino: grids only where "
                               "its integer kernels read them, zero points 0, OpenVINO installed for the speed "
                               "check); tensorrt: int8 activations with zero point 0, float "
                               "biases, activations fused before each quantize; npu: 16-bit activations with 8-bit "
                               "weights (A16W8, opset 21); both checked against their runtime's rules")
    quantize.add_argument("--effort", choices=EFFORTS, default="fast",
                          help="fast (default): each measured choice built and measured once, a budget met by the "
                               "fewest tensors kept float from the input, nothing timed, so the same input and flags "
                               "give the same file on any CPU of the same instruction set; max: every choice "
                               "measured anew for each candidate, a budget also searched by each tensor's own harm, "
                               "and the speed check on (slower; timed, so its choices follow the machine's load)")
    speed = quantize.add_mutually_exclusive_group()
    speed.add_argument("--speed-check", dest="speed_check", action="store_true", default=None,
                       help="profile the int8 and float models in the --target runtime and keep float the nodes "
                            "slower in int8 here, where the whole model is then timed faster (static schemes with "
                            "--calibration; timed, so the result follows the machine's load; on with --effort max)")
    speed.add_argument("--no-speed-check", dest="speed_check", action="store_false",
                       help="no speed check, even with --effort max")
    quantize.add_argument("--min-sqnr", type=_min_sqnr, default="auto", metavar="DB",
                          help="keep the fewest tensors in float (the first from the input; with --effort max also "
                               "the most harmful first, where that takes fewer) until the worst output SQNR "
                               "(pre-softmax) on the calibration samples is at least DB, and report which nodes "
                               f"(static schemes). Default: auto, {DEFAULT_MIN_SQNR_DB:g} dB for the eightbit scheme "
                               f"({DEFAULT_MIN_SQNR_DB_CLASSES:g} dB where an output is a softmax's) with "
                               "--calibration and no --max-drop, none otherwise; where the default cannot be met, the "
                               "all-integer model is written and the report says what to try; off: no budget. With "
                               "--scheme weights --weight-bits 4: the fewest weights in 8-bit blocks instead")
    quantize.add_argument("--max-drop", type=float, metavar="POINTS",
                          help="keep the fewest tensors in float (as --min-sqnr) until top-1 agreement with the float "
                               "model (argmax of the first output's last axis) on every calibration sample is at "
                               "most POINTS percentage points below 100; reports like --min-sqnr (static schemes)")
    quantize.add_argument("--eval", help="held-out samples for the report (default: the first "
                                         f"{DEFAULT_REPORT_SAMPLES} calibration samples)")
    quantize.add_argument("--json", action="store_true", help="print the report as JSON")
    quantize.add_argument("-v", "--verbose", action="store_true",
                          help="every decision with what was measured for it, and every node left in float")
    quantize.add_argument("--no-report", action="store_true", help="skip the accuracy and latency report")
    _add_image_options(quantize)
    common(quantize)
    quantize.set_defaults(handler=_quantize)

    run = commands.add_parser("run", help="run a model on every sample, write outputs keyed by output name")
    run.add_argument("model")
    run.add_argument("--data", required=True)
    run.add_argument("-o", "--output", required=True)
    run.add_argument("--backend", choices=BACKENDS, default="ort",
                     help="ort: ONNX Runtime; reference: the integer reference kernels (exact, slower)")
    _add_image_options(run)
    common(run)
    run.set_defaults(handler=_run)

    finetune = commands.add_parser(
        "finetune", help="fit a quantized model's codes and activation scales to its float original's outputs "
                         "(needs PyTorch)")
    finetune.add_argument("float_model", help="the float model the quantized one was made from")
    finetune.add_argument("quantized_model", help="made by eightbit quantize (static scheme)")
    finetune.add_argument("--data", required=True, help="samples to fit on (a quarter held out to measure): .npz "
                                                        "keyed by input name, or an image folder")
    finetune.add_argument("-o", "--output", required=True, help="where to write the fine-tuned model")
    finetune.add_argument("--steps", type=int, default=None,
                          help="optimizer steps of 4 samples each (default 300)")
    finetune.add_argument("--no-augment", action="store_true",
                          help="fit on the samples as given (by default images are flipped, shifted and their "
                               "contrast varied at every step)")
    finetune.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_image_options(finetune)
    common(finetune)
    finetune.set_defaults(handler=_finetune)

    compare = commands.add_parser("compare", help="agreement and speed of a quantized model vs its float original")
    compare.add_argument("float_model", help="the float model (.onnx, or the .pt2 program or TensorFlow model it "
                                             "was converted from)")
    compare.add_argument("quantized_model")
    compare.add_argument("--data", required=True)
    compare.add_argument("--json", action="store_true")
    compare.add_argument("--no-timing", action="store_true", help="skip the latency measurement")
    compare.add_argument("--backend", choices=BACKENDS, default="ort",
                         help="where the quantized model runs (the float one always runs in ONNX Runtime); "
                              "latency is measured with ort only")
    _add_image_options(compare)
    common(compare)
    compare.set_defaults(handler=_compare)

    inspect = commands.add_parser(
        "inspect", help="per-tensor diagnosis of a quantized model vs its float original, worst first")
    inspect.add_argument("float_model", help="the float model (.onnx, or the .pt2 program or TensorFlow model it "
                                             "was converted from)")
    inspect.add_argument("quantized_model")
    inspect.add_argument("--data", required=True, help="samples: .npz keyed by input name, or an image folder")
    inspect.add_argument("--impact", action="store_true",
                         help="also measure, for each tensor, the output SQNR gained by leaving it float "
                              "(one model run per tensor group; ranks by it)")
    inspect.add_argument("--top", type=int, default=25, help="rows shown in the terminal (0: all; default 25)")
    inspect.add_argument("--html", help="write a report page with the plot and every row")
    inspect.add_argument("--png", help="write the plot of SQNR along the network")
    inspect.add_argument("--json", action="store_true", help="print every row as JSON")
    inspect.add_argument("--save-recipe", metavar="FILE",
                         help="write a recipe that keeps float the layers of the worst tensors (quantize --recipe "
                              "takes it)")
    inspect.add_argument("--keep-float", type=int, default=1, metavar="N",
                         help="with --save-recipe: how many of the worst tensors' layers (default 1)")
    inspect.add_argument("--recipe", metavar="FILE",
                         help="with --save-recipe: the recipe the model was made with, to start from (default: "
                              "the default options)")
    _add_image_options(inspect)
    common(inspect)
    inspect.set_defaults(handler=_inspect)

    bench = commands.add_parser(
        "bench", help="speed, agreement and memory of a model as float, as eightbit int8 and as ONNX Runtime's "
                      "quantizer makes it, in ONNX Runtime and OpenVINO, side by side")
    bench.add_argument("model", help="float model (.onnx; or a .pt2 program or TensorFlow model, benched as the "
                                     "ONNX model it converts to)")
    bench.add_argument("--calibration", help="samples to quantize with (eightbit's and the peer's quantizer)")
    bench.add_argument("--int8", help="an int8 model already made from MODEL (default: quantize it here)")
    bench.add_argument("--eval", help="samples to compare outputs on and to time with (default: the first "
                                      f"{DEFAULT_REPORT_SAMPLES} calibration samples)")
    bench.add_argument("--rounds", type=int, default=10, help="timed blocks per session (3 runs each; default 10)")
    bench.add_argument("--batch", type=int, default=1, help="samples per timed call, for throughput (the "
                       "evaluation samples repeated where there are fewer; memory is measured at it too; default 1)")
    bench.add_argument("--min-sqnr", type=float, default=DEFAULT_MIN_SQNR_DB, metavar="DB",
                       help="the agreement a recommended model must keep: output SQNR vs float (default "
                            f"{DEFAULT_MIN_SQNR_DB:g} dB)")
    bench.add_argument("--no-peer", action="store_true", help="leave out the peers: ONNX Runtime's quantizer and NNCF")
    bench.add_argument("--no-openvino", action="store_true", help="leave out OpenVINO even when it is installed")
    bench.add_argument("--no-memory", action="store_true", help="skip the resident-memory measurement")
    bench.add_argument("--json", action="store_true", help="print the rows as JSON")
    bench.add_argument("--markdown", help="also write the table, machine and command as Markdown to this file")
    _add_image_options(bench)
    common(bench)
    bench.set_defaults(handler=_bench)

    explain = commands.add_parser(
        "explain", help="why an int8 model is or is not faster here: the CPU's int8 instructions, where ONNX "
                        "Runtime's time goes, float round trips, nodes left float")
    explain.add_argument("model", help="quantized model (.onnx)")
    explain.add_argument("--float", dest="float_model", help="its float original, to time side by side")
    explain.add_argument("--data", help="a sample to run (default: zeros of the input shapes)")
    explain.add_argument("--runs", type=int, default=20, help="profiled runs (medians per kernel; default 20)")
    explain.add_argument("--top", type=int, default=10, help="slowest kernels listed (default 10)")
    explain.add_argument("--json", action="store_true")
    _add_image_options(explain)
    common(explain)
    explain.set_defaults(handler=_explain)

    export = commands.add_parser("export-int", help="write a quantized model's integer program (weights, biases, "
                                                    "multipliers, shifts, step graph) as .npz or .json")
    export.add_argument("model", help="quantized model (.onnx)")
    export.add_argument("-o", "--output", required=True, help="program.npz (arrays + a 'program' JSON) or .json")
    common(export)
    export.set_defaults(handler=_export_int)

    export_c = commands.add_parser("export-c", help="write a quantized model as a C99 library for "
                                                    "microcontrollers: integer arithmetic only, static memory")
    export_c.add_argument("model", help="quantized model (.onnx)")
    export_c.add_argument("-o", "--output", required=True, help="folder for <name>.h and <name>.c (made if missing)")
    export_c.add_argument("--name", help="C prefix of the functions and files (default: the model file's name)")
    common(export_c)
    export_c.set_defaults(handler=_export_c)

    demo = commands.add_parser("demo", help="quantize the shipped digits CNN and show what changed")
    demo.add_argument("--output-dir", help="keep the float and int8 models here (default: a temporary folder)")
    demo.add_argument("--qat", action="store_true",
                      help="train with quantization in the loop (needs PyTorch) and compare with post-training "
                           "quantization at 8-bit, 4-bit and 2-bit weights and po2")
    common(demo)
    demo.set_defaults(handler=_demo)
    return parser


# Flags whose value may be written as -inf or -nan: argparse takes a word that starts with "-" and is not a
# negative number for a flag, and would answer "expected one argument" instead of saying what is wrong.
_NUMBER_FLAGS = ("--min-sqnr", "--max-drop")


def _joined_values(argv: list[str]) -> list[str]:
    """`argv` with "--flag -inf" written "--flag=-inf" for the number flags, so that the value reaches its
    own check."""
    joined: list[str] = []
    for word in argv:
        if joined and joined[-1] in _NUMBER_FLAGS and word.lower().lstrip("-") in ("inf", "infinity", "nan"):
            joined[-1] = f"{joined[-1]}={word}"
        else:
            joined.append(word)
    return joined


def main(argv: list[str] | None = None) -> int:
    argv = _joined_values(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(argv)
    args.argv = argv
    previous = signal.signal(signal.SIGTERM, _terminate)
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warnings(shown)
    try:
        _check_threads(args)
        return args.handler(args)
    except InputError as error:
        print(f"eightbit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eightbit: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Terminated:
        print("eightbit: terminated; nothing was written", file=sys.stderr)
        return 143
    except Exception as error:  # anything else is ours to fix: one line, the trace kept for the report
        if args.debug:
            raise
        trace = _write_trace()
        print(f"eightbit: internal error (a bug in eightbit, not in your input): {type(error).__name__}: "
              f"{str(error).splitlines()[0] if str(error) else ''}; the full trace is in {trace} "
              "(--debug prints it)", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = shown


def _one_line_warnings(shown: Callable) -> Callable:
    """A warnings.showwarning that prints eightbit's warnings (DataWarning) as one line on stderr and any other
    library's as `shown` does."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DataWarning):
            print(f"eightbit: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)
    return show


class Terminated(BaseException):
    """SIGTERM arrived: raised where the program is, so that every `finally` on the way out runs (a temporary
    file being written is removed) before the exit."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _check_threads(args: argparse.Namespace) -> None:
    """--threads within its bounds, for every command that takes it."""
    if hasattr(args, "threads"):
        from eightbit.pipeline.options import check_threads

        check_threads(args.threads)


def _write_trace() -> str:
    """The current exception's trace, in a new file under the temporary folder; its path."""
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="eightbit-trace-", suffix=".txt", delete=False) as file:
        traceback.print_exc(file=file)
    return file.name


if __name__ == "__main__":
    sys.exit(main())
