"""Saved unit predictors: round trip, corrupt folders, and the registry's hawq-relation / hawq-proto methods."""

from __future__ import annotations

import json

import numpy as np
import pytest
from predictor_world import TASKS
from safetensors.torch import load_file, save_file

from metacompress.agents.predictor_io import load_predictor, save_predictor
from metacompress.agents.registry import (
    SHIPPED, PolicyPaths, build_planner, load_planner, load_policies, method_planner, missing_policies, parse_method,
)
from metacompress.agents.unit_predictors import PredictedScorePlanner, UnitPredictor
from metacompress.errors import PolicyError, UnknownMethod


@pytest.fixture(scope="module", params=["relation", "prototypical"])
def saved(request, examples, tmp_path_factory):
    predictor = UnitPredictor(request.param, seed=1, steps=15).fit(examples["mlp"] + examples["resnet"])
    path = save_predictor(predictor, tmp_path_factory.mktemp("saved") / request.param, training={"models": ["mlp", "resnet"]})
    return predictor, path


def test_round_trip_gives_identical_predictions(saved, examples):
    predictor, path = saved
    loaded = load_predictor(path)
    query = np.stack([e.features for e in examples["vgg"]])
    assert loaded.kind == predictor.kind and len(loaded.support) == len(predictor.support)
    np.testing.assert_array_equal(loaded.predict(query), predictor.predict(query))
    np.testing.assert_array_equal(loaded.weights(query), predictor.weights(query))
    description = json.loads((path / "predictor.json").read_text())
    assert description["training_models"] == ["mlp", "resnet"] and description["training"] == {"models": ["mlp", "resnet"]}


def _copy(path, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for file in path.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "predictor.json").write_text("{not json"), "predictor.json is corrupt"),
    (lambda p: (p / "predictor.safetensors").write_bytes(b"garbage"), "predictor.safetensors is corrupt"),
    (lambda p: (p / "predictor.json").unlink(), "is not a saved unit predictor"),
    (lambda p: (p / "predictor.json").write_text(json.dumps({**json.loads((p / "predictor.json").read_text()), "grid": [[0, 8, 8]]})),
     "option grid has 1 entries"),
    (lambda p: (p / "predictor.json").write_text(json.dumps({**json.loads((p / "predictor.json").read_text()), "format": 9})),
     "format 9, this version reads 1"),
    (lambda p: (p / "predictor.json").write_text(json.dumps({k: v for k, v in json.loads((p / "predictor.json").read_text()).items()
                                                             if k != "kind"})), "missing or bad 'kind'"),
    (lambda p: save_file({k: v for k, v in load_file(str(p / "predictor.safetensors")).items() if k != "support.tables"},
                         str(p / "predictor.safetensors")), "does not match the predictor"),
], ids=["bad-json", "bad-weights", "no-description", "other-grid", "other-format", "no-kind", "missing-tensor"])
def test_a_corrupt_or_mismatched_folder_is_a_policy_error(saved, tmp_path, damage, message):
    folder = _copy(saved[1], tmp_path)
    damage(folder)
    with pytest.raises(PolicyError, match=message):
        load_predictor(folder)


def test_an_unfitted_predictor_is_not_saved(tmp_path):
    with pytest.raises(PolicyError, match="call fit"):
        save_predictor(UnitPredictor("relation"), tmp_path / "p")


def test_the_registry_knows_the_names():
    for name, which in (("hawq-relation", "relation"), ("hawq-proto", "prototypical")):
        method = parse_method(name)
        assert (method.kind, method.evaluations, method.policy) == (name, 1, which)
    with pytest.raises(UnknownMethod, match="hawq-relation"):
        parse_method("hawq-relation-5")
    assert SHIPPED.relation.name == "relation" and (SHIPPED.prototypical / "predictor.json").exists()


def test_the_registry_builds_hawq_relation_from_a_saved_folder_within_budget(saved, tiny_world, tmp_path):
    predictor, path = saved
    name = "hawq-relation" if predictor.kind == "relation" else "hawq-proto"
    method = parse_method(name)
    paths = PolicyPaths(**{predictor.kind: path})
    assert missing_policies([method], paths) == ([method], [])
    planner = build_planner(method, load_policies([method], paths))
    assert isinstance(planner, PredictedScorePlanner) and planner.name == name
    context = tiny_world.context(TASKS["vgg"])
    result = planner.plan(context, method.evaluations, 0)
    assert result.cost_ratio <= TASKS["vgg"].budget.fraction * (1 + 1e-6) and result.evaluations_used == 1
    same = method_planner(method, path).plan(context, 1, 0)  # what `apply --method NAME --policy DIR` builds
    assert same.plan.key() == result.plan.key()
    assert load_planner(path, 0).plan(context, 1, 0).plan.key() == result.plan.key()  # `apply --policy DIR`


def test_a_predictor_of_the_other_kind_is_refused(saved):
    predictor, path = saved
    other = "prototypical" if predictor.kind == "relation" else "relation"
    method = parse_method("hawq-proto" if other == "prototypical" else "hawq-relation")
    with pytest.raises(PolicyError, match=f"it is a {predictor.kind} predictor"):
        load_policies([method], PolicyPaths(**{other: path}))
    runnable, notes = missing_policies([method], PolicyPaths())
    assert runnable == [] and f"--{other}-policy" in notes[0]


def test_method_planner_names_the_wrong_folder(saved):
    predictor, path = saved
    other, other_kind = ("hawq-proto", "prototypical") if predictor.kind == "relation" else ("hawq-relation", "relation")
    with pytest.raises(PolicyError, match=f"it is a {predictor.kind} predictor; pass a `metacompress train --algo {other_kind}`"):
        method_planner(parse_method(other), path)
    with pytest.raises(PolicyError, match="plans without a policy"):
        method_planner(parse_method("hawq"), path)
