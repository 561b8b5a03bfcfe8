"""Few-shot by corrected solver scores: the model's algebra, and the planner's guarantees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metacompress.agents import score_correction
from metacompress.agents.hawq import HawqPlanner, solve_hawq, unit_options
from metacompress.agents.policy_io import PolicyMetadata, build_policy
from metacompress.agents.registry import Method, build_planner
from metacompress.agents.score_correction import CorrectedSolverPlanner, ScoreCorrection, option_index
from metacompress.compressors.budget import Budget
from metacompress.envs import Task
from metacompress.envs.features import NETWORK_OBSERVATION_DIM
from metacompress.errors import PolicyError

TASK = Task("vgg", "bismo-edge", Budget("bitops", 0.15))


def residual_policy():
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo="ppo", net_arch=(32, 32), method="residual", observation="network",
                              observation_dim=NETWORK_OBSERVATION_DIM)
    return build_policy(metadata), metadata


def test_terms_sum_to_the_solver_sensitivity(tiny_world):
    for option in unit_options(tiny_world.context(TASK)):
        assert option.terms.shape == (len(option.executed), 3)
        np.testing.assert_allclose(option.terms.sum(axis=1), option.sensitivity)


def test_zero_correction_re_solves_to_the_solver_plan(tiny_world):
    context = tiny_world.context(TASK)
    options = unit_options(context)
    model = ScoreCorrection(options, noise_floor=0.01)
    coefficients = np.zeros(4 + 3 * len(options))
    assert solve_hawq(context, model.corrected(coefficients)).choices == solve_hawq(context, options).choices


def test_the_posterior_learns_a_misjudged_term_kind(tiny_world):
    """Drops that pruning explains twice as strongly as the solver thinks: the prune correction goes up."""
    context = tiny_world.context(TASK)
    options = unit_options(context)
    model = ScoreCorrection(options, noise_floor=1e-4, noise_fraction=0.01)
    rng = np.random.default_rng(0)
    terms = np.stack([np.stack([o.terms[rng.integers(len(o.executed))] for o in options]) for _ in range(40)])
    drops = terms[..., 0].sum(axis=1) + 2.0 * terms[..., 1].sum(axis=1) + terms[..., 2].sum(axis=1)
    mean, covariance, beta = model.posterior(terms, drops)
    weights = model.weights(mean)
    assert np.median(weights[:, 1] / weights[:, 0]) > 1.5 and np.median(weights[:, 1] / weights[:, 2]) > 1.5
    assert np.all(np.linalg.eigvalsh(covariance) > 0)


def test_option_index_falls_back_to_the_nearest_kept_count(tiny_world):
    option = next(o for o in unit_options(tiny_world.context(TASK)) if len({k for k, _, _ in o.executed}) > 2)
    kept, w, a = option.executed[-1]
    assert option_index(option, (kept, w, a)) == len(option.executed) - 1
    nearest = option.executed[option_index(option, (kept + 1000, w, a))]
    assert nearest[1:] == (w, a) and nearest[0] == max(k for k, wb, ab in option.executed if (wb, ab) == (w, a))


def test_few_shot_resolve_stays_in_budget_is_seeded_and_never_loses_to_solver_or_zero_shot(tiny_world):
    context = tiny_world.context(TASK)
    planner = CorrectedSolverPlanner(*residual_policy())
    result = planner.plan(context, 6, seed=0)
    hawq = HawqPlanner().plan(context, 1)
    plan = result.plan
    assert context.projector.fits(plan.kept, plan.w_bits, plan.a_bits)
    assert result.evaluations_used <= 6 and result.proxy_change >= hawq.proxy_change
    assert result.proxy_change == max(result.info["history"])
    assert planner.plan(context, 6, seed=0).plan == plan


def test_few_shot_resolve_needs_a_residual_policy():
    policy = build_policy(PolicyMetadata(algo="ppo", net_arch=(8,)))
    with pytest.raises(PolicyError, match="--algo residual"):
        build_planner(Method("few-shot-resolve-30", "few-shot-resolve", 30), {"policy": (policy, PolicyMetadata(algo="ppo", net_arch=(8,)))})


def test_a_stalled_posterior_is_widened_before_the_search_stops(tiny_world, monkeypatch):
    context = tiny_world.context(TASK)
    widened = CorrectedSolverPlanner(*residual_policy()).plan(context, 30, seed=0)
    limit = score_correction.MAX_WIDENINGS
    monkeypatch.setattr(score_correction, "MAX_WIDENINGS", 0)  # v0.5: stop at the first stall
    stopped = CorrectedSolverPlanner(*residual_policy()).plan(context, 30, seed=0)
    assert stopped.info["widenings"] == 0 and len(stopped.info["history"]) < 25  # it stalled with evaluations left
    assert 1 <= widened.info["widenings"] <= limit
    assert len(widened.info["history"]) > len(stopped.info["history"])  # the widened posterior found new plans
    assert widened.evaluations_used <= 30 and widened.proxy_change in sorted(widened.info["history"], reverse=True)[:5]
