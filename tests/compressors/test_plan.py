"""Plan validation, binding to its model, and serialisation."""

from __future__ import annotations

import pytest

from metacompress import InvalidPlan, Plan, PlanMismatch, analyze
from metacompress.compressors import SearchModel, build_graph
from tiny_models import TinyMLP, TinyVGG, example_input


@pytest.fixture
def spec():
    model = TinyMLP()
    return analyze(model, example_input(model))


def test_uniform_keeps_head_frozen(spec):
    plan = Plan.uniform(spec, prune=0.5, w_bits=4, a_bits=3)
    assert plan.kept == (12, 12, 5) and plan.w_bits == (4, 4, 8) and plan.a_bits == (3, 3, 8)
    assert plan.decisions[0].prune_ratio == 0.5


@pytest.mark.parametrize("bits", [1, 9, 4.5, "8"])
def test_bits_outside_2_to_8_are_refused(spec, bits):
    with pytest.raises(InvalidPlan, match="outside 2-8"):
        Plan.from_choices(spec, [0, 0, 0], [bits, 8, 8], [8, 8, 8])


def test_prune_ratio_removing_every_channel_names_the_largest_allowed(spec):
    with pytest.raises(InvalidPlan, match=r"would remove every channel of unit 'fc1' \(24 channels\); the largest allowed ratio is 0.9583"):
        Plan.from_choices(spec, [0.99, 0, 0], [8, 8, 8], [8, 8, 8])
    with pytest.raises(InvalidPlan, match="outside \\[0, 1\\)"):
        Plan.from_choices(spec, [1.0, 0, 0], [8, 8, 8], [8, 8, 8])


def test_frozen_unit_cannot_change(spec):
    with pytest.raises(InvalidPlan, match="cannot be pruned"):
        Plan.from_choices(spec, [0, 0, 0.5], [8, 8, 8], [8, 8, 8])
    with pytest.raises(InvalidPlan, match="frozen at 8 bits"):
        Plan.from_choices(spec, [0, 0, 0], [8, 8, 4], [8, 8, 8])


def test_wrong_length_is_refused(spec):
    with pytest.raises(InvalidPlan, match="needs 3 entries"):
        Plan.from_choices(spec, [0, 0], [8, 8], [8, 8])


def test_plan_for_another_model_is_refused(spec):
    other = TinyVGG()
    x = example_input(other)
    graph = build_graph(other, x)
    with pytest.raises(PlanMismatch, match="made for model"):
        SearchModel(other, graph, [x]).apply(Plan.uniform(spec))


def test_json_and_frame_round_trip(spec, tmp_path):
    plan = Plan.from_choices(spec, [0.25, 0.5, 0], [3, 6, 8], [4, 5, 8])
    path = tmp_path / "plan.json"
    plan.to_json(path)
    assert Plan.from_json(path) == plan == Plan.from_json(plan.to_json())
    frame = plan.to_frame()
    assert list(frame.columns) == ["unit", "name", "prune_ratio", "kept_channels", "w_bits", "a_bits"]
    assert frame["kept_channels"].tolist() == [18, 12, 5]


def test_corrupt_plan_json_is_a_clear_error(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('{"format": 1, "fingerprint": "x", "decisions": [{"unit": 0}')
    with pytest.raises(InvalidPlan, match="corrupt"):
        Plan.from_json(path)
    path.write_text('{"format": 1, "decisions": []}')
    with pytest.raises(InvalidPlan, match="not a metacompress plan"):
        Plan.from_json(path)
