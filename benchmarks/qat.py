"""Float vs post-training vs quantization-aware training on the shipped digits CNN.

    python -m benchmarks.qat               # writes its BENCHMARKS.md section
    python -m benchmarks.qat --no-write

The same comparison `eightbit demo --qat` prints (eightbit/qat/demo.py): every scheme fine-tuned
from the shipped float weights with the same recipe, exported as QDQ, converted without
calibration and run on the integer reference; the float model fine-tuned with that recipe is
the control for what the extra training alone gives.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.sections import write_section
from eightbit.qat.demo import COLUMNS, LEGEND, compare_schemes, comparison_rows

SECTION = """## Quantization-aware training (digits CNN)

`{command}` ({seconds:.0f} s on this machine). Held-out accuracy of 360 images; float {float_accuracy:.2%},
the float model fine-tuned with the same recipe ({epochs} epochs, Adam, learning rate {learning_rate:g}, cosine)
{float_fine_tuned:.2%}.

{table}

{legend}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    comparison = compare_schemes()
    seconds = time.perf_counter() - start
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in comparison_rows(comparison)]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section("qat", SECTION.format(
            command="python -m benchmarks.qat", seconds=seconds, float_accuracy=comparison.float_accuracy,
            float_fine_tuned=comparison.float_fine_tuned, epochs=comparison.epochs,
            learning_rate=comparison.learning_rate, table=table, legend=LEGEND))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
