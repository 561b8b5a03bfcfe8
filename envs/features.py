"""Observation features, comparable across models and hardware (the table is the spec).

No feature is min-max normalised within one network (HAQ/AMC/NNCF do, which breaks
transfer): sizes are log-scaled absolutes, shares are fractions of the model's own
total, costs are fractions of the budget, sensitivities are accuracy changes. Every
feature is clipped to [-1, 1] (most live in [0, 1]).

=====  ======================  ==========================================================
index  feature                 definition (why it transfers)
=====  ======================  ==========================================================
0      log_channels            log2(channels) / 10: absolute width
1      log_macs                log10(unit MACs + 1) / 9: absolute compute
2      log_weights             log10(unit weights + 1) / 8: absolute size
3      share_macs              unit MACs / model MACs
4      share_weights           unit weights / model weights
5      share_cost              unit's share of the W8A8 cost of this budget kind on this hardware
6      depth                   decision index / (decisions - 1)
7      has_conv                a k x k (k > 1) dense conv in the unit
8      has_pointwise           a 1x1 conv in the unit
9      has_depthwise           a depthwise conv in the unit
10     has_linear              a Linear in the unit
11     layers                  layers in the unit / 4
12     prunable                1 if channels can be removed
13     step_fraction           channel step / channels (1 head of 4 = 0.25)
14     log_positions           log2(first layer's output positions) / 12: feature-map size
15     strided                 a layer with stride > 1
16-19  saving_bits             fraction of the model's cost saved by this unit alone at W4A4,
                               W2A2, W8A4, W4A8 (this hardware, this kind): marginal cost per bit
20     saving_prune            fraction saved by this unit alone at half its channels
21-24  sensitivity             proxy accuracy change with this unit alone at W2, A2, W4A4, 50%
25     curvature               log10(Hessian trace per weight + 1e-9) / 9
26-29  budget_kind             one-hot: latency, energy, size, bitops
30     budget_fraction         budget / unpruned W8A8 cost
31     minimum_fraction        most compressed plan's cost / unpruned W8A8 cost
32     anchor_level            compression level (0-1) of the uniform plan that just fits:
                               where action 0 points (see ``CompressionEnv``)
33     progress                decision index / decisions
34     cost_if_rest_min        plan cost with every later unit at maximum compression / budget
                               (what is committed so far, plus the unavoidable rest; <= 1)
35     cost_if_rest_full       plan cost with later units uncompressed W8A8 / budget / 4
36     rest_reference_share    share of the W8A8 cost in this and later units
37-39  previous_action         previous executed prune / max prune, (w - 2) / 6, (a - 2) / 6
40     trial_attempt           attempt index / attempts (trial mode; 0 otherwise)
41     trial_last_reward       last attempt's reward (accuracy change)
42     trial_best_reward       best attempt's reward so far
43-45  trial_last_plan         last attempt's mean prune / max prune, mean (w-2)/6, mean (a-2)/6
46     trial_last_cost         last attempt's cost / budget
47-    hardware                HELP-style hardware embedding (``hardware.embedding``)
=====  ======================  ==========================================================

With ``observation="network"`` (the solver-anchored residual planner) the step vector
above is followed by the current unit's anchor levels (prune, w bits, a bits; 0-1, the
solver's choice that action 0 reproduces) and by the whole network as a padded table
of ``TABLE_UNITS`` rows, one per decision unit in order, each row its static features
0-25, its anchor levels, a flag for the current unit and a flag for a real (not padding)
row. A network with more decision units shows the ``TABLE_UNITS`` nearest the current
one. ``agents.encoder`` reads the table with a permutation-invariant set encoder.
"""

from __future__ import annotations

import math

import numpy as np

from metacompress.compressors.budget import BudgetProjector, PlanVectors, reference_vectors
from metacompress.compressors.cost import BUDGET_KINDS
from metacompress.compressors.hardware import EMBEDDING_DIM
from metacompress.compressors.plan import MIN_BITS, kept_channels_for
from metacompress.compressors.spec import UnitSpec
from metacompress.envs.probes import ModelProbes

UNIT_FEATURES = 26
BUDGET_FEATURES = 7
DYNAMIC_FEATURES = 7
TRIAL_FEATURES = 7
OBSERVATION_DIM = UNIT_FEATURES + BUDGET_FEATURES + DYNAMIC_FEATURES + TRIAL_FEATURES + EMBEDDING_DIM
ANCHOR_FEATURES = 3
TABLE_UNITS = 48
TABLE_FEATURES = UNIT_FEATURES + ANCHOR_FEATURES + 2
STEP_DIM = OBSERVATION_DIM + ANCHOR_FEATURES
NETWORK_OBSERVATION_DIM = STEP_DIM + TABLE_UNITS * TABLE_FEATURES
TRIAL_OFFSET = UNIT_FEATURES + BUDGET_FEATURES + DYNAMIC_FEATURES
BIT_PROBES = ((4, 4), (2, 2), (8, 4), (4, 8))


def unit_features(projector: BudgetProjector, probes: ModelProbes) -> np.ndarray:
    """Static features (indices 0-25) of every decision unit: shape (decisions, 26)."""
    spec, hardware, decision_units = projector.spec, projector.hardware, projector.decision_units
    full = spec.full_kept
    shares = projector.reference_shares()
    model_macs = max(spec.macs(), 1)
    model_weights = max(sum(l.weight_count(l.in_channels, l.out_channels) for l in spec.layers), 1)
    rows = []
    for position, unit in enumerate(decision_units):
        layers = spec.layers_of(unit.index)
        macs = sum(l.macs(l.kept_in(full), l.out_channels) for l in layers)
        weights = sum(l.weight_count(l.kept_in(full), l.out_channels) for l in layers)
        conv_k = [l for l in layers if l.kind == "conv" and l.kernel_elems > 1]
        pointwise = [l for l in layers if l.kind == "conv" and l.kernel_elems == 1]

        def saving(kept_u: int, wb: int, ab: int) -> float:
            kept, w, a = reference_vectors(spec)
            kept[unit.index], w[unit.index], a[unit.index] = kept_u, wb, ab
            return 1.0 - projector.cost(kept, w, a) / projector.reference_cost

        half = kept_channels_for(unit, 0.5) if unit.prunable and unit.channels // unit.channel_step >= 2 else unit.channels
        probe = probes.units[unit.index]
        per_weight = probe.hessian_trace / max(probe.weight_count, 1)
        rows.append(
            [
                math.log2(unit.channels) / 10,
                math.log10(macs + 1) / 9,
                math.log10(weights + 1) / 8,
                macs / model_macs,
                weights / model_weights,
                shares[unit.index],
                position / max(len(decision_units) - 1, 1),
                float(bool(conv_k)),
                float(bool(pointwise)),
                float(any(l.kind == "depthwise" for l in layers)),
                float(any(l.kind == "linear" for l in layers)),
                len(layers) / 4,
                float(unit.prunable),
                unit.channel_step / unit.channels,
                math.log2(max(layers[0].out_positions, 1)) / 12,
                float(any(l.stride > 1 for l in layers)),
                *[saving(unit.channels, hardware.executed_bits(wb), hardware.executed_bits(ab)) for wb, ab in BIT_PROBES],
                saving(half, 8, 8),
                probe.drop_w2,
                probe.drop_a2,
                probe.drop_w4a4,
                probe.drop_prune50,
                math.log10(max(per_weight, 0.0) + 1e-9) / 9,
            ]
        )
    return np.clip(np.asarray(rows, dtype=np.float32), -1.0, 1.0)


def budget_features(kind: str, budget_fraction: float, minimum_fraction: float, anchor_level: float) -> np.ndarray:
    """Indices 26-32: budget kind one-hot, target and minimum as fractions of W8A8, anchor level."""
    one_hot = [float(kind == k) for k in BUDGET_KINDS]
    values = one_hot + [budget_fraction, minimum_fraction, anchor_level]
    return np.clip(np.asarray(values, dtype=np.float32), -1.0, 1.0)


def network_table(unit_rows: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The padded unit table without the current-unit flag: (max(decisions, TABLE_UNITS), TABLE_FEATURES).

    Args:
        unit_rows: static features of every decision unit, (decisions, 26).
        anchor: anchor levels, (decisions, 3) or (3,) for all alike.
    """
    n = len(unit_rows)
    table = np.zeros((max(n, TABLE_UNITS), TABLE_FEATURES), dtype=np.float32)
    table[:n, :UNIT_FEATURES] = unit_rows
    table[:n, UNIT_FEATURES : UNIT_FEATURES + ANCHOR_FEATURES] = np.broadcast_to(anchor, (n, ANCHOR_FEATURES))
    table[:n, -1] = 1.0
    return table


def table_window(table: np.ndarray, decisions: int, position: int) -> np.ndarray:
    """The ``TABLE_UNITS`` rows around ``position`` with the current unit flagged, flattened."""
    start = min(max(position - TABLE_UNITS // 2, 0), max(decisions - TABLE_UNITS, 0))
    window = table[start : start + TABLE_UNITS].copy()
    window[position - start, -2] = 1.0
    return window.reshape(-1)


def executed_levels(unit: UnitSpec, kept: int, w_bits: int, a_bits: int, max_prune: float) -> np.ndarray:
    """Indices 37-39 after ``unit`` executed: its prune / max prune, (w - 2) / 6, (a - 2) / 6."""
    return np.asarray([(1 - kept / unit.channels) / max_prune, (w_bits - MIN_BITS) / 6, (a_bits - MIN_BITS) / 6], dtype=np.float32)


def trial_features(
    progress: float, change: float, best: float, decisions: list[tuple[int, int, int, int]], max_prune: float, budget_ratio: float
) -> np.ndarray:
    """Indices 40-46 after a finished attempt; ``decisions`` holds (kept, channels, w bits, a bits) per unit."""
    return np.asarray(
        [
            progress,
            change,
            best,
            np.mean([(1 - kept / channels) / max_prune for kept, channels, _, _ in decisions]),
            np.mean([(w - MIN_BITS) / 6 for _, _, w, _ in decisions]),
            np.mean([(a - MIN_BITS) / 6 for _, _, _, a in decisions]),
            budget_ratio,
        ],
        dtype=np.float32,
    ).clip(-1.0, 1.0)


def observe(context, t: int, vectors: PlanVectors, previous: np.ndarray, trial: np.ndarray, observation: str) -> np.ndarray:
    """The observation at decision ``t``: static rows, budget, dynamic 33-39, trial 40-46, hardware, and the network block.

    Args:
        context: the task (a ``TaskContext``).
        t: index of the unit about to be decided.
        vectors: decided units' values, maximum compression for the rest.
        previous: ``executed_levels`` of the last decision (zeros at the first).
        trial: the last ``trial_features`` (zeros outside trial mode).
        observation: ``"step"`` or ``"network"``.
    """
    ctx = context
    n = len(ctx.decision_units)
    kept, w, a = vectors
    rest_full = list(kept), list(w), list(a)
    for unit in ctx.decision_units[t:]:
        rest_full[0][unit.index], rest_full[1][unit.index], rest_full[2][unit.index] = unit.channels, 8, 8
    dynamic = np.asarray(
        [
            t / n,
            ctx.projector.cost(kept, w, a) / ctx.budget_cost,
            ctx.projector.cost(*rest_full) / ctx.budget_cost / 4,
            ctx.rest_shares[t],
            *previous,
        ],
        dtype=np.float32,
    ).clip(-1.0, 1.0)
    step = np.concatenate([ctx.unit_features[t], ctx.budget_features, dynamic, trial, ctx.embedding])
    if observation == "step":
        return step
    anchor = ctx.codec.anchor_of(t).astype(np.float32)
    return np.concatenate([step, anchor, table_window(ctx.network_table, n, t)])
