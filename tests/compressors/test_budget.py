"""One budget room: reference cost, minimum, fits, projection, at channel counts that are not powers of two."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from metacompress.compressors.budget import (
    DEFAULT_MAX_PRUNE,
    FEASIBILITY_TOLERANCE,
    Budget,
    BudgetProjector,
    UnitChoice,
    kept_at,
    reference_cost,
)
from metacompress.compressors.cost import total_cost
from metacompress.compressors.graph import analyze
from metacompress.compressors.hardware import PRESETS
from metacompress.compressors.hardware.measure import random_kept, tiny_resnet_spec
from metacompress.compressors.plan import Plan, kept_channels_for
from metacompress.errors import InfeasibleBudget, InvalidBudget

WIDTHS = (10, 12, 24, 40, 96, 100)


def _mlp_spec(width: int):
    model = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    return analyze(model.eval(), torch.zeros(2, 16))


def test_reference_is_the_unpruned_w8a8_plan():
    spec, hw = tiny_resnet_spec(), PRESETS["bitfusion-asic"]
    reference = reference_cost(spec, "latency", hw)
    assert reference == pytest.approx(hw.plan_cost(spec, Plan.uniform(spec)))
    assert hw.plan_cost(spec, Plan.uniform(spec, w_bits=6, a_bits=6)) == pytest.approx(reference)  # 6 runs as 8
    assert hw.plan_cost(spec, Plan.uniform(spec, prune=0.5, w_bits=4, a_bits=4)) < 0.5 * reference


@pytest.mark.parametrize("name", ["bitfusion-asic", "m7-mcu", "ampere-sparse"])
@pytest.mark.parametrize("kind", ["latency", "energy"])
def test_minimum_cost_is_below_every_allowed_plan(name, kind):
    spec, hw = tiny_resnet_spec(), PRESETS[name]
    projector = BudgetProjector(spec, hw, Budget(kind, 1.0))
    kept, w, a = projector.initial_vectors()
    low = hw.executed_bits(2)  # the least the hardware runs
    assert kept == [4, 4, 8, 8, 16, 10] and w == [low] * 5 + [8]
    rng = np.random.default_rng(0)
    for _ in range(50):
        plan_kept = random_kept(spec, rng, max_prune=DEFAULT_MAX_PRUNE)
        w = [8 if u.frozen else int(rng.integers(2, 9)) for u in spec.units]
        a = [8 if u.frozen else int(rng.integers(2, 9)) for u in spec.units]
        assert total_cost(spec, kind, plan_kept, w, a, hw) >= projector.minimum_cost()


def test_a_bad_prune_limit_and_bad_budgets_are_clear_errors():
    with pytest.raises(InvalidBudget, match="max prune ratio 1.0 is outside"):
        BudgetProjector(tiny_resnet_spec(), PRESETS["t4-int4"], Budget("latency", 0.5), max_prune=1.0)
    for text in ("latency=1.2.3", "latency=.", "latency=-", "latency=1e", "speed=0.5", "latency"):
        with pytest.raises(InvalidBudget):
            Budget.parse(text)


@pytest.mark.parametrize("width", WIDTHS)
def test_one_rounding_rule_for_pricing_and_plans(width):
    spec = _mlp_spec(width)
    unit = next(u for u in spec.units if u.prunable and not u.frozen and u.channels == width)
    projector = BudgetProjector(spec, PRESETS["bismo-edge"], Budget("bitops", 1.0))
    for ratio in np.linspace(0.0, DEFAULT_MAX_PRUNE, 13):
        kept, _, _ = projector.execute(unit, UnitChoice(float(ratio), 8, 8))
        assert kept == kept_at(unit, float(ratio)) == kept_channels_for(unit, float(ratio))
        plan = Plan.from_kept(spec, *projector.executed_vectors([UnitChoice(float(ratio), 8, 8)] * len(projector.decision_units)))
        assert plan.decisions[unit.index].kept_channels == kept
    most = projector.initial_vectors().kept[unit.index]
    assert most == kept_channels_for(unit, DEFAULT_MAX_PRUNE)  # e.g. 10 channels at 0.75 keep 2 (round), not 3 (floor)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", ["latency", "size", "bitops"])
def test_budget_guarantee_and_feasibility_verdict_at_odd_widths(width, kind):
    spec = _mlp_spec(width)
    hw = PRESETS["bitfusion-edge"]
    minimum = BudgetProjector(spec, hw, Budget(kind, 1.0)).minimum_cost() / reference_cost(spec, kind, hw)
    assert not BudgetProjector(spec, hw, Budget(kind, minimum * 0.99)).is_feasible()
    with pytest.raises(InfeasibleBudget, match="most compressed plan") as refusal:
        BudgetProjector(spec, hw, Budget(kind, minimum * 0.99)).check_feasible("an odd-width MLP")
    suggested = float(re.search(rf"at least {kind}=([0-9.e-]+),", str(refusal.value)).group(1))
    assert minimum <= suggested <= minimum + 1e-3 and BudgetProjector(spec, hw, Budget(kind, suggested)).is_feasible()
    rng = np.random.default_rng(width)
    for fraction in (minimum * 1.0000001, minimum * 1.3, (1 + minimum) / 2):
        projector = BudgetProjector(spec, hw, Budget(kind, min(fraction, 1.0)))
        assert projector.is_feasible()
        for _ in range(20):
            kept, w, a = projector.initial_vectors()
            for unit in projector.decision_units:
                raw = UnitChoice(float(rng.uniform(0, 1)), int(rng.integers(1, 10)), int(rng.integers(1, 10)))
                projector.project(unit, raw, kept, w, a)
            assert projector.cost(kept, w, a) <= projector.limit * (1 + FEASIBILITY_TOLERANCE)
