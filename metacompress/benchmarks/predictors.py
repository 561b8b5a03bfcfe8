"""``metacompress bench predictors``: do learned unit-table predictors judge options better than HAWQ's scores?

Training units come from the train split's training families (``mlp``, ``cnn1d``,
``resnet``), validation units from its validation family (``vgg``, ``VALIDATION_FAMILIES``);
the held-out split is never read. Models are picked cheapest first (by MACs) in turn
over the families, so every family is represented under a small cap. Each unit's option
table is measured once (``agents.unit_predictors.measure_table``) and cached next to the
zoo. Reported per method, over the validation units' options other than the four probed
ones (which the predictors read as inputs):

- mean per-unit Spearman rank correlation between predicted and measured accuracy change;
- MAE in points (accuracy x 100), pooled over (unit, option).

HAWQ's sensitivities are loss-unit scores (higher = worse), so for the MAE each model's
scores get one least-squares scale to accuracy change, fitted on that model's measured
options (an advantage the predictors do not get); the rank correlation needs no scale.
The scores come from ``hawq.unit_options`` on a bit-serial target (``bismo-edge``), which
executes every grid bit-width; the scores depend on the target only through its
bit-widths. ``mean table`` (uniform weights over the training tables) is the reference
a learned similarity has to beat. Then each planner plans the first validation tasks:
the mean proxy change (one evaluation each) of the solver on HAWQ's, and on each
predictor's, scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import spearmanr

from metacompress.agents.hawq import HawqPlanner, unit_options
from metacompress.agents.predictor_training import _zoo_family, _zoo_macs, pick_models
from metacompress.agents.score_correction import option_index
from metacompress.agents.train_config import VALIDATION_FAMILIES
from metacompress.agents.unit_predictors import (
    GRID, KINDS, PROBE_POINTS, PredictedScorePlanner, UnitExample, UnitPredictor, grid_index, load_or_measure_tables,
    unit_examples,
)
from metacompress.compressors.budget import FEASIBILITY_TOLERANCE, Budget, kept_at
from metacompress.envs.context import TaskContext
from metacompress.envs.suite import default_suite
from metacompress.envs.tasks import Task, resolve_hardware
from metacompress.envs.world import TaskWorld


TRAIN_MODELS = 8
VALIDATION_MODELS = 3
PLAN_TASKS = 8
SCORE_HARDWARE = "bismo-edge"
PLANNER_NAMES = {"prototypical": "hawq-proto", "relation": "hawq-relation"}


@dataclass(frozen=True)
class ScoreRow:
    """One method's agreement with the measured option tables of the validation units."""

    method: str
    units: int
    options: int
    spearman: float
    mae_points: float


@dataclass(frozen=True)
class PlanRow:
    """One planner's plans on the validation tasks."""

    method: str
    tasks: int
    proxy_change_points: float
    vs_hawq_points: float
    budget_met: float


@dataclass(frozen=True)
class PredictorReport:
    train_models: tuple[str, ...]
    validation_models: tuple[str, ...]
    train_units: int
    scores: tuple[ScoreRow, ...]
    plans: tuple[PlanRow, ...]
    seconds: float


def _model_examples(world: TaskWorld, task: Task) -> tuple[TaskContext, list[UnitExample]]:
    context = world.context(task)
    tables = load_or_measure_tables(context, world.cache_dir / f"{task.model}.tables.json")
    return context, unit_examples(context, task.model, tables)


def _evaluated(example: UnitExample) -> np.ndarray:
    """Grid entries a metric compares: those the unit has, its probe entries excluded."""
    keep = ~np.isnan(example.table)
    keep[[grid_index(*p) for p in PROBE_POINTS]] = False
    return keep


def hawq_tables(world: TaskWorld, model: str, examples: list[UnitExample]) -> list[np.ndarray]:
    """HAWQ's sensitivity of each grid option (loss units, NaN where the unit lacks it), per example."""
    evaluator, probes = world.model(model)
    context = TaskContext(evaluator, probes, resolve_hardware(SCORE_HARDWARE), Budget("bitops", 1.0), world.max_prune, name=model)
    options = {o.unit: o for o in unit_options(context)}
    units = {u.index: u for u in context.decision_units}
    tables = []
    for example in examples:
        unit, option = units[example.unit], options[example.unit]
        table = np.full(len(GRID), np.nan)
        for i, (prune, w, a) in enumerate(GRID):
            if not np.isnan(example.table[i]):
                table[i] = option.sensitivity[option_index(option, (kept_at(unit, prune, world.max_prune), w, a))]
        tables.append(table)
    return tables


def mean_table(examples: list[UnitExample]) -> np.ndarray:
    """The training tables' entry-wise mean (over the units that have each entry): the no-similarity reference."""
    tables = np.stack([e.table for e in examples])
    return np.nanmean(tables, axis=0)


def score_rows(examples: list[UnitExample], predictions: dict[str, list[np.ndarray]], hawq: list[np.ndarray]) -> list[ScoreRow]:
    """Spearman and MAE of each method's tables against the measured ones (HAWQ's scaled per model)."""
    scaled = []
    for model in dict.fromkeys(e.model for e in examples):
        idx = [i for i, e in enumerate(examples) if e.model == model]
        s = np.concatenate([hawq[i][_evaluated(examples[i])] for i in idx])
        m = np.concatenate([examples[i].table[_evaluated(examples[i])] for i in idx])
        scale = float(-(m @ s) / max(s @ s, 1e-30))  # least squares: measured change ~ -scale * sensitivity
        scaled += [(i, -scale * hawq[i]) for i in idx]
    methods = {"hawq scores (x per-model LSQ scale)": [t for _, t in sorted(scaled, key=lambda p: p[0])], **predictions}
    rows = []
    for name, tables in methods.items():
        rhos, errors = [], []
        for example, table in zip(examples, tables):
            keep = _evaluated(example)
            measured, predicted = example.table[keep], table[keep]
            errors.append(np.abs(predicted - measured) * 100.0)
            if np.ptp(measured) > 0 and np.ptp(predicted) > 0:
                rhos.append(float(spearmanr(predicted, measured).statistic))
        errors = np.concatenate(errors)
        rows.append(ScoreRow(name, len(rhos), len(errors), float(np.mean(rhos)) if rhos else float("nan"), float(errors.mean())))
    return rows


def run_predictors(
    seed: int = 0,
    train_models: int = TRAIN_MODELS,
    validation_models: int = VALIDATION_MODELS,
    plan_tasks: int = PLAN_TASKS,
    steps: int = 300,
    world: TaskWorld | None = None,
    tasks: list[Task] | None = None,
    family_of: Callable[[str], str] = _zoo_family,
    macs_of: Callable[[str], int] = _zoo_macs,
) -> PredictorReport:
    """Measure tables, train both predictors, score them and HAWQ on the validation units, then plan.

    Args:
        seed: seeds the predictors' networks.
        train_models / validation_models: caps on the models (cheapest first, families in turn).
        plan_tasks: validation tasks each planner plans (0 skips the planning comparison).
        steps: Adam steps of each predictor's episodic training.
        world: the task world (default: the zoo's, tables cached next to it).
        tasks: the train split's tasks (default: the default suite's); tests pass their own.
        family_of / macs_of: model id -> family and MACs per sample (default: the zoo catalogue's).
    """
    start = time.perf_counter()
    world = world or TaskWorld()
    tasks = tasks if tasks is not None else default_suite().split("train")
    validation_families = set(VALIDATION_FAMILIES)
    families = {family_of(t.model) for t in tasks}
    training = pick_models(tasks, families - validation_families, train_models, family_of, macs_of)
    validation = pick_models(tasks, validation_families, validation_models, family_of, macs_of)
    first_task = {}
    for t in tasks:
        first_task.setdefault(t.model, t)
    train_examples = [e for m in training for e in _model_examples(world, first_task[m])[1]]
    validation_examples = [e for m in validation for e in _model_examples(world, first_task[m])[1]]
    predictors = {kind: UnitPredictor(kind, seed=seed, steps=steps).fit(train_examples) for kind in KINDS}
    features = np.stack([e.features for e in validation_examples])
    predictions = {kind: list(p.predict(features)) for kind, p in predictors.items()}
    predictions["mean table"] = [mean_table(train_examples)] * len(validation_examples)
    hawq = [t for m in validation for t in hawq_tables(world, m, [e for e in validation_examples if e.model == m])]
    scores = score_rows(validation_examples, predictions, hawq)
    plans = plan_rows(world, [t for t in tasks if t.model in validation][:plan_tasks], predictors) if plan_tasks else []
    return PredictorReport(tuple(training), tuple(validation), len(train_examples), tuple(scores), tuple(plans), time.perf_counter() - start)


def plan_rows(world: TaskWorld, tasks: list[Task], predictors: dict[str, UnitPredictor]) -> list[PlanRow]:
    """Mean proxy change of the solver on HAWQ's scores and on each predictor's, over ``tasks``."""
    planners = [HawqPlanner(), *(PredictedScorePlanner(p, PLANNER_NAMES[k]) for k, p in predictors.items())]
    changes: dict[str, list[float]] = {p.name: [] for p in planners}
    met: dict[str, list[bool]] = {p.name: [] for p in planners}
    for task in tasks:
        context = world.context(task)
        for planner in planners:
            result = planner.plan(context, 1, 0)
            changes[planner.name].append(result.proxy_change * 100.0)
            met[planner.name].append(result.cost_ratio <= task.budget.fraction * (1 + FEASIBILITY_TOLERANCE))
    hawq = np.asarray(changes["hawq"])
    return [PlanRow(name, len(v), float(np.mean(v)), float(np.mean(np.asarray(v) - hawq)), float(np.mean(met[name]))) for name, v in changes.items()]
