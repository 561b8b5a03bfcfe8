"""Learned planners: zero-shot, sample-and-select, RL^2 and Reptile on tiny tasks."""

from __future__ import annotations

import pytest
import torch

from metacompress.agents.learned import RL2Planner, SampleAndSelectPlanner, ZeroShotPlanner
from metacompress.agents.policy_io import PolicyMetadata, build_policy
from metacompress.compressors.budget import Budget
from metacompress.envs import Task
from metacompress.errors import PolicyError

TASK = Task("vgg", "bismo-edge", Budget("bitops", 0.15))


def policy(algo: str = "ppo", method: str = "ppo"):
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo=algo, net_arch=(32, 32), lstm_hidden_size=16 if algo == "recurrent_ppo" else 0, method=method)
    return build_policy(metadata), metadata


def within_budget(result, context) -> bool:
    return result.cost_ratio <= context.budget.fraction * (1 + 1e-9)


def test_zero_shot_uses_no_evaluations_and_is_deterministic(tiny_world):
    context = tiny_world.context(TASK)
    planner = ZeroShotPlanner(*policy())
    first, second = planner.plan(context), planner.plan(context, seed=5)
    assert first.evaluations_used == 0 and first.plan == second.plan and within_budget(first, context)


@pytest.mark.parametrize("evaluations", [1, 6])
def test_sample_and_select_keeps_the_best_of_n(tiny_world, evaluations):
    context = tiny_world.context(TASK)
    planner = SampleAndSelectPlanner(*policy())
    result = planner.plan(context, evaluations, seed=1)
    assert result.evaluations_used <= evaluations and within_budget(result, context)
    assert result.proxy_change == max(result.info["history"])
    assert planner.plan(context, evaluations, seed=1).plan == result.plan
    zero_shot = ZeroShotPlanner(*policy()).plan(context)
    assert result.proxy_change >= zero_shot.proxy_change  # the deterministic rollout is among the candidates


def test_rl2_runs_one_trial_of_n_attempts(tiny_world):
    context = tiny_world.context(TASK)
    planner = RL2Planner(*policy("recurrent_ppo", "rl2"))
    result = planner.plan(context, 4, seed=0)
    assert 1 <= result.evaluations_used <= 4 and result.info["episodes"] == 4 and within_budget(result, context)
    assert planner.plan(context, 4, seed=0).plan == result.plan


def test_rl2_needs_a_recurrent_policy():
    with pytest.raises(PolicyError, match="recurrent"):
        RL2Planner(*policy())

