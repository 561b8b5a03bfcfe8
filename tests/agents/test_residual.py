"""The solver-anchored residual planner: action 0 is the solver's plan, rewards are gains over it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from metacompress.agents.hawq import HawqPlanner, fill_budget, plan_sensitivity, solve_hawq, unit_options
from metacompress.agents.meta_adapt import InnerLoop, MetaFewShotPlanner
from metacompress.agents.planner import ScoreBook, rollout
from metacompress.agents.policy_io import PolicyMetadata, build_policy, load_policy, save_policy
from metacompress.agents.registry import load_planner
from metacompress.agents.residual import (
    REFINE_MAX_STEPS, REFINE_STEPS, REFINE_TOP, ResidualFewShotPlanner, ResidualPlanner, refine_depth,
    refined_evaluations, solver_anchored,
)
from metacompress.agents.score_correction import CorrectedSolverPlanner
from metacompress.compressors.budget import Budget, PlanVectors
from metacompress.envs import Task
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.envs.features import NETWORK_OBSERVATION_DIM

TASKS = [Task("vgg", "bismo-edge", Budget("bitops", 0.15)), Task("resnet", "bitfusion-edge", Budget("size", 0.3))]


def residual_policy():
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo="ppo", net_arch=(32, 32), method="residual", observation="network",
                              observation_dim=NETWORK_OBSERVATION_DIM)
    return build_policy(metadata), metadata


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.model)
def test_action_zero_reproduces_the_solver_plan_and_earns_zero(tiny_world, task):
    context = tiny_world.context(task)
    view = solver_anchored(context)
    solution = HawqPlanner().solve(context)
    plan, change, info = rollout(CompressionEnv(view, observation="network"), np.zeros((len(view.decision_units), 3), np.float32))
    assert [list(plan.kept), list(plan.w_bits), list(plan.a_bits)] == list(context.projector.executed_vectors(solution.choices))
    assert change == pytest.approx(view.baseline_change)
    env = CompressionEnv(view, observation="network")
    env.reset(seed=0)
    for _ in view.decision_units:
        _, reward, done, _, _ = env.step(np.zeros(3, np.float32))
    assert done and reward == pytest.approx(0.0, abs=1e-12)  # the per-task baseline: no gain, no loss


def test_network_observation_passes_the_checker_and_is_bounded(tiny_world):
    env = CompressionEnv(solver_anchored(tiny_world.context(TASKS[1])), observation="network")
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (NETWORK_OBSERVATION_DIM,) and np.all(np.abs(observation) <= 1.0)


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.model)
def test_fill_budget_spends_what_is_left_and_still_fits(tiny_world, task):
    context = tiny_world.context(task)
    projector = context.projector
    most = projector.initial_vectors()  # the most compressed plan leaves the most budget unused
    filled = fill_budget(context, most, unit_options(context))
    assert projector.fits(*filled)
    assert projector.cost(*filled) > projector.cost(*most)
    assert all(f >= m for f, m in zip(filled.kept + filled.w_bits + filled.a_bits, most.kept + most.w_bits + most.a_bits))
    assert fill_budget(context, filled, unit_options(context)) == PlanVectors(*filled)  # nothing left to spend


def test_fill_budget_spends_what_is_left_when_the_scores_are_flat(tiny_world):
    """A zero Hessian (random init) scores every option of a unit alike: the gentler ones must still be taken."""
    context = tiny_world.context(TASKS[0])
    projector = context.projector
    flat = [replace(o, sensitivity=np.zeros_like(o.sensitivity)) for o in unit_options(context)]
    most = projector.initial_vectors()
    filled = fill_budget(context, most, flat)
    assert projector.fits(*filled) and projector.cost(*filled) > projector.cost(*most)
    assert fill_budget(context, filled, flat) == PlanVectors(*filled)


def test_fill_budget_spends_a_remainder_smaller_than_the_prune_grids_step_between_its_levels(tiny_world):
    """When the next grid level does not fit, channel counts between the levels still can (PESTO's stem conv)."""
    off_grid = 0
    for options, solved, filled in solved_and_filled(tiny_world.context(TASKS[1]), np.linspace(0.2, 0.6, 9)):
        grid = {o.unit: {e[0] for e in o.executed} for o in options}
        off_grid += any(filled.kept[u] not in levels for u, levels in grid.items())
    assert off_grid > 0


def solved_and_filled(base: TaskContext, fractions: np.ndarray):
    """Per budget fraction of ``base``'s kind whose ILP plan fits: the options, that plan and the filled one.

    Asserts what every fill must keep: the filled plan fits and the solver scores it no worse.
    """
    for fraction in fractions:
        context = TaskContext(base.evaluator, base.probes, base.hardware, Budget(base.budget.kind, float(fraction)), base.max_prune)
        options = unit_options(context)
        solved = context.projector.executed_vectors(solve_hawq(context, options).choices)
        if not context.projector.fits(*solved):
            continue  # no ILP round fitted: the env's projection, not the fill, makes such a plan fit
        filled = fill_budget(context, solved, options)
        assert context.projector.fits(*filled)
        assert plan_sensitivity(context, options, filled) <= plan_sensitivity(context, options, solved)
        yield options, solved, filled


def test_fill_budget_trades_a_units_bits_for_channels_when_the_gentler_option_does_not_fit(tiny_world):
    """With too little budget left for a gentler option, the fill may still lower the score by a cheaper mix.

    PESTO's stem conv held 85% of a BitOps budget: 2 to 4 weight bits cost more than the 12% left,
    but 4 bits on fewer channels fit. Only the summed score has to fall, and the plan has to fit.
    """
    traded = 0
    for _, solved, filled in solved_and_filled(tiny_world.context(Task("mlp", "bismo-edge", Budget("bitops", 0.3))), np.linspace(0.1, 0.5, 9)):
        traded += any(f < s for vector, before in zip(filled, solved) for f, s in zip(vector, before))
    assert traded > 0


def test_without_curvature_the_solver_still_scores_weights_and_pruning_by_the_probes(tiny_world):
    """Hessian traces all at or below 0 (random init) must not make pruning and low weight bits free."""
    context = tiny_world.context(TASKS[0])
    flat = replace(context.probes, units=tuple(replace(p, hessian_trace=0.0) for p in context.probes.units))
    flat_context = TaskContext(context.evaluator, flat, context.hardware, context.budget, context.max_prune)
    for option in unit_options(flat_context):
        weight, pruning, _ = option.terms.max(axis=0)
        unit = context.spec.units[option.unit]
        assert weight > 0 and (pruning > 0 or not unit.prunable)


def test_a_unit_without_curvature_is_scored_by_its_probe_when_the_others_have_curvature(tiny_world):
    """One noisy (<= 0) Hessian trace must not make that unit's low weight bits free."""
    context = tiny_world.context(TASKS[0])
    blind = context.decision_units[0].index

    def weight_term(drop_w2: float) -> float:
        units = tuple(replace(p, hessian_trace=0.0, drop_w2=drop_w2) if i == blind else p for i, p in enumerate(context.probes.units))
        blinded = TaskContext(context.evaluator, replace(context.probes, units=units), context.hardware, context.budget, context.max_prune)
        return next(o for o in unit_options(blinded) if o.unit == blind).terms[:, 0].max()

    assert weight_term(-0.1) > 0
    assert weight_term(-0.2) == pytest.approx(2 * weight_term(-0.1))


def test_residual_planners_stay_in_budget_and_few_shot_never_loses_to_solver_or_zero_shot(tiny_world):
    context = tiny_world.context(TASKS[0])
    zero_shot = ResidualPlanner(*residual_policy()).plan(context)
    assert zero_shot.evaluations_used == 0 and context.projector.fits(zero_shot.plan.kept, zero_shot.plan.w_bits, zero_shot.plan.a_bits)
    assert ResidualPlanner(*residual_policy()).plan(context, seed=3).plan == zero_shot.plan
    few = ResidualFewShotPlanner(*residual_policy()).plan(context, 5, seed=0)
    hawq = HawqPlanner().plan(context, 1)
    assert few.evaluations_used <= 5 and few.proxy_change >= max(hawq.proxy_change, zero_shot.proxy_change)


def test_a_residual_policy_round_trips_and_loads_as_the_residual_planner(tmp_path):
    policy, metadata = residual_policy()
    save_policy(policy, metadata, tmp_path / "policy")
    loaded, again = load_policy(tmp_path / "policy")
    assert again.observation == "network"
    for name, value in policy.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    assert isinstance(load_planner(tmp_path / "policy", 0), ResidualPlanner)
    assert isinstance(load_planner(tmp_path / "policy", 8), CorrectedSolverPlanner)


def test_refine_picks_the_best_of_the_top_plans_by_the_kd_proxy_and_counts_each_re_scoring(tiny_world):
    context = tiny_world.context(TASKS[1])
    book = ScoreBook(context, 8, 32)
    rng = np.random.default_rng(0)
    while not book.exhausted:
        book.run(rng.uniform(-1, 1, (len(context.decision_units), 3)).astype(np.float32))
    scored = book.used
    top = sorted(range(len(book.plans)), key=lambda i: -book.history[i])[:3]
    kd = [context.evaluator.proxy_accuracy(book.plans[i], 5) for i in top]
    book.refine(3, 5)
    result = book.result()
    pick = top[int(np.argmax(kd))]
    assert result.evaluations_used == scored + 3 and result.info["refinements"] == 3
    assert result.plan == book.plans[pick] and result.proxy_change == book.history[pick]
    assert book.env.plan_of(np.asarray(result.info["actions"], np.float32)) == result.plan  # the episode of that plan


def test_few_shot_keeps_its_last_evaluations_for_refinement(tiny_world):
    context = tiny_world.context(TASKS[0])
    assert [refined_evaluations(context, n) for n in (5, 11, 12, 30, 300)] == [0, 0, 2, REFINE_TOP, REFINE_TOP]


def test_evaluations_left_unspent_deepen_the_re_scoring_and_are_charged():
    assert refine_depth(5, 0) == (REFINE_STEPS, 1)  # a planner that spent its budget: the plain re-scoring
    assert refine_depth(5, 4) == (REFINE_STEPS, 1)  # fewer unspent than leaders buy nothing
    assert refine_depth(5, 5) == (2 * REFINE_STEPS, 2)
    assert refine_depth(5, 100) == (REFINE_MAX_STEPS, -(-REFINE_MAX_STEPS // REFINE_STEPS))
    for top in (2, 3, 5):
        for unspent in range(40):
            steps, cost = refine_depth(top, unspent)
            assert top * cost <= top + unspent and cost * REFINE_STEPS >= steps  # paid for, within what was left


def test_a_planner_that_stops_early_re_scores_deeper_within_its_budget(tiny_world):
    context = tiny_world.context(TASKS[1])
    book = ScoreBook(context, 10, 40)  # 12 evaluations: 10 to propose with, 2 re-scorings
    rng = np.random.default_rng(0)
    while book.used < 4:
        book.run(rng.uniform(-1, 1, (len(context.decision_units), 3)).astype(np.float32))
    result = ResidualPlanner._closing(book, 12)
    steps, cost = refine_depth(2, 6)
    assert steps > REFINE_STEPS and result.info["refine_steps"] == steps
    assert result.info["refinements"] == 2 * cost and result.evaluations_used == 4 + 2 * cost <= 12
    leaders = sorted(range(len(book.plans)), key=lambda i: -book.history[i])[:2]
    deep = [context.evaluator.proxy_accuracy(book.plans[i], steps) for i in leaders]  # cached by the re-scoring
    assert result.plan == book.plans[leaders[int(np.argmax(deep))]]


def _meta_planner() -> MetaFewShotPlanner:
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo="ppo", net_arch=(32, 32), method="maml", observation="network", observation_dim=NETWORK_OBSERVATION_DIM)
    return MetaFewShotPlanner(build_policy(metadata), metadata, InnerLoop("maml", 32))


@pytest.mark.parametrize("make", [lambda: ResidualFewShotPlanner(*residual_policy()), lambda: CorrectedSolverPlanner(*residual_policy()), _meta_planner],
                         ids=["sample", "resolve", "maml"])
def test_every_residual_few_shot_planner_ends_by_re_scoring_its_leaders_within_budget(tiny_world, make):
    context = tiny_world.context(TASKS[1])
    result = make().plan(context, 12, seed=0)
    history = result.info["history"]
    assert result.evaluations_used == len(history) + result.info["refinements"] <= 12
    steps, cost = refine_depth(2, 10 - len(history))  # 10 evaluations to propose with, 2 kept to re-score
    assert result.info["refinements"] == (2 * cost if len(history) >= 2 else 0)
    assert result.info["refine_steps"] == steps
    top = sorted(history, reverse=True)[:2]
    assert result.proxy_change in top  # one of the two leaders, the one the KD proxy preferred (ScoreBook.refine)
    assert make().plan(context, 12, seed=0).plan == result.plan
