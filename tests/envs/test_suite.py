"""The task suite: seeded, feasible, and nothing held out leaks into training."""

from __future__ import annotations

import pytest

from metacompress.cli import main
from metacompress.envs.suite import SuiteConfig, generate_suite, model_spec
from metacompress.envs.tasks import hardware_archetype
from metacompress.envs.zoo.catalog import get_entry


@pytest.fixture(scope="module")
def suite():
    return generate_suite(SuiteConfig())


def test_nothing_held_out_leaks_into_training(suite):
    config = suite.config
    train = suite.entries("train")
    heldout = suite.entries("heldout")
    assert {t.novelty for t in heldout} == {"family", "hardware", "budget"}
    assert not {t.task.id for t in train} & {t.task.id for t in heldout}
    assert all(get_entry(t.task.model).family not in config.heldout_families for t in train)
    assert all(hardware_archetype(t.task.hardware) not in config.heldout_archetypes for t in train)
    lowest = {kind: low for kind, low, _ in config.train_budgets}
    assert all(t.task.budget.fraction >= lowest[t.task.budget.kind] for t in train)
    for entry in heldout:
        task = entry.task
        if entry.novelty == "family":
            assert get_entry(task.model).family in config.heldout_families
        if entry.novelty == "hardware":
            assert hardware_archetype(task.hardware) in config.heldout_archetypes
        if entry.novelty == "budget":
            assert task.budget.fraction < lowest[task.budget.kind]  # tighter than any training budget


def test_suite_is_seeded_and_every_kind_is_represented(suite):
    assert generate_suite(SuiteConfig()).tasks == suite.tasks
    assert generate_suite(SuiteConfig(seed=1)).tasks != suite.tasks
    kinds = {t.task.budget.kind for t in suite.entries("heldout")}
    assert kinds == {"latency", "energy", "size", "bitops"}
    assert len(suite.split("train")) == suite.config.train_tasks


def test_every_task_is_feasible(suite):
    from metacompress.compressors.budget import BudgetProjector
    from metacompress.envs.tasks import resolve_hardware

    for entry in suite.tasks[::7]:
        task = entry.task
        spec = model_spec(task.model)
        projector = BudgetProjector(spec, resolve_hardware(task.hardware), task.budget, suite.config.max_prune)
        assert projector.minimum_cost() <= task.budget.fraction * projector.reference_cost


def test_suite_list_prints_the_split(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METACOMPRESS_CACHE", str(tmp_path))
    assert main(["suite", "list", "--split", "heldout"]) == 0
    out = capsys.readouterr().out
    assert "heldout/family: 16" in out and "train" not in out.split("\n")[1]
