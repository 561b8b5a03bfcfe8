"""Metric-based meta-learning of unit option tables: predict what the solver's scores misjudge.

The HAWQ-style ILP (``agents.hawq``) scores every option of a unit (prune level, weight
bits, activation bits) by a Hessian-trace x perturbation term, a second-order model that
misjudges some units (pruning above all). This module learns, across training tasks, to
predict a new unit's measured *option table* (the proxy accuracy change of each option,
that unit alone compressed) from its static features and its four measured probes:

- ``measure_table``: a unit's table on ``GRID`` (prune {0, .25, .5, .75} x weight bits
  {2, 4, 8} x activation bits {2, 4, 8}; prune levels only where the unit can be pruned),
  every other unit at W8A8 unpruned, calibration only, on the search split (as the probes
  are measured); ``load_or_measure_tables`` caches a model's tables as JSON.
- ``UnitPredictor``: a query unit's table is the attention-weighted average of the
  support (training) units' tables. *Prototypical* (Snell et al., NeurIPS 2017): each
  support unit is its own class, its prototype is its embedding, and the weights are
  ``softmax(-||f(q) - f(s)||^2)``, the soft nearest prototype. *Relation* (Sung et al.,
  CVPR 2018): the weights are ``softmax(g([f(q), f(s)]))``, a learned similarity. Both are
  trained episodically, each training unit the query and the other *models'* units the
  support, so a query never borrows its own model's tables (as at validation).
- ``PredictedScorePlanner``: the predicted table, interpolated to each option the
  hardware executes, is the solver's sensitivity; ``solve_hawq`` then plans as usual.

Features are the hardware-free columns of ``envs.features.unit_features`` (sizes, shares,
op kinds, probes, curvature): a unit's accuracy does not depend on the target hardware.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metacompress.agents.hawq import HawqSolution, UnitOptions, plan_solved, solve_hawq, unit_options
from metacompress.agents.planner import PlanResult, check_evaluations
from metacompress.compressors.io import write_text_atomic
from metacompress.compressors.plan import Plan
from metacompress.compressors.spec import UnitSpec
from metacompress.envs.context import TaskContext
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.envs.probes import UnitProbes, probe_fingerprint
from metacompress.errors import CacheCorrupted, MetacompressError

PRUNE_LEVELS = (0.0, 0.25, 0.5, 0.75)
BITS = (2, 4, 8)
GRID: tuple[tuple[float, int, int], ...] = tuple(product(PRUNE_LEVELS, BITS, BITS))
"""(prune ratio, weight bits, activation bits) of each table entry, prune-major."""
PROBE_POINTS = {(0.0, 2, 8): "drop_w2", (0.0, 8, 2): "drop_a2", (0.0, 4, 4): "drop_w4a4", (0.5, 8, 8): "drop_prune50"}
"""Grid entries the probes measure already: predictors take them as input, so metrics leave them out."""
FEATURE_COLUMNS = (0, 1, 2, 3, 4, *range(6, 16), 21, 22, 23, 24, 25)
"""Hardware-free columns of ``unit_features``: 5 (cost share) and 16-20 (savings) depend on the target."""
TABLES_FORMAT = 1
KINDS = ("prototypical", "relation")


def grid_index(prune: float, w_bits: int, a_bits: int) -> int:
    """The position of a grid point in a table."""
    return GRID.index((prune, w_bits, a_bits))


def _single_unit_plan(evaluator: ModelEvaluator, unit: UnitSpec, prune: float, w_bits: int, a_bits: int) -> Plan:
    spec = evaluator.spec
    ratios = [prune if u.index == unit.index else 0.0 for u in spec.units]
    wb = [w_bits if u.index == unit.index else 8 for u in spec.units]
    ab = [a_bits if u.index == unit.index else 8 for u in spec.units]
    return Plan.from_choices(spec, ratios, wb, ab)


def prunable_levels(unit: UnitSpec) -> list[float]:
    """The grid's prune levels this unit can execute (0 alone for quantize-only or single-step units)."""
    if not unit.prunable or unit.frozen or unit.channels // unit.channel_step < 2:
        return [0.0]
    return [p for p in PRUNE_LEVELS if kept_at_least(unit, p) > 0]


def kept_at_least(unit: UnitSpec, prune: float) -> int:
    """Channels kept at ``prune``, 0 where that ratio would remove every channel."""
    removed = round(prune * unit.channels / unit.channel_step) * unit.channel_step
    return unit.channels - removed if unit.channels - removed >= unit.min_kept else 0


def measure_table(evaluator: ModelEvaluator, unit: UnitSpec) -> np.ndarray:
    """Proxy accuracy change (fraction, <= ~0) of each ``GRID`` option applied to ``unit`` alone; NaN where not allowed.

    Every other unit stays at W8A8 unpruned, and the proxy is calibration only (no KD
    steps), as the probes are, so the probe entries equal the probes exactly.
    """
    levels = prunable_levels(unit)
    table = np.full(len(GRID), np.nan)
    for i, (prune, w, a) in enumerate(GRID):
        if prune in levels:
            table[i] = evaluator.proxy_change(_single_unit_plan(evaluator, unit, prune, w, a), finetune_steps=0)
    return table


@dataclass(frozen=True)
class UnitExample:
    """One decision unit's features and measured table (a support unit, or a query with its truth).

    Args:
        model: the zoo id (or any name) of the unit's model.
        unit: the unit's index in the model spec.
        features: the hardware-free features (``FEATURE_COLUMNS``).
        table: (len(GRID),) measured accuracy changes, NaN where the unit cannot take the option.
    """

    model: str
    unit: int
    features: np.ndarray
    table: np.ndarray


def unit_examples(context: TaskContext, model: str, tables: dict[int, np.ndarray]) -> list[UnitExample]:
    """The decision units of a task's model as examples (features from the context, tables by unit index)."""
    rows = context.unit_features[:, FEATURE_COLUMNS]
    return [UnitExample(model, u.index, rows[t].astype(np.float32), tables[u.index]) for t, u in enumerate(context.decision_units)]


def load_or_measure_tables(context: TaskContext, cache_path: Path | None) -> dict[int, np.ndarray]:
    """Every decision unit's table, from ``cache_path`` if it was measured on this very model, else measured and cached.

    Raises:
        CacheCorrupted: a cache file that is not valid JSON of this format.
    """
    evaluator = context.evaluator
    fingerprint = probe_fingerprint(evaluator)
    if cache_path is not None and cache_path.exists():
        try:
            data = json.loads(cache_path.read_text())
            if data["format"] == TABLES_FORMAT and data["fingerprint"] == fingerprint and list(map(list, data["grid"])) == list(map(list, GRID)):
                return {int(k): np.asarray([np.nan if v is None else v for v in row], dtype=float) for k, row in data["tables"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CacheCorrupted(f"option-table cache {cache_path} is corrupt ({exc}); delete it and it will be re-measured") from exc
    tables = {u.index: measure_table(evaluator, u) for u in context.decision_units}
    if cache_path is not None:
        rows = {str(k): [None if np.isnan(v) else float(v) for v in row] for k, row in tables.items()}
        write_text_atomic(cache_path, json.dumps({"format": TABLES_FORMAT, "fingerprint": fingerprint, "grid": GRID, "tables": rows}))
    return tables


def weighted_tables(weights: torch.Tensor, tables: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per query, the weighted average of the support tables over the supports that have each entry.

    Args:
        weights: (queries, supports), rows summing to 1.
        tables: (supports, entries), NaN-free (missing entries any value).
        mask: (supports, entries), 1 where the support has the entry.

    Returns:
        (queries, entries); an entry no support has with positive weight is NaN.
    """
    weights = weights.to(tables.dtype)  # float64 tables: one support's table comes back bit for bit
    mass = weights @ mask
    return torch.where(mass > 0, (weights @ (tables * mask)) / mass.clamp_min(1e-30), torch.full_like(mass, float("nan")))


class _Embedding(nn.Module):
    def __init__(self, features: int, width: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, width), nn.Tanh(), nn.Linear(width, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class UnitPredictor:
    """A query unit's option table as a learned attention over support units' measured tables.

    Args:
        kind: ``prototypical`` (weights ``softmax(-||f(q) - f(s)||^2)``) or ``relation``
            (weights ``softmax(g([f(q), f(s)]))``, g an MLP).
        seed: seeds the networks' initialisation (training is full-batch, so deterministic).
        width: hidden width of the embedding f (and of g).
        embedding: the embedding's dimension.
        steps: Adam steps of episodic training.
        lr: Adam's step size.

    Raises:
        MetacompressError: an unknown ``kind``.
    """

    kind: str = "prototypical"
    seed: int = 0
    width: int = 32
    embedding: int = 8
    steps: int = 300
    lr: float = 1e-2
    support: list[UnitExample] = field(default_factory=list, repr=False)
    losses: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MetacompressError(f"unit predictor kind {self.kind!r} is unknown; use one of {', '.join(KINDS)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.f = _Embedding(len(FEATURE_COLUMNS), self.width, self.embedding)
            self.g = _Embedding(2 * self.embedding, self.width, 1) if self.kind == "relation" else None

    def _logits(self, queries: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
        """(queries, supports) attention logits."""
        fq, fs = self.f(queries), self.f(supports)
        if self.g is None:
            return -((fq[:, None, :] - fs[None, :, :]) ** 2).sum(dim=-1)
        pairs = torch.cat([fq[:, None, :].expand(-1, len(fs), -1), fs[None, :, :].expand(len(fq), -1, -1)], dim=-1)
        return self.g(pairs).squeeze(-1)

    def weights(self, queries: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        """(queries, supports) weights over the support units, each row summing to 1.

        ``exclude`` (queries, supports) masks supports out (True: not used).
        """
        with torch.no_grad():
            return self._weights(torch.as_tensor(queries, dtype=torch.float32), exclude).numpy().astype(float)

    def _weights(self, queries: torch.Tensor, exclude: np.ndarray | None) -> torch.Tensor:
        supports = torch.as_tensor(np.stack([s.features for s in self.support]), dtype=torch.float32)
        logits = self._logits(queries, supports)
        if exclude is not None:
            logits = logits.masked_fill(torch.as_tensor(exclude), float("-inf"))
        return torch.softmax(logits, dim=1)

    def _support_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        tables = np.stack([s.table for s in self.support])
        mask = ~np.isnan(tables)
        return torch.as_tensor(np.nan_to_num(tables), dtype=torch.float64), torch.as_tensor(mask, dtype=torch.float64)

    def fit(self, examples: list[UnitExample]) -> "UnitPredictor":
        """Train episodically on ``examples`` (they also become the support set); returns self.

        Each step every example is a query against the units of the *other* models
        (leave-one-model-out), and the loss is the mean squared error (in points) over the
        entries the query has, its probe entries excluded (they are its inputs).

        Raises:
            MetacompressError: fewer than two models among ``examples``.
        """
        if len({e.model for e in examples}) < 2:
            raise MetacompressError(f"a unit predictor trains across models: got units of {len({e.model for e in examples})} model(s); give at least 2")
        self.support = list(examples)
        tables, mask = self._support_tables()
        queries = torch.as_tensor(np.stack([e.features for e in examples]), dtype=torch.float32)
        models = np.asarray([e.model for e in examples])
        same_model = models[:, None] == models[None, :]
        target_mask = mask.clone()
        target_mask[:, [grid_index(*p) for p in PROBE_POINTS]] = 0.0
        parameters = list(self.f.parameters()) + (list(self.g.parameters()) if self.g is not None else [])
        optimizer = torch.optim.Adam(parameters, lr=self.lr)
        self.losses = []
        for _ in range(self.steps):
            predicted = weighted_tables(self._weights(queries, same_model), tables, mask)
            known = target_mask * ~torch.isnan(predicted)
            error = (torch.nan_to_num(predicted) - tables) * 100.0 * known
            loss = (error**2).sum() / known.sum().clamp_min(1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.losses.append(float(loss.detach()))
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(queries, len(GRID)) predicted accuracy changes for units with these (queries, features) rows.

        An entry no support unit has (e.g. a prune level only quantize-only supports were
        near) takes the same bits' value at the largest prune level predicted below it.
        """
        tables, mask = self._support_tables()
        with torch.no_grad():
            predicted = weighted_tables(self._weights(torch.as_tensor(features, dtype=torch.float32), None), tables, mask).numpy()
        predicted = predicted.astype(float)
        for i, (prune, w, a) in enumerate(GRID):
            if prune > 0:
                below = grid_index(PRUNE_LEVELS[PRUNE_LEVELS.index(prune) - 1], w, a)
                predicted[:, i] = np.where(np.isnan(predicted[:, i]), predicted[:, below], predicted[:, i])
        return predicted


def with_probes(table: np.ndarray, probes: UnitProbes) -> np.ndarray:
    """A predicted table with its probe entries replaced by the unit's measured probes (they are known)."""
    table = table.copy()
    for point, name in PROBE_POINTS.items():
        if point[0] == 0.0 or not np.isnan(table[grid_index(*point)]):
            table[grid_index(*point)] = getattr(probes, name)
    return table


def _noise_coordinate(bits: float) -> float:
    """Uniform quantization noise power relative to 2 bits (4x less per bit): the axis bits interpolate on."""
    return 4.0 ** -(bits - 2)


def _interpolate(values: np.ndarray, at: float, grid: list[float]) -> float:
    return float(np.interp(at, grid, values))


def table_at(table: np.ndarray, unit: UnitSpec, kept: int, w_bits: int, a_bits: int) -> float:
    """A table's accuracy change at an executed option, interpolated between grid points.

    Prune is linear in the executed ratio ``1 - kept / channels``; bits are linear in
    quantization noise power (``4^-(b - 2)``), so 6 bits lands near 8, as its noise does.
    """
    levels = [p for p in PRUNE_LEVELS if not np.isnan(table[grid_index(p, 8, 8)])]
    noise = [_noise_coordinate(b) for b in BITS][::-1]  # increasing for np.interp

    def at_level(prune: float) -> float:
        by_w = [_interpolate(np.asarray([table[grid_index(prune, w, a)] for a in BITS][::-1]), _noise_coordinate(a_bits), noise) for w in BITS]
        return _interpolate(np.asarray(by_w[::-1]), _noise_coordinate(w_bits), noise)

    ratio = 1.0 - kept / unit.channels
    return _interpolate(np.asarray([at_level(p) for p in levels]), ratio, levels)


def predicted_options(context: TaskContext, predictor: UnitPredictor, options: list[UnitOptions] | None = None) -> list[UnitOptions]:
    """The solver's options with the predicted accuracy drop (fraction, >= 0) as each option's sensitivity."""
    options = options if options is not None else unit_options(context)
    rows = context.unit_features[:, FEATURE_COLUMNS]
    tables = predictor.predict(rows)
    result = []
    for t, (unit, option) in enumerate(zip(context.decision_units, options)):
        table = with_probes(tables[t], context.probes.units[unit.index])
        drops = [max(-table_at(table, unit, *executed), 0.0) for executed in option.executed]
        result.append(replace(option, sensitivity=np.asarray(drops)))
    return result


@dataclass(frozen=True)
class PredictedScorePlanner:
    """The HAWQ-style ILP on predicted option tables: ``solve_hawq`` minimises the summed predicted drop.

    Args:
        predictor: a fitted ``UnitPredictor`` (its support units are the training tables).
        name: label in reports (``hawq-proto``, ``hawq-relation``).
        fill: spend budget the ILP's plan leaves unused, on the predicted scores (as ``HawqPlanner``).
    """

    predictor: UnitPredictor
    name: str = "hawq-proto"
    fill: bool = True

    def options(self, context: TaskContext) -> list[UnitOptions]:
        """Every decision unit's options scored by the predicted drops (``predicted_options``)."""
        return predicted_options(context, self.predictor)

    def solve(self, context: TaskContext) -> HawqSolution:
        """The ILP's choices for ``context`` on the predicted scores (no proxy evaluation)."""
        return solve_hawq(context, self.options(context))

    def plan(self, context: TaskContext, evaluations: int = 1, seed: int = 0) -> PlanResult:
        """Solve, top up and score the plan through one env episode (``evaluations`` >= 1; uses 1; ``seed`` unused)."""
        check_evaluations(self.name, evaluations)
        return plan_solved(context, self.options(context), fill=self.fill)
