"""A short PPO run on the meta env learns (slow: `pytest -m slow`, about 3-5 minutes)."""

from __future__ import annotations

import numpy as np
import pytest

from metacompress.agents.learned import PolicyActor
from metacompress.agents.planner import rollout
from metacompress.agents.policy_io import load_policy
from metacompress.agents.training import TrainConfig, train, training_tasks
from metacompress.envs.world import TaskWorld

QUICK_TRAIN_MODELS = ("mlp-w64-d1-digits", "cnn1d-w16-d2-mnist1d", "vgg-w8-d1-digits", "resnet-w8-d1-digits")


@pytest.mark.slow
def test_ppo_beats_random_actions_on_training_tasks(tmp_path):
    config = TrainConfig(timesteps=20_000, models=QUICK_TRAIN_MODELS, eval_tasks=0, checkpoint_every=10**9)
    result = train(config, tmp_path / "run", progress=False)
    policy, _ = load_policy(result.policy_path)
    world = TaskWorld()
    tasks = training_tasks(config)
    picks = np.random.default_rng(1).choice(len(tasks), 40, replace=False)
    learned, random_actions = [], []
    for i in picks:
        context = world.context(tasks[i])
        learned.append(rollout(context, PolicyActor(policy, deterministic=True))[1])
        actions = np.random.default_rng(int(i)).uniform(-1, 1, (len(context.decision_units), 3))
        random_actions.append(rollout(context, actions)[1])
    assert np.mean(learned) > np.mean(random_actions) + 0.05  # measured: -0.43 vs -0.58
