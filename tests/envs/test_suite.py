"""The task suite: seeded, feasible, and nothing held out leaks into training."""

from __future__ import annotations

import pytest

from metacompress.cli import main
from metacompress.envs.suite import SuiteConfig, generate_suite, model_spec
from metacompress.envs.tasks import hardware_archetype
from metacompress.envs.zoo.catalog import get_entry
from metacompress.errors import MetacompressError


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


def test_generated_tasks_span_the_whole_budget_range_on_training_hardware():
    from metacompress.envs.suite import generated_tasks
    from metacompress.envs.zoo.generator import generated_entries

    config = SuiteConfig()
    models = [e.id for e in generated_entries(8)]
    tasks = generated_tasks(models, 40, config, seed=0)
    assert len(tasks) == 40 and tasks == generated_tasks(models, 40, config, seed=0)
    lowest_train = {kind: low for kind, low, _ in config.train_budgets}
    lowest_tight = {kind: low for kind, low, _ in config.tight_budgets}
    assert any(t.budget.fraction < lowest_train[t.budget.kind] for t in tasks)  # tight budgets are trained on
    assert all(t.budget.fraction >= lowest_tight[t.budget.kind] for t in tasks)
    assert all(hardware_archetype(t.hardware) in config.train_archetypes for t in tasks)


def test_validation_split_mirrors_the_held_out_novelties_and_holds_nothing_trained_or_held_out(suite):
    from metacompress.agents.train_config import (
        NOVEL_VALIDATION_TASKS, TIGHT_VALIDATION_TASKS, VALIDATION_GENERATED, TrainConfig, monitoring_tasks, training_tasks,
        validation_entries,
    )
    from metacompress.envs.zoo.generator import GENERATED_FAMILY

    entries = validation_entries(("vgg",))
    by = {n: [e for e in entries if e.novelty == n] for n in ("", "budget", "hardware", "family")}
    assert sum(map(len, by.values())) == len(entries)
    assert len(by["budget"]) == TIGHT_VALIDATION_TASKS and len(by["hardware"]) == len(by["family"]) == NOVEL_VALIDATION_TASKS
    assert {get_entry(e.task.model).family for e in entries if e.novelty != "family"} == {"vgg"}
    assert {get_entry(e.task.model).family for e in by["family"]} == {GENERATED_FAMILY}
    lowest_train = {kind: low for kind, low, _ in suite.config.train_budgets}
    assert all(e.task.budget.fraction < lowest_train[e.task.budget.kind] for e in by["budget"])
    trained = training_tasks(TrainConfig(algo="residual", validation_families=("vgg",)))
    seen_hardware = {t.hardware for t in trained} | {e.task.hardware for e in suite.entries("heldout")}
    assert not {e.task.hardware for e in by["hardware"]} & seen_hardware
    ids = {e.task.id for e in entries}
    assert not ids & {t.id for t in trained} and not ids & {t.task.id for t in suite.entries("heldout")}
    with pytest.raises(MetacompressError, match="validation split"):
        TrainConfig(algo="residual", generated_models=min(VALIDATION_GENERATED) + 1)  # training may not draw them
    monitored = monitoring_tasks(TrainConfig(algo="residual", validation_families=("vgg",), eval_tasks=8))
    assert {t.id for t in monitored} <= ids
    assert [sum(t.id in {e.task.id for e in by[n]} for t in monitored) for n in ("budget", "family", "hardware", "")] == [2, 2, 2, 2]

