"""AMC/HAQ-style baseline: DDPG trained from scratch on one task; the best plan seen wins.

AMC (He et al., ECCV 2018, section 3.2) and HAQ (Wang et al., CVPR 2019, section 3.4)
search each (model, hardware, budget) with DDPG from scratch: warm-up episodes of
uniformly random actions, then the actor's action plus truncated-normal exploration
noise whose scale decays every episode, gamma = 1, 300-300 actor and critic, and the
best plan seen during training is the answer. This module runs that schedule with SB3's
``DDPG`` on ``CompressionEnv(context)``, scaled to the episode budget (see
``DDPGPlanner.schedule``). ``evaluations`` is the number of episodes;
``evaluations_used`` counts the distinct plans among them (a repeat is a free cache hit).

Deviations from the papers' code, for SB3: the terminal reward is bootstrapped through
the episode with gamma = 1 instead of being copied to every transition minus a moving-
average baseline (AMC/HAQ ``ddpg.py``), and the actor uses tanh instead of a sigmoid.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DDPG
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.utils import update_learning_rate

from metacompress.agents.planner import PlanResult, ScoreBook, check_evaluations
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.errors import MetacompressError

TRUNCATION_TRIES = 64


class TruncatedNormalSchedule(ActionNoise):
    """AMC's exploration noise: truncated normal around the actor's action, decaying per episode.

    ``sigma(episode) = sigma * decay ** max(0, episode - warmup_episodes)`` in [0, 1] action
    units (AMC/HAQ's scale), i.e. twice that on this env's [-1, 1] box. SB3 calls ``reset``
    at every episode end, which advances the episode counter.

    Args:
        sigma: initial scale in [0, 1] action units (AMC/HAQ: 0.5).
        decay: per-episode decay after warm-up.
        warmup_episodes: episodes before the decay starts.
        dim: action dimensions.
        seed: seed of the noise's own generator.
    """

    def __init__(self, sigma: float, decay: float, warmup_episodes: int, dim: int, seed: int) -> None:
        super().__init__()
        self.initial_sigma, self.decay, self.warmup_episodes, self.dim = sigma, decay, warmup_episodes, dim
        self.episode = 0
        self.rng = np.random.default_rng(seed)

    @property
    def sigma(self) -> float:
        """The current scale in [-1, 1] action units."""
        return 2.0 * self.initial_sigma * self.decay ** max(0, self.episode - self.warmup_episodes)

    def __call__(self) -> np.ndarray:
        return self.rng.normal(0.0, self.sigma, self.dim)

    def around(self, mean: np.ndarray) -> np.ndarray:
        """A sample of the normal around ``mean`` truncated to [-1, 1] (resampling outliers)."""
        sample = mean + self()
        for _ in range(TRUNCATION_TRIES):
            outside = np.abs(sample) > 1.0
            if not outside.any():
                break
            sample = np.where(outside, mean + self(), sample)
        return np.clip(sample, -1.0, 1.0).astype(np.float32)

    def reset(self) -> None:
        self.episode += 1


class _AmcDDPG(DDPG):
    """SB3 DDPG with AMC's truncated-normal exploration and separate actor/critic learning rates."""

    def __init__(self, *args: Any, actor_lr: float, critic_lr: float, **kwargs: Any) -> None:
        super().__init__(*args, learning_rate=critic_lr, **kwargs)
        self.actor_lr, self.critic_lr = actor_lr, critic_lr

    def _sample_action(self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        action, buffer_action = super()._sample_action(learning_starts, None, n_envs)
        if isinstance(action_noise, TruncatedNormalSchedule) and self.num_timesteps >= learning_starts:
            # the action box is [-1, 1], so the stored (scaled) action is the action itself
            action = np.stack([action_noise.around(a) for a in buffer_action])
            buffer_action = action
        return action, buffer_action

    def _update_learning_rate(self, optimizers: Any) -> None:
        update_learning_rate(self.actor.optimizer, self.actor_lr)
        update_learning_rate(self.critic.optimizer, self.critic_lr)


class _Recorder(gym.Wrapper):
    """Hands every finished episode's plan and reward to the planner's score book."""

    def __init__(self, env: CompressionEnv, book: ScoreBook) -> None:
        super().__init__(env)
        self.book = book

    def step(self, action: np.ndarray):
        observation, reward, terminated, truncated, info = self.env.step(action)
        if terminated:
            self.book.record(info["plan"], float(reward))
        return observation, reward, terminated, truncated, info


@contextmanager
def _restored_global_rng() -> Iterator[None]:
    """SB3 seeds Python's, NumPy's and torch's global generators; give the caller theirs back."""
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


@dataclass(frozen=True)
class DDPGPlanner:
    """Per-task DDPG from scratch (AMC/HAQ), ``evaluations`` episodes; best plan seen.

    Defaults are the papers' (AMC code and HAQ ``rl_quantize.py``): 300-300 networks, actor
    lr 1e-4, critic lr 1e-3, tau 0.01, batch 64, gamma 1, replay buffer of 100 episodes,
    noise 0.5 decaying by 0.95 per episode after warm-up. Shrink ``hidden`` for speed on
    tiny tasks.

    Args:
        hidden: hidden layer widths of actor and critic.
        warmup_fraction: share of episodes with uniformly random actions (AMC paper: 100 of 400).
        sigma: initial exploration scale in [0, 1] action units.
        decay: per-episode noise decay at the reference schedule.
        reference_decay_episodes: decaying episodes that ``decay`` is quoted for (AMC: 300).
        actor_lr: actor learning rate.
        critic_lr: critic learning rate.
        tau: target-network soft-update rate.
        batch_size: minibatch size.
        buffer_episodes: replay buffer capacity in episodes.
        name: label in reports.
    """

    hidden: tuple[int, ...] = (300, 300)
    warmup_fraction: float = 0.25
    sigma: float = 0.5
    decay: float = 0.95
    reference_decay_episodes: int = 300
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    buffer_episodes: int = 100
    name: str = "ddpg"

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.warmup_fraction <= 1.0:
            problems.append(f"warmup_fraction {self.warmup_fraction} outside [0, 1]")
        if not 0.0 < self.decay <= 1.0:
            problems.append(f"decay {self.decay} outside (0, 1]")
        if self.sigma < 0 or not self.hidden or min(self.hidden) < 1:
            problems.append(f"sigma {self.sigma} must be >= 0 and hidden {self.hidden} non-empty positive widths")
        if problems:
            raise MetacompressError(
                "DDPGPlanner settings are invalid: " + "; ".join(problems)
                + "; the AMC defaults are warmup_fraction=0.25, decay=0.95, sigma=0.5, hidden=(300, 300)"
            )

    def schedule(self, episodes: int) -> tuple[int, float]:
        """(warm-up episodes, per-episode noise decay) for an episode budget.

        AMC's paper runs 100 random episodes then 300 with sigma falling by 0.95 each; a
        budget of E episodes keeps the warm-up share and the total decay over the rest:
        ``decay ** (reference_decay_episodes / (E - warmup))`` per episode.
        """
        warmup = min(episodes, max(1, round(self.warmup_fraction * episodes)))
        return warmup, self.decay ** (self.reference_decay_episodes / max(episodes - warmup, 1))

    def plan(self, context: TaskContext, evaluations: int = 300, seed: int = 0) -> PlanResult:
        """Train DDPG for ``evaluations`` episodes on the task; return the best plan seen."""
        check_evaluations(self.name, evaluations)
        units = len(context.decision_units)
        warmup, decay = self.schedule(evaluations)
        book = ScoreBook(context, evaluations, evaluations)
        noise = TruncatedNormalSchedule(self.sigma, decay, warmup, 3, seed)
        with _restored_global_rng():
            model = _AmcDDPG(
                "MlpPolicy",
                _Recorder(book.env, book),
                actor_lr=self.actor_lr,
                critic_lr=self.critic_lr,
                buffer_size=self.buffer_episodes * units,
                learning_starts=warmup * units,
                batch_size=self.batch_size,
                tau=self.tau,
                gamma=1.0,
                train_freq=(1, "episode"),
                gradient_steps=-1,
                action_noise=noise,
                policy_kwargs={"net_arch": list(self.hidden)},
                seed=seed,
                device="cpu",
                verbose=0,
            )
            # SB3's default logger makes an empty SB3-<date> folder in the temp dir on every learn()
            model.set_logger(Logger(folder=None, output_formats=[]))
            model.learn(total_timesteps=evaluations * units)
        return book.result(warmup_episodes=warmup, noise_decay=decay, final_sigma=noise.sigma)
