"""The learned planners: a trained policy, used zero-shot or adapted with a few evaluations.

- ``ZeroShotPlanner``: one deterministic rollout of the task-conditioned policy. The plan
  is chosen without any proxy evaluation (the env still scores it, for the report).
- ``SampleAndSelectPlanner``: the deterministic rollout plus stochastic ones until N
  distinct plans were scored; the best by proxy is kept. Stochastic rollouts add
  Gaussian noise of a fixed width to the policy's (clipped) mean action: a trained
  policy's own Gaussian often sits far outside [-1, 1] on some coordinate (e.g. "never
  prune"), where its samples all clip to the same action and yield the same plan.
- ``RL2Planner``: a recurrent (RecurrentPPO) policy trained on K-attempt trials (RL^2,
  Duan et al. 2016): one episode of N attempts in which the policy sees each attempt's
  reward and plan summary; the best attempt is kept.

Reptile and the other optimisation-based meta-learners adapt the residual policy's head:
``agents.meta_adapt``.

Every planner follows the evaluation-counting rule of ``agents.planner``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy

from metacompress.agents.planner import PlanResult, ScoreBook, check_evaluations, rollout
from metacompress.agents.policy_io import PolicyMetadata, load_policy
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.errors import PolicyError


class PolicyActor:
    """Calls a (possibly recurrent) SB3 policy step by step through one episode.

    Args:
        policy: the network.
        deterministic: act with the mean action (else sample the policy's Gaussian).
        noise: if > 0, act with the clipped mean plus N(0, noise^2) drawn from ``rng``
            (exploration of fixed width around the policy's choice).
    """

    def __init__(self, policy: ActorCriticPolicy, deterministic: bool, noise: float = 0.0, rng: np.random.Generator | None = None) -> None:
        self.policy, self.deterministic, self.noise, self.rng = policy, deterministic or noise > 0, noise, rng
        self.state = None
        self.episode_start = np.ones((1,), dtype=bool)

    def __call__(self, observation: np.ndarray, step: int = 0) -> np.ndarray:
        action, self.state = self.policy.predict(
            observation[None], state=self.state, episode_start=self.episode_start, deterministic=self.deterministic
        )
        self.episode_start = np.zeros((1,), dtype=bool)
        if self.noise > 0:
            return np.clip(action[0], -1.0, 1.0) + self.rng.normal(0.0, self.noise, action[0].shape).astype(np.float32)
        return action[0]


class ZeroShotPlanner:
    """One deterministic rollout of a trained policy: a plan at once, no evaluations used."""

    name = "zero-shot"

    def __init__(self, policy: ActorCriticPolicy, metadata: PolicyMetadata) -> None:
        self.policy, self.metadata = policy, metadata

    @classmethod
    def load(cls, path) -> "ZeroShotPlanner":
        return cls(*load_policy(path))

    def plan(self, context: TaskContext, evaluations: int = 0, seed: int = 0) -> PlanResult:
        start = time.perf_counter()
        plan, reward, info = rollout(context, PolicyActor(self.policy, deterministic=True))
        return PlanResult(
            plan, reward, 0, time.perf_counter() - start, info["cost_ratio"],
            {"note": "proxy measured for the report only; the plan was chosen without evaluations", "decisions": info["decisions"]},
        )


class SampleAndSelectPlanner(ZeroShotPlanner):
    """Deterministic rollout + noisy rollouts around it, best of N distinct plans by proxy."""

    name = "few-shot-sample"
    noise = 0.35  # action-space std of the exploration around the policy's mean action

    def plan(self, context: TaskContext, evaluations: int = 30, seed: int = 0) -> PlanResult:
        check_evaluations(self.name, evaluations)
        book = ScoreBook(context, evaluations, max_episodes=4 * evaluations)
        rng = np.random.default_rng(seed)
        plan, reward, info = rollout(book.env, PolicyActor(self.policy, deterministic=True))
        book.record(plan, reward, decisions=info["decisions"])
        while not book.exhausted:  # noisy rollouts drawn a batch at a time, scored together (envs.executor)
            book.run_actors(lambda: PolicyActor(self.policy, deterministic=True, noise=self.noise, rng=rng))
        return book.result()


class RL2Planner(ZeroShotPlanner):
    """A recurrent policy's N-attempt trial on the task; the best attempt is kept."""

    name = "few-shot-rl2"

    def __init__(self, policy: ActorCriticPolicy, metadata: PolicyMetadata) -> None:
        if metadata.algo != "recurrent_ppo":
            raise PolicyError(f"RL^2 needs a recurrent policy (trained with --algo rl2); this one is {metadata.algo!r}")
        super().__init__(policy, metadata)

    def plan(self, context: TaskContext, evaluations: int = 30, seed: int = 0) -> PlanResult:
        check_evaluations(self.name, evaluations)
        book = ScoreBook(context, evaluations, max_episodes=evaluations)
        env = CompressionEnv(context, attempts=evaluations)
        actor = PolicyActor(self.policy, deterministic=False)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            observation, _ = env.reset(seed=seed)
            done = False
            while not done:
                observation, reward, done, _, info = env.step(actor(observation))
                if "plan" in info:
                    book.record(info["plan"], reward, decisions=info.get("decisions"))
        return book.result()

