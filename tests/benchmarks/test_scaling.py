"""The executor benchmark's projection: K / (t + o) evaluations per second, capped by the driver's dispatch."""

from __future__ import annotations

import pytest

from metacompress.benchmarks.scaling import projection, run_scaling
from metacompress.errors import BenchConfigError


def test_projection_scales_with_workers_until_the_driver_caps_it():
    assert projection(0.1, 25.0, 2.0, 8) == pytest.approx(8 / 0.125)  # 64/s, under the 500/s cap
    assert projection(0.001, 1.0, 4.0, 128) == pytest.approx(250.0)  # 64,000/s uncapped; the driver's 1/4 ms wins


def test_too_few_plans_is_refused_before_any_work():
    with pytest.raises(BenchConfigError, match="--plans 1 must be >= 2"):
        run_scaling(plans=1)
