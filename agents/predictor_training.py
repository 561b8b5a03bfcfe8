"""Fitting a unit predictor for ``metacompress train --algo relation|prototypical``.

The training units are the decision units of the cheapest models (MACs per sample) of the
training tasks, the families taken in turn so each is represented under the cap
(``TrainConfig.predictor_models``). The validation families (``VALIDATION_FAMILIES``, vgg)
are never read, and the held-out split never is. Each model's option tables are measured
once (``unit_predictors.load_or_measure_tables``, the first use also trains the zoo model
and its probes) and cached next to the zoo, so a second run, or the other kind, only fits.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from metacompress.agents.unit_predictors import UnitPredictor, load_or_measure_tables, unit_examples
from metacompress.envs.suite import model_spec
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld
from metacompress.envs.zoo.catalog import get_entry

log = logging.getLogger(__name__)


def _zoo_family(model: str) -> str:
    return get_entry(model).family


def _zoo_macs(model: str) -> int:
    return model_spec(model).macs()


def pick_models(tasks: list[Task], families: set[str], count: int, family_of: Callable[[str], str] = _zoo_family,
                macs_of: Callable[[str], int] = _zoo_macs) -> list[str]:
    """Up to ``count`` distinct models of ``families``, cheapest first (MACs), taking the families in turn."""
    by_family: dict[str, list[str]] = {}
    for model in sorted({t.model for t in tasks}, key=lambda m: (macs_of(m), m)):
        if family_of(model) in families:
            by_family.setdefault(family_of(model), []).append(model)
    picked: list[str] = []
    while len(picked) < count and any(by_family.values()):
        for family in sorted(by_family):
            if by_family[family] and len(picked) < count:
                picked.append(by_family[family].pop(0))
    return picked


def fit_predictor(kind: str, tasks: list[Task], models: int, excluded_families: set[str], seed: int = 0, steps: int = 300,
                  world: TaskWorld | None = None, family_of: Callable[[str], str] = _zoo_family,
                  macs_of: Callable[[str], int] = _zoo_macs) -> tuple[UnitPredictor, dict]:
    """A ``UnitPredictor`` of ``kind`` fitted on the tables of up to ``models`` models of ``tasks``.

    Args:
        kind: ``prototypical`` or ``relation``.
        tasks: the training tasks (their models are the candidates).
        models: cap on the models, cheapest first, families in turn.
        excluded_families: families never read (the validation families).
        seed: seeds the predictor's networks (its training is full-batch: same seed, same predictor).
        steps: Adam steps of episodic training.
        world: the task world (default: the zoo's; tables cached next to it).
        family_of / macs_of: model id -> family and MACs per sample (default: the zoo catalogue's).

    Returns:
        The fitted predictor and its training record (models, units, seconds, final loss).
    """
    start = time.perf_counter()
    world = world or TaskWorld()
    families = {family_of(t.model) for t in tasks} - set(excluded_families)
    picked = pick_models(tasks, families, models, family_of, macs_of)
    first_task: dict[str, Task] = {}
    for task in tasks:
        first_task.setdefault(task.model, task)
    examples = []
    for model in picked:
        context = world.context(first_task[model])
        examples += unit_examples(context, model, load_or_measure_tables(context, world.cache_dir / f"{model}.tables.json"))
        log.info("option tables of %s ready (%.0f s)", model, time.perf_counter() - start)
    measured = time.perf_counter() - start
    predictor = UnitPredictor(kind, seed=seed, steps=steps).fit(examples)
    seconds = time.perf_counter() - start
    record = {"models": picked, "units": len(examples), "tables_seconds": round(measured, 1), "seconds": round(seconds, 1),
              "final_loss": round(predictor.losses[-1], 4) if predictor.losses else None}
    return predictor, record
