"""Meta-training on a task suite: PPO (zero-shot), RecurrentPPO (RL^2) and the head meta-learners (``agents.meta_train``).

A run folder holds everything needed to read, reproduce or resume the run::

    config.json        the resolved TrainConfig, seed, package and library versions
    checkpoints/       ckpt-<timesteps>.pt: weights + optimizer (loads with weights_only=True)
    tb/                TensorBoard logs (rollout/ep_rew_mean, eval/heldout_*)
    metrics.csv        periodic zero-shot evaluation on held-out tasks (monitoring only:
                       never used to select a checkpoint, so the held-out split stays clean)
    policy/            the final policy (safetensors + JSON), what `apply` loads

``relation`` and ``prototypical`` fit a unit predictor instead (``agents.predictor_training``):
no checkpoints, TensorBoard or monitoring; ``policy/`` is the predictor folder
(``agents.predictor_io``) and ``config.json`` the config.

The folder is a ``metacompress.compressors.runs.RunFolder`` of kind ``train``: a new run is built in a
temporary sibling and renamed into place at the end, so ``--overwrite`` keeps the old run
until the new one is complete. Ctrl-C keeps the partial run only once it has a checkpoint
(a resume point); before that the old run, if any, stays as it was.

Checkpoints are taken between PPO updates (at the start of a rollout), so resuming
(``resume=True``) from the newest one repeats no update and ends at the same step count as
an uninterrupted run. Resuming a finished run trains nothing and writes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

from metacompress.agents.callbacks import EnvFactory, Checkpointer, MonitorCallback
from metacompress.agents.ray_vec_env import RayVecEnv
from metacompress.agents.meta_train import train_meta
from metacompress.agents.predictor_io import is_predictor, save_predictor
from metacompress.agents.predictor_training import fit_predictor
from metacompress.agents.train_config import META_METHODS, PREDICTOR_METHODS, TrainConfig, monitoring_tasks, training_tasks
from metacompress.agents.checkpoints import check_resume, checkpoint_timesteps, latest_checkpoint, load_checkpoint, save_checkpoint
from metacompress.agents.policy_io import policy_kwargs, save_policy
from metacompress.envs.executor import check_reachable
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld
from metacompress.envs.zoo.cache import default_cache_dir
from metacompress.errors import MetacompressError, RunInterrupted
from metacompress.compressors.runs import RunFolder, versions

log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    """What ``train`` did: ``trained`` is the steps this call ran (0: the run was already complete)."""

    out: Path
    policy_path: Path
    timesteps: int
    seconds: float
    final_monitor: dict = field(default_factory=dict)
    trained: int = 0


def train(config: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False, progress: bool = True,
          ray_address: str | None = None) -> TrainResult:
    """Train a policy per ``config`` into the run folder ``out`` (see the module docstring).

    ``ray_address`` (``auto`` or HOST:PORT) is the cluster a ``vec_env="ray"`` run collects
    rollouts on (None: a local one); where rollouts run is not part of the config, so a run
    may resume on another cluster.

    Raises:
        RunExists: if ``out`` exists and neither ``resume`` nor ``overwrite`` is set, or
            ``overwrite`` is set and ``out`` is not a train run.
        MetacompressError: on an invalid config or a resume with a different config.
        RunInterrupted: on Ctrl-C; its message says what was kept and how to continue.
    """
    out = Path(out)
    folder = RunFolder(out, "train", overwrite)
    if resume:  # every check before any expensive step (the zoo models, the workers)
        check_resume(folder, asdict(config))
    else:
        folder.check(hint="pass --resume to continue it, --overwrite to replace it, or another --out")
    if config.vec_env == "ray" and ray_address not in (None, "auto"):
        check_reachable(ray_address)  # before any zoo model or probe is built
    tasks = training_tasks(config)
    if resume and config.algo in PREDICTOR_METHODS and is_predictor(out / "policy"):
        return TrainResult(out, out / "policy", 0, 0.0)  # a fit has no resume point: it is done or it is not
    if resume:
        done = checkpoint_timesteps(latest_checkpoint(out / "checkpoints"))
        if done >= config.timesteps and (out / "policy" / "policy.json").exists():
            return TrainResult(out, out / "policy", done, 0.0)
        return _interruptible(lambda: _train_into(out, config, tasks, True, progress, ray_address), out, kept=lambda: True)
    swapped: list[bool] = []

    def keep_partial(tmp: Path) -> bool:
        """A failed or interrupted new run replaces ``out`` only once it has a resume point."""
        swapped.append(latest_checkpoint(tmp / "checkpoints") is not None)
        return swapped[-1]

    def run() -> TrainResult:
        with folder.write(asdict(config), keep_partial=keep_partial) as tmp:
            result = _train_into(tmp, config, tasks, False, progress, ray_address)
        return replace(result, out=out, policy_path=out / "policy")

    return _interruptible(run, out, kept=lambda: any(swapped))


def _interruptible(run: Callable[[], TrainResult], out: Path, kept: Callable[[], bool]) -> TrainResult:
    """Run ``run``; turn Ctrl-C into a ``RunInterrupted`` saying where the resume point is.

    ``kept()`` says, after the fact, whether ``out`` now holds the interrupted run.
    """
    try:
        return run()
    except KeyboardInterrupt as exc:
        checkpoint = latest_checkpoint(out / "checkpoints") if kept() else None
        if checkpoint is not None:
            message = (f"training stopped; {out} keeps its checkpoint at {checkpoint_timesteps(checkpoint):,} steps: "
                       "continue it with the same command plus --resume")
        else:
            message = f"training stopped before its first checkpoint; nothing was written to {out} (an old run there is untouched)"
        raise RunInterrupted(message) from exc


def _train_into(out: Path, config: TrainConfig, tasks: list[Task], resume: bool, progress: bool,
                ray_address: str | None = None) -> TrainResult:
    if config.algo in PREDICTOR_METHODS:
        return _fit_predictor_into(out, config, tasks)
    start = time.perf_counter()
    before = checkpoint_timesteps(latest_checkpoint(out / "checkpoints")) if resume else 0
    meta: dict = {}
    if config.algo in META_METHODS:
        policy, timesteps, monitor, meta = train_meta(config, tasks, out, resume, progress)
    else:
        policy, timesteps, monitor = _train_ppo(config, tasks, out, resume, progress, ray_address)
    seconds = time.perf_counter() - start
    training = {"config": asdict(config), "timesteps": timesteps, "seconds": round(seconds, 1), "tasks": len(tasks), "versions": versions()}
    policy_path = save_policy(policy, config.metadata(training), out / "policy", overwrite=True, extra=meta)
    return TrainResult(out, policy_path, timesteps, seconds, monitor, trained=timesteps - before)


def _fit_predictor_into(out: Path, config: TrainConfig, tasks: list[Task]) -> TrainResult:
    """Measure (or read cached) option tables of the training models, fit the predictor, save it to ``out/policy``."""
    world = TaskWorld(search_finetune_steps=config.search_finetune_steps)
    predictor, record = fit_predictor(config.algo, tasks, config.predictor_models, set(config.validation_families),
                                      seed=config.seed, steps=config.predictor_steps, world=world)
    training = {"config": asdict(config), **record, "versions": versions()}
    policy_path = save_predictor(predictor, out / "policy", overwrite=True, training=training)
    return TrainResult(out, policy_path, 0, record["seconds"], record, trained=record["units"])


def _train_ppo(config: TrainConfig, tasks: list[Task], out: Path, resume: bool, progress: bool, ray_address: str | None = None):
    attempts = config.attempts if config.algo == "rl2" else 1
    factory = EnvFactory([t.to_dict() for t in tasks], attempts, config.search_finetune_steps, str(default_cache_dir()), config.observation)
    _warm_caches(factory, tasks)
    if config.vec_env == "ray":
        venv = VecMonitor(RayVecEnv([factory] * config.n_envs, ray_address))
    else:
        vec_cls = SubprocVecEnv if config.vec_env == "subproc" and config.n_envs > 1 else DummyVecEnv
        venv = VecMonitor(vec_cls([factory] * config.n_envs))
    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    venv.seed(config.seed + checkpoint_timesteps(checkpoint))
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
        state = load_checkpoint(checkpoint)
        model.policy.load_state_dict(state["policy"])
        model.policy.optimizer.load_state_dict(state["optimizer"])
        model.num_timesteps = int(state["num_timesteps"])
        log.info("resumed %s at %d steps", checkpoint, model.num_timesteps)
    world = TaskWorld(search_finetune_steps=config.search_finetune_steps)
    monitored = monitoring_tasks(config)
    callbacks = [Checkpointer(out / "checkpoints", config.checkpoint_every)]
    split = "validation" if config.validation_families else "heldout"
    monitor = MonitorCallback(monitored, world, config.eval_every, out / "metrics.csv", config.observation, split)
    if monitored:
        callbacks.append(monitor)
    remaining = config.timesteps - model.num_timesteps
    try:
        if remaining > 0:
            try:
                model.learn(remaining, callback=CallbackList(callbacks), progress_bar=progress,
                            reset_num_timesteps=checkpoint is None, tb_log_name=config.algo)
            except (EOFError, ConnectionError) as exc:
                raise MetacompressError(
                    f"a training worker process stopped ({type(exc).__name__}; its own error is printed above); "
                    "the run keeps its last checkpoint: fix the cause and rerun with --resume"
                ) from exc
        save_checkpoint(model, out / "checkpoints")
        monitor.init_callback(model)
        final = monitor.evaluate() if monitored else {}
        if monitor.best is not None:  # the validation split picks the checkpoint
            score, at, state = monitor.best
            model.policy.load_state_dict(state)
            final = {**final, "chosen_timesteps": at, f"chosen_{split}_score": score}
    except KeyboardInterrupt:
        _stop_workers(venv)
        raise
    finally:
        venv.close()  # nothing left to do once the workers are stopped
    return model.policy, model.num_timesteps, final


def _stop_workers(venv) -> None:
    """Stop subprocess workers without the close handshake.

    Ctrl-C can land while the main process reads the workers' step replies: one reply read,
    the next not. ``SubprocVecEnv.close`` then waits for a reply from every worker, and one
    has none left to send, so it waited forever (the workers ignore SIGINT; see ``EnvFactory``).
    """
    workers = venv.unwrapped
    if isinstance(workers, SubprocVecEnv) and not workers.closed:
        for process in workers.processes:
            process.terminate()
            process.join()
        for remote in workers.remotes:
            remote.close()
        workers.closed = True


def _warm_caches(factory: EnvFactory, tasks: list[Task]) -> None:
    """Train missing zoo models and compute probes once, before workers race to do it."""
    world = TaskWorld(factory.cache_dir, search_finetune_steps=factory.search_finetune_steps)
    for model_id in sorted({t.model for t in tasks}):
        world.model(model_id)


