"""Recipes: the options of one quantize run as a TOML file, to make the same model again or change one thing.

`quantize --save-recipe FILE` writes what the run was asked (every option, as the command line spells it) and,
as comments, what it decided; `quantize --recipe FILE` takes its options from the file. quantize is
deterministic for one input, one set of options and one instruction set (docs/quantization.md, section 11d),
so a recipe run again gives the same bytes, and a recipe edited gives exactly the model of the edited options.
Per node, a recipe takes `float = true` (the node stays float, as --exclude keeps it) and, under 4-bit blocks,
`weight_bits = 8` (the node's weights take 8-bit blocks); other per-node settings are refused by name.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from pathlib import Path

import tomllib

from eightbit.config import Scheme
from eightbit.errors import InputError
from eightbit.pipeline.options import QuantizeOptions
from eightbit.plan import FloatNode

FORMAT = 1
# The options a recipe holds: QuantizeOptions' fields the command line sets (not the run's threads or progress,
# which change no byte of the model, nor a Python metric).
FIELDS = ("scheme", "calibrate", "weight_range", "bias_bits", "weight_granularity", "weight_rounding", "weight_bits",
          "block_size", "weight_symmetric", "min_sqnr_db", "max_drop_points", "bias_correction", "equalization",
          "speed_check", "target", "effort")
# A field's key in the recipe: the command line's flag, with _ for -.
KEYS = {field: {"min_sqnr_db": "min_sqnr", "max_drop_points": "max_drop"}.get(field, field) for field in FIELDS}
NODE_KEYS = ("float", "weight_bits")


def _value(value) -> str | None:
    """A TOML value, or None for an option left to its default (TOML has no null: the key is left out)."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, Scheme):
        value = value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def recipe_text(options: QuantizeOptions, decisions: list[dict], float_nodes: list[FloatNode]) -> str:
    """The recipe of a run asked `options` that decided `decisions` and left `float_nodes` float."""
    lines = ["# eightbit recipe: the options of one quantize run. Run it again with",
             "#   eightbit quantize MODEL --recipe THIS_FILE --calibration SAMPLES -o OUTPUT",
             "# for the same model (same input, samples and instruction set); edit it to change one thing.",
             f"format = {FORMAT}", "", "[quantize]"]
    for field in FIELDS:
        value = getattr(options, field)
        text = '"off"' if field == "min_sqnr_db" and value is None else _value(value)
        lines.append(f"{KEYS[field]} = {text}" if text is not None else f"# {KEYS[field]}: the default")
    lines.append(f"exclude = {json.dumps(list(options.exclude))}")
    for name in options.eight_bit_weights:
        lines += ["", f"[nodes.{json.dumps(name)}]", "weight_bits = 8"]
    lines += ["", "# What the run decided (for reading; quantize decides again from the options above):"]
    lines += [f"#   {d['step']}: {d['taken']}" for d in decisions]
    lines += ["# Nodes it left float, and why (add [nodes.\"NAME\"] float = true to keep another one float; under",
              "# 4-bit blocks, weight_bits = 8 gives a node's weights 8-bit blocks):"]
    lines += [f"#   {node.name} ({node.op_type}): {node.reason}" for node in float_nodes] or ["#   none"]
    return "\n".join(lines) + "\n"


def _checked(table: dict, path: Path) -> dict:
    """The [quantize] table's keys, each one a recipe holds."""
    unknown = sorted(set(table) - set(KEYS.values()) - {"exclude"})
    if unknown:
        raise InputError(f"{path}: unknown option(s) {', '.join(unknown)} in [quantize]; a recipe holds "
                         f"{', '.join(KEYS.values())} and exclude")
    exclude = table.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(name, str) for name in exclude):
        raise InputError(f"{path}: exclude must be a list of node names, globs or op types")
    return {field: table[key] for field, key in KEYS.items() if key in table}


@dataclasses.dataclass(frozen=True)
class _NodeSettings:
    """The [nodes."NAME"] tables' settings: the names kept float, and those whose weights take 8 bits."""

    float: tuple[str, ...]
    eight_bit: tuple[str, ...]


def _node_settings(nodes: dict, path: Path) -> _NodeSettings:
    """What the [nodes."NAME"] tables say (NODE_KEYS), or InputError naming the table and key that is wrong."""
    kept, eight_bit = [], []
    for name, settings in nodes.items():
        table = f"[nodes.{json.dumps(name)}]"
        unknown = sorted(set(settings) - set(NODE_KEYS)) if isinstance(settings, dict) else ["(not a table)"]
        if unknown:
            raise InputError(f"{path}: {table} sets {', '.join(unknown)}; per node a recipe takes "
                             f"{' and '.join(NODE_KEYS)} only")
        if not isinstance(settings.get("float", False), bool):
            raise InputError(f"{path}: {table} float must be true or false")
        if settings.get("weight_bits", 4) not in (4, 8) or isinstance(settings.get("weight_bits", 4), bool):
            raise InputError(f"{path}: {table} weight_bits must be 4 or 8")
        if settings.get("float") is True:
            kept.append(name)
        if settings.get("weight_bits") == 8:
            eight_bit.append(name)
    return _NodeSettings(tuple(kept), tuple(eight_bit))


def read_recipe(path: str | os.PathLike) -> QuantizeOptions:
    """The options a recipe file holds, or InputError naming what is wrong with it."""
    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such recipe file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
        raise InputError(f"{path}: not a readable TOML recipe ({str(error).splitlines()[0]})") from None
    if recipe.get("format") != FORMAT or not isinstance(recipe.get("quantize"), dict):
        raise InputError(f"{path}: not an eightbit recipe (format = {FORMAT} and a [quantize] table); write one "
                         "with quantize --save-recipe")
    table = _checked(recipe["quantize"], path)
    nodes = recipe.get("nodes", {})
    if not isinstance(nodes, dict):
        raise InputError(f"{path}: nodes must be tables: [nodes.\"NAME\"]")
    settings = _node_settings(nodes, path)
    exclude = tuple(dict.fromkeys([*recipe["quantize"].get("exclude", []), *settings.float]))
    try:
        return dataclasses.replace(QuantizeOptions(), exclude=exclude, eight_bit_weights=settings.eight_bit, **table)
    except TypeError as error:
        raise InputError(f"{path}: {error}") from None
