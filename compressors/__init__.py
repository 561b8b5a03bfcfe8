"""Model surgery and cost: analysis, plans, search/export modes, recovery, accounting."""

from metacompress.compressors.budget import Budget, BudgetProjector, PlanVectors, UnitChoice, reference_cost
from metacompress.compressors.cost import BUDGET_KINDS, count_bitops, count_macs, count_params, size_bits, total_cost
from metacompress.compressors.export import export, load_compressed, save_compressed
from metacompress.compressors.graph import ModelGraph, analyze, build_graph
from metacompress.compressors.masking import SearchModel
from metacompress.compressors.plan import LayerDecision, Plan
from metacompress.compressors.recovery import accuracy, calibrate, distill
from metacompress.compressors.spec import LayerSpec, ModelSpec, UnitSpec

__all__ = [
    "BUDGET_KINDS",
    "Budget",
    "BudgetProjector",
    "LayerDecision",
    "LayerSpec",
    "ModelGraph",
    "ModelSpec",
    "Plan",
    "PlanVectors",
    "SearchModel",
    "UnitChoice",
    "UnitSpec",
    "accuracy",
    "analyze",
    "build_graph",
    "calibrate",
    "count_bitops",
    "count_macs",
    "count_params",
    "distill",
    "export",
    "load_compressed",
    "reference_cost",
    "save_compressed",
    "size_bits",
    "total_cost",
]
