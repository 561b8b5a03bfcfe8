"""``bench scale``: one row per (size, resolution), every stage timed, probes at 4 evaluations per unit."""

from __future__ import annotations

import pytest

from metacompress.benchmarks.scale import PROBE_EVALUATIONS_PER_UNIT, ScaleConfig, run_scale_bench
from metacompress.cli import main
from metacompress.errors import MetacompressError


def test_scale_rows_time_every_stage_and_count_the_probes_evaluations(capsys):
    rows = run_scale_bench(ScaleConfig(sizes=("0.1M",), resolutions=(8, 12), samples=8))
    assert [(r.size, r.resolution) for r in rows] == [("0.1M", 8), ("0.1M", 12)]
    assert all(r.params == 98_998 and r.evaluations_per_unit == PROBE_EVALUATIONS_PER_UNIT for r in rows)
    assert all(min(r.analyze_s, r.probe_s, r.evaluation_s, r.planning_s) > 0 for r in rows)
    assert main(["bench", "scale", "--sizes", "0.1M", "--resolutions", "8", "--samples", "8"]) == 0
    assert " 0.1M    8      98,998" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, message", [
    ({"sizes": ("5M",)}, "unknown model size"), ({"resolutions": (4,)}, "resolutions must be >= 8"), ({"samples": 2}, "samples must be >= 8"),
], ids=["size", "resolution", "samples"])
def test_scale_refuses_bad_settings_before_any_work(kwargs, message):
    with pytest.raises(MetacompressError, match=message):
        ScaleConfig(**kwargs)
