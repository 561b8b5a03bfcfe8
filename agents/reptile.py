"""Reptile (Nichol, Achiam & Schulman 2018): a first-order meta-learned PPO initialisation.

Outer loop: sample a training task, run a few PPO updates on it from the current
initialisation, and move the initialisation toward the adapted weights by a step that
anneals linearly to zero. The result is a starting point from which a few PPO updates on
a new task (``ReptilePlanner``) find a good plan: the few-shot setting.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from tqdm import tqdm

from metacompress.agents.policy_io import build_policy, policy_kwargs
from metacompress.agents.checkpoints import latest_checkpoint, load_checkpoint, write_checkpoint
from metacompress.agents.callbacks import monitor_heldout
from metacompress.agents.train_config import TrainConfig, monitoring_tasks
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld

log = logging.getLogger(__name__)

EPISODES_PER_UPDATE = 8


def train_reptile(config: TrainConfig, tasks: list[Task], out: Path, resume: bool, progress: bool):
    """Meta-train an initialisation; returns (policy, timesteps, last monitoring row)."""
    torch.set_num_threads(1)
    world = TaskWorld(search_finetune_steps=config.search_finetune_steps)
    meta_policy = build_policy(config.metadata({}))
    iteration = timesteps = 0
    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        meta_policy.load_state_dict(state["policy"])
        iteration, timesteps = int(state["iteration"]), int(state["num_timesteps"])
    rng = np.random.default_rng([config.seed, iteration])
    logger = configure(str(out / "tb" / "reptile"), ["tensorboard", "csv"])
    monitored = monitoring_tasks(config)
    next_checkpoint = (timesteps // config.checkpoint_every + 1) * config.checkpoint_every
    next_eval = (timesteps // config.eval_every + 1) * config.eval_every
    bar = tqdm(total=config.timesteps, initial=timesteps, disable=not progress, desc="reptile")
    while timesteps < config.timesteps:
        task = tasks[int(rng.integers(len(tasks)))]
        context = world.context(task)
        n_steps = len(context.decision_units) * EPISODES_PER_UPDATE
        inner = PPO(
            "MlpPolicy", CompressionEnv(context), n_steps=n_steps, batch_size=n_steps, n_epochs=4, gamma=config.gamma,
            gae_lambda=config.gae_lambda, learning_rate=config.learning_rate, seed=config.seed + iteration, device="cpu",
            policy_kwargs=policy_kwargs(config.metadata({})), verbose=0,
        )
        inner.policy.load_state_dict(meta_policy.state_dict())
        inner.learn(n_steps * config.reptile_updates)
        step = config.reptile_step * (1.0 - timesteps / config.timesteps)
        with torch.no_grad():
            adapted = inner.policy.state_dict()
            for name, value in meta_policy.state_dict().items():
                value.add_(step * (adapted[name] - value))
        timesteps += n_steps * config.reptile_updates
        iteration += 1
        bar.update(n_steps * config.reptile_updates)
        rewards = [info["r"] for info in inner.ep_info_buffer]
        logger.record("reptile/inner_ep_rew_mean", float(np.mean(rewards)) if rewards else 0.0)
        logger.record("reptile/outer_step", step)
        if timesteps >= next_checkpoint:
            next_checkpoint += config.checkpoint_every
            write_checkpoint({"policy": meta_policy.state_dict(), "iteration": iteration, "num_timesteps": timesteps}, out / "checkpoints", timesteps)
        if monitored and timesteps >= next_eval:
            next_eval += config.eval_every
            monitor_heldout(meta_policy, monitored, world, timesteps, out / "metrics.csv", logger)
        logger.dump(timesteps)
    bar.close()
    write_checkpoint({"policy": meta_policy.state_dict(), "iteration": iteration, "num_timesteps": timesteps}, out / "checkpoints", timesteps)
    final = monitor_heldout(meta_policy, monitored, world, timesteps, out / "metrics.csv", logger) if monitored else {}
    return meta_policy, timesteps, final
