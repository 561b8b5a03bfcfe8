"""Unit option-table predictors: measured tables, the prototype and relation weights, and the planner's budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
from predictor_world import TASKS

from metacompress.agents.unit_predictors import (
    FEATURE_COLUMNS, GRID, PredictedScorePlanner, UnitPredictor, grid_index, load_or_measure_tables, measure_table, table_at,
)
from metacompress.benchmarks.predictors import score_rows
from metacompress.compressors.budget import kept_at
from metacompress.errors import CacheCorrupted, MetacompressError


def test_a_table_holds_the_probes_and_only_the_options_a_unit_allows(tiny_world):
    context = tiny_world.context(TASKS["resnet"])
    for unit in context.decision_units:
        table = measure_table(context.evaluator, unit)
        probe = context.probes.units[unit.index]
        assert table[grid_index(0.0, 2, 8)] == pytest.approx(probe.drop_w2, abs=1e-12)
        assert table[grid_index(0.0, 8, 2)] == pytest.approx(probe.drop_a2, abs=1e-12)
        assert table[grid_index(0.0, 4, 4)] == pytest.approx(probe.drop_w4a4, abs=1e-12)
        pruned = [i for i, (p, _, _) in enumerate(GRID) if p > 0]
        if unit.prunable:
            assert table[grid_index(0.5, 8, 8)] == pytest.approx(probe.drop_prune50, abs=1e-12)
        else:
            assert np.isnan(table[pruned]).all() and not np.isnan(table[grid_index(0.0, 8, 8)])


def test_tables_are_cached_once_and_a_corrupt_cache_is_reported(tiny_world, tmp_path):
    context = tiny_world.context(TASKS["mlp"])
    path = tmp_path / "mlp.tables.json"
    first = load_or_measure_tables(context, path)
    data = json.loads(path.read_text())
    data["tables"] = {k: [-0.5 if v is not None else None for v in row] for k, row in data["tables"].items()}
    path.write_text(json.dumps(data))  # a cached table is read back, not re-measured
    assert all(np.nanmax(t) == -0.5 for t in load_or_measure_tables(context, path).values())
    assert set(first) == {u.index for u in context.decision_units}
    path.write_text("{not json")
    with pytest.raises(CacheCorrupted, match="delete it"):
        load_or_measure_tables(context, path)


def test_one_support_unit_is_predicted_exactly(examples):
    support = examples["mlp"][0]
    predictor = UnitPredictor("prototypical", steps=0)
    predictor.support = [support]
    query = np.stack([e.features for e in examples["vgg"]])
    predicted = predictor.predict(query)
    have = ~np.isnan(support.table)
    np.testing.assert_array_equal(predicted[:, have], np.broadcast_to(support.table[have], (len(query), have.sum())))


@pytest.mark.parametrize("kind", ["prototypical", "relation"])
def test_weights_sum_to_one_and_the_same_seed_gives_the_same_prediction(examples, kind):
    train = examples["mlp"] + examples["resnet"]
    query = np.stack([e.features for e in examples["vgg"]])
    first = UnitPredictor(kind, seed=3, steps=20).fit(train)
    second = UnitPredictor(kind, seed=3, steps=20).fit(train)
    np.testing.assert_allclose(first.weights(query).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(first.predict(query), second.predict(query))
    assert first.losses[-1] < first.losses[0]
    assert query.shape[1] == len(FEATURE_COLUMNS)


def test_training_needs_two_models(examples):
    with pytest.raises(MetacompressError, match="at least 2"):
        UnitPredictor().fit(examples["resnet"])
    with pytest.raises(MetacompressError, match="unknown"):
        UnitPredictor("siamese")


def test_interpolation_hits_grid_points_and_places_six_bits_near_eight(tiny_world, examples):
    context = tiny_world.context(TASKS["resnet"])
    example = next(e for e in examples["resnet"] if not np.isnan(e.table).any())
    unit = context.spec.units[example.unit]
    table = np.asarray([-p - (8 - w) * 0.01 - (8 - a) * 0.02 for p, w, a in GRID])  # known, separable
    assert table_at(table, unit, unit.channels, 4, 2) == pytest.approx(table[grid_index(0.0, 4, 2)])
    assert table_at(table, unit, kept_at(unit, 0.5), 8, 8) == pytest.approx(table[grid_index(0.5, 8, 8)])
    # W6: noise power 4^-4 lies 94% of the way from W4's 4^-2 to W8's 4^-6, so -0.04 moves 94% of the way to 0
    toward_eight = (4**-2 - 4**-4) / (4**-2 - 4**-6)
    assert table_at(table, unit, unit.channels, 6, 8) == pytest.approx(-0.04 + toward_eight * 0.04, abs=1e-12)


def test_the_planner_on_predicted_scores_stays_within_budget_and_tops_up(tiny_world, examples):
    predictor = UnitPredictor("relation", steps=10).fit(examples["mlp"] + examples["resnet"])
    context = tiny_world.context(TASKS["vgg"])
    planner = PredictedScorePlanner(predictor, "hawq-relation")
    result = planner.plan(context)
    assert result.cost_ratio <= TASKS["vgg"].budget.fraction * (1 + 1e-6)
    assert result.evaluations_used == 1
    # like hawq, it spends what its ILP plan leaves, and only on moves that lower its summed score
    solution = planner.solve(context)
    assert result.info["plan_sensitivity"] <= solution.objective * (1 + 1e-9)


def test_a_perfectly_scaled_hawq_table_scores_spearman_one_and_zero_error(examples):
    units = examples["resnet"]
    hawq = [-3.0 * e.table for e in units]  # loss units: higher is worse
    rows = {r.method: r for r in score_rows(units, {"copy": [e.table for e in units]}, hawq)}
    assert rows["copy"].mae_points == 0.0
    assert next(r for m, r in rows.items() if m.startswith("hawq")).mae_points == pytest.approx(0.0, abs=1e-9)
    assert all(r.spearman == pytest.approx(1.0) for r in rows.values())
