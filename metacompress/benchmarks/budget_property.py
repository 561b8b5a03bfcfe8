"""The budget guarantee as a property over random tasks: no projected plan is over budget, no feasible budget is refused.

Each task is a random model (MLP or CNN, channel counts drawn from 3-99, so mostly not
powers of two), a random hardware preset, budget kind and fraction, and a random
``max_prune``. For a budget the projector calls feasible, one episode of random raw
choices goes through ``BudgetProjector.project`` unit by unit, exactly as
``CompressionEnv.step`` does, and the finished plan is priced: over the limit counts as a
violation. For a budget it calls infeasible, random allowed plans are priced: any that
fits makes the refusal wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metacompress.compressors.budget import FEASIBILITY_TOLERANCE, Budget, BudgetProjector, UnitChoice
from metacompress.compressors.cost import BUDGET_KINDS
from metacompress.compressors.graph import analyze
from metacompress.compressors.hardware import PRESETS
from metacompress.compressors.plan import MAX_BITS, MIN_BITS
from metacompress.compressors.spec import ModelSpec

REFUSAL_PROBES = 32  # random plans priced to check each "infeasible" verdict


@dataclass(frozen=True)
class BudgetPropertyResult:
    """Counts over all tasks (``odd_width_tasks``: tasks whose model has a width that is not a power of two)."""

    tasks: int
    odd_width_tasks: int
    feasible: int
    over_budget: int
    wrong_refusals: int


def random_model(rng: np.random.Generator) -> tuple[nn.Module, torch.Tensor]:
    """A random MLP on 12 features or CNN on 3x8x8 images, 1-3 hidden layers of 3-99 channels."""
    widths = [int(w) for w in rng.integers(3, 100, size=int(rng.integers(1, 4)))]
    layers: list[nn.Module] = []
    if rng.random() < 0.5:
        previous, x = 12, torch.randn(4, 12)
        for width in widths:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
    else:
        previous, x = 3, torch.randn(4, 3, 8, 8)
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            previous = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers.append(nn.Linear(previous, int(rng.integers(2, 11))))
    return nn.Sequential(*layers).eval(), x


def _random_choice(rng: np.random.Generator) -> UnitChoice:
    return UnitChoice(float(rng.uniform(0.0, 1.0)), int(rng.integers(MIN_BITS, MAX_BITS + 1)), int(rng.integers(MIN_BITS, MAX_BITS + 1)))


def _episode_fits(projector: BudgetProjector, rng: np.random.Generator) -> bool:
    """One episode of random raw choices through the projection; whether the executed plan fits."""
    kept, w, a = (list(v) for v in projector.initial_vectors())
    for unit in projector.decision_units:
        _, (kept[unit.index], w[unit.index], a[unit.index]) = projector.project(unit, _random_choice(rng), kept, w, a)
    return projector.cost(kept, w, a) <= projector.limit * (1 + FEASIBILITY_TOLERANCE)


def _refusal_is_wrong(projector: BudgetProjector, rng: np.random.Generator) -> bool:
    """Whether any of ``REFUSAL_PROBES`` random allowed plans meets a budget declared infeasible."""
    for _ in range(REFUSAL_PROBES):
        vectors = projector.executed_vectors([_random_choice(rng) for _ in projector.decision_units])
        if projector.fits(*vectors):
            return True
    return False


def run_budget_property(tasks: int = 1000, seed: int = 0, models: int = 100) -> BudgetPropertyResult:
    """Check the budget guarantee on ``tasks`` random tasks over ``models`` random models (see the module docstring)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    specs: list[ModelSpec] = [analyze(*random_model(rng)) for _ in range(max(1, min(models, tasks)))]
    hardware = list(PRESETS.values())
    odd = feasible = over = wrong = 0
    for index in range(tasks):
        spec = specs[index % len(specs)]
        target = hardware[int(rng.integers(len(hardware)))]
        kinds = [k for k in BUDGET_KINDS if k != "energy" or target.has_energy]
        budget = Budget(kinds[int(rng.integers(len(kinds)))], float(rng.uniform(0.02, 1.0)))
        projector = BudgetProjector(spec, target, budget, max_prune=float(rng.uniform(0.3, 0.95)))
        odd += any(unit.channels & (unit.channels - 1) for unit in spec.units)
        if projector.is_feasible():
            feasible += 1
            over += not _episode_fits(projector, rng)
        else:
            wrong += _refusal_is_wrong(projector, rng)
    return BudgetPropertyResult(tasks, odd, feasible, over, wrong)
