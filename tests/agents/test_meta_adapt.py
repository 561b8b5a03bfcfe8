"""The shared inner loop: each variant's step does what it claims; the few-shot planner never loses to the solver."""

from __future__ import annotations

import math

import pytest
import torch

from metacompress.agents.hawq import HawqPlanner
from metacompress.agents.meta_adapt import INNER_STEP, MAX_GRADIENT_NORM, InnerLoop, MetaFewShotPlanner, Trials, surrogate
from metacompress.agents.policy_io import PolicyMetadata, build_policy
from metacompress.compressors.budget import Budget
from metacompress.envs import Task
from metacompress.envs.features import NETWORK_OBSERVATION_DIM
from metacompress.errors import PolicyError

HIDDEN = 5


def trials(seed: int, count: int = 6) -> Trials:
    generator = torch.Generator().manual_seed(seed)
    return Trials(torch.randn(count, 4, HIDDEN, generator=generator), torch.randn(count, 4, 3, generator=generator),
                  torch.randn(count, generator=generator))


def head() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(3, HIDDEN, generator=generator).requires_grad_(True), torch.randn(3, generator=generator).requires_grad_(True)


def gradient_at(point, data):
    leaves = tuple(p.detach().requires_grad_(True) for p in point)
    return torch.autograd.grad(surrogate(leaves, data), leaves)


def test_first_order_maml_outer_gradient_is_the_query_gradient_at_the_adapted_head():
    loop = InnerLoop("maml", HIDDEN, steps=2, max_gradient_norm=math.inf)
    initial = head()
    adapted = loop.adapt(initial, trials(0))
    surrogate(adapted, trials(1)).backward()
    expected = gradient_at(adapted, trials(1))
    assert torch.allclose(initial[0].grad, expected[0]) and torch.allclose(initial[1].grad, expected[1])
    first = gradient_at(initial, trials(0))  # one step is exactly W - alpha * G
    one = InnerLoop("maml", HIDDEN, steps=1, max_gradient_norm=math.inf).adapt(initial, trials(0))
    assert torch.allclose(one[0], initial[0] - INNER_STEP * first[0])


def test_meta_sgd_step_sizes_start_at_the_reptile_step_stay_positive_and_are_learned():
    loop = InnerLoop("meta-sgd", HIDDEN, steps=1, max_gradient_norm=math.inf)
    assert torch.allclose(loop.log_alpha_weight.exp(), torch.full((3, HIDDEN), INNER_STEP))
    initial = head()
    optimizer = torch.optim.SGD(loop.parameters(), lr=5.0)
    before = loop.log_alpha_weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        surrogate(loop.adapt(initial, trials(0)), trials(1)).backward()
        assert loop.log_alpha_weight.grad.abs().sum() > 0
        optimizer.step()
    alpha = loop.log_alpha_weight.exp()
    assert not torch.allclose(loop.log_alpha_weight, before) and bool((alpha > 0).all())
    adapted = loop.adapt(initial, trials(0))  # the step is exp(log_alpha) * G, elementwise
    assert torch.allclose(adapted[0], initial[0] - alpha * gradient_at(initial, trials(0))[0])


def test_meta_curvature_applies_its_preconditioner_on_both_sides():
    loop = InnerLoop("meta-curvature", HIDDEN, steps=1, max_gradient_norm=math.inf)
    with torch.no_grad():
        loop.m_out.copy_(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))
        loop.m_in.copy_(torch.randn(HIDDEN, HIDDEN, generator=torch.Generator().manual_seed(3)))
    initial = head()
    g_w, g_b = gradient_at(initial, trials(0))
    adapted = loop.adapt(initial, trials(0))
    assert torch.allclose(adapted[0], initial[0] - INNER_STEP * loop.m_out @ g_w @ loop.m_in, atol=1e-6)
    assert torch.allclose(adapted[1], initial[1] - INNER_STEP * loop.m_out @ g_b, atol=1e-6)
    surrogate(adapted, trials(1)).backward()
    assert loop.m_in.grad.abs().sum() > 0 and loop.m_out.grad.abs().sum() > 0


def test_the_support_step_raises_the_likelihood_of_the_better_trials():
    data = trials(4)
    adapted = InnerLoop("reptile", HIDDEN, steps=3).adapt(head(), data)
    assert surrogate(adapted, data).item() < surrogate(tuple(p.detach() for p in head()), data).item()


@pytest.mark.parametrize("variant", ["reptile", "maml"])
def test_an_outlier_trial_cannot_make_the_adaptation_diverge(variant):
    # one trial far worse than the rest: its negative advantage makes the support loss unbounded below
    data = trials(5, count=8)
    data = Trials(data.latents * 10.0, data.actions, torch.tensor([0.0] * 7 + [-1.0]))
    initial = tuple(p.detach() for p in head())
    adapted = InnerLoop(variant, HIDDEN, steps=50).adapt(initial, data)
    move = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(adapted, initial)))
    assert math.isfinite(move) and move <= 50 * INNER_STEP * MAX_GRADIENT_NORM + 1e-5
    unbounded = InnerLoop(variant, HIDDEN, steps=50, max_gradient_norm=math.inf).adapt(initial, data)
    assert float(unbounded[0].abs().max()) > 1e3  # what the cap prevents


def test_unknown_variant_is_refused_by_name():
    with pytest.raises(PolicyError, match="meta-learner 'maml2' is unknown"):
        InnerLoop("maml2", HIDDEN)


@pytest.mark.parametrize("variant", ["maml", "meta-sgd", "meta-curvature", "reptile"])
def test_few_shot_planner_is_in_budget_and_never_worse_than_the_solver(tiny_world, variant):
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo="ppo", net_arch=(32, 32), method=variant, observation="network", observation_dim=NETWORK_OBSERVATION_DIM)
    policy = build_policy(metadata)
    planner = MetaFewShotPlanner(policy, metadata, InnerLoop(variant, 32))
    context = tiny_world.context(Task("vgg", "bismo-edge", Budget("bitops", 0.15)))
    result = planner.plan(context, 7, seed=0)
    solver = HawqPlanner().plan(context, 1, seed=0)
    assert result.evaluations_used <= 7 and result.cost_ratio <= context.budget.fraction * (1 + 1e-9)
    assert result.proxy_change >= solver.proxy_change - 1e-12 and result.info["adaptation_rounds"] >= 1
    assert planner.plan(context, 7, seed=0).plan == result.plan
    assert not math.isnan(result.proxy_change)


def test_few_shot_planner_refuses_a_policy_of_another_method():
    metadata = PolicyMetadata(algo="ppo", net_arch=(32, 32), method="residual", observation="network", observation_dim=NETWORK_OBSERVATION_DIM)
    with pytest.raises(PolicyError, match="--algo reptile"):
        MetaFewShotPlanner(build_policy(metadata), metadata, InnerLoop("maml", 32))
