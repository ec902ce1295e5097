"""SQNR along the depth of a network, drawn as a PNG (Pillow; no plotting library needed)."""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw, ImageFont

from eightbit.report.inspect import Inspection, TensorReport

WIDTH, HEIGHT = 960, 400
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 40, 44
# (label, colour, figure of a tensor report)
SERIES = (
    ("accumulated (quantized model vs float)", (31, 119, 180), lambda r: r.accumulated.sqnr_db),
    ("own (this tensor's grid alone)", (255, 127, 14), lambda r: r.own.sqnr_db),
    ("own, median channel", (44, 160, 44), lambda r: r.own_channels.median_db),
)
WORST = (214, 39, 40)
GRID_STEP_DB = 10.0
# Infinite SQNR (an exact tensor) is drawn at the top of the axis.
DEFAULT_TOP_DB = 60.0


def _measured(inspection: Inspection) -> list[TensorReport]:
    return sorted((r for r in inspection.tensors if r.in_float_model and r.count), key=lambda r: r.depth)


def _axis_limits(reports: list[TensorReport]) -> tuple[float, float]:
    finite = [f(r) for r in reports for _, _, f in SERIES if math.isfinite(f(r))]
    low = min([0.0, *finite])
    high = max([DEFAULT_TOP_DB, *finite])
    return (math.floor(low / GRID_STEP_DB) * GRID_STEP_DB, math.ceil(high / GRID_STEP_DB) * GRID_STEP_DB)


def sqnr_plot_png(inspection: Inspection, title: str) -> bytes:
    """Each quantized tensor's accumulated, own and median-channel SQNR (dB) in graph order; the
    tensor ranked worst is marked in red."""
    reports = _measured(inspection)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((MARGIN_LEFT, 8), title, fill="black", font=font)
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    if not reports:
        draw.text((left, top + 20), "no tensor could be measured against the float model", fill="black", font=font)
        return _png(image)
    low, high = _axis_limits(reports)

    def y_of(db: float) -> float:
        db = high if db == math.inf else low if db == -math.inf else db
        return bottom - (db - low) / (high - low) * (bottom - top)

    def x_of(index: int) -> float:
        return left + (index + 0.5) / len(reports) * (right - left)

    level = low
    while level <= high:
        y = y_of(level)
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((6, y - 6), f"{level:.0f} dB", fill="black", font=font)
        level += GRID_STEP_DB
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, bottom + 8), f"quantized tensors in graph order (1 ... {len(reports)})", fill="black", font=font)

    worst = next((index for index, report in enumerate(reports) if report is inspection.tensors[0]), None)
    if worst is not None:
        x = x_of(worst)
        draw.line([(x, top), (x, bottom)], fill=WORST, width=2)
        draw.text((min(x + 4, right - 200), top + 4), f"worst: {reports[worst].name[-40:]}", fill=WORST, font=font)
    for number, (label, colour, figure) in enumerate(SERIES):
        points = [(x_of(i), y_of(figure(r))) for i, r in enumerate(reports)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        legend_x = left + 8 + number * 290
        draw.rectangle([legend_x, bottom + 26, legend_x + 12, bottom + 34], fill=colour)
        draw.text((legend_x + 16, bottom + 24), label, fill="black", font=font)
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
