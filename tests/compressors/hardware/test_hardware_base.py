"""The Hardware interface's whole-model helpers: plan cost, reference cost, feasibility minimum."""

from __future__ import annotations

import numpy as np
import pytest

from metacompress.compressors.cost import total_cost
from metacompress.compressors.hardware import PRESETS, minimum_cost, most_compressed_choices
from metacompress.compressors.hardware.measure import random_kept, tiny_resnet_spec
from metacompress.compressors.plan import Plan
from metacompress.errors import HardwareError


def test_plan_and_reference_cost():
    spec, hw = tiny_resnet_spec(), PRESETS["bitfusion-asic"]
    reference = hw.reference_cost(spec)
    assert reference == pytest.approx(hw.plan_cost(spec, Plan.uniform(spec)))
    assert hw.plan_cost(spec, Plan.uniform(spec, w_bits=6, a_bits=6)) == pytest.approx(reference)  # 6 runs as 8
    assert hw.plan_cost(spec, Plan.uniform(spec, prune=0.5, w_bits=4, a_bits=4)) < 0.5 * reference


@pytest.mark.parametrize("name", ["bitfusion-asic", "m7-mcu", "ampere-sparse"])
@pytest.mark.parametrize("kind", ["latency", "energy"])
def test_minimum_cost_is_below_every_allowed_plan(name, kind):
    spec, hw = tiny_resnet_spec(), PRESETS[name]
    floor = minimum_cost(spec, kind, hw, max_prune=0.75)
    kept, bits = most_compressed_choices(spec, max_prune=0.75)
    assert kept == [4, 4, 8, 8, 16, 10] and bits == [2, 2, 2, 2, 2, 8]
    rng = np.random.default_rng(0)
    for _ in range(50):
        plan_kept = random_kept(spec, rng, max_prune=0.75)
        w = [8 if u.frozen else int(rng.integers(2, 9)) for u in spec.units]
        a = [8 if u.frozen else int(rng.integers(2, 9)) for u in spec.units]
        assert total_cost(spec, kind, plan_kept, w, a, hw) >= floor


def test_minimum_cost_refuses_a_bad_prune_limit():
    with pytest.raises(HardwareError, match="max prune ratio 1.0 is outside"):
        minimum_cost(tiny_resnet_spec(), "latency", PRESETS["t4-int4"], max_prune=1.0)


def test_hardware_str_names_archetype_and_bits():
    assert str(PRESETS["bitfusion-asic"]) == "bitfusion-asic (brick-fused, bits 2/4/8)"
