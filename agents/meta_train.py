"""Meta-training the residual policy's actor head with the shared inner loop (``agents.meta_adapt``).

Starts from a trained residual policy (``TrainConfig.meta_init``, default the shipped one)
and meta-learns its head's initialisation and, for Meta-SGD and Meta-Curvature, the inner
loop's step sizes or preconditioner. One outer iteration on a sampled training task:

1. **Support**: ``META_SUPPORT`` trials of the initial head (exploration of width
   ``residual.FEW_SHOT_NOISE``), each scored on one half of the search split's proxy subset.
2. **Inner loop**: ``InnerLoop.adapt`` on the support set.
3. **Outer step**: Reptile moves the head toward the adapted one by ``reptile_step``
   (annealed linearly to 0); first-order MAML, Meta-SGD and Meta-Curvature draw
   ``META_QUERY`` trials of the *adapted* head, score them on the **other half** of the
   search split (the held-back query; the test split is never touched) and take an Adam
   step on the query loss's gradient with respect to the initial head and the meta-parameters.

Trials count as timesteps (one per unit decision), like every trainer. The run folder,
checkpoints and resume are those of ``agents.training``; the meta-parameters are saved
next to the policy (``policy_io.save_policy(extra=...)``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.logger import configure
from tqdm import tqdm

from metacompress.agents.checkpoints import latest_checkpoint, load_checkpoint, write_checkpoint
from metacompress.agents.meta_adapt import TrialActor, as_trials, head_of, inner_loop_for, surrogate
from metacompress.agents.planner import rollout
from metacompress.agents.policy_io import load_policy
from metacompress.agents.residual import FEW_SHOT_NOISE, solver_anchored
from metacompress.agents.train_config import TrainConfig
from metacompress.compressors.plan import Plan
from metacompress.compressors.recovery import accuracy
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld
from metacompress.errors import MetacompressError

log = logging.getLogger(__name__)

META_SUPPORT = 8
META_QUERY = 6
META_LEARNING_RATE = 1e-2
"""Adam step of the meta-parameters (log step sizes, preconditioner); the head uses ``TrainConfig.learning_rate``."""


class HeldBackProxy:
    """The proxy on two disjoint halves of the evaluator's search subset: support and query.

    A plan's support (query) gain is its accuracy on one half minus the original model's on
    that half. Scores are cached by plan, as the evaluator caches its own.
    """

    def __init__(self, evaluator: ModelEvaluator) -> None:
        self.evaluator = evaluator
        order = torch.randperm(len(evaluator.proxy_x), generator=torch.Generator().manual_seed(1))
        self.halves = [order[::2], order[1::2]]
        self.base = [accuracy(evaluator.model, evaluator.proxy_x[h], evaluator.proxy_y[h]) for h in self.halves]
        self._cache: dict[tuple, tuple[float, float]] = {}

    def gains(self, plan: Plan) -> tuple[float, float]:
        """(support, query) accuracy change of ``plan`` on the two halves (fractions)."""
        key = plan.key()
        if key not in self._cache:
            evaluator = self.evaluator
            steps = evaluator.search_finetune_steps
            model = evaluator.search.finetune(plan, evaluator.model, evaluator.data.train.x, steps) if steps else evaluator.search.apply(plan)
            self._cache[key] = tuple(
                accuracy(model, evaluator.proxy_x[h], evaluator.proxy_y[h]) - base for h, base in zip(self.halves, self.base)
            )
        return self._cache[key]


def collect(env: CompressionEnv, policy, head, count: int, rng: np.random.Generator, proxy: HeldBackProxy, half: int):
    """``count`` trials of ``head`` on ``env``'s task, scored on proxy half ``half`` (0 support, 1 query)."""
    actors, gains = [], []
    for _ in range(count):
        actor = TrialActor(policy, head, FEW_SHOT_NOISE, rng)
        plan, _, _ = rollout(env, actor)
        actors.append(actor)
        gains.append(proxy.gains(plan)[half])
    return as_trials(actors, gains)


def train_meta(config: TrainConfig, tasks: list[Task], out: Path, resume: bool, progress: bool):
    """Meta-train a head and its inner loop; returns (policy, timesteps, monitor row, meta-parameters).

    Raises:
        MetacompressError: if ``config.meta_init`` is not a residual policy of the config's shape.
    """
    torch.set_num_threads(1)
    policy, base = load_policy(config.meta_init)
    if base.method != "residual" or tuple(base.net_arch) != tuple(config.net_arch):
        raise MetacompressError(
            f"--algo {config.algo} meta-trains the head of a residual policy with net_arch {list(config.net_arch)}; "
            f"{config.meta_init} is method {base.method!r} with net_arch {list(base.net_arch)}: set meta_init to a "
            "`metacompress train --algo residual` policy (the shipped default is one)"
        )
    for parameter in policy.parameters():
        parameter.requires_grad_(False)
    weight, bias = (p.detach().clone().requires_grad_(True) for p in head_of(policy))
    loop = inner_loop_for(policy, config.algo)
    optimizer = torch.optim.Adam([
        {"params": [weight, bias], "lr": config.learning_rate},
        {"params": list(loop.parameters()), "lr": META_LEARNING_RATE},
    ]) if config.algo != "reptile" else None
    iteration = timesteps = 0
    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        with torch.no_grad():
            weight.copy_(state["weight"]), bias.copy_(state["bias"])
        loop.load_state_dict(state["loop"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        iteration, timesteps = int(state["iteration"]), int(state["num_timesteps"])
    world = TaskWorld(search_finetune_steps=config.search_finetune_steps)
    proxies: dict[str, HeldBackProxy] = {}
    logger = configure(str(out / "tb" / config.algo), ["tensorboard", "csv"])
    next_checkpoint = (timesteps // config.checkpoint_every + 1) * config.checkpoint_every
    bar = tqdm(total=config.timesteps, initial=timesteps, disable=not progress, desc=config.algo)

    def snapshot() -> dict:
        return {"weight": weight.detach().clone(), "bias": bias.detach().clone(), "loop": loop.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else {}, "iteration": iteration, "num_timesteps": timesteps}

    while timesteps < config.timesteps:
        rng = np.random.default_rng([config.seed, iteration])
        task = tasks[int(rng.integers(len(tasks)))]
        context = world.context(task)
        view = solver_anchored(context, with_baseline=False)
        env = CompressionEnv(view, observation="network")
        proxy = proxies.setdefault(task.model, HeldBackProxy(context.evaluator))
        support = collect(env, policy, (weight, bias), META_SUPPORT, rng, proxy, 0)
        adapted = loop.adapt((weight, bias), support)
        used = META_SUPPORT
        if config.algo == "reptile":
            step = config.reptile_step * (1.0 - timesteps / config.timesteps)
            with torch.no_grad():
                weight.add_(step * (adapted[0] - weight)), bias.add_(step * (adapted[1] - bias))
            logger.record("meta/outer_step", step)
        else:
            query = collect(env, policy, adapted, META_QUERY, rng, proxy, 1)
            optimizer.zero_grad()
            loss = surrogate(adapted, query)
            loss.backward()
            optimizer.step()
            used += META_QUERY
            logger.record("meta/query_gain_mean", float(query.gains.mean()))
        logger.record("meta/support_gain_mean", float(support.gains.mean()))
        for key, value in loop.step_sizes().items():
            logger.record(f"meta/{key}", value)
        steps = used * len(view.decision_units)
        timesteps += steps
        iteration += 1
        bar.update(steps)
        if timesteps >= next_checkpoint:
            next_checkpoint += config.checkpoint_every
            write_checkpoint(snapshot(), out / "checkpoints", timesteps)
        logger.dump(timesteps)
    bar.close()
    write_checkpoint(snapshot(), out / "checkpoints", timesteps)
    with torch.no_grad():
        policy.action_net.weight.copy_(weight), policy.action_net.bias.copy_(bias)
    meta = {name: value.detach().contiguous() for name, value in loop.state_dict().items()}
    return policy, timesteps, {}, meta

