"""Human-readable tables (rich) for the quantize and compare reports."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from eightbit.plan import FloatNode
from eightbit.report.compare import Comparison


def _db(value: float) -> str:
    return f"{value:.1f} dB" if math.isfinite(value) else ("exact" if value > 0 else "-inf")


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
        table.add_row(f"SQNR  {name}", _db(agreement.sqnr_db))
        table.add_row(f"max |error|  {name}", f"{agreement.max_abs_error:.4g}")
        if agreement.top1_agreement is not None:
            table.add_row(f"top-1 agreement  {name}", f"{agreement.top1_agreement:.2%}")
    if comparison.latency is not None:
        lat = comparison.latency
        table.add_row("latency float / quantized", f"{lat.first_ms:.3f} ms / {lat.second_ms:.3f} ms")
        table.add_row("speed-up", f"x{lat.speedup:.2f}")
    return table


def float_nodes_table(nodes: list[FloatNode]) -> Table:
    table = Table(title=f"nodes left in float: {len(nodes)}", title_justify="left")
    table.add_column("node")
    table.add_column("op")
    table.add_column("reason")
    for node in nodes:
        table.add_row(node.name, node.op_type, node.reason)
    return table


def print_tables(*tables: Table) -> None:
    console = Console()
    for table in tables:
        console.print(table)
