"""bench agents: the comparison core on tiny tasks, its statistics by hand, and its run folder."""

from __future__ import annotations

import json

from dataclasses import replace

import pandas as pd
import pytest
import torch

from metacompress.agents.policy_io import PolicyMetadata, build_policy, save_policy
from metacompress.benchmarks.compare import (
    COLUMNS,
    AgentsBenchConfig,
    BenchConfigError,
    check_out,
    ordered_tasks,
    plan_runs,
    prepare,
    run_comparison,
)
from metacompress._version import __version__
from metacompress.benchmarks.compare_report import mean_ci, summary_markdown, win_rates, write_run
from metacompress.agents.registry import Method, PolicyPaths, parse_method
from metacompress.errors import UnknownMethod
from metacompress.envs.suite import SuiteTask
from metacompress.compressors.budget import Budget
from metacompress.envs.tasks import Task
from metacompress.errors import PolicyError, RunExists

TASKS = [
    SuiteTask(Task("resnet", "bismo-edge", Budget("bitops", 0.2)), "heldout", "family"),
    SuiteTask(Task("mlp", "bismo-edge", Budget("size", 0.3)), "heldout", "hardware"),
]
METHODS = ["zero-shot", "uniform", "random-3", "few-shot-sample-2", "few-shot-rl2-2"]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """An untrained PPO policy folder, as `metacompress train` would write it."""
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo="ppo", net_arch=(16, 16))
    return save_policy(build_policy(metadata), metadata, tmp_path_factory.mktemp("policies") / "ppo")


@pytest.fixture(scope="module")
def results(tiny_world, policy_dir) -> pd.DataFrame:
    return run_comparison(tiny_world, TASKS, METHODS, seeds=[0, 1], policies=PolicyPaths(policy=policy_dir), finetune_steps=2)


def test_results_have_every_column_and_a_row_per_run(results):
    assert tuple(results.columns) == COLUMNS
    # few-shot-rl2-2 has no policy: skipped, not a crash; 2 tasks x 2 seeds x 4 methods remain
    assert len(results) == 16 and "few-shot-rl2-2" not in set(results["method"])
    assert list(results["method"][:4]) == ["zero-shot", "uniform", "random-3", "few-shot-sample-2"]


def test_every_method_meets_the_budget_within_its_evaluations(results):
    assert results["budget_satisfied"].all()
    assert (results["cost_ratio"] <= results["budget_fraction"] * (1 + 1e-9)).all()
    assert (results["evaluations_used"] <= results["evaluation_budget"]).all()
    assert (results.loc[results["method"] == "zero-shot", "evaluations_used"] == 0).all()
    assert (results.loc[results["method"] == "random-3", "evaluations_used"] == 3).all()


@pytest.mark.parametrize("fraction, regime", [(0.2, "tight"), (0.4, "moderate")])
def test_regime_says_whether_a_uniform_w4a4_plan_fits(tiny_world, results, fraction, regime):
    from metacompress.benchmarks.compare import budget_regime

    # W4A4 BitOps are (4 x 4) / (8 x 8) = 0.25 of W8A8 on every unit but the frozen 8-bit head
    assert budget_regime(tiny_world.context(Task("resnet", "bismo-edge", Budget("bitops", fraction)))) == regime
    assert set(results["regime"]) <= {"moderate", "tight"}


def test_final_change_is_test_accuracy_minus_the_original(results):
    assert ((results["final_accuracy"] - results["base_test_accuracy"]) == results["final_change"]).all()
    assert results["final_accuracy"].between(0, 1).all() and (results["finetune_steps"] == 2).all()


def test_the_same_seed_gives_the_same_rows(tiny_world, policy_dir, results):
    again = run_comparison(tiny_world, TASKS[:1], ["random-3"], seeds=[1], policies=PolicyPaths(policy=policy_dir), finetune_steps=2)
    first = results[(results["method"] == "random-3") & (results["seed"] == 1) & (results["task"] == TASKS[0].task.id)]
    cols = ["proxy_change", "final_change", "cost_ratio", "evaluations_used"]
    assert again[cols].to_numpy().tolist() == first[cols].to_numpy().tolist()


def test_win_rate_counts_ties_half_and_pairs_by_task_and_seed():
    rows = [  # (task, seed, novelty, method, final change)
        ("a", 0, "family", "zero-shot", 0.10), ("a", 0, "family", "hawq", 0.05),   # win
        ("a", 1, "family", "zero-shot", 0.02), ("a", 1, "family", "hawq", 0.02),   # tie
        ("b", 0, "budget", "zero-shot", 0.00), ("b", 0, "budget", "hawq", 0.04),   # loss
        ("b", 1, "budget", "zero-shot", 0.30), ("b", 1, "budget", "hawq", 0.10),   # win
        ("b", 1, "budget", "uniform", 0.50),                                       # only pair with uniform: loss
    ]
    frame = pd.DataFrame(rows, columns=["task", "seed", "novelty", "method", "final_change"])
    rates = win_rates(frame).set_index("baseline")
    assert rates.loc["hawq", "pairs"] == 4 and rates.loc["hawq", "win_rate"] == pytest.approx(2.5 / 4)
    assert rates.loc["hawq", "mean_diff"] == pytest.approx((0.05 + 0.0 - 0.04 + 0.20) / 4)
    assert rates.loc["uniform", "pairs"] == 1 and rates.loc["uniform", "win_rate"] == 0.0
    by = win_rates(frame, by="novelty").set_index(["baseline", "novelty"])
    assert by.loc[("hawq", "family"), "win_rate"] == pytest.approx(0.75)
    assert by.loc[("hawq", "budget"), "win_rate"] == pytest.approx(0.5)


def test_confidence_interval_is_student_t():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.7764451; sd = sqrt(2.5)
    assert mean == 3.0 and half == pytest.approx(2.7764451 * 2.5**0.5 / 5**0.5, rel=1e-6)
    assert mean_ci([0.7])[0] == 0.7 and pd.isna(mean_ci([0.7])[1])


def test_summary_states_the_command_and_the_targets(results):
    text = summary_markdown(results, "metacompress bench agents --preset quick", [], ["preset quick"])
    assert text.splitlines()[4] == "    metacompress bench agents --preset quick"
    assert "| zero-shot" in text and "budget satisfied in 100% of runs, every method: yes" in text


def test_run_folder_is_atomic_and_never_overwritten(tmp_path, results, policy_dir):
    bench = prepare(AgentsBenchConfig(methods=("zero-shot", "uniform", "random-3", "few-shot-sample-2"), seeds=(0, 1),
                                      policies=PolicyPaths(policy=policy_dir), finetune_steps=2), entries=TASKS)
    out = tmp_path / "bench-quick-s0"
    write_run(out, bench, results, 1.0)
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_vs_evaluations.png", "config.json", "manifest.json", "results.csv", "summary.md"]
    assert [p.name for p in tmp_path.iterdir()] == ["bench-quick-s0"]  # no temporary folder left behind
    assert pd.read_csv(out / "results.csv").shape == results.shape
    assert f"--out {out}" in (out / "summary.md").read_text()
    with pytest.raises(RunExists, match="--overwrite"):
        check_out(out, overwrite=False)
    with pytest.raises(RunExists, match="already exists"):
        write_run(out, bench, results, 1.0)
    write_run(out, bench, results.head(3), 1.0, overwrite=True)
    assert len(pd.read_csv(out / "results.csv")) == 3
    assert json.loads((out / "config.json").read_text())["versions"]["metacompress"] == __version__


@pytest.mark.parametrize(
    "name, kind, evaluations",
    [("zero-shot", "zero-shot", 0), ("hawq", "hawq", 1), ("uniform", "uniform", 64), ("random-300", "random", 300),
     ("few-shot-rl2-30", "few-shot-rl2", 30), ("oracle-evolution-2000", "oracle-evolution", 2000)],
)
def test_method_names_carry_their_evaluations(name, kind, evaluations):
    assert parse_method(name) == Method(name, kind, evaluations)


@pytest.mark.parametrize("name", ["random", "hawq-5", "evolution-0", "magic-30"])
def test_unknown_methods_are_refused(name):
    with pytest.raises(UnknownMethod, match="<kind>-<N>"):
        parse_method(name)


def test_preset_limits_restrict_expensive_methods_to_the_first_tasks_and_seeds():
    tasks = TASKS * 2
    runs = plan_runs(tasks, [parse_method("zero-shot"), parse_method("random-300")], [0, 1, 2], [("random-300", 1, 2)])
    assert sum(r.method.name == "zero-shot" for r in runs) == 12
    assert [(r.entry, r.seed) for r in runs if r.method.name == "random-300"] == [(tasks[0], 0), (tasks[0], 1)]


def test_tasks_are_ordered_by_novelty_in_turn():
    entries = [SuiteTask(Task(m, "m7-mcu", Budget("latency", 0.5)), "heldout", n)
               for m, n in [("a", "budget"), ("b", "budget"), ("c", "family"), ("d", "hardware")]]
    assert [e.novelty for e in ordered_tasks(entries)] == ["family", "hardware", "budget", "budget"]


def test_every_config_problem_is_reported_at_once(policy_dir):
    config = AgentsBenchConfig(methods=("random", "hawq"), seeds=(0, 0), finetune_steps=0, policies=PolicyPaths(policy=policy_dir))
    with pytest.raises(BenchConfigError) as info:
        prepare(config, entries=TASKS)
    assert all(s in str(info.value) for s in ("'random' is unknown", "--seeds 0,0", "--finetune-steps 0"))


def test_a_missing_policy_is_a_note_and_a_wrong_one_an_error(policy_dir, tmp_path):
    bench = prepare(AgentsBenchConfig(methods=("zero-shot", "hawq")), entries=TASKS)
    assert [m.name for m in bench.methods] == ["hawq"] and "skipped zero-shot: no policy given" in bench.notes[0]
    with pytest.raises(PolicyError, match="recurrent"):
        prepare(AgentsBenchConfig(methods=("few-shot-rl2-30",), policies=PolicyPaths(rl2=policy_dir)), entries=TASKS)


def test_two_workers_give_the_rows_of_one(tmp_path, policy_dir):
    from functools import partial

    from tiny_world import tiny_loader

    from metacompress.benchmarks.compare import run_bench
    from metacompress.envs.world import TaskWorld

    world = partial(TaskWorld, tmp_path / "world", 0, model_loader=tiny_loader)
    config = AgentsBenchConfig(methods=("zero-shot", "random-2"), seeds=(0,), policies=PolicyPaths(policy=policy_dir),
                               finetune_steps=1, workers=1)
    serial = run_bench(prepare(config, entries=TASKS), world=world)
    ticks = []
    parallel = run_bench(prepare(replace(config, workers=2), entries=TASKS), progress=lambda: ticks.append(1), world=world)
    numbers = ["proxy_change", "final_change", "cost_ratio", "evaluations_used"]
    assert len(ticks) == 4 and parallel[["task", "method", *numbers]].equals(serial[["task", "method", *numbers]])


def test_dry_run_lists_the_quick_preset_with_the_shipped_policies(policy_dir, tmp_path, monkeypatch, capsys):
    from metacompress.cli import main

    monkeypatch.setenv("METACOMPRESS_CACHE", str(tmp_path / "cache"))  # the suite is generated from structure only
    out = tmp_path / "bench-quick-s0"
    assert main(["bench", "agents", "--dry-run", "--policy", str(policy_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped few-shot-resolve-30: it re-solves around a residual policy's plan" in printed  # a PPO policy given
    assert printed.count("skipped") == 2 and "skipped few-shot-reptile-30: no policy given" in printed  # Reptile is not shipped
    # 7 methods on 6 tasks + the 4 expensive ones on the first 3 tasks; RL^2 uses the policy shipped in agents/policies
    assert "54 runs on 6 tasks" in printed and not out.exists()
    command = printed[printed.index("command: "):]
    assert command.startswith("command: metacompress bench agents --preset quick --split heldout")
    assert f"--policy {policy_dir}" in command and "--rl2-policy" not in command  # shipped ones are the defaults


def test_dry_run_skips_methods_without_a_policy(policy_dir, tmp_path, monkeypatch, capsys):
    from metacompress.benchmarks import compare
    from metacompress.cli import main

    monkeypatch.setenv("METACOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compare, "SHIPPED", PolicyPaths(*(tmp_path / name for name in ("a", "b", "c"))))  # ships none
    assert main(["bench", "agents", "--dry-run", "--policy", str(policy_dir), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "note: skipped few-shot-rl2-30: no policy given" in printed and "note: skipped few-shot-reptile-30" in printed
    assert "48 runs on 6 tasks" in printed


def test_ray_gives_the_rows_of_in_process(tmp_path, policy_dir, ray_cluster):
    from functools import partial

    from tiny_world import tiny_loader

    from metacompress.benchmarks.compare import run_bench
    from metacompress.envs.world import TaskWorld

    world = partial(TaskWorld, tmp_path / "world", 0, model_loader=tiny_loader)
    config = AgentsBenchConfig(methods=("random-2",), seeds=(0,), finetune_steps=1, workers=1)
    serial = run_bench(prepare(config, entries=TASKS), world=world)
    ticks = []
    on_ray = run_bench(prepare(replace(config, workers=2, executor="ray"), entries=TASKS),
                       progress=lambda: ticks.append(1), world=world)
    numbers = ["proxy_change", "final_change", "cost_ratio", "evaluations_used"]
    assert len(ticks) == 2 and on_ray[["task", "method", *numbers]].equals(serial[["task", "method", *numbers]])
