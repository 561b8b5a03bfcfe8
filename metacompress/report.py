"""Per-layer decision tables and run reports: what ``apply`` writes and ``inspect`` reads.

Columns of the decision table (defined once here; the README repeats this list):

==============  =========================================================================
column          meaning
==============  =========================================================================
unit            the unit's index in execution order
name            the unit's name (first layer's module path, ``+N`` more layers)
kind            op kinds of its layers: conv, depthwise, linear (joined with ``+``)
channels        channels of the unit in the original model
kept            channels kept by the plan
prune_ratio     fraction of channels removed (``1 - kept / channels``)
w_bits          weight bit-width (per output channel, symmetric)
a_bits          bit-width of the unit's layers' input activations (per tensor)
params          parameters of the unit's layers after pruning (weights + biases)
macs            multiply-accumulates per sample of the unit's layers after pruning
cost_share      the unit's share of the plan's cost of the budget kind on the hardware
sensitivity     proxy accuracy change with this unit alone at W4A4 (a probe; <= 0)
curvature       Hessian trace per weight of the unit (HAWQ's sensitivity scale)
raw_prune       the agent's raw prune ratio before budget projection
raw_w_bits      raw weight bits before projection and hardware rounding
raw_a_bits      raw activation bits before projection and hardware rounding
frozen          true for the classifier head and user-frozen layers (kept at W8A8)
note            why the plan cannot prune the unit (analysis's reason) or keeps it at W8A8; empty otherwise
==============  =========================================================================
"""

from __future__ import annotations

import pandas as pd

from metacompress.compressors.cost import unit_cost_shares
from metacompress.compressors.plan import Plan
from metacompress.envs.context import TaskContext

DECISION_COLUMNS = (
    "unit", "name", "kind", "channels", "kept", "prune_ratio", "w_bits", "a_bits", "params", "macs",
    "cost_share", "sensitivity", "curvature", "raw_prune", "raw_w_bits", "raw_a_bits", "frozen", "note",
)


def decision_table(context: TaskContext, plan: Plan, raw_decisions: list[dict] | None = None) -> pd.DataFrame:
    """One row per unit of ``plan`` on ``context``'s model and hardware (columns above)."""
    spec = context.spec
    plan.check_model(spec)
    shares = unit_cost_shares(spec, context.budget.kind, plan.kept, plan.w_bits, plan.a_bits, context.hardware)
    raw = {row["unit"]: row for row in raw_decisions or []}
    rows = []
    for unit, decision in zip(spec.units, plan.decisions):
        layers = spec.layers_of(unit.index)
        shapes = [(layer.kept_in(plan.kept), layer.kept_out(plan.kept)) for layer in layers]
        probe = context.probes.units[unit.index]
        given = raw.get(unit.name, {})
        rows.append(
            {
                "unit": unit.index,
                "name": unit.name,
                "kind": "+".join(sorted({layer.kind for layer in layers})),
                "channels": unit.channels,
                "kept": decision.kept_channels,
                "prune_ratio": round(decision.prune_ratio, 4),
                "w_bits": decision.w_bits,
                "a_bits": decision.a_bits,
                "params": sum(l.weight_count(kin, kout) + (kout if l.has_bias else 0) for l, (kin, kout) in zip(layers, shapes)),
                "macs": sum(l.macs(kin, kout) for l, (kin, kout) in zip(layers, shapes)),
                "cost_share": round(shares[unit.index], 4),
                "sensitivity": round(probe.drop_w4a4, 4),
                "curvature": probe.hessian_trace / max(probe.weight_count, 1),
                "raw_prune": given.get("raw_prune"),
                "raw_w_bits": given.get("raw_w_bits"),
                "raw_a_bits": given.get("raw_a_bits"),
                "frozen": unit.frozen,
                "note": unit.reason,
            }
        )
    return pd.DataFrame(rows, columns=list(DECISION_COLUMNS))


def read_decisions(path) -> pd.DataFrame:
    """Read a ``decisions.csv`` back (unit names stay strings, e.g. Sequential indices "1")."""
    return pd.read_csv(path, dtype={"name": str, "kind": str, "note": str})


def markdown_report(summary: dict, decisions: pd.DataFrame) -> str:
    """The ``report.md`` of an apply run: the metric, cost vs budget, time, the max-drop walk, per-layer table."""
    metric = summary.get("metric", "top-1 accuracy")
    lines = [
        f"# metacompress report: {summary['model']}",
        "",
        f"- hardware: `{summary['hardware']}`; budget: `{summary['budget']}` of the unpruned W8A8 {summary['budget_kind']}",
        f"- planner: {summary['planner']} ({summary['evaluations_used']} proxy evaluations), seed {summary['seed']}",
        f"- cost: {summary['cost_ratio']:.4f} of the W8A8 reference = {summary['budget_ratio']:.3f} of the budget "
        f"({'within' if summary['within_budget'] else 'OVER'} budget)",
        f"- size: {summary['size_bits'] / 8 / 1024:.1f} KiB (was {summary['reference_size_bits'] / 8 / 1024:.1f} KiB at W8A8, "
        f"{summary['fp32_size_bits'] / 8 / 1024:.1f} KiB in fp32)",
        *([f"- left untouched (fp32, counted in the size; no unit to plan): {', '.join(summary['untouched_layers'])}"]
          if summary.get("untouched_layers") else []),
        f"- metric: {metric} (higher is better); outputs read as {summary.get('output_kind', 'logits')}, "
        f"recovery distils with {summary.get('distillation', 'KL, T=2')}",
        "",
        f"| {metric} | original | compressed | change |",
        "|---|---|---|---|",
        f"| proxy (search split; calibration + {summary['search_finetune_steps']} KD steps, the planner's reward) | {summary['search_accuracy_original']:.4f} | "
        f"{summary['search_accuracy_compressed']:.4f} | {summary['proxy_change']:+.4f} |",
        f"| test split, after {summary['finetune_steps']} KD steps | {summary['test_accuracy_original']:.4f} | "
        f"{summary['test_accuracy_compressed']:.4f} | {summary['test_change']:+.4f} |",
        "",
        f"Time: planning {summary['planning_seconds']:.1f} s, fine-tune and export {summary['finetune_seconds']:.1f} s, "
        f"total {summary['total_seconds']:.1f} s.",
        "",
        *tradeoff_lines(summary),
        "## Per-unit decisions",
        "",
        decisions.drop(columns=["raw_prune", "raw_w_bits", "raw_a_bits", "note"]).to_markdown(index=False, floatfmt=".4g"),
        "",
        *unpruned_lines(decisions),
    ]
    return "\n".join(lines)


def unpruned_lines(decisions: pd.DataFrame) -> list[str]:
    """Why each unit the plan could not prune keeps its channels (a reason a user can act on: freeze less, rewrite a layer)."""
    noted = decisions[decisions["note"] != ""]
    if noted.empty:
        return []
    return ["## Units kept whole, and why", "", *(f"- unit {row.unit} `{row.name}`: {row.note}" for row in noted.itertuples()), ""]


def tradeoff_lines(summary: dict) -> list[str]:
    """The accuracy-target section: the target, the outcome and the trade-off curve walked (empty without ``max_drop``)."""
    if not summary.get("tradeoff"):
        return []
    table = pd.DataFrame(summary["tradeoff"])[["fraction", "cost_ratio", "metric", "meets", "chosen"]]
    return [
        f"## Accuracy target: at most {summary['max_drop']} below the original (metric >= {summary['target_floor']:.4f})",
        "",
        summary["target_message"] + ".",
        "",
        "Recovered metric on the search split per budget fraction tried (plot: `tradeoff.png`):",
        "",
        table.to_markdown(index=False, floatfmt=".4f"),
        "",
    ]
