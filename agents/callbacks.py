"""The parts of a training run around the learner: worker envs, periodic evaluation, checkpoints.

``EnvFactory`` builds one worker's meta env; ``monitor_heldout`` / ``MonitorCallback`` evaluate
the policy zero-shot on the monitored tasks (the validation split picks the checkpoint; the
held-out split is only ever monitored); ``Checkpointer`` saves between PPO updates. The PPO
loop (``agents.training``) uses them.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from metacompress.agents.checkpoints import save_checkpoint
from metacompress.agents.learned import PolicyActor
from metacompress.agents.planner import rollout
from metacompress.agents.residual import solver_anchored
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.envs.meta_env import MetaCompressEnv
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld

log = logging.getLogger(__name__)

@dataclass
class EnvFactory:
    """Builds one worker's meta env (picklable, so SubprocVecEnv workers can call it)."""

    tasks: list[dict]
    attempts: int
    search_finetune_steps: int
    cache_dir: str
    observation: str = "step"

    def __call__(self) -> MetaCompressEnv:
        torch.set_num_threads(1)  # one core per worker: no oversubscription on small machines
        if multiprocessing.parent_process() is not None:
            # a worker: Ctrl-C is the main process's to handle (it keeps a resume point and closes
            # the workers); a worker killed by it would make the main process fail with EOFError
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        world = TaskWorld(self.cache_dir, search_finetune_steps=self.search_finetune_steps)
        anchor = solver_anchored if self.observation == "network" else None
        return MetaCompressEnv(
            [Task.from_dict(t) for t in self.tasks], attempts=self.attempts, world=world, observation=self.observation, anchor=anchor
        )


def monitor_heldout(
    policy, tasks: list[Task], world: TaskWorld, timesteps: int, csv_path: Path, logger=None, observation: str = "step",
    split: str = "heldout", anchored: dict[str, TaskContext] | None = None,
) -> dict:
    """Zero-shot rollouts of ``policy`` on monitored tasks; appended to ``metrics.csv``.

    On held-out tasks this is monitoring only: no checkpoint is ever chosen by it, so the
    held-out split never influences training. On validation tasks (``split="validation"``)
    the residual trainer keeps the checkpoint with the best ``validation_gain`` (the mean
    proxy gain over the solver's plan). ``anchored`` caches the solver-anchored contexts.
    """
    rewards, gains, ratios = [], [], []
    anchored = {} if anchored is None else anchored
    for task in tasks:
        context = world.context(task)
        if observation == "network":
            if task.id not in anchored:
                anchored[task.id] = solver_anchored(context)
            context = anchored[task.id]
        _, change, info = rollout(CompressionEnv(context, observation=observation), PolicyActor(policy, deterministic=True))
        rewards.append(change)
        gains.append(change - context.baseline_change)
        ratios.append(info["budget_ratio"])
    row = {"timesteps": timesteps, f"{split}_accuracy_change": float(np.mean(rewards)), f"{split}_budget_ratio": float(np.mean(ratios))}
    if observation == "network":
        row[f"{split}_gain"] = float(np.mean(gains))
    if logger is not None:
        for key, value in row.items():
            if key != "timesteps":
                logger.record(f"eval/{key}", value)
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    return row


class MonitorCallback(BaseCallback):
    """Calls ``monitor_heldout`` every ``every`` steps; on a validation split keeps the best policy state."""

    def __init__(self, tasks: list[Task], world: TaskWorld, every: int, csv_path: Path, observation: str = "step",
                 split: str = "heldout") -> None:
        super().__init__()
        self.tasks, self.world, self.every, self.csv_path = tasks, world, every, csv_path
        self.observation, self.split = observation, split
        self.best: tuple[float, int, dict] | None = None
        self._anchored: dict[str, TaskContext] = {}
        self._next = every

    def _on_training_start(self) -> None:
        self._next = _next_multiple(self.model.num_timesteps, self.every)  # a resumed run: no repeat of a row it has

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.evaluate()
        return True

    def evaluate(self) -> dict:
        row = monitor_heldout(self.model.policy, self.tasks, self.world, self.num_timesteps, self.csv_path, self.logger,
                              self.observation, self.split, self._anchored)
        score = row.get(f"{self.split}_gain", row[f"{self.split}_accuracy_change"])
        if self.split == "validation" and (self.best is None or score > self.best[0]):
            state = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}
            self.best = (score, self.num_timesteps, state)
        return row


def _next_multiple(timesteps: int, every: int) -> int:
    """The first multiple of ``every`` after ``timesteps``."""
    return (timesteps // every + 1) * every


class Checkpointer(BaseCallback):
    """Saves weights + optimizer once ``every`` steps have passed, between PPO updates (atomic, weights_only-safe).

    Saved at the start of a rollout, i.e. after the previous update: a checkpoint taken
    mid-rollout would lose that rollout's steps and shift every later step count.
    """

    def __init__(self, folder: Path, every: int) -> None:
        super().__init__()
        self.folder, self.every = folder, every
        self._next = every

    def _on_training_start(self) -> None:
        self._next = _next_multiple(self.model.num_timesteps, self.every)  # a resumed run: no checkpoint at its start

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps >= self._next:
            self._next = _next_multiple(self.model.num_timesteps, self.every)
            save_checkpoint(self.model, self.folder)

    def _on_step(self) -> bool:
        return True
