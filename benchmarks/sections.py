"""BENCHMARKS.md is made of sections, each written by one harness and replaced only by it."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
_TITLE = "# Benchmarks\n"


def write_section(key: str, text: str, path: Path = BENCHMARKS) -> None:
    """Replace the section called `key` (or append it) and keep every other section as it was."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else _TITLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip() + "\n\n" + block
    path.write_text(updated)


def table_harness(argv: list[str] | None, description: str, default_models: list[str],
                  run: Callable[[list[str]], list[str]], key: str, section: str) -> int:
    """Command line of a harness that prints a table and writes it into its BENCHMARKS.md section.

    `section` is formatted with the table and the command that made it (as `python -m benchmarks.<module>` was run)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=default_models)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    table = "\n".join(run(args.models))
    print(table)
    if not args.no_write:
        command = f"python -m benchmarks.{Path(sys.argv[0]).stem}" + (f" --models {' '.join(args.models)}"
                                                   if args.models != default_models else "")
        write_section(key, section.format(table=table, command=command))
    return 0
