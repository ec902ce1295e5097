"""Deciding what a static scheme computes in integers, before any range is known."""

from eightbit.plan.ops import OP_RULES, OpRule, OutputRange
from eightbit.plan.planner import FloatNode, Plan, make_plan

__all__ = ["OP_RULES", "FloatNode", "OpRule", "OutputRange", "Plan", "make_plan"]
