"""A self-contained HTML page for an inspection: the SQNR plot embedded, every tensor's row."""

from __future__ import annotations

import base64
import html

from eightbit.report.inspect import Inspection
from eightbit.report.tables import INSPECTION_COLUMNS, NUMERIC_INSPECTION_COLUMNS, db_text, inspection_cells

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
"""
_LEGEND = (
    "<b>own</b>: the float tensor quantized with the model's grid alone vs the float tensor; "
    "<b>channel</b>: the median over channels of that figure (one outlier channel that sets the range "
    "shows here); <b>weights</b>: the layer's dequantized weights vs the float model's (whole, and median "
    "output channel, the lower shown); <b>accumulated</b>: the quantized model's tensor vs the float model's, "
    "every error before it included; <b>impact</b>: output SQNR gained when this tensor (and the data-movement ops "
    "sharing its grid) stays float; <b>clipped</b>: float values beyond the grid's ends."
)


def inspection_html(inspection: Inspection, title: str, plot_png: bytes) -> str:
    outputs = ", ".join(f"{html.escape(name)}: {db_text(a.sqnr_db)}" for name, a in inspection.outputs.items())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in INSPECTION_COLUMNS)
    rows = []
    for rank, report in enumerate(inspection.tensors, start=1):
        cells = inspection_cells(rank, report)
        rows.append("<tr>" + "".join(
            f'<td class="number">{html.escape(cell)}</td>' if column in NUMERIC_INSPECTION_COLUMNS
            else f"<td>{html.escape(cell)}</td>" for column, cell in zip(INSPECTION_COLUMNS, cells)) + "</tr>")
    image = base64.b64encode(plot_png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{inspection.samples} samples. Output SQNR (pre-softmax where a softmax ends the model): {outputs}.</p>
<img alt="SQNR along the depth of the network" src="data:image/png;base64,{image}">
<p>Worst first. {_LEGEND}</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""
