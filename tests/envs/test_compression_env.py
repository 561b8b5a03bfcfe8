"""CompressionEnv / MetaCompressEnv: checkers, hard budgets, bounded observations, determinism."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from metacompress import InfeasibleBudget
from metacompress.compressors.hardware import ARCHETYPES
from metacompress.compressors.budget import Budget
from metacompress.envs import COMPRESS_ID, META_COMPRESS_ID, CompressionEnv, MetaCompressEnv, Task
from metacompress.envs.features import OBSERVATION_DIM, TRIAL_OFFSET
from metacompress.envs.tasks import sampled_hardware_name
from tiny_models import TINY_MODELS

TASK = Task("resnet", "bismo-edge", Budget("bitops", 0.2))


def run_episode(env, seed: int, actions_seed: int | None = None):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed if actions_seed is None else actions_seed)
    trace, done = [obs], False
    while not done:
        obs, reward, done, truncated, info = env.step(env.action_space.sample())
        trace.append(obs)
    return np.array(trace), reward, info


def test_checkers_pass(tiny_world):
    env = CompressionEnv(tiny_world.context(TASK))
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)
    meta = MetaCompressEnv([TASK, Task("mlp", "m7-mcu", Budget("size", 0.3))], world=tiny_world)
    gym_check_env(meta, skip_render_check=True)
    sb3_check_env(meta, warn=True)


def test_registered_ids_make_the_envs(tiny_world):
    env = gym.make(COMPRESS_ID, context=tiny_world.context(TASK))
    assert env.observation_space.shape == (OBSERVATION_DIM,)
    meta = gym.make(META_COMPRESS_ID, tasks=[TASK], world=tiny_world)
    assert meta.action_space.shape == (3,)


def random_tasks(count: int, seed: int) -> list[Task]:
    rng = np.random.default_rng(seed)
    kinds = ["latency", "energy", "size", "bitops"]
    return [
        Task(
            str(rng.choice(sorted(TINY_MODELS))),
            sampled_hardware_name(str(rng.choice(ARCHETYPES)), int(rng.integers(1000))),
            Budget(str(rng.choice(kinds)), float(np.round(rng.uniform(0.05, 0.9), 3))),
        )
        for _ in range(count)
    ]


def test_every_finished_episode_is_within_budget_over_200_random_tasks(tiny_world):
    finished = infeasible = 0
    for i, task in enumerate(random_tasks(200, seed=1)):
        try:
            context = tiny_world.context(task)
        except InfeasibleBudget as exc:
            assert "the most compressed plan" in str(exc) and "Raise the budget" in str(exc)
            infeasible += 1
            continue
        trace, _, info = run_episode(CompressionEnv(context), seed=i)
        assert np.isfinite(trace).all() and trace.min() >= -1 and trace.max() <= 1
        assert info["budget_ratio"] <= 1 + 1e-9, task.id
        assert info["cost_ratio"] <= task.budget.fraction * (1 + 1e-9)
        finished += 1
    assert finished >= 100  # most random tasks are feasible; the rest were refused clearly


def test_same_seed_same_episode(tiny_world):
    context = tiny_world.context(TASK)
    first, second = run_episode(CompressionEnv(context), 7), run_episode(CompressionEnv(context), 7)
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]
    assert first[2]["plan"] == second[2]["plan"]
    other = run_episode(CompressionEnv(context), 7, actions_seed=8)
    assert other[2]["plan"] != first[2]["plan"]


def test_meta_env_samples_tasks_by_seed(tiny_world):
    tasks = [TASK, Task("mlp", "m7-mcu", Budget("size", 0.3)), Task("vgg", "t4-int4", Budget("energy", 0.4))]
    names = lambda seed: [MetaCompressEnv(tasks, world=tiny_world).reset(seed=seed)[1]["task"] for _ in range(1)]
    env = MetaCompressEnv(tasks, world=tiny_world)
    env.reset(seed=3)
    sequence = [env.reset()[1]["task"] for _ in range(12)]
    env.reset(seed=3)
    assert sequence == [env.reset()[1]["task"] for _ in range(12)]
    assert len(set(sequence)) > 1 and names(0) == names(0)


def test_infeasible_action_is_projected_and_logged(tiny_world):
    env = CompressionEnv(tiny_world.context(Task("vgg", "bismo-edge", Budget("bitops", 0.05))))
    env.reset(seed=0)
    _, _, _, _, info = env.step(-np.ones(3, dtype=np.float32))  # no compression at all: too dear
    raw_prune, raw_w, raw_a = info["raw_action"]
    kept, w_bits, a_bits = info["executed_action"]
    assert raw_prune == 0 and (raw_w, raw_a) == (8, 8)
    assert w_bits < 8 or a_bits < 8 or kept < 8


def test_trial_mode_runs_k_attempts_with_feedback(tiny_world):
    env = CompressionEnv(tiny_world.context(TASK), attempts=3)
    obs, _ = env.reset(seed=0)
    assert not obs[TRIAL_OFFSET : TRIAL_OFFSET + 7].any()
    rewards, done, steps = [], False, 0
    while not done:
        obs, reward, done, _, info = env.step(env.action_space.sample())
        steps += 1
        if "plan" in info:
            rewards.append(reward)
            if not done:
                assert obs[TRIAL_OFFSET] == pytest.approx(len(rewards) / 3)
                assert obs[TRIAL_OFFSET + 1] == pytest.approx(reward, abs=1e-6)
    assert len(rewards) == 3 and steps == 3 * len(env.context.decision_units)


def test_repeated_plans_hit_the_cache(tiny_world):
    context = tiny_world.context(Task("mlp", "t4-int4", Budget("size", 0.5)))
    env = CompressionEnv(context)
    hits = context.evaluator.stats.cache_hits
    for _ in range(3):
        env.reset(seed=0)
        done = False
        while not done:
            _, _, done, _, _ = env.step(np.zeros(3, dtype=np.float32))
    assert context.evaluator.stats.cache_hits >= hits + 2


def test_render_ansi_shows_decisions(tiny_world):
    env = CompressionEnv(tiny_world.context(TASK), render_mode="ansi")
    env.reset(seed=0)
    env.step(np.zeros(3, dtype=np.float32))
    text = env.render()
    assert "stem.0+1" in text and "kept" in text


def test_zero_action_is_the_uniform_anchor_that_fits(tiny_world):
    from metacompress.envs.actions import levels_to_choice

    context = tiny_world.context(Task("resnet", "bismo-edge", Budget("bitops", 0.2)))
    projector, codec = context.projector, context.codec

    def uniform_fits(levels):
        choice = levels_to_choice(levels, context.max_prune)
        return projector.fits(*projector.executed_vectors([choice] * len(context.decision_units)))

    assert uniform_fits(codec.anchor)
    assert not uniform_fits(codec.anchor - 0.02)  # the least compression that fits
    trace, _, info = run_episode(CompressionEnv(context), seed=0)
    env = CompressionEnv(context)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, done, _, info = env.step(np.zeros(3, dtype=np.float32))
    anchor = codec.choice(np.zeros(3, dtype=np.float32), 0)
    assert all(row["raw_w_bits"] == anchor.w_bits for row in info["decisions"])  # projection never acted
    assert info["budget_ratio"] <= 1
    for choice in [anchor, codec.choice(np.array([0.5, -0.3, 0.9], dtype=np.float32), 0)]:
        again = codec.choice(codec.action(choice, 0), 0)
        assert (again.w_bits, again.a_bits) == (choice.w_bits, choice.a_bits)
        assert abs(again.prune_ratio - choice.prune_ratio) < 1e-6
