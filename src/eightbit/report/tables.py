"""Human-readable tables (rich) for the quantize, compare and inspect reports."""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.table import Table

from eightbit.never_slower import RUNTIMES
from eightbit.plan import FloatNode
from eightbit.report.bench import COLUMNS, Bench, bench_cells, machine_line
from eightbit.report.compare import Comparison
from eightbit.report.explain import Explanation, kernel_kind
from eightbit.report.inspect import Inspection, TensorReport, power_of_two_exponent


def _number_db(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else ("exact" if value > 0 else "-inf")


def db_text(value: float) -> str:
    """An SQNR for people: "31.2 dB", or "exact" / "-inf"."""
    return f"{_number_db(value)} dB" if math.isfinite(value) else _number_db(value)


def _bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def comparison_table(comparison: Comparison, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    if comparison.float_bytes is not None:
        ratio = comparison.quantized_bytes / comparison.float_bytes
        table.add_row("file size", f"{_bytes(comparison.float_bytes)} -> {_bytes(comparison.quantized_bytes)}"
                      f" (x{ratio:.2f})")
    for name, agreement in comparison.outputs.items():
        table.add_row(f"SQNR  {name}", db_text(agreement.sqnr_db))
        table.add_row(f"max |error|  {name}", f"{agreement.max_abs_error:.4g}")
        if agreement.top1_agreement is not None:
            table.add_row(f"top-1 agreement  {name}", f"{agreement.top1_agreement:.2%}")
    if comparison.latency is not None:
        lat = comparison.latency
        runtime = RUNTIMES.get(comparison.timed_in, "ONNX Runtime")
        table.add_row(f"latency float / quantized ({runtime})", f"{lat.first_ms:.3f} ms / {lat.second_ms:.3f} ms")
        table.add_row("speed-up", f"x{lat.speedup:.2f}")
    return table


def bench_table(result: Bench) -> Table:
    title = (f"{result.model.name}: {result.samples} samples compared on output {result.output!r}\n"
             f"{machine_line(result.threads, result.batch)}")
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="right" if 0 < index < len(COLUMNS) - 1 else "left")
    for row in result.rows:
        table.add_row(*bench_cells(row))
    return table


def explain_tables(result: Explanation, top: int) -> list[Table]:
    total = result.total_microseconds or 1.0
    kinds = Table(title=f"where ONNX Runtime's time goes (kernel time per run, inputs: {result.inputs})",
                  title_justify="left")
    for column in ("kind", "kernels", "ms", "share"):
        kinds.add_column(column, justify="left" if column == "kind" else "right")
    for kind, (count, us) in result.by_kind.items():
        kinds.add_row(kind, str(count), f"{us / 1e3:.3f}", f"{us / total:.0%}")
    tables = [kinds]
    if result.round_trips:
        trips = Table(title="Quantize/Dequantize kernels that stayed, by the op they surround", title_justify="left")
        for column in ("around", "kernels", "ms"):
            trips.add_column(column, justify="left" if column == "around" else "right")
        for trip in result.round_trips:
            trips.add_row(trip.around, str(trip.kernels), f"{trip.microseconds / 1e3:.3f}")
        tables.append(trips)
    if result.made_by_eightbit and result.float_nodes:
        tables.append(float_nodes_table(result.float_nodes))
    if result.slower:
        slower = Table(title="nodes slower in int8 than in float (same node names, ONNX Runtime profiles)",
                       title_justify="left")
        for column in ("node", "op", "int8 ms", "float ms"):
            slower.add_column(column, justify="left" if column in ("node", "op") else "right")
        for node in result.slower[:top or None]:
            slower.add_row(node.name, node.op_type, f"{node.int8_us / 1e3:.3f}", f"{node.float_us / 1e3:.3f}")
        tables.append(slower)
    heavy = Table(title=f"the {top} slowest kernels", title_justify="left")
    for column in ("kernel", "op", "kind", "ms", "first input"):
        heavy.add_column(column, justify="right" if column == "ms" else "left")
    for kernel in result.top(top):
        shape = f"{kernel.input_types[0]} {list(kernel.input_shapes[0])}" if kernel.input_types else ""
        heavy.add_row(kernel.name, kernel.op_type, kernel_kind(kernel), f"{kernel.microseconds / 1e3:.3f}", shape)
    tables.append(heavy)
    return tables


def float_nodes_table(nodes: list[FloatNode]) -> Table:
    table = Table(title=f"nodes left in float: {len(nodes)}", title_justify="left")
    table.add_column("node")
    table.add_column("op")
    table.add_column("reason")
    for node in nodes:
        table.add_row(node.name, node.op_type, node.reason)
    return table


def _scale(scale: float) -> str:
    k = power_of_two_exponent(scale)
    return f"2^{k}" if k is not None else f"{scale:.3g}"


def _grid(report: TensorReport) -> str:
    text = _scale(report.grid.scale)
    return text if report.grid.zero_point == 0 else f"{text} zp {report.grid.zero_point}"


def _weight_scales(report: TensorReport) -> str:
    if report.weights is None:
        return ""
    scales = report.weights.scales.reshape(-1)
    low, high = float(scales.min()), float(scales.max())
    return _scale(low) if low == high else f"{_scale(low)}..{_scale(high)}"


INSPECTION_COLUMNS = ("#", "tensor", "layer", "scales in · w → out", "bias bits", "clipped", "own dB", "channel dB",
                      "weights dB", "accumulated dB", "impact dB")
NUMERIC_INSPECTION_COLUMNS = frozenset(INSPECTION_COLUMNS[4:]) | {"#"}


def inspection_cells(rank: int, report: TensorReport, layer_names: bool = True) -> list[str]:
    """One row of the inspect table: the tensor's grids, then its SQNR figures (report/inspect.py)."""
    layer = report.op_type
    if layer_names and report.layer:
        layer = f"{report.layer} ({report.op_type})"
    if report.read_through:
        layer += f" → {report.read_through}"
    inputs = " ".join(_scale(s) for s in report.input_scales)
    weights = _weight_scales(report)
    scales = " · ".join(part for part in (inputs, weights) if part)
    scales = f"{scales} → {_grid(report)}" if scales else _grid(report)
    bias = ""
    if report.bias_bits is not None:
        bias = str(report.bias_bits)
        if report.bias_saturated:
            bias += f" ({report.bias_saturated} clipped)"
    weights = report.own_figures().get("weights")
    weight_db = "" if weights is None else _number_db(weights)
    if report.in_float_model and report.count:
        figures = [f"{report.clipped_fraction:.2%}", _number_db(report.own.sqnr_db),
                   _number_db(report.own_channels.median_db), weight_db, _number_db(report.accumulated.sqnr_db)]
    else:
        figures = ["", "no float tensor", "of this name", weight_db, ""]
    impact = "" if report.impact_db is None else f"{report.impact_db:+.1f}"
    return [str(rank), report.name, layer, scales, bias, *figures, impact]


def inspection_table(inspection: Inspection, title: str, top: int | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for column in INSPECTION_COLUMNS:
        table.add_column(column, justify="right" if column in NUMERIC_INSPECTION_COLUMNS else "left")
    shown = inspection.tensors if not top else inspection.tensors[:top]
    for rank, report in enumerate(shown, start=1):
        table.add_row(*inspection_cells(rank, report, layer_names=False))
    return table


def print_tables(*tables: Table) -> None:
    # Piped output is not cut to 80 columns: wide tables stay one line per row.
    console = Console(width=None if sys.stdout.isatty() else 200)
    for table in tables:
        console.print(table)
