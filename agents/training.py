"""Meta-training on a task suite: PPO (zero-shot), RecurrentPPO (RL^2) and Reptile.

A run folder holds everything needed to read, reproduce or resume the run::

    config.json        the resolved TrainConfig, seed, package and library versions
    checkpoints/       ckpt-<timesteps>.pt: weights + optimizer (loads with weights_only=True)
    tb/                TensorBoard logs (rollout/ep_rew_mean, eval/heldout_*)
    metrics.csv        periodic zero-shot evaluation on held-out tasks (monitoring only:
                       never used to select a checkpoint, so the held-out split stays clean)
    policy/            the final policy (safetensors + JSON), what `apply` loads

Resuming (``resume=True``) loads the newest checkpoint and trains the remaining steps.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

from metacompress._version import __version__
from metacompress.agents.learned import PolicyActor
from metacompress.agents.planner import rollout
from metacompress.agents.policy_io import PolicyMetadata, policy_kwargs, save_policy
from metacompress.agents.residual import solver_anchored
from metacompress.envs.compression_env import OBSERVATIONS, CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.envs.meta_env import MetaCompressEnv
from metacompress.envs.suite import default_suite
from metacompress.envs.tasks import Task
from metacompress.envs.world import DEFAULT_SEARCH_FINETUNE_STEPS, TaskWorld
from metacompress.envs.zoo.cache import default_cache_dir
from metacompress.envs.zoo.catalog import get_entry
from metacompress.errors import MetacompressError, RunExists

log = logging.getLogger(__name__)

METHODS = ("ppo", "rl2", "reptile", "residual")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run (defaults: the shipped default policy's recipe).

    Args:
        algo: ``ppo`` (zero-shot, task-conditioned), ``rl2`` (RecurrentPPO on K-attempt
            trials), ``reptile`` (first-order meta-learned initialisation) or ``residual``
            (PPO with the whole-network encoder on tasks anchored on the exact solver's plan,
            rewarded by the gain over it: ``agents.residual``).
        split: suite split to train on (``train``; held-out tasks are only monitored).
        timesteps: environment steps (one step = one unit decision).
        seed: seeds the suite sampling, the envs and the networks.
        models: restrict training tasks to these zoo models (empty = all of the split).
        max_model_macs: leave out the split's models above this many MACs per sample (their
            proxy costs 1-3 s on one core; on 2 cores the 60-minute budget buys more
            tasks without them). 0 keeps every model.
        n_envs: parallel environments; ``vec_env`` = ``subproc`` or ``dummy``.
        log_std_init: initial log std of the Gaussian policy; -1 explores near the anchor
            (action 0, the uniform plan that fits) rather than across the whole range.
        attempts: attempts per episode for ``rl2``.
        reptile_updates / reptile_step: inner PPO updates per task and outer step size.
        eval_every / eval_tasks: monitoring cadence (steps) and number of held-out tasks.
        checkpoint_every: steps between checkpoints.
        search_finetune_steps: KD steps in every proxy evaluation (the reward's recovery).
        validation_families: zoo families of the train split left out of training; their
            tasks form the validation split that picks the checkpoint (``residual``; the
            held-out split is never used to choose anything).
    """

    algo: str = "ppo"
    split: str = "train"
    timesteps: int = 200_000
    seed: int = 0
    models: tuple[str, ...] = ()
    max_model_macs: int = 3_000_000
    n_envs: int = 2
    vec_env: str = "subproc"
    n_steps: int = 256
    batch_size: int = 128
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    net_arch: tuple[int, ...] = (128, 128)
    log_std_init: float = -1.0
    lstm_hidden_size: int = 64
    attempts: int = 4
    reptile_updates: int = 4
    reptile_step: float = 0.5
    eval_every: int = 10_000
    eval_tasks: int = 8
    checkpoint_every: int = 10_000
    search_finetune_steps: int = DEFAULT_SEARCH_FINETUNE_STEPS
    validation_families: tuple[str, ...] = ()

    @property
    def observation(self) -> str:
        """The env observation the policy reads: the whole network for the residual planner."""
        return "network" if self.algo == "residual" else "step"

    def __post_init__(self) -> None:
        problems = []
        if self.algo not in METHODS:
            problems.append(f"algo {self.algo!r} is unknown (use {', '.join(METHODS)})")
        if self.timesteps < 1 or self.n_envs < 1:
            problems.append(f"timesteps and n_envs must be >= 1, got {self.timesteps} and {self.n_envs}")
        if self.vec_env not in ("subproc", "dummy"):
            problems.append(f"vec_env {self.vec_env!r} is unknown (use subproc or dummy)")
        if self.algo == "rl2" and self.attempts < 2:
            problems.append(f"rl2 needs attempts >= 2 per trial, got {self.attempts}")
        if problems:
            raise MetacompressError("invalid training config: " + "; ".join(problems))

    def metadata(self, training: dict) -> PolicyMetadata:
        return PolicyMetadata(
            observation=self.observation,
            observation_dim=OBSERVATIONS[self.observation],
            algo="recurrent_ppo" if self.algo == "rl2" else "ppo",
            net_arch=tuple(self.net_arch),
            lstm_hidden_size=self.lstm_hidden_size if self.algo == "rl2" else 0,
            attempts=self.attempts if self.algo == "rl2" else 1,
            method=self.algo,
            training=training,
        )


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
        world = TaskWorld(self.cache_dir, search_finetune_steps=self.search_finetune_steps)
        anchor = solver_anchored if self.observation == "network" else None
        return MetaCompressEnv(
            [Task.from_dict(t) for t in self.tasks], attempts=self.attempts, world=world, observation=self.observation, anchor=anchor
        )


def training_tasks(config: TrainConfig) -> list[Task]:
    """The tasks of ``config.split``, restricted to ``config.models`` if given."""
    from metacompress.envs.suite import model_spec

    tasks = default_suite().split(config.split)
    if config.models:
        tasks = [t for t in tasks if t.model in config.models]
    if config.max_model_macs:
        tasks = [t for t in tasks if model_spec(t.model).macs() <= config.max_model_macs]
    tasks = [t for t in tasks if get_entry(t.model).family not in config.validation_families]
    if not tasks:
        raise MetacompressError(f"no {config.split} tasks use models {list(config.models)}; see `metacompress suite list`")
    return tasks


def monitoring_tasks(config: TrainConfig) -> list[Task]:
    """A fixed, seeded sample of validation tasks if the config has a validation split, else of held-out tasks.

    Quick runs prefer small models.
    """
    from metacompress.envs.suite import model_spec
    from metacompress.envs.zoo.catalog import QUICK

    if config.eval_tasks <= 0:
        return []
    if config.validation_families:
        pool = [t for t in default_suite().split(config.split) if get_entry(t.model).family in config.validation_families]
        if config.max_model_macs:
            pool = [t for t in pool if model_spec(t.model).macs() <= config.max_model_macs]
        rng = np.random.default_rng(config.seed)
        picks = rng.choice(len(pool), size=min(config.eval_tasks, len(pool)), replace=False)
        return [pool[i] for i in sorted(picks)]
    heldout = default_suite().split("heldout")
    if config.models:
        quick = {e.id for e in QUICK}
        heldout = [t for t in heldout if t.model in quick or t.model in config.models] or heldout
    rng = np.random.default_rng(config.seed)
    picks = rng.choice(len(heldout), size=min(config.eval_tasks, len(heldout)), replace=False)
    return [heldout[i] for i in sorted(picks)]


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


class _HeldoutMonitor(BaseCallback):
    """Calls ``monitor_heldout`` every ``every`` steps; on a validation split keeps the best policy state."""

    def __init__(self, tasks: list[Task], world: TaskWorld, every: int, csv_path: Path, observation: str = "step",
                 split: str = "heldout") -> None:
        super().__init__()
        self.tasks, self.world, self.every, self.csv_path = tasks, world, every, csv_path
        self.observation, self.split = observation, split
        self.best: tuple[float, int, dict] | None = None
        self._anchored: dict[str, TaskContext] = {}
        self._next = every

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


class _Checkpointer(BaseCallback):
    """Saves weights + optimizer every ``every`` steps (atomic write, weights_only-safe)."""

    def __init__(self, folder: Path, every: int) -> None:
        super().__init__()
        self.folder, self.every = folder, every
        self._next = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            save_checkpoint(self.model, self.folder)
        return True


def save_checkpoint(model: PPO, folder: Path) -> Path:
    state = {"policy": model.policy.state_dict(), "optimizer": model.policy.optimizer.state_dict(), "num_timesteps": model.num_timesteps}
    return write_checkpoint(state, folder, model.num_timesteps)


def write_checkpoint(state: dict, folder: Path, timesteps: int) -> Path:
    """Write ``state`` (tensors and plain values only) to ``ckpt-<timesteps>.pt`` atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt-{timesteps:09d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("ckpt-*.pt"))
    return found[-1] if found else None


def _versions() -> dict:
    import gymnasium
    import stable_baselines3

    return {"metacompress": __version__, "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
            "gymnasium": gymnasium.__version__, "python": platform.python_version()}


def _prepare_run(out: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    if out.exists() and not (resume or overwrite):
        raise RunExists(f"{out} already exists; pass --resume to continue it, --overwrite to replace it, or another --out")
    if resume:
        if not (out / "config.json").exists():
            raise MetacompressError(f"cannot resume {out}: it has no config.json; start a new run instead")
        saved = json.loads((out / "config.json").read_text())["config"]
        if saved != json.loads(json.dumps(asdict(config))):
            raise MetacompressError(f"cannot resume {out} with a different config; rerun with the original flags (see {out / 'config.json'})")
        return
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"config": asdict(config), "versions": _versions()}, indent=2))


@dataclass
class TrainResult:
    out: Path
    policy_path: Path
    timesteps: int
    seconds: float
    final_monitor: dict = field(default_factory=dict)


def train(config: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train a policy per ``config`` into the run folder ``out`` (see the module docstring).

    Raises:
        RunExists: if ``out`` exists and neither ``resume`` nor ``overwrite`` is set.
        MetacompressError: on an invalid config or a resume with a different config.
    """
    out = Path(out)
    tasks = training_tasks(config)  # validate before any expensive step
    _prepare_run(out, config, resume, overwrite)
    start = time.perf_counter()
    if config.algo == "reptile":
        from metacompress.agents.reptile import train_reptile

        policy, timesteps, monitor = train_reptile(config, tasks, out, resume, progress)
    else:
        policy, timesteps, monitor = _train_ppo(config, tasks, out, resume, progress)
    seconds = time.perf_counter() - start
    training = {"config": asdict(config), "timesteps": timesteps, "seconds": round(seconds, 1), "tasks": len(tasks), "versions": _versions()}
    policy_path = save_policy(policy, config.metadata(training), out / "policy", overwrite=True)
    return TrainResult(out, policy_path, timesteps, seconds, monitor)


def _train_ppo(config: TrainConfig, tasks: list[Task], out: Path, resume: bool, progress: bool):
    attempts = config.attempts if config.algo == "rl2" else 1
    factory = EnvFactory([t.to_dict() for t in tasks], attempts, config.search_finetune_steps, str(default_cache_dir()), config.observation)
    _warm_caches(factory, tasks)
    vec_cls = SubprocVecEnv if config.vec_env == "subproc" and config.n_envs > 1 else DummyVecEnv
    venv = VecMonitor(vec_cls([factory] * config.n_envs))
    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    venv.seed(config.seed + (0 if checkpoint is None else int(checkpoint.stem.split("-")[1])))
    metadata = config.metadata({})
    common = dict(
        n_steps=config.n_steps, batch_size=config.batch_size, n_epochs=config.n_epochs, learning_rate=config.learning_rate,
        gamma=config.gamma, gae_lambda=config.gae_lambda, ent_coef=config.ent_coef, seed=config.seed, device="cpu",
        tensorboard_log=str(out / "tb"), policy_kwargs={**policy_kwargs(metadata), "log_std_init": config.log_std_init}, verbose=0,
    )
    if config.algo == "rl2":
        from sb3_contrib import RecurrentPPO

        model = RecurrentPPO("MlpLstmPolicy", venv, **common)
    else:
        model = PPO("MlpPolicy", venv, **common)
    if checkpoint is not None:
        state = torch.load(checkpoint, weights_only=True)
        model.policy.load_state_dict(state["policy"])
        model.policy.optimizer.load_state_dict(state["optimizer"])
        model.num_timesteps = int(state["num_timesteps"])
        log.info("resumed %s at %d steps", checkpoint, model.num_timesteps)
    world = TaskWorld(search_finetune_steps=config.search_finetune_steps)
    monitored = monitoring_tasks(config)
    callbacks = [_Checkpointer(out / "checkpoints", config.checkpoint_every)]
    split = "validation" if config.validation_families else "heldout"
    monitor = _HeldoutMonitor(monitored, world, config.eval_every, out / "metrics.csv", config.observation, split)
    if monitored:
        callbacks.append(monitor)
    remaining = config.timesteps - model.num_timesteps
    try:
        if remaining > 0:
            model.learn(remaining, callback=CallbackList(callbacks), progress_bar=progress,
                        reset_num_timesteps=checkpoint is None, tb_log_name=config.algo)
        save_checkpoint(model, out / "checkpoints")
        monitor.init_callback(model)
        final = monitor.evaluate() if monitored else {}
        if monitor.best is not None:  # the validation split picks the checkpoint
            score, at, state = monitor.best
            model.policy.load_state_dict(state)
            final = {**final, "chosen_timesteps": at, f"chosen_{split}_score": score}
    finally:
        venv.close()
    return model.policy, model.num_timesteps, final


def _warm_caches(factory: EnvFactory, tasks: list[Task]) -> None:
    """Train missing zoo models and compute probes once, before workers race to do it."""
    world = TaskWorld(factory.cache_dir, search_finetune_steps=factory.search_finetune_steps)
    for model_id in sorted({t.model for t in tasks}):
        world.model(model_id)


